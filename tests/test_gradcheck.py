"""The checker itself, and the command that runs every registered case."""

import subprocess
import sys

import numpy as np
import pytest

from minilm import cli
from minilm.cases import REGISTRY, Case, all_cases
from minilm.gradcheck import TOLERANCE, check_model, numerical_gradient, recording, rel_error


def test_numerical_gradient_of_known_function():
    x = np.array([[0.5, -1.0], [2.0, 0.1]])
    dout = np.array([[1.0, 2.0], [-1.0, 0.5]])
    num = numerical_gradient(lambda: np.sin(x), x, dout)
    np.testing.assert_allclose(num, np.cos(x) * dout, rtol=1e-9)
    np.testing.assert_array_equal(x, [[0.5, -1.0], [2.0, 0.1]])  # restored


def test_numerical_gradient_refuses_float32():
    with pytest.raises(ValueError, match="float64"):
        numerical_gradient(lambda: 0.0, np.ones(2, np.float32))


def test_rel_error():
    assert rel_error(np.array([1.0, 0.0]), np.array([1.0, 0.0])) == 0.0
    assert rel_error(np.array([1.0]), np.array([1.02])) == pytest.approx(0.02 / 2.02)
    assert rel_error(np.array([1e-12]), np.array([0.0])) == pytest.approx(1e-4)  # the 1e-8 floor
    with pytest.raises(ValueError, match="shapes differ"):
        rel_error(np.ones(2), np.ones(3))


def least_squares(params):
    dtype = params["w"].dtype  # float64, or float32 in check_model's dtype pass
    X = (np.arange(12.0).reshape(4, 3) / 10).astype(dtype)
    y = np.array([1.0, -1.0, 0.5, 2.0], dtype)
    r = X @ params["w"] + params["b"] - y  # (4,)
    return 0.5 * (r**2).mean(), {"w": X.T @ r / 4, "b": np.array(r.mean())}


def test_check_model_accepts_right_and_catches_wrong():
    params = {"w": np.array([0.1, -0.2, 0.3]), "b": np.array(0.5)}
    errors = check_model(least_squares, params)
    assert set(errors) == {"dw", "db"} and max(errors.values()) <= TOLERANCE

    def wrong(p):
        loss, g = least_squares(p)
        return loss, {"w": g["w"], "b": 2 * g["b"]}

    errors = check_model(wrong, params)
    assert errors["dw"] <= TOLERANCE and errors["db"] > 0.1


def test_check_model_largest_checks_the_largest_entries():
    """With largest=True and max_entries=1 only the entry of largest |gradient| is compared: an error there
    is caught, an error in a smaller entry is not looked at (random entries, the default, may look there)."""
    c = np.array([1.0, 10.0, 100.0])

    def wrong_at(i):  # loss = sum c w^2 / 2, gradient c w, entry i 10% off
        def loss_and_grads(p):
            g = c * p["w"]
            g[i] *= 1.1
            return 0.5 * float((c * p["w"] ** 2).sum()), {"w": g}
        return loss_and_grads

    params = {"w": np.array([0.5, -0.5, 0.5])}  # gradients 0.5, -5, 50: entry 2 is the largest
    assert check_model(wrong_at(2), params, max_entries=1, largest=True)["dw"] > 0.01
    assert check_model(wrong_at(0), params, max_entries=1, largest=True)["dw"] <= TOLERANCE
    assert check_model(wrong_at(0), params)["dw"] > 0.01  # every entry: caught


def test_check_model_names_a_missing_or_misshapen_gradient():
    with recording() as found:
        errors = check_model(lambda p: (0.0, {"w": np.zeros((3, 1), p["w"].dtype)}),
                             {"w": np.zeros(3), "b": np.zeros(1)})
    assert errors["dw"] == errors["db"] == np.inf
    assert [f.note for f in found] == ["dw: yours (3, 1), expected (3,)",
                                       "db: yours is NoneType, expected an array of shape (1,)"]


def test_gradcheck_command_exits_1_on_a_failing_case(capsys):
    all_cases()
    REGISTRY.append(Case("test", "deliberately wrong", lambda: {"dx": 0.5}))
    try:
        assert cli.main(["gradcheck", "--only", "test/"]) == 1
    finally:
        REGISTRY.pop()
    out = capsys.readouterr().out
    assert "deliberately wrong" in out and "FAIL" in out


def test_gradcheck_command_lists_the_ops_and_exits_0():
    out = subprocess.run([sys.executable, "-m", "minilm", "gradcheck"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr  # every registered case passed
    assert "FAIL" not in out.stdout and "not implemented" not in out.stdout
    for name in ["linear", "relu", "gelu", "tanh", "sigmoid", "softmax", "log-softmax", "cross-entropy",
                 "embedding", "layernorm", "dropout"]:
        assert name in out.stdout

"""The vanilla tanh RNN: gradient checks of the step and the sequence (with dh0 and the final state), broken
backwards caught, torch.nn.RNN as a reference, carried state (truncated BPTT), dtypes, bad input."""

import numpy as np
import pytest

from minilm import rnn
from minilm.cases import all_cases
from minilm.cases import rnn as C
from minilm.gradcheck import TOLERANCE, check_pair
from minilm.linear import linear_backward

BROKEN = 1e-4  # a broken backward must be off by far more than this (exact ones are <= 1e-7)
step_backward = rnn.rnn_step_backward  # the right one, kept before any test replaces it


def check_step(backward=rnn.rnn_step_backward, inputs=None):
    return check_pair(rnn.rnn_step_forward, backward, inputs or C.step_inputs(), C.STEP_NAMES)


def check_sequence(backward=None, inputs=None):
    return check_pair(C.flat_sequence, lambda d, c: C.flat_sequence_backward(d, c, backward),
                      inputs or C.sequence_inputs(), C.SEQUENCE_NAMES)


def test_cases_are_registered_and_pass():
    cases = {c.name: c for c in all_cases() if c.group == "rnn"}
    assert set(cases) == {"step (tanh)", "sequence (BPTT, h0, h_T)"}
    for c in cases.values():
        errors = c.run()
        assert max(errors.values()) <= TOLERANCE, (c.name, errors)


def test_step_gradients():
    errors = check_step()
    assert set(errors) == {"d" + n for n in C.STEP_NAMES} and max(errors.values()) <= TOLERANCE, errors


@pytest.mark.parametrize("B,T,D,Hd", [(2, 5, 3, 4), (1, 1, 2, 3), (3, 8, 2, 2), (2, 3, 5, 1)])
def test_sequence_gradients(B, T, D, Hd):
    errors = check_sequence(inputs=C.sequence_inputs(B, T, D, Hd))
    assert set(errors) == {"d" + n for n in C.SEQUENCE_NAMES} and max(errors.values()) <= TOLERANCE, errors


# ---- deliberately broken backwards: each must be caught by the same checker ----


def tanh_derivative_of_the_preactivation(dh, cache):  # da = dh * (1 - a^2) with a the pre-activation, not h
    cache_x, cache_h, h = cache
    (x, Wx, _), (h_prev, Wh, _) = cache_x, cache_h
    return step_backward(dh, (cache_x, cache_h, x @ Wx + h_prev @ Wh))


def tanh_derivative_forgotten(dh, cache):  # da = dh, as if h = a
    cache_x, cache_h, _ = cache
    dx, dWx, db = linear_backward(dh, cache_x)
    dh_prev, dWh, _ = linear_backward(dh, cache_h)
    return dx, dh_prev, dWx, dWh, db


def recurrent_weight_not_transposed(dh, cache):  # dh_prev = da W_h instead of da W_h^T
    dx, dh_prev, dWx, dWh, db = step_backward(dh, cache)
    h, (_, Wh, _) = cache[2], cache[1]  # the tanh cache is h itself
    da = dh * (1 - h**2)
    return dx, da @ Wh, dWx, dWh, db


@pytest.mark.parametrize("broken", [tanh_derivative_of_the_preactivation, tanh_derivative_forgotten,
                                    recurrent_weight_not_transposed], ids=lambda f: f.__name__)
def test_broken_step_is_caught_in_the_step_and_the_sequence(monkeypatch, broken):
    assert max(check_step(broken).values()) > BROKEN
    monkeypatch.setattr(rnn, "rnn_step_backward", broken)
    assert max(check_sequence().values()) > BROKEN


def bptt(dhs, cache, dh_T=None, carry=True, add_output=True, accumulate=True):
    """rnn_backward rewritten with switches that break it: no recurrence for dh, the output's gradient
    dropped where the next step's arrives, or only the last step's weight gradient kept."""
    B, T, Hd = dhs.shape
    dx = np.empty((B, T, cache[0][0][1].shape[0]))
    dh = np.zeros((B, Hd)) if dh_T is None else dh_T
    dWx = dWh = db = 0
    for t in reversed(range(T)):
        upstream = dhs[:, t] + dh if add_output else (dh if t < T - 1 else dhs[:, t] + dh)
        dx[:, t], dh_next, dWx_t, dWh_t, db_t = rnn.rnn_step_backward(upstream, cache[t])
        dh = dh_next if carry else 0 * dh_next
        if accumulate:
            dWx, dWh, db = dWx + dWx_t, dWh + dWh_t, db + db_t
        elif t == 0:
            dWx, dWh, db = dWx_t, dWh_t, db_t
    return dx, dh, dWx, dWh, db


def test_rewritten_bptt_is_right_and_its_breaks_are_caught():
    inputs = C.sequence_inputs()
    _, _, cache = rnn.rnn_forward(*inputs)
    dhs, dh_T = np.random.default_rng(5).standard_normal((2, 5, 4)), np.random.default_rng(6).standard_normal((2, 4))
    for ours, rewritten in zip(rnn.rnn_backward(dhs, cache, dh_T), bptt(dhs, cache, dh_T), strict=True):
        np.testing.assert_array_equal(ours, rewritten)  # with every switch on it is the right backward

    no_recurrence = check_sequence(lambda *a: bptt(*a, carry=False), inputs)
    assert no_recurrence["dh0"] > BROKEN and no_recurrence["dWh"] > BROKEN
    dropped_output = check_sequence(lambda *a: bptt(*a, add_output=False), inputs)
    assert dropped_output["dWx"] > BROKEN and dropped_output["dx"] > BROKEN
    not_summed = check_sequence(lambda *a: bptt(*a, accumulate=False), inputs)
    assert not_summed["dWh"] > BROKEN and not_summed["dx"] <= TOLERANCE and not_summed["dh0"] <= TOLERANCE


def test_dropping_the_final_state_gradient_is_caught():
    errors = check_sequence(lambda dhs, cache, dh_T: rnn.rnn_backward(dhs, cache))
    assert errors["dh0"] > BROKEN and errors["dWh"] > BROKEN, errors


# ---- torch.nn.RNN as the reference (float64, the same weights) ----


def test_matches_torch_rnn_forward_and_backward():
    torch = pytest.importorskip("torch")
    r = np.random.default_rng(0)
    B, T, D, Hd = 3, 7, 4, 5
    Wx, Wh, b = rnn.rnn_init(r, D, Hd, np.float64)
    x, h0 = r.standard_normal((B, T, D)), r.standard_normal((B, Hd))
    hs, hT, cache = rnn.rnn_forward(x, h0, Wx, Wh, b)
    net = torch.nn.RNN(D, Hd, nonlinearity="tanh", batch_first=True, dtype=torch.float64)
    bias_hh = r.standard_normal(Hd)
    with torch.no_grad():
        net.weight_ih_l0.copy_(torch.from_numpy(Wx.T.copy()))
        net.weight_hh_l0.copy_(torch.from_numpy(Wh.T.copy()))
        net.bias_ih_l0.copy_(torch.from_numpy(b - bias_hh))
        net.bias_hh_l0.copy_(torch.from_numpy(bias_hh))
    xt, h0t = torch.tensor(x, requires_grad=True), torch.tensor(h0[None], requires_grad=True)
    out, hn = net(xt, h0t)
    np.testing.assert_allclose(hs, out.detach().numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(hT, hn[0].detach().numpy(), rtol=0, atol=1e-12)
    dhs, dhn = r.standard_normal(hs.shape), r.standard_normal((B, Hd))
    ((out * torch.from_numpy(dhs)).sum() + (hn[0] * torch.from_numpy(dhn)).sum()).backward()
    dx, dh0, dWx, dWh, db = rnn.rnn_backward(dhs, cache, dhn)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(dh0, h0t.grad.numpy()[0], rtol=0, atol=1e-10)
    np.testing.assert_allclose(dWx, net.weight_ih_l0.grad.numpy().T, rtol=0, atol=1e-10)
    np.testing.assert_allclose(dWh, net.weight_hh_l0.grad.numpy().T, rtol=0, atol=1e-10)
    np.testing.assert_allclose(db, net.bias_hh_l0.grad.numpy(), rtol=0, atol=1e-10)


# ---- carried state, Jacobian, dtypes, bad input ----


def test_carried_state_continues_the_sequence_exactly():
    r = np.random.default_rng(2)
    Wx, Wh, b = rnn.rnn_init(r, 3, 4, np.float64)
    x, h0 = r.standard_normal((2, 9, 3)), np.zeros((2, 4))
    whole, hT, _ = rnn.rnn_forward(x, h0, Wx, Wh, b)
    first, h5, _ = rnn.rnn_forward(x[:, :5], h0, Wx, Wh, b)
    second, hT2, _ = rnn.rnn_forward(x[:, 5:], h5, Wx, Wh, b)
    np.testing.assert_array_equal(np.concatenate([first, second], axis=1), whole)
    np.testing.assert_array_equal(hT, hT2)
    np.testing.assert_array_equal(hT, whole[:, -1])
    fresh, _, _ = rnn.rnn_forward(x[:, 5:], h0, Wx, Wh, b)
    assert np.abs(fresh - second).max() > 1e-3  # the state matters


def test_backward_through_one_step_is_the_transposed_jacobian():
    """dh_prev = dh J with J = dh_t/dh_{t-1} = W_h diag(1 - h_t^2) (rows: h_{t-1}), built entry by entry."""
    r = np.random.default_rng(3)
    Wx, Wh, b = rnn.rnn_init(r, 2, 3, np.float64)
    x, h_prev = r.standard_normal((1, 2)), r.standard_normal((1, 3))
    h, cache = rnn.rnn_step_forward(x, h_prev, Wx, Wh, b)
    J = np.empty((3, 3))  # J[i, j] = dh_t[j] / dh_{t-1}[i], by centred differences
    for i in range(3):
        e = np.zeros((1, 3))
        e[0, i] = 1e-6
        plus, minus = (rnn.rnn_step_forward(x, h_prev + s * e, Wx, Wh, b)[0] for s in (1, -1))
        J[i] = (plus - minus)[0] / 2e-6
    np.testing.assert_allclose(J, Wh * (1 - h[0] ** 2), rtol=1e-8)
    dh = r.standard_normal((1, 3))
    np.testing.assert_allclose(rnn.rnn_step_backward(dh, cache)[1], dh @ J.T, rtol=1e-8)


def test_float32_in_float32_out():
    r = np.random.default_rng(4)
    Wx, Wh, b = rnn.rnn_init(r, 3, 4)
    assert Wx.dtype == Wh.dtype == b.dtype == np.float32
    x, h0 = r.standard_normal((2, 5, 3)).astype(np.float32), np.zeros((2, 4), np.float32)
    hs, hT, cache = rnn.rnn_forward(x, h0, Wx, Wh, b)
    grads = rnn.rnn_backward(np.ones_like(hs), cache)
    assert hs.dtype == hT.dtype == np.float32 and all(g.dtype == np.float32 for g in grads)


def test_bad_input_is_named():
    r = np.random.default_rng(0)
    Wx, Wh, b = rnn.rnn_init(r, 3, 4, np.float64)
    x, h0 = r.standard_normal((2, 5, 3)), np.zeros((2, 4))
    with pytest.raises(ValueError, match="h0 must have shape"):
        rnn.rnn_forward(x, np.zeros((2, 5)), Wx, Wh, b)
    with pytest.raises(ValueError, match=r"x must have shape \(B, T, D\)"):
        rnn.rnn_forward(x[:, 0], h0, Wx, Wh, b)
    with pytest.raises(ValueError, match="Wx must have shape"):
        rnn.rnn_step_forward(x[:, 0], h0, Wx.T, Wh, b)
    with pytest.raises(ValueError, match="same dtype"):
        rnn.rnn_forward(x.astype(np.float32), h0, Wx, Wh, b)
    with pytest.raises(ValueError, match="at least one time step"):
        rnn.rnn_forward(x[:, :0], h0, Wx, Wh, b)

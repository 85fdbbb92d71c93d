"""The remember-the-first-token task: data, the whole model's gradients for both recurrent layers (and a
broken one caught), learning at a short lag, bad input."""

import numpy as np
import pytest

from minilm import rnn
from minilm.cases.ngram import first_resolvable
from minilm.gradcheck import TOLERANCE, check_model
from minilm.tasks import memory


def test_batch_labels_the_first_token():
    x, y = memory.batch(np.random.default_rng(0), 5, 7, K=3)
    assert x.shape == (5, 7, 3) and x.dtype == np.float32 and np.all(x.sum(axis=2) == 1)
    np.testing.assert_array_equal(x[:, 0].argmax(axis=1), y)


def inputs(kind):
    """Float64 parameters (the initial ones plus noise) and a batch, drawn until every analytic gradient entry is
    resolvable by the check (see minilm/cases/ngram.py)."""

    def draw(r):
        params = {k: v.astype(np.float64) + 0.5 * r.standard_normal(v.shape)
                  for k, v in memory.init_params(kind, r, K=3, Hd=4).items()}
        return (params, *memory.batch(r, 3, 5, K=3, dtype=np.float64))

    return first_resolvable(draw, lambda d: list(memory.loss_and_grads(kind, *d)[1].values()))


@pytest.mark.parametrize("kind", ["rnn", "lstm"])
def test_every_gradient_of_the_model(kind):
    params, x, y = inputs(kind)
    errors = check_model(lambda p: memory.loss_and_grads(kind, p, x, y)[:2], params)
    assert set(errors) == {"d" + k for k in params} and max(errors.values()) <= TOLERANCE, errors


def test_a_broken_recurrent_backward_is_caught(monkeypatch):
    params, x, y = inputs("rnn")  # drawn with the right backward
    right = rnn.rnn_backward
    monkeypatch.setattr(rnn, "rnn_backward", lambda dhs, cache, dh_T=None: (lambda g: (*g[:3], 1.01 * g[3], g[4]))(
        right(dhs, cache, dh_T)))  # dW_h 1% too large
    errors = check_model(lambda p: memory.loss_and_grads("rnn", p, x, y)[:2], params)
    assert errors["dWh"] > 1e-4 and errors["dWx"] <= TOLERANCE, errors


@pytest.mark.parametrize("kind", ["rnn", "lstm"])
def test_both_learn_a_short_lag(kind):
    result = memory.train(kind, L=3, steps=150, Hd=16, seed=0, test_size=500)
    assert result["test_accuracy"] > 0.95 and result["losses"][-20:].mean() < 0.2 * result["losses"][:5].mean()


def test_unknown_kind_is_named():
    with pytest.raises(ValueError, match="kind must be 'rnn' or 'lstm'"):
        memory.init_params("gru", np.random.default_rng(0), K=3, Hd=4)

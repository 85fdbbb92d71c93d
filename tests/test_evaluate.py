"""Evaluation over a whole split equals the same sum computed token by token."""

import math

import numpy as np
import pytest

from minilm.training import evaluate


def log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


@pytest.fixture
def bigram(rng):
    """A fixed 'model' p(next | previous) = softmax(table[previous]) and a text of 203 tokens."""
    V = 7
    return rng.standard_normal((V, V)), rng.integers(0, V, 203)


def expected_nll(table, ids):
    """-(1/M) sum_i log p(ids[i+1] | ids[i]) over every i, one token at a time."""
    return -np.mean([log_softmax(table[ids[i]])[ids[i + 1]] for i in range(len(ids) - 1)])


def test_nll_sum_counts_only_kept_positions():
    logits = np.log(np.array([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]]))
    total, count, correct = evaluate.nll_sum(logits, np.array([0, -1]), ignore_index=-1)
    assert count == 1 and correct == 1 and total == pytest.approx(math.log(2))
    total, count, correct = evaluate.nll_sum(logits, np.array([2, 1]))
    assert count == 2 and correct == 1 and total == pytest.approx(math.log(4) - math.log(0.8))


def test_summary_perplexity_and_bits_per_char():
    r = evaluate.summary(2.0 * 10, 10, char_level=True)
    assert r["loss"] == 2.0 and r["perplexity"] == pytest.approx(math.exp(2.0))
    assert r["bits_per_char"] == pytest.approx(2.0 / math.log(2))
    assert "bits_per_char" not in evaluate.summary(1.0, 1)
    with pytest.raises(ValueError, match="nothing to evaluate"):
        evaluate.summary(0.0, 0)


def test_windows_contexts_and_streams_each_score_every_token_once(bigram):
    table, ids = bigram
    want = expected_nll(table, ids)
    windows = evaluate.evaluate_windows(lambda x: table[x], ids, block_size=16, batch_size=3)
    contexts = evaluate.evaluate_contexts(lambda c: table[c[:, -1]], ids, n=1, batch_size=50)
    streams = evaluate.evaluate_streams(lambda x, s: (table[x], s), ids, block_size=16, batch_size=5)
    for r in (windows, contexts, streams):
        assert r["tokens"] == len(ids) - 1
        assert r["loss"] == pytest.approx(want, rel=1e-12)
    assert windows["perplexity"] == pytest.approx(math.exp(want))


def test_streams_carry_the_state_across_windows(rng):
    """A model that reads the token two back: right only if the state brings it across window edges."""
    V, ids = 5, rng.integers(0, 5, 97)
    table = rng.standard_normal((V, V))

    def step(x, state):  # the logits at position t read x[t - 1]; the state is the last token seen, (B, 1)
        seen = np.concatenate([np.zeros((x.shape[0], 1), np.int64) if state is None else state, x], axis=1)
        return table[seen[:, :-1]], seen[:, -1:]

    # target ids[i + 1] is predicted from ids[i - 1] (0 before the start)
    padded = np.concatenate([[0], ids])
    want = -np.mean([log_softmax(table[padded[i]])[ids[i + 1]] for i in range(len(ids) - 1)])
    r = evaluate.evaluate_streams(step, ids, block_size=8, batch_size=1)
    assert r["loss"] == pytest.approx(want, rel=1e-12)
    broken = evaluate.evaluate_streams(lambda x, s: step(x, None), ids, block_size=8, batch_size=1)
    assert abs(broken["loss"] - want) > 1e-3  # dropping the state is caught


def test_masked_evaluation_scores_only_the_masked_positions(bigram):
    table, ids = bigram

    def mask_fn(x, rng):  # hide every third position
        targets = np.full(x.shape, -1)
        targets[:, ::3] = x[:, ::3]
        return x, targets, -1

    def logits_fn(x):  # a perfect model: the input is visible, so it can name it
        return np.where(np.eye(7, dtype=bool)[x], 10.0, -10.0)

    r = evaluate.evaluate_masked(logits_fn, mask_fn, ids, block_size=10, batch_size=4)
    assert r["accuracy"] == 1.0 and r["loss"] < 1e-6
    n_windows_full = (len(ids) - 1) // 10
    rest = len(ids) - 1 - 10 * n_windows_full
    assert r["tokens"] == n_windows_full * 4 + len(range(0, rest, 3))

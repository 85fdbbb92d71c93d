"""Interpolated Kneser-Ney: a case worked by hand, a direct dictionary implementation of the formulas on random
text, normalisation, unseen contexts, the discount estimate, bad input."""

from collections import Counter, defaultdict

import numpy as np
import pytest

from minilm.kneser_ney import kneser_ney_fit, kneser_ney_log_probs, kneser_ney_probs


def test_bigram_case_worked_by_hand():
    """ids 0 1 0 2 0 1, V = 3, N = 1, D = 1/2.
    Bigrams: c(0,1) = 2, c(1,0) = c(0,2) = c(2,0) = 1;  c(0) = 3, N1+(0 .) = 2.
    Continuation counts of the unigrams: 0 follows {1, 2}, 1 and 2 follow {0}: 2, 1, 1, total 4, N1+ = 3.
    P0(w) = (N1+(. w) - 1/2) / 4 + (1/2)(3/4)(1/3)        = 1/2, 1/4, 1/4
    P(w | 0) = max(c(0, w) - 1/2, 0) / 3 + (1/2)(2/3) P0(w) = 1/6, 7/12, 1/4
    P(w | 1) = max(c(1, w) - 1/2, 0) / 1 + (1/2)(1/1) P0(w) = 3/4, 1/8, 1/8"""
    model = kneser_ney_fit(np.array([0, 1, 0, 2, 0, 1]), 3, 1, discount=0.5)
    p = kneser_ney_probs(model, np.array([[0], [1], [2]]))
    np.testing.assert_allclose(p[0], [1 / 6, 7 / 12, 1 / 4], rtol=1e-15)
    np.testing.assert_allclose(p[1], [3 / 4, 1 / 8, 1 / 8], rtol=1e-15)
    np.testing.assert_allclose(p[2], [3 / 4, 1 / 8, 1 / 8], rtol=1e-15)  # 2 is followed by 0 once, like 1


def reference(ids, V, N, D):
    """The formulas of minilm.kneser_ney written with dictionaries, one probability at a time."""
    ids = [int(i) for i in ids]
    counts = [defaultdict(Counter) for _ in range(N + 1)]  # counts[k][h][w], h a tuple of k tokens
    top = Counter(tuple(ids[i : i + N + 1]) for i in range(len(ids) - N))
    for g, c in top.items():
        counts[N][g[:-1]][g[-1]] = c
    for k in range(N):
        for g in {tuple(ids[i : i + k + 2]) for i in range(len(ids) - k - 1)}:  # distinct (k+2)-grams
            counts[k][g[1:-1]][g[-1]] += 1  # one more distinct token before h w

    def p(w, h):
        if h is None:
            return 1 / V
        lower = p(w, h[1:] if h else None)
        table = counts[len(h)].get(h)
        if not table:
            return lower
        total = sum(table.values())
        return (max(table[w] - D[len(h)], 0) + D[len(h)] * len(table) * lower) / total

    return p


@pytest.mark.parametrize("V,N,M", [(3, 1, 40), (4, 2, 60), (5, 3, 200), (2, 4, 30)])
def test_matches_the_formulas_written_with_dictionaries(V, N, M):
    r = np.random.default_rng(V * 10 + N)
    ids = r.integers(0, V, M)
    model = kneser_ney_fit(ids, V, N)
    D = [o.discount for o in model.orders]
    p_ref = reference(ids, V, N, D)
    ctx = r.integers(0, V, (50, N))  # random contexts: many never seen in training
    ctx[:10] = np.lib.stride_tricks.sliding_window_view(ids, N)[:10]  # and some seen ones
    p = kneser_ney_probs(model, ctx)
    expected = np.array([[p_ref(w, tuple(int(t) for t in c)) for w in range(V)] for c in ctx])
    np.testing.assert_allclose(p, expected, rtol=1e-12)
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-12)
    assert np.all(p > 0)


def test_discount_is_neys_estimate_per_order():
    ids = np.random.default_rng(0).integers(0, 6, 300)
    model = kneser_ney_fit(ids, 6, 2)
    top = model.orders[2]  # raw trigram counts: many seen once or twice
    n1, n2 = np.sum(top.counts == 1), np.sum(top.counts == 2)
    assert n1 > 0 and n2 > 0 and top.discount == pytest.approx(n1 / (n1 + 2 * n2))
    assert all(0 < o.discount < 1 for o in model.orders)


def test_unseen_context_uses_the_shorter_one_worked_by_hand():
    """ids 0 1 2 0 1 2 0 1, V = 3, N = 2, D = 1/2.  Distinct bigrams 01, 12, 20: every unigram continuation
    count is 1, so P0 = (1 - 1/2)/3 + (1/2)(3/3)(1/3) = 1/3 each.  Distinct trigrams 012, 120, 201: the context
    (2,) has the continuation count 1 for 0 only, so P1(. | 2) = (1/2 + 1/6, 1/6, 1/6) = (2/3, 1/6, 1/6).
    (2, 2) and (0, 2) never occur: both get P1(. | 2).  The seen (1, 2) was followed by 0 twice:
    P(. | 1, 2) = (3/2)/2 + (1/2)(1/2) P1 = (11/12, 1/24, 1/24)."""
    model = kneser_ney_fit(np.array([0, 1, 2, 0, 1, 2, 0, 1]), 3, 2, discount=0.5)
    p = kneser_ney_probs(model, np.array([[2, 2], [0, 2], [1, 2]]))
    np.testing.assert_allclose(p[0], [2 / 3, 1 / 6, 1 / 6], rtol=1e-15)
    np.testing.assert_array_equal(p[0], p[1])
    np.testing.assert_allclose(p[2], [11 / 12, 1 / 24, 1 / 24], rtol=1e-15)
    np.testing.assert_allclose(kneser_ney_log_probs(model, np.array([[1, 2]]))[0], np.log(p[2]), rtol=1e-15)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 3\)"):
        kneser_ney_fit(np.array([0, 1, 3]), 3, 1)
    with pytest.raises(ValueError, match="need more than context = 3 tokens"):
        kneser_ney_fit(np.array([0, 1, 2]), 3, 3)
    with pytest.raises(ValueError, match="does not fit in an int64"):
        kneser_ney_fit(np.arange(100), 100, 10)
    with pytest.raises(ValueError, match="discount must lie in"):
        kneser_ney_fit(np.array([0, 1, 2, 0]), 3, 1, discount=1.0)
    with pytest.raises(ValueError, match=r"ctx must have shape \(B, 1\)"):
        kneser_ney_probs(kneser_ney_fit(np.array([0, 1, 2, 0]), 3, 1), np.array([[0, 1]]))

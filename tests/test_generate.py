"""Sampling rules, context cropping, carried state and [MASK] filling."""

import numpy as np
import pytest

from minilm import generate


def test_greedy_and_top1_pick_the_argmax(rng):
    z = np.array([0.1, 2.0, -1.0, 1.9])
    assert generate.sample_next(z, rng, temperature=0) == 1
    assert all(generate.sample_next(z, rng, temperature=5.0, top_k=1) == 1 for _ in range(50))


def test_top_k_samples_only_the_k_likeliest(rng):
    z = np.array([3.0, -1.0, 2.5, 0.0, 2.0, -5.0])
    draws = {generate.sample_next(z, rng, temperature=2.0, top_k=3) for _ in range(400)}
    assert draws == {0, 2, 4}


def test_temperature_reshapes_the_distribution(rng):
    """Frequencies of 3,000 draws match softmax(z / tau) within 5 standard errors."""
    z, tau, n = np.array([0.0, 1.0, 2.0]), 0.5, 3000
    p = np.exp(z / tau) / np.exp(z / tau).sum()
    counts = np.bincount([generate.sample_next(z, rng, temperature=tau) for _ in range(n)], minlength=3)
    assert np.all(np.abs(counts / n - p) < 5 * np.sqrt(p * (1 - p) / n))
    wrong = np.exp(z) / np.exp(z).sum()  # tau ignored: the same check would fail
    assert not np.all(np.abs(counts / n - wrong) < 5 * np.sqrt(wrong * (1 - wrong) / n))


def test_bad_sampling_arguments(rng):
    with pytest.raises(ValueError, match="temperature"):
        generate.sample_next(np.zeros(3), rng, temperature=-1)
    with pytest.raises(ValueError, match="top_k"):
        generate.sample_next(np.zeros(3), rng, top_k=0)
    with pytest.raises(ValueError, match="prompt"):
        generate.generate(lambda h, c: (np.zeros(3), c), np.array([], np.int64), 2, rng)


def counting_model(V, seen):
    """logits that say 'the next token is the last one + 1 (mod V)'; records every input it gets."""

    def logits_fn(x):
        seen.append(x.copy())
        return np.where(np.arange(V) == (x[..., None] + 1) % V, 10.0, 0.0)  # (B, t, V)

    return logits_fn


def test_window_generation_crops_to_block_size(rng):
    seen = []
    nxt = generate.window_next(counting_model(10, seen), block_size=4)
    out = generate.generate(nxt, np.array([3]), 8, rng, temperature=0)
    assert out.tolist() == [3, 4, 5, 6, 7, 8, 9, 0, 1]
    assert max(x.shape[1] for x in seen) == 4
    assert seen[-1].tolist() == [[6, 7, 8, 9, 0][-4:]]  # the last four tokens, not the first


def test_context_generation_left_pads_a_short_prompt(rng):
    seen = []
    V = 10

    def logits_fn(ctx):
        seen.append(ctx.copy())
        return np.where(np.arange(V) == (ctx[:, -1:] + 1) % V, 10.0, 0.0)  # (B, V)

    out = generate.generate(generate.context_next(logits_fn, 3, pad_id=9), np.array([5]), 3, rng, temperature=0)
    assert out.tolist() == [5, 6, 7, 8]
    assert seen[0].tolist() == [[9, 9, 5]] and seen[-1].tolist() == [[5, 6, 7]]


def test_recurrent_generation_feeds_only_the_new_token(rng):
    seen, V = [], 10

    def step(x, state):
        seen.append(x.copy())
        count = (0 if state is None else state) + x.shape[1]
        return np.where(np.arange(V) == (x[..., None] + 1) % V, 10.0, 0.0), count

    out = generate.generate(generate.recurrent_next(step), np.array([1, 2, 3]), 3, rng, temperature=0)
    assert out.tolist() == [1, 2, 3, 4, 5, 6]
    assert [x.shape[1] for x in seen] == [3, 1, 1]


def test_fill_masks_fills_each_mask_and_nothing_else(rng):
    V, MASK = 6, 5

    def logits_fn(x):  # prefers [MASK] itself, then "previous + 1": filling must skip [MASK]
        z = np.where(np.arange(V) == (np.roll(x, 1, axis=1)[..., None] + 1) % V, 5.0, 0.0)
        z[..., MASK] = 50.0
        return z

    ids = np.array([1, MASK, MASK, 0, MASK])
    out = generate.fill_masks(logits_fn, ids, MASK, rng, temperature=0)
    assert out.tolist() == [1, 2, 3, 0, 1]  # left to right: each filled token is seen by the next
    assert ids.tolist() == [1, MASK, MASK, 0, MASK]  # the input is not changed
    with pytest.raises(ValueError, match="no \\[MASK\\]"):
        generate.fill_masks(logits_fn, np.array([1, 2]), MASK, rng)


def test_top_p_keeps_the_smallest_set_whose_mass_reaches_p():
    z = np.log(np.array([0.1, 0.4, 0.05, 0.3, 0.15]))  # sorted: 0.4, 0.3, 0.15, 0.1, 0.05
    kept = {0.4: [1], 0.5: [1, 3], 0.7: [1, 3], 0.71: [1, 3, 4], 0.85: [1, 3, 4], 0.9: [0, 1, 3, 4]}
    for p, want in kept.items():
        q = generate.sampling_distribution(z, top_p=p)
        assert np.flatnonzero(q).tolist() == want, p
        full = np.exp(z)[want]
        assert np.allclose(q[want], full / full.sum())  # renormalised over the nucleus, proportions kept
    assert np.flatnonzero(generate.sampling_distribution(z, top_p=0.01)).tolist() == [1]  # at least one token


def test_top_p_keeps_every_token_tied_at_the_edge():
    z = np.log(np.array([0.4, 0.2, 0.2, 0.2]))
    q = generate.sampling_distribution(z, top_p=0.5)  # 0.4 + one 0.2 reaches 0.5; the other two 0.2 are tied with it
    assert np.allclose(q, [0.4, 0.2, 0.2, 0.2])
    q = generate.sampling_distribution(z, top_p=0.4)
    assert np.allclose(q, [1, 0, 0, 0])


def test_top_p_one_is_plain_sampling(rng):
    z = np.random.default_rng(0).normal(size=50) * 3
    assert np.array_equal(generate.sampling_distribution(z, 0.7, top_p=1.0), generate.sampling_distribution(z, 0.7))
    a = [generate.sample_next(z, np.random.default_rng(s), 0.7, top_p=1.0) for s in range(200)]
    b = [generate.sample_next(z, np.random.default_rng(s), 0.7) for s in range(200)]
    assert a == b


def test_top_p_draws_only_from_the_nucleus_in_its_proportions(rng):
    z, n = np.log(np.array([0.5, 0.3, 0.15, 0.05])), 3000
    counts = np.bincount([generate.sample_next(z, rng, top_p=0.75) for _ in range(n)], minlength=4)
    assert counts[2] == counts[3] == 0
    p = np.array([0.625, 0.375])
    assert np.all(np.abs(counts[:2] / n - p) < 5 * np.sqrt(p * (1 - p) / n))
    assert not np.all(np.abs(counts[:2] / n - [0.5, 0.3]) < 5 * np.sqrt(p * (1 - p) / n))  # not renormalised: fails


def test_top_p_after_temperature_and_top_k():
    z = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    hot = generate.sampling_distribution(z, temperature=100.0, top_p=0.6)  # nearly uniform: 3 of 4 tokens needed
    assert np.flatnonzero(hot).tolist() == [0, 1, 2]
    assert np.flatnonzero(generate.sampling_distribution(z, top_k=2, top_p=0.99)).tolist() == [0, 1]
    assert generate.sampling_distribution(z, temperature=0, top_p=0.9).tolist() == [1, 0, 0, 0]


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5, float("nan")])
def test_bad_top_p_is_an_error(rng, bad):
    with pytest.raises(ValueError, match=r"top_p must be in \(0, 1\]"):
        generate.sample_next(np.zeros(3), rng, top_p=bad)
    with pytest.raises(ValueError, match="top_p"):
        generate.generate(lambda h, c: (np.zeros(3), c), np.array([0]), 0, rng, top_p=bad)

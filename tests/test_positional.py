"""Positional encodings (§5.1): the sinusoidal table and its layout, the
sqrt(C) scaling option, learned positions; gradient checks, broken backwards
caught, bad input."""

import numpy as np
import pytest

from minilm import positional as P
from minilm.embedding import embedding_backward
from minilm.gradcheck import TOLERANCE, check_pair

BROKEN = 1e-4  # a broken backward must be off by far more than this (exact ones are <= 1e-7)


def test_sinusoidal_table_is_the_formula_interleaved():
    T, C = 7, 6
    pe = P.sinusoidal_table(T, C)
    for t in range(T):
        for i in range(C // 2):
            np.testing.assert_allclose(pe[t, 2 * i], np.sin(t / 10000 ** (2 * i / C)), atol=1e-15)
            np.testing.assert_allclose(pe[t, 2 * i + 1], np.cos(t / 10000 ** (2 * i / C)), atol=1e-15)


def test_concatenated_layout_is_a_permutation_of_the_interleaved():
    pe = P.sinusoidal_table(9, 8)
    w = 10000.0 ** (-np.arange(0, 8, 2) / 8)  # (C/2,)
    t = np.arange(9)[:, None]
    concatenated = np.concatenate([np.sin(t * w), np.cos(t * w)], axis=1)  # sines first, then cosines
    perm = np.r_[0:8:2, 1:8:2]  # interleaved column of each concatenated column
    np.testing.assert_allclose(concatenated, pe[:, perm], atol=1e-15)


def test_a_shift_of_k_positions_is_one_linear_map():
    """PE[t + k] = PE[t] M_k for every t: a rotation of each (sin, cos) pair, the same for all t."""
    C, k = 6, 3
    pe = P.sinusoidal_table(20, C)
    w = 10000.0 ** (-np.arange(0, C, 2) / C)
    M = np.zeros((C, C))
    for i, wi in enumerate(w):  # [sin(a + b), cos(a + b)] = [sin a, cos a] [[cos b, -sin b], [sin b, cos b]]
        M[2 * i: 2 * i + 2, 2 * i: 2 * i + 2] = [[np.cos(k * wi), -np.sin(k * wi)], [np.sin(k * wi), np.cos(k * wi)]]
    np.testing.assert_allclose(pe[:-k] @ M, pe[k:], atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scale_embed_option_and_dtype(dtype):
    x = np.random.default_rng(0).standard_normal((2, 5, 16)).astype(dtype)
    pe = P.sinusoidal_table(5, 16, dtype)
    y_scaled, _ = P.sinusoidal_forward(x, scale_embed=True)
    y_plain, _ = P.sinusoidal_forward(x, scale_embed=False)
    assert y_scaled.dtype == y_plain.dtype == dtype
    np.testing.assert_allclose(y_scaled - pe, 4 * x, rtol=1e-6)  # sqrt(16) = 4
    np.testing.assert_allclose(y_plain - pe, x, rtol=1e-6, atol=1e-7)
    wpe = np.ones((8, 16), dtype)
    y, _ = P.learned_position_forward(x, wpe, scale_embed=True)
    assert y.dtype == dtype
    np.testing.assert_allclose(y - 1, 4 * x, rtol=1e-6)


POSITION_CASES = {
    "sinusoidal, scaled": (P.sinusoidal_forward, P.sinusoidal_backward, [(2, 5, 6)], {"scale_embed": True}),
    "sinusoidal, no batch": (P.sinusoidal_forward, P.sinusoidal_backward, [(5, 4)], {"scale_embed": False}),
    "learned, T < block_size": (P.learned_position_forward, P.learned_position_backward, [(3, 4, 2), (6, 2)],
                                {"scale_embed": True}),
    "learned, T = block_size": (P.learned_position_forward, P.learned_position_backward, [(2, 1, 5, 4), (5, 4)],
                                {"scale_embed": False}),
}


@pytest.mark.parametrize("name", POSITION_CASES)
def test_position_gradient(name):
    forward, backward, shapes, kwargs = POSITION_CASES[name]
    r = np.random.default_rng(1)
    errors = check_pair(forward, backward, [r.standard_normal(s) for s in shapes], ["x", "wpe"][: len(shapes)], kwargs)
    assert max(errors.values()) <= TOLERANCE, errors


def test_learned_rows_beyond_T_get_no_gradient():
    r = np.random.default_rng(2)
    y, cache = P.learned_position_forward(r.standard_normal((2, 3, 4)), r.standard_normal((6, 4)), scale_embed=False)
    dx, dwpe = P.learned_position_backward(np.ones_like(y), cache)
    assert not dwpe[3:].any() and np.all(dwpe[:3] == 2)  # two sequences used rows 0..2


def sinusoidal_scale_dropped(dy, cache):
    return dy


def learned_first_sequence_only(dy, cache):  # sums nothing: dwpe from sequence 0 alone
    scale, c_emb = cache
    return dy * scale, embedding_backward(dy[0], c_emb)[1]


def learned_rows_shifted(dy, cache):  # position t's gradient lands on row t + 1
    dx, dwpe = P.learned_position_backward(dy, cache)
    return dx, np.roll(dwpe, 1, axis=0)


POSITION_BROKEN = [("sinusoidal, scaled", sinusoidal_scale_dropped), ("learned, T < block_size", learned_rows_shifted),
                   ("learned, T < block_size", learned_first_sequence_only)]


@pytest.mark.parametrize("name,broken", POSITION_BROKEN, ids=[b.__name__ for _, b in POSITION_BROKEN])
def test_position_broken_backward_is_caught(name, broken):
    forward, _, shapes, kwargs = POSITION_CASES[name]
    r = np.random.default_rng(3)
    errors = check_pair(forward, broken, [r.standard_normal(s) for s in shapes], ["x", "wpe"][: len(shapes)], kwargs)
    assert max(errors.values()) > BROKEN, errors


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: P.sinusoidal_table(4, 5), "even width"),
        (lambda: P.sinusoidal_forward(np.ones(4), scale_embed=True), "at least 2 dimension"),
        (lambda: P.learned_position_forward(np.ones((1, 5, 4)), np.ones((4, 4)), scale_embed=False),
         "T = 5 exceeds the 4 learned positions"),
        (lambda: P.learned_position_forward(np.ones((1, 3, 4)), np.ones((4, 3)), scale_embed=False),
         "x must have last dimension 3"),
    ],
)
def test_bad_input_raises_clear_valueerror(call, match):
    with pytest.raises(ValueError, match=match):
        call()

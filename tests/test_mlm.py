"""The masked language model (§3.2): the 15% / 80-10-10 masking rule, padding,
bidirectional attention, float64 gradient checks of the whole model, broken
backwards caught, bad input."""

import numpy as np
import pytest

from minilm import mlm, optim
from minilm import transformer as TR
from minilm.cases import transformer as CT
from minilm.gradcheck import TOLERANCE

BROKEN = 1e-4
CFG = mlm.mlm_config(20, block_size=128, n_layer=1, n_head=2, n_embd=8)  # 20 ordinary ids, [MASK] = 20


def test_mlm_config_appends_the_mask_token():
    assert (CFG.vocab_size, CFG.mask_token, CFG.causal) == (21, 20, False)


def test_mask_tokens_rule():
    r = np.random.default_rng(0)
    ids = r.integers(0, 20, (64, 128))
    lengths = r.integers(1, 129, 64)
    pad = np.arange(128)[None, :] < lengths[:, None]  # (B, T)
    inputs, targets = mlm.mask_tokens(ids, CFG, np.random.default_rng(1), pad_mask=pad)
    chosen = targets != TR.IGNORE_INDEX
    np.testing.assert_array_equal(chosen.sum(1), np.maximum(1, np.round(0.15 * lengths)))  # exactly 15% of each
    assert not chosen[~pad].any()  # padding is never chosen
    np.testing.assert_array_equal(targets[chosen], ids[chosen])  # the answer is the original token
    np.testing.assert_array_equal(inputs[~chosen], ids[~chosen])  # nothing else changes
    n = chosen.sum()
    masked = (inputs == CFG.mask_token) & chosen
    kept = (inputs == ids) & chosen
    randomised = chosen & ~masked & ~kept  # a random token that differs from the original
    assert not (inputs[~chosen] == CFG.mask_token).any()
    assert (inputs[chosen] < CFG.mask_token).sum() == n - masked.sum()  # random ids are ordinary ids
    # 80 / 10 / 10; a random replacement equal to the original (1 in 20) counts as kept
    for count, p in ((masked.sum(), 0.8), (randomised.sum(), 0.1 * 19 / 20), (kept.sum(), 0.1 + 0.1 / 20)):
        assert abs(count / n - p) < 5 * np.sqrt(p * (1 - p) / n), (count / n, p)  # within 5 standard errors


def test_mask_tokens_is_seeded_and_handles_empty_rows():
    ids = np.arange(12).reshape(2, 6) % 20
    pad = np.array([[True] * 6, [False] * 6])
    a = mlm.mask_tokens(ids, CFG, np.random.default_rng(3), pad_mask=pad)
    b = mlm.mask_tokens(ids, CFG, np.random.default_rng(3), pad_mask=pad)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert (a[1][1] == TR.IGNORE_INDEX).all()  # an all-padding row has nothing to predict
    assert (a[1][0] != TR.IGNORE_INDEX).sum() == 1  # round(0.15 * 6) = 1


def test_masked_lm_sees_both_sides():
    params = TR.init_params(CFG, np.random.default_rng(4), np.float64)
    idx = np.random.default_rng(5).integers(0, 20, (2, 6))
    idx2 = idx.copy()
    idx2[:, 4:] = (idx2[:, 4:] + 1) % 20
    a, _ = TR.forward(params, CFG, idx)
    b, _ = TR.forward(params, CFG, idx2)
    assert not np.allclose(a[:, :4], b[:, :4])  # earlier positions read the later words
    w = TR.attention_maps(TR.forward(params, CFG, idx)[1])
    assert (w[..., 0, 1:] > 0).all()  # position 0 attends to the future


def test_masked_lm_gradient_every_entry():
    m = CT.masked_lm()
    errors = m.check(m.inputs())
    assert {e[1:].split("=")[0] for e in errors} == set(TR.param_shapes(m.cfg))
    assert max(errors.values()) <= TOLERANCE, errors


def test_deep_masked_lm_gradient_along_directions():
    m = CT.masked_lm(n_layer=3)
    errors = m.check_directions(m.inputs(every_entry=False))
    assert max(errors.values()) <= TOLERANCE, errors


def unmasked_positions_counted(m, drawn, params):
    """The gradient of the loss over every real position, not only the chosen ones."""
    params_, idx, targets, pad = drawn
    original = np.where(targets != TR.IGNORE_INDEX, targets, idx)
    return TR.loss_and_grads(params, m.cfg, idx, original, pad_mask=pad)[1]


def padding_attended(m, drawn, params):
    """The gradient of the model run without its key-padding mask."""
    _, idx, targets, pad = drawn
    return TR.loss_and_grads(params, m.cfg, idx, np.where(pad, targets, TR.IGNORE_INDEX))[1]


@pytest.mark.parametrize("broken", [unmasked_positions_counted, padding_attended])
def test_masked_lm_broken_gradient_is_caught(broken):
    m = CT.masked_lm()
    errors = m.check(m.inputs(), backward=lambda drawn, p: broken(m, drawn, p), max_entries=3)
    assert max(errors.values()) > BROKEN, errors


def test_masked_lm_learns_to_fill_a_blank_from_the_right():
    """Sequences a, a+1, a+2, ... (mod 20).  A blank at position 0 has no left context: only the
    words after it tell that it is (right neighbour - 1).  150 steps take it from chance (1/20)
    to well above half right, which only a model that reads to the right can do."""
    cfg = mlm.mlm_config(20, block_size=8, n_layer=1, n_head=2, n_embd=16)
    r = np.random.default_rng(6)
    params = TR.init_params(cfg, r)
    state = optim.init_state(params)

    def batch(n):
        return (r.integers(0, 20, (n, 1)) + np.arange(8)) % 20  # (n, 8)

    for _ in range(150):
        inputs, targets = mlm.mask_tokens(batch(32), cfg, r)
        _, grads = TR.loss_and_grads(params, cfg, inputs, targets)
        optim.adamw_step(params, grads, state, 1e-2, weight_decay=0.0)
    ids = batch(200)
    inputs = ids.copy()
    inputs[:, 0] = cfg.mask_token
    filled = mlm.fill_masks(params, cfg, inputs)
    assert (filled[:, 0] == ids[:, 0]).mean() > 0.5
    np.testing.assert_array_equal(filled[:, 1:], ids[:, 1:])  # only the blank is filled


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: mlm.mask_tokens(np.zeros((2, 3), int), TR.TransformerConfig(vocab_size=5), np.random.default_rng(0)),
         "no mask_token"),
        (lambda: mlm.mask_tokens(np.full((2, 3), 20), CFG, np.random.default_rng(0)), r"already contain the \[MASK\]"),
        (lambda: mlm.mask_tokens(np.zeros((2, 3), int), CFG, np.random.default_rng(0), rate=0.0), r"rate must be"),
        (lambda: mlm.mask_tokens(np.zeros(3, int), CFG, np.random.default_rng(0)), r"\(B, T\) array"),
        (lambda: mlm.mask_tokens(np.zeros((2, 3), int), CFG, np.random.default_rng(0), pad_mask=np.ones((2, 2))),
         "pad_mask must have the shape"),
        (lambda: mlm.mask_tokens(np.full((1, 2), 21), CFG, np.random.default_rng(0)), r"token id 21 is outside"),
    ],
)
def test_bad_input_raises_clear_valueerror(call, match):
    with pytest.raises(ValueError, match=match):
        call()

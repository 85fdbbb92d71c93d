"""Fine-tuning the masked-LM encoder: the classifier's backward, pre-trained weights, the comparison task."""

import numpy as np
import pytest

from minilm import finetune as F
from minilm import mlm, optim
from minilm import transformer as TR
from minilm.cases import finetune as CF
from minilm.gradcheck import TOLERANCE
from minilm.tasks import compare as T


def test_checker_catches_broken_backwards(monkeypatch):
    m = CF.post_ln()
    drawn = m.inputs()
    keys = ["wte", "h0.attn.W_v", "pool.W", "cls.W"]
    assert max(m.check(drawn, keys=keys).values()) <= TOLERANCE

    def tanh_slope_dropped(drawn, p):  # dz = dpooled instead of dpooled (1 - pooled^2)
        monkeypatch.setattr(F, "tanh_backward", lambda dy, cache: dy)
        try:
            return m.grads(drawn, p)
        finally:
            monkeypatch.undo()

    errors = m.check(drawn, grads_of=tanh_slope_dropped, keys=keys)
    assert errors["dpool.W"] > 1e-4 and errors["dwte"] > 1e-4 and errors["dcls.W"] <= TOLERANCE

    def wrong_position(drawn, p):  # the gradient put at the last position instead of [CLS]'s
        real = F.encoder_backward
        monkeypatch.setattr(F, "encoder_backward", lambda dh, cache: real(np.roll(dh, -1, axis=1), cache))
        try:
            return m.grads(drawn, p)
        finally:
            monkeypatch.undo()

    errors = m.check(drawn, grads_of=wrong_position, keys=keys)
    assert errors["dwte"] > 1e-4 and errors["dh0.attn.W_v"] > 1e-4 and errors["dpool.W"] <= TOLERANCE


@pytest.mark.parametrize("kw", [{}, {"norm": "pre", "ffn": "gelu", "pos": "learned", "scale_embed": False}])
def test_encoder_is_the_masked_lms_forward_without_its_head(kw):
    cfg = mlm.mlm_config(6, block_size=8, n_layer=2, n_head=2, n_embd=8, **kw)
    p = TR.init_params(cfg, np.random.default_rng(0), np.float64)
    idx, pad = np.array([[1, 3, 4, 5], [1, 2, 0, 0]]), np.array([[1, 1, 1, 1], [1, 1, 0, 0]], bool)
    _, cache = TR.forward(p, cfg, idx, pad_mask=pad)
    h, _ = F.encoder_forward(p, cfg, idx, pad_mask=pad)
    np.testing.assert_array_equal(h, cache["head"][0])  # the input of the LM head's linear layer


def test_from_pretrained_keeps_the_encoder_and_adds_a_head():
    cfg = mlm.mlm_config(len(T.VOCAB), block_size=8, n_layer=1, n_head=2, n_embd=8)
    p = TR.init_params(cfg, np.random.default_rng(0))
    fp, fcfg = F.from_pretrained(p, cfg, np.random.default_rng(1), n_classes=3)
    assert set(fp) == set(F.param_shapes(fcfg)) and not any(k.startswith("lm_head") for k in fp)
    assert all(np.array_equal(fp[k], p[k]) and fp[k] is not p[k] for k in p if not k.startswith("lm_head"))
    assert fcfg.n_classes == 3 and fcfg.mask_token == cfg.mask_token and fp["cls.W"].shape == (8, 3)
    assert all(v.dtype == np.float32 for v in fp.values())
    with pytest.raises(ValueError, match="bidirectional"):
        F.from_pretrained(p, TR.TransformerConfig(vocab_size=15), np.random.default_rng(1))


def test_classifier_reads_the_whole_sentence_but_not_the_padding():
    cfg = F.ClassifierConfig(vocab_size=15, block_size=8, n_layer=1, n_head=2, n_embd=8)
    p = F.init_params(cfg, np.random.default_rng(0), np.float64)
    ids, pad = T.encode([T.statement(17, 9, ">"), T.statement(5, 6, "<")])
    a, _ = F.forward(p, cfg, ids, pad_mask=pad)
    junk = np.where(pad, ids, 7)  # other ids at the padded positions
    np.testing.assert_allclose(F.forward(p, cfg, junk, pad_mask=pad)[0], a, rtol=0, atol=1e-12)
    other, _ = F.forward(p, cfg, T.encode([T.statement(17, 8, ">"), T.statement(5, 6, "<")])[0], pad_mask=pad)
    assert not np.allclose(other[0], a[0]) and np.allclose(other[1], a[1])  # a change at the end reaches [CLS]


def test_bad_input_is_named():
    cfg = F.ClassifierConfig(vocab_size=15, block_size=8, n_layer=1, n_head=2, n_embd=8)
    p = F.init_params(cfg, np.random.default_rng(0))
    with pytest.raises(ValueError, match="targets: token id 2 is outside"):
        F.loss_and_grads(p, cfg, np.array([[1, 3]]), np.array([2]))
    with pytest.raises(ValueError, match="n_classes"):
        F.ClassifierConfig(vocab_size=15, n_classes=1)
    with pytest.raises(ValueError, match="block_size"):
        F.forward(p, cfg, np.ones((1, 9), np.int64))
    with pytest.raises(ValueError, match=r"params\['cls.W'\]"):
        F.forward({k: v for k, v in p.items() if k != "cls.W"}, cfg, np.array([[1, 3]]))


def test_fine_tuning_fits_a_small_labelled_set():
    cfg = F.ClassifierConfig(vocab_size=len(T.VOCAB) + 1, block_size=8, n_layer=1, n_head=2, n_embd=16)
    p = F.init_params(cfg, np.random.default_rng(0))
    pairs = T.split_pairs(99, 0.2, 0)[0][:32]
    x, pad, y = T.labelled_statements(pairs, np.random.default_rng(1))
    state = optim.init_state(p)
    first = F.loss(p, cfg, x, y, pad_mask=pad)
    for _ in range(120):
        loss, grads = F.loss_and_grads(p, cfg, x, y, pad_mask=pad)
        assert np.any(grads["h0.attn.W_q"] != 0)  # the encoder learns too
        optim.adamw_step(p, grads, state, lr=3e-3, weight_decay=0.0)
    assert loss < 0.2 * first and F.accuracy(p, cfg, x, y, pad_mask=pad) == 1.0


# ---- the comparison task ----


def test_statements_and_labels():
    assert T.statement(17, 9, ">") == ["[CLS]", "1", "7", ">", "9"]
    assert T.is_true(17, 9, ">") and not T.is_true(17, 9, "<") and T.is_true(9, 17, "<")
    ids, pad = T.encode([T.statement(17, 9, ">"), T.statement(5, 6, "<")])
    assert ids.shape == (2, 5) and ids[0, 0] == T.CLS and pad.tolist() == [[True] * 5, [True] * 4 + [False]]
    with pytest.raises(ValueError, match="sign"):
        T.statement(1, 2, "=")


def test_pairs_split_by_unordered_pair_and_data_are_right():
    train, held = T.split_pairs(99, held_out=0.2, seed=0)
    assert len(train) + len(held) == 100 * 99 // 2 and len(held) == 990
    assert (train[:, 0] < train[:, 1]).all() and not {tuple(r) for r in train} & {tuple(r) for r in held}
    rng = np.random.default_rng(0)
    ids, pad = T.true_statements(held, rng)
    for row, keep in zip(ids, pad, strict=True):
        text = "".join(T.VOCAB.decode(row[keep][1:]))
        a, sign, b = text.partition("<") if "<" in text else text.partition(">")
        assert T.is_true(int(a), int(b), sign)
    ids, pad, labels = T.labelled_statements(held, rng)
    assert 0.45 < labels.mean() < 0.55
    for row, keep, label in zip(ids, pad, labels, strict=True):
        text = "".join(T.VOCAB.decode(row[keep][1:]))
        a, sign, b = text.partition("<") if "<" in text else text.partition(">")
        assert T.is_true(int(a), int(b), sign) == bool(label)


def test_experiment_reports_both_arms_on_held_out_pairs():
    from minilm.training.transfer import experiment

    report, mlm_params, cfg = experiment(max_number=30, pretrain_steps=4, finetune_steps=3, label_sizes=(8, 16),
                                         test_size=50, width=8, layers=1, heads=2, log=lambda *a: None)
    assert [r["labels"] for r in report["rows"]] == [8, 16] and report["test_statements"] == 50
    for r in report["rows"]:
        for arm in ("pretrained", "scratch"):
            assert 0 <= r[arm]["test_accuracy"] <= 1 and r[arm]["steps"] == 3
    assert len(report["mlm_loss"]) == 4 and set(mlm_params) == set(TR.param_shapes(cfg))

"""KV-cache decoding: cached logits equal a full recomputation at every step, in float64.

The error is relative in the max norm, max|cached - full| / max|full|, over
the V logits of each step.  1e-12 is about 10^4 float64 roundings: the two
paths sum the same products in different orders, nothing more.
"""

import numpy as np
import pytest

from minilm import generate
from minilm import positional as P
from minilm import seq2seq as S
from minilm import transformer as M
from minilm.translate import beam_search, greedy_decode

TOL = 1e-12


def rel(a, b) -> float:
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def lm(seed=0, **kw):
    cfg = M.TransformerConfig(**{"vocab_size": 23, "block_size": 256, "n_layer": 2, "n_head": 4, "n_embd": 32,
                                 "dropout": 0.0, **kw})
    params = M.init_params(cfg, np.random.default_rng(seed), dtype=np.float64)
    if cfg.norm == "pre":  # LayerNorm gains and biases away from 1 and 0, so a wrong one would show
        rng = np.random.default_rng(seed + 1)
        params = {k: v + 0.1 * rng.standard_normal(v.shape) for k, v in params.items()}
    return cfg, params


CONFIGS = {
    "learned, pre-LN, GELU, tied (GPT-2)": dict(pos="learned", norm="pre", ffn="gelu", tie_weights=True,
                                               scale_embed=False, head_bias=False),
    "sinusoidal, post-LN, ReLU (the text)": dict(pos="sinusoidal", norm="post", ffn="relu"),
    "sinusoidal, pre-LN, GELU": dict(pos="sinusoidal", norm="pre", ffn="gelu"),
    "learned, post-LN, ReLU": dict(pos="learned", norm="post", ffn="relu"),
    "attention only, learned, pre-LN": dict(pos="learned", norm="pre", ffn="none"),
}


def generate_both(cfg, params, prompt, n_tokens, rng, keep=None):
    """Sample n_tokens with the cache; at each step also recompute the window. Returns the ids and the errors."""
    errors, windows = [], []
    step = generate.cached_next(lambda x, past: M.forward_cached(params, cfg, x, past), cfg.block_size, keep)

    def both(history, carry):
        z, carry = step(history, carry)
        start = generate.window_start(len(history), cfg.block_size, cfg.block_size // 2 if keep is None else keep)
        window = history[start:][None, :]  # (1, t)
        full = M.forward(params, cfg, window)[0][0, -1]  # (V,)
        errors.append(rel(z, full))
        windows.append(window.shape[1])
        return z, carry

    ids = generate.generate(both, prompt, n_tokens, rng, temperature=1.0)
    return ids, np.array(errors), windows


@pytest.mark.parametrize("name", list(CONFIGS))
def test_cached_logits_equal_recomputed_ones_for_200_tokens(name, rng):
    cfg, params = lm(**CONFIGS[name])
    ids, errors, windows = generate_both(cfg, params, np.array([3, 1, 4, 1, 5]), 200, rng)
    assert len(ids) == 205 and len(errors) == 200
    assert windows[-1] == 204  # no crop: every step read the whole history
    assert errors.max() <= TOL, f"worst step {errors.argmax()}: {errors.max():.2e}"


def test_a_whole_prompt_at_once_and_in_pieces_agree():
    cfg, params = lm(**CONFIGS["sinusoidal, post-LN, ReLU (the text)"])
    idx = np.random.default_rng(5).integers(0, cfg.vocab_size, (3, 40))  # (B, T), a batch of three
    full, _ = M.forward(params, cfg, idx)  # (B, T, V)
    a, past = M.forward_cached(params, cfg, idx[:, :17])  # (B, 17, V)
    b, past = M.forward_cached(params, cfg, idx[:, 17:30], past)  # (B, 13, V): 13 new after 17 cached
    c, past = M.forward_cached(params, cfg, idx[:, 30:], past)
    assert rel(np.concatenate([a, b, c], axis=1), full) <= TOL
    assert [K.shape for K, V in past] == [(3, 4, 40, 8)] * cfg.n_layer  # (B, H, t, hs) per layer


def test_the_check_catches_a_cache_at_the_wrong_positions(monkeypatch, rng):
    """The same check fails when the new token gets position 0 instead of t (start ignored)."""
    cfg, params = lm(**CONFIGS["sinusoidal, post-LN, ReLU (the text)"])
    original = P.sinusoidal_forward
    monkeypatch.setattr(M, "sinusoidal_forward", lambda x, scale_embed, start=0: original(x, scale_embed=scale_embed))
    _, errors, _ = generate_both(cfg, params, np.array([3, 1, 4]), 20, rng)
    assert errors[0] <= TOL  # the first step reads the prompt at positions 0.. either way
    assert errors[1:].min() > 1e-3


def test_the_check_catches_a_cache_that_drops_a_key(rng):
    cfg, params = lm(**CONFIGS["learned, pre-LN, GELU, tied (GPT-2)"])

    def forgetful(x, past):  # keeps all but the first cached position
        past = None if past is None else [(K[:, :, 1:], V[:, :, 1:]) for K, V in past]
        return M.forward_cached(params, cfg, x, past)

    step = generate.cached_next(forgetful, cfg.block_size)
    ids = np.array([3, 1, 4, 1, 5])
    z, carry = step(ids, None)
    z, carry = step(np.append(ids, 2), carry)
    assert rel(z, M.forward(params, cfg, np.append(ids, 2)[None])[0][0, -1]) > 1e-3


# ---- contexts longer than block_size: crop to the last `keep` tokens and recompute ----


def test_window_start_follows_its_formula():
    T, keep = 8, 3
    starts = [generate.window_start(n, T, keep) for n in range(1, 30)]
    lengths = [n - s for n, s in zip(range(1, 30), starts, strict=True)]
    assert starts[:8] == [0] * 8 and max(lengths) == T and min(lengths[8:]) == keep
    assert lengths[8:20] == [3, 4, 5, 6, 7, 8, 3, 4, 5, 6, 7, 8]  # crop every T + 1 - keep = 6 tokens
    assert [generate.window_start(n, T) for n in (5, 9, 20)] == [0, 1, 12]  # keep = T: the last T tokens
    with pytest.raises(ValueError, match="keep"):
        generate.window_start(10, T, 9)


@pytest.mark.parametrize("name", ["learned, pre-LN, GELU, tied (GPT-2)", "sinusoidal, post-LN, ReLU (the text)"])
def test_past_block_size_the_cache_equals_the_recomputed_window(name, rng):
    cfg, params = lm(**{**CONFIGS[name]}, block_size=16)
    ids, errors, windows = generate_both(cfg, params, np.array([2, 7]), 60, rng, keep=5)
    assert max(windows) == 16 and min(windows[20:]) == 5  # it did crop, many times
    assert errors.max() <= TOL
    # and the sampled text is the one window_next (the reference, no cache) gives with the same windows
    ref = generate.window_next(lambda x: M.forward(params, cfg, x)[0], cfg.block_size, keep=5)
    again = generate.generate(ref, np.array([2, 7]), 60, np.random.default_rng(1234), temperature=1.0)
    np.testing.assert_array_equal(again, ids)


def test_forward_cached_refuses_what_it_cannot_do():
    cfg, params = lm(block_size=8)
    _, past = M.forward_cached(params, cfg, np.zeros((1, 6), np.int64))
    with pytest.raises(ValueError, match="exceed block_size"):
        M.forward_cached(params, cfg, np.zeros((1, 3), np.int64), past)
    mcfg = M.TransformerConfig(vocab_size=23, causal=False)
    with pytest.raises(ValueError, match="causal"):
        M.forward_cached(M.init_params(mcfg, np.random.default_rng(0)), mcfg, np.zeros((1, 3), np.int64))


# ---- the seq2seq decoder's self-attention ----


def s2s(norm, seed=0):
    cfg = S.Seq2SeqConfig(vocab_size=13, src_vocab_size=11, block_size=24, n_layer=2, n_dec_layer=2, n_head=2,
                          n_embd=16, norm=norm)
    return cfg, S.init_params(cfg, np.random.default_rng(seed), dtype=np.float64)


@pytest.mark.parametrize("norm", ["post", "pre"])
def test_seq2seq_cached_logits_equal_recomputed_ones_in_greedy_and_beam_search(norm):
    cfg, params = s2s(norm)
    src = np.array([[3, 4, 5, 6, 2], [5, 8, 3, 0, 0], [7, 7, 0, 0, 0]])  # (n, S), padded with 0
    errors = []

    def checked(fn_cached, fn_full):
        def next_logits(prefix, rows):
            z = fn_cached(prefix, rows)
            errors.append(rel(z, fn_full(prefix, rows)))
            return z

        return next_logits

    full = S.next_logits_fn(params, cfg, src, cache=False)
    cached = S.next_logits_fn(params, cfg, src)
    g = greedy_decode(checked(cached, full), 3, 1, 2, max_len=20)  # bos 1, eos 2: random weights rarely stop
    b = beam_search(checked(cached, full), 3, 1, 2, max_len=20, beam_size=4)
    assert len(errors) >= 30 and max(errors) <= TOL
    np.testing.assert_array_equal(g, greedy_decode(full, 3, 1, 2, max_len=20))
    np.testing.assert_array_equal(b, beam_search(full, 3, 1, 2, max_len=20, beam_size=4))


def test_seq2seq_cache_is_per_source_row():
    """Two sentences with one prefix: each row's cache holds its own keys (cross-attention differs)."""
    cfg, params = s2s("post", seed=4)
    src = np.array([[3, 4, 5], [6, 8, 9]])
    cached, full = S.next_logits_fn(params, cfg, src), S.next_logits_fn(params, cfg, src, cache=False)
    p1 = np.array([[1], [1]])
    cached(p1, np.array([0, 1]))
    p2 = np.array([[1, 5], [1, 5]])
    assert rel(cached(p2, np.array([1, 0])), full(p2, np.array([1, 0]))) <= TOL  # rows swapped


# ---- the sample command ----


def test_sample_with_and_without_the_cache_prints_the_same_text(tmp_path, capsys):
    from minilm.cli import main

    corpus = tmp_path / "text.txt"
    corpus.write_text("the cat sat on the mat and the dog sat on the log. " * 40)
    out = tmp_path / "run"
    assert main(["train", "--data", str(corpus), "--out", str(out), "--steps", "20", "--block-size", "16",
                 "--width", "16", "--layers", "1", "--heads", "2", "--positions", "learned", "--quiet"]) == 0
    capsys.readouterr()
    texts = []
    for flag in ("--cache", "--no-cache"):  # 60 new tokens: past block_size 16, several crops
        assert main(["sample", "--checkpoint", str(out / "checkpoint.npz"), "--prompt", "the ", "--tokens", "60",
                     "--seed", "3", flag]) == 0
        texts.append(capsys.readouterr().out)
    assert texts[0] == texts[1] and len(texts[0].rstrip("\n")) == 64

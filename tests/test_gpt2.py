"""GPT-2 checkpoints in and out (minilm.hub.gpt2, ``minilm export``, ``sample --from-hf``, ``train --init-from``).

The first half needs NumPy and safetensors only.  The second half checks
against Hugging Face transformers (skipped without it and torch): a random
GPT2LMHeadModel read by minilm, and a minilm-trained model read by
GPT2LMHeadModel.from_pretrained.  Relative errors are in the max norm over
all logits, max|a - b| / max|b|.
"""

import json

import numpy as np
import pytest

from minilm import generate
from minilm import transformer as M
from minilm.bpe import BPETokenizer
from minilm.cli import main
from minilm.hub import gpt2 as G

pytest.importorskip("safetensors")

TEXT = ("The cat sat on the mat, and the dog sat on the log. 三千零四十二年，语言模型读了很多书。 "
        "A rose is a rose is a rose. ") * 20
GPT2_FLAGS = ["--norm", "pre", "--activation", "gelu", "--positions", "learned", "--no-scale-embed",
              "--tie-weights", "--no-head-bias"]


def rel(a, b) -> float:
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.fixture(scope="module")
def tok():
    return BPETokenizer.train(TEXT, 300)


def gpt2_like(tok, dtype=np.float32, seed=0, **kw):
    cfg = M.TransformerConfig(vocab_size=tok.vocab_size, block_size=48, n_layer=2, n_head=4, n_embd=32, ffn="gelu",
                              norm="pre", pos="learned", scale_embed=False, tie_weights=True, head_bias=False, **kw)
    rng = np.random.default_rng(seed)
    params = {k: v + (0.1 * rng.standard_normal(v.shape)).astype(dtype)  # LayerNorm and biases away from 1 and 0
              for k, v in M.init_params(cfg, rng, dtype).items()}
    return cfg, params


# ---- without transformers ----


def test_save_and_load_give_back_every_parameter_exactly(tok, tmp_path):
    cfg, params = gpt2_like(tok)
    written = G.save(tmp_path / "hf", params, cfg, tok)
    assert sorted(p.name for p in written) == ["config.json", "merges.txt", "model.safetensors", "vocab.json"]
    cfg2, params2, tok2 = G.load(tmp_path / "hf")
    assert cfg2 == cfg and sorted(params2) == sorted(params)
    for k in params:
        np.testing.assert_array_equal(params2[k], params[k], err_msg=k)
    assert tok2.encode(TEXT[:200]).tolist() == tok.encode(TEXT[:200]).tolist()
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["activation_function"] == "gelu_new" and config["layer_norm_epsilon"] == 1e-5
    assert (config["n_layer"], config["n_head"], config["n_embd"], config["n_positions"]) == (2, 4, 32, 48)


def test_the_fused_attention_weight_holds_q_k_v_side_by_side(tok):
    cfg, params = gpt2_like(tok)
    t = G.to_gpt2(params, cfg)
    C = cfg.n_embd
    w = t["h.1.attn.c_attn.weight"]  # (C, 3C)
    assert w.shape == (C, 3 * C) and t["h.1.mlp.c_fc.weight"].shape == (C, 4 * C)
    np.testing.assert_array_equal(w[:, C:2 * C], params["h1.attn.W_k"])  # keys in the middle third
    np.testing.assert_array_equal(t["h.1.attn.c_attn.bias"][2 * C:], params["h1.attn.b_v"])
    assert "lm_head.weight" not in t  # tied: wte is the output layer


def test_minilm_gelu_is_gpt2s_tanh_form():
    from minilm.activations import gelu_forward

    x = np.linspace(-6, 6, 1001)
    gelu_new = 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))  # GPT-2's formula
    assert np.max(np.abs(gelu_forward(x)[0] - gelu_new)) < 1e-15
    from math import erf

    exact = np.array([0.5 * v * (1 + erf(v / np.sqrt(2))) for v in x])  # 'gelu', which GPT-2 does not use
    assert np.max(np.abs(gelu_forward(x)[0] - exact)) > 1e-4


@pytest.mark.parametrize("change,named", [
    (dict(norm="post"), "post-LN"), (dict(ffn="relu"), "ReLU"), (dict(pos="sinusoidal"), "sinusoidal positions"),
    (dict(tie_weights=False), "untied output layer"), (dict(head_bias=True), "output bias"),
    (dict(scale_embed=True), "sqrt(C)"), (dict(ffn="none"), "attention-only"), (dict(causal=False), "bidirectional"),
])
def test_any_other_architecture_is_refused_in_one_line_naming_it(tok, tmp_path, change, named):
    cfg, params = gpt2_like(tok)
    import dataclasses

    cfg = dataclasses.replace(cfg, **change)
    with pytest.raises(ValueError, match="not a GPT-2") as e:
        G.save(tmp_path / "hf", M.init_params(cfg, np.random.default_rng(0)), cfg, tok)
    assert named in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "hf").exists()  # nothing written


def test_a_character_tokenizer_is_refused_before_anything_is_written(tok, tmp_path):
    from minilm.training.data import CharTokenizer

    chars = CharTokenizer.build(TEXT)
    cfg, params = gpt2_like(chars)
    with pytest.raises(ValueError, match="byte-level BPE; this model's tokenizer is 'char'"):
        G.save(tmp_path / "hf", params, cfg, chars)
    assert not (tmp_path / "hf").exists()


def test_an_existing_export_is_never_overwritten(tok, tmp_path):
    cfg, params = gpt2_like(tok)
    G.save(tmp_path / "hf", params, cfg, tok)
    before = (tmp_path / "hf" / "model.safetensors").read_bytes()
    with pytest.raises(ValueError, match="already holds config.json"):
        G.save(tmp_path / "hf", params, cfg, tok)
    assert (tmp_path / "hf" / "model.safetensors").read_bytes() == before


def damaged(tmp_path, tok, config=None, tensors=None):
    """A GPT-2 directory with config.json fields replaced and tensors replaced (None: removed)."""
    from safetensors.numpy import load_file, save_file

    cfg, params = gpt2_like(tok)
    d = tmp_path / "hf"
    G.save(d, params, cfg, tok)
    c = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**c, **(config or {})}))
    t = load_file(str(d / "model.safetensors"))
    for k, v in (tensors or {}).items():
        t.pop(k) if v is None else t.__setitem__(k, v)
    save_file(t, str(d / "model.safetensors"), metadata={"format": "pt"})
    return d


@pytest.mark.parametrize("config,tensors,match", [
    (None, {"transformer.h.1.mlp.c_fc.bias": None}, "missing tensor h.1.mlp.c_fc.bias"),
    (None, {"transformer.h.0.attn.c_attn.weight": np.zeros((32, 64), np.float32)},
     r"tensor h.0.attn.c_attn.weight has shape \(32, 64\), config.json says \(32, 96\)"),
    (None, {"transformer.h.0.attn.extra": np.zeros(3, np.float32)}, "tensor h.0.attn.extra has no place"),
    (None, {"lm_head.weight": np.ones((300, 32), np.float32)}, "tensor lm_head.weight has no place"),
    ({"n_layer": 3}, None, "missing tensor h.2.ln_1.weight"),
    ({"activation_function": "gelu"}, None, "unsupported activation_function 'gelu'"),
    ({"layer_norm_epsilon": 1e-6}, None, "unsupported layer_norm_epsilon"),
    ({"n_inner": 100}, None, "unsupported n_inner 100"),
    ({"scale_attn_by_inverse_layer_idx": True}, None, "unsupported scale_attn_by_inverse_layer_idx"),
    ({"tie_word_embeddings": False}, None, "unsupported tie_word_embeddings"),
    ({"model_type": "llama"}, None, "model_type 'llama' is not 'gpt2'"),
])
def test_a_mismatch_is_a_one_line_error(tok, tmp_path, config, tensors, match):
    d = damaged(tmp_path, tok, config, tensors)
    with pytest.raises(ValueError, match=match) as e:
        G.load(d)
    assert "\n" not in str(e.value)


def train_and_export(tmp_path, steps: int, block: int, width: int):
    """``minilm train`` a GPT-2-shaped BPE model on TEXT into tmp_path/run, then ``export --format hf`` it
    into tmp_path/hf; returns the run folder (both commands must succeed)."""
    data = tmp_path / "text.txt"
    data.write_text(TEXT, encoding="utf-8")
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(run), "--steps", str(steps), "--block-size", str(block),
                 "--width", str(width), "--layers", "2", "--heads", "4", *GPT2_FLAGS, "--tokenizer", "bpe",
                 "--vocab-size", "300", "--quiet"]) == 0
    assert main(["export", "--format", "hf", "--checkpoint", str(run / "checkpoint.npz"), str(tmp_path / "hf")]) == 0
    return run


def test_the_command_line_exports_samples_and_fine_tunes(tmp_path, capsys):
    run = train_and_export(tmp_path, steps=8, block=24, width=32)
    ck, data = str(run / "checkpoint.npz"), tmp_path / "text.txt"
    capsys.readouterr()
    outs = []
    for source in (["--checkpoint", ck], ["--from-hf", str(tmp_path / "hf")]):
        assert main(["sample", *source, "--prompt", "The cat", "--tokens", "30", "--seed", "2"]) == 0
        outs.append(capsys.readouterr().out)
    assert outs[0] == outs[1] and outs[0].startswith("The cat")  # the same model, read from either
    ft = tmp_path / "ft"
    assert main(["train", "--init-from", str(tmp_path / "hf"), "--data", str(data), "--out", str(ft), "--steps", "4",
                 "--block-size", "16", "--quiet"]) == 0
    from minilm.training.adapters import load_run

    tuned = load_run(ft / "checkpoint.npz")
    assert tuned.cfg.block_size == 24 and tuned.cfg.head_bias is False and tuned.tokenizer.kind == "bpe"
    start = G.load(tmp_path / "hf")[1]
    assert any(not np.array_equal(tuned.params[k], start[k]) for k in start)  # it trained from those weights
    # the same fine-tuning with --fast (GPT-2's head has no bias): the same steps, to float32 rounding
    assert main(["train", "--init-from", str(tmp_path / "hf"), "--data", str(data), "--out", str(tmp_path / "ftf"),
                 "--steps", "4", "--block-size", "16", "--quiet", "--fast"]) == 0
    fast = load_run(tmp_path / "ftf" / "checkpoint.npz")
    assert set(fast.params) == set(tuned.params) and "lm_head.b" not in fast.params
    diff = {k: float(np.abs(fast.params[k] - tuned.params[k]).max()) for k in tuned.params}
    assert max(d for k, d in diff.items() if not k.endswith("attn.b_k")) < 1e-5, diff  # b_k: tests/test_fast_gpt.py
    # bad input: one line, exit status 2
    assert main(["export", "--checkpoint", ck, str(tmp_path / "hf")]) == 2
    assert main(["train", "--init-from", str(tmp_path / "hf"), "--data", str(data), "--out", str(tmp_path / "x"),
                 "--width", "64"]) == 2
    assert main(["train", "--init-from", str(tmp_path / "hf"), "--data", str(data), "--out", str(tmp_path / "x"),
                 "--block-size", "100"]) == 2
    assert main(["sample", "--from-hf", str(tmp_path / "nowhere")]) == 2
    assert main(["sample"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 5 and all(line.startswith("minilm ") and "error" in line for line in err), err
    assert "already holds" in err[0] and "--width comes from" in err[1] and "exceeds the 24 positions" in err[2]


def test_export_refuses_a_model_that_is_not_a_gpt2(tmp_path, capsys):
    data = tmp_path / "text.txt"
    data.write_text(TEXT, encoding="utf-8")
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "run"), "--steps", "2", "--block-size", "16",
                 "--width", "16", "--layers", "1", "--heads", "2", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["export", "--checkpoint", str(tmp_path / "run" / "checkpoint.npz"), str(tmp_path / "hf")]) == 2
    err = capsys.readouterr().err.strip()
    assert "post-LN" in err and "ReLU" in err and "sinusoidal" in err and "untied" in err and "\n" not in err
    assert not (tmp_path / "hf").exists()


# ---- against Hugging Face transformers ----


@pytest.fixture(scope="module")
def hf():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.set_num_threads(1)
    return torch, transformers


def hf_logits(torch, model, ids):
    with torch.no_grad():
        return model(torch.tensor(ids)).logits.numpy()


def test_a_random_gpt2_from_transformers_runs_in_minilm(hf, tok, tmp_path):
    torch, transformers = hf
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=tok.vocab_size, n_positions=64, n_embd=64, n_layer=2, n_head=4,
                                     bos_token_id=None, eos_token_id=None)
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # LayerNorm and biases start at 1 and 0: move them, so a swapped one would show
        for name, p in model.named_parameters():
            if name.endswith("bias") or ".ln_" in name:
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(tmp_path / "hf")
    tok.save_hf(tmp_path / "hf")
    ids = tok.encode(TEXT[:150])[None, :50]  # (1, 50): English and Chinese
    cfg, p32, _ = G.load(tmp_path / "hf", np.float32)
    assert rel(M.forward(p32, cfg, ids)[0], hf_logits(torch, model, ids)) <= 1e-5
    cfg, p64, _ = G.load(tmp_path / "hf", np.float64)
    ref64 = hf_logits(torch, model.double(), ids)
    assert rel(M.forward(p64, cfg, ids)[0], ref64) <= 1e-10
    # a deliberately wrong reading fails the same check: c_attn's keys and values swapped
    bad = dict(p64, **{"h0.attn.W_k": p64["h0.attn.W_v"], "h0.attn.W_v": p64["h0.attn.W_k"]})
    assert rel(M.forward(bad, cfg, ids)[0], ref64) > 1e-3


def test_a_minilm_trained_model_runs_in_transformers(hf, tmp_path, capsys):
    torch, transformers = hf
    run = train_and_export(tmp_path, steps=30, block=32, width=64)
    from minilm.training.adapters import load_run

    r = load_run(run / "checkpoint.npz")
    model = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "hf").eval()
    ids = r.tokenizer.encode(TEXT[40:200])[None, :32]  # (1, 32)
    assert rel(M.forward(r.params, r.cfg, ids)[0], hf_logits(torch, model, ids)) <= 1e-5
    p64 = {k: v.astype(np.float64) for k, v in r.params.items()}
    assert rel(M.forward(p64, r.cfg, ids)[0], hf_logits(torch, model.double(), ids)) <= 1e-10
    # greedy generation: transformers' generate (its own KV cache) and minilm's, 20 tokens after the prompt
    prompt = r.tokenizer.encode("The cat sat")
    with torch.no_grad():
        theirs = model.generate(torch.tensor(prompt[None]), max_new_tokens=20, do_sample=False, pad_token_id=0,
                                attention_mask=torch.ones(1, len(prompt), dtype=torch.long))[0].numpy()
    step = generate.cached_next(lambda x, past: M.forward_cached(p64, r.cfg, x, past), r.cfg.block_size)
    ours = generate.generate(step, prompt, 20, np.random.default_rng(0), temperature=0)
    assert ours.tolist() == theirs.tolist()

"""GPT-2 checkpoints in and out (§7: the Hugging Face format), with NumPy alone.

GPT-2 (Radford et al. 2019) is minilm's causal Transformer (minilm.transformer)
with one setting of each switch:

    norm="pre"  ffn="gelu"  pos="learned"  scale_embed=False  tie_weights=True  head_bias=False

plus LayerNorm eps = 1e-5 (minilm.layernorm's) and F = 4C.  minilm's GELU is
the tanh approximation 0.5 x (1 + tanh(sqrt(2/pi)(x + 0.044715 x^3))), the
function GPT-2 names ``gelu_new`` (``gelu_pytorch_tanh`` in transformers is
the same formula); the exact x Phi(x) (``gelu``) is not, and is refused.

A directory in the Hugging Face layout holds ``config.json`` (GPT-2's
config fields), ``model.safetensors`` (the tensors) and GPT-2's tokenizer
files ``vocab.json`` + ``merges.txt`` (minilm.bpe).  The tensor names, with
l the layer (files written by transformers put ``transformer.`` in front):

    GPT-2 tensor               shape      minilm parameter
    wte.weight                 (V, C)     wte
    wpe.weight                 (T, C)     wpe                       T = n_positions = block_size
    h.l.ln_1.weight, .bias     (C,)       h{l}.ln1.gamma, .beta
    h.l.attn.c_attn.weight     (C, 3C)    h{l}.attn.W_q | W_k | W_v  side by side, in that order
    h.l.attn.c_attn.bias       (3C,)      h{l}.attn.b_q | b_k | b_v
    h.l.attn.c_proj.weight     (C, C)     h{l}.attn.W_o             (.bias: b_o)
    h.l.ln_2.weight, .bias     (C,)       h{l}.ln2.gamma, .beta
    h.l.mlp.c_fc.weight        (C, 4C)    h{l}.ffn.W1               (.bias: b1)
    h.l.mlp.c_proj.weight      (4C, C)    h{l}.ffn.W2               (.bias: b2)
    ln_f.weight, .bias         (C,)       ln_f.gamma, .beta
    lm_head.weight             (V, C)     wte again (tied: W_head = wte^T); not stored

GPT-2's linear layer (``Conv1D``) keeps its weight as (in, out) and computes
x W + b, exactly minilm.linear's layout, so no matrix is transposed; the only
reshaping is the fused c_attn, whose 3C output columns are the queries, the
keys and the values, each split into heads as minilm.attention.split_heads
splits them (head i: columns i*hs .. (i+1)*hs).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from minilm import transformer as M

CONFIG, WEIGHTS, TOKENIZER_FILES = "config.json", "model.safetensors", ("vocab.json", "merges.txt")
GELU_TANH = ("gelu_new", "gelu_pytorch_tanh")  # transformers' names of the tanh form (minilm.activations.gelu)
LN_EPS = 1e-5  # minilm.layernorm's eps, and GPT-2's layer_norm_epsilon


def _safetensors():
    try:
        import safetensors.numpy as st
    except ImportError:
        raise ValueError("reading and writing model.safetensors needs the safetensors package "
                         "(pip install safetensors)") from None
    return st


# ---- the architecture ----

def gpt2_lacks(cfg: M.TransformerConfig) -> list[str]:
    """The features of ``cfg`` that GPT-2 does not have, each with the switch that removes it (empty: a GPT-2)."""
    lacks = []
    if not cfg.causal:
        lacks.append("bidirectional attention (GPT-2 is a causal LM)")
    if cfg.mask_token is not None:
        lacks.append("a [MASK] token (GPT-2 is no masked LM)")
    if cfg.norm == "post":
        lacks.append("post-LN (GPT-2 is pre-LN: --norm pre)")
    if cfg.norm == "pre" and not cfg.final_norm:
        lacks.append("a pre-LN stack without ln_f (GPT-2 ends in a final LayerNorm)")
    if cfg.ffn == "relu":
        lacks.append("ReLU (GPT-2's feed-forward uses tanh-GELU: --activation gelu)")
    if cfg.ffn == "none":
        lacks.append("attention-only blocks (GPT-2's have a feed-forward layer)")
    if cfg.pos == "sinusoidal":
        lacks.append("sinusoidal positions (GPT-2 learns them: --positions learned)")
    if cfg.scale_embed:
        lacks.append("embeddings scaled by sqrt(C) (GPT-2 adds them unscaled: --no-scale-embed)")
    if not cfg.tie_weights:
        lacks.append("an untied output layer (GPT-2 ties it to wte: --tie-weights)")
    if cfg.head_bias:
        lacks.append("an output bias lm_head.b (GPT-2 has none: --no-head-bias)")
    return lacks


def check_exportable(cfg: M.TransformerConfig) -> None:
    """A one-line ValueError naming what GPT-2 lacks, unless ``cfg`` is GPT-2's architecture."""
    lacks = gpt2_lacks(cfg)
    if lacks:
        raise ValueError("not a GPT-2, which has none of: " + "; ".join(lacks))


def config_to_gpt2(cfg: M.TransformerConfig, tokenizer=None) -> dict:
    """GPT-2's config.json fields for ``cfg`` (GPT2Config's names; dropout 0: inference)."""
    check_exportable(cfg)
    eot = getattr(tokenizer, "stoi", {}).get("<|endoftext|>")
    return {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "vocab_size": cfg.vocab_size, "n_positions": cfg.block_size, "n_embd": cfg.n_embd,
        "n_layer": cfg.n_layer, "n_head": cfg.n_head, "n_inner": None, "activation_function": "gelu_new",
        "layer_norm_epsilon": LN_EPS, "resid_pdrop": cfg.dropout, "embd_pdrop": cfg.dropout, "attn_pdrop": 0.0,
        "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False, "reorder_and_upcast_attn": False,
        "tie_word_embeddings": True, "add_cross_attention": False, "initializer_range": 0.02,
        "bos_token_id": eot, "eos_token_id": eot, "torch_dtype": "float32",
    }


# (config.json field, the value minilm needs) for the fields that change the computation
REQUIRED_VALUES = {
    "scale_attn_weights": True,  # scores / sqrt(hs)
    "scale_attn_by_inverse_layer_idx": False,
    "add_cross_attention": False,
    "tie_word_embeddings": True,
}


def config_from_gpt2(d: dict, where: str = CONFIG) -> M.TransformerConfig:
    """The minilm config of a GPT-2 config.json; a one-line ValueError for a field minilm cannot honour."""
    if not isinstance(d, dict):
        raise ValueError(f"{where}: not a JSON object")
    if d.get("model_type", "gpt2") != "gpt2":
        raise ValueError(f"{where}: model_type {d['model_type']!r} is not 'gpt2'")
    missing = [k for k in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head") if k not in d]
    if missing:
        raise ValueError(f"{where}: no {', '.join(missing)}")
    act = d.get("activation_function", "gelu_new")
    if act not in GELU_TANH:
        raise ValueError(f"{where}: unsupported activation_function {act!r} (minilm's GELU is the tanh form, "
                         f"{' or '.join(GELU_TANH)})")
    eps = d.get("layer_norm_epsilon", LN_EPS)
    if eps != LN_EPS:
        raise ValueError(f"{where}: unsupported layer_norm_epsilon {eps} (minilm's LayerNorm uses {LN_EPS})")
    if d.get("n_inner") not in (None, 4 * d["n_embd"]):
        raise ValueError(f"{where}: unsupported n_inner {d['n_inner']} (minilm's feed-forward width is "
                         f"4 n_embd = {4 * d['n_embd']})")
    for k, v in REQUIRED_VALUES.items():
        if d.get(k, v) != v:
            raise ValueError(f"{where}: unsupported {k} = {d[k]!r} (minilm needs {v!r})")
    try:
        return M.TransformerConfig(vocab_size=d["vocab_size"], block_size=d["n_positions"], n_layer=d["n_layer"],
                                   n_head=d["n_head"], n_embd=d["n_embd"], ffn="gelu", norm="pre", pos="learned",
                                   scale_embed=False, tie_weights=True, head_bias=False)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


# ---- the tensors ----

def to_gpt2(params: dict, cfg: M.TransformerConfig) -> dict[str, np.ndarray]:
    """GPT-2's tensors (names of the table above, without ``transformer.``) from minilm's parameters."""
    check_exportable(cfg)
    p = params
    t = {"wte.weight": p["wte"], "wpe.weight": p["wpe"]}  # (V, C), (T, C)
    for l in range(cfg.n_layer):
        m, g = f"h{l}.", f"h.{l}."
        t[g + "ln_1.weight"], t[g + "ln_1.bias"] = p[m + "ln1.gamma"], p[m + "ln1.beta"]  # (C,)
        t[g + "attn.c_attn.weight"] = np.concatenate([p[m + "attn.W_q"], p[m + "attn.W_k"], p[m + "attn.W_v"]],
                                                     axis=1)  # 3 x (C, C) -> (C, 3C)
        t[g + "attn.c_attn.bias"] = np.concatenate([p[m + "attn.b_q"], p[m + "attn.b_k"], p[m + "attn.b_v"]])  # (3C,)
        t[g + "attn.c_proj.weight"], t[g + "attn.c_proj.bias"] = p[m + "attn.W_o"], p[m + "attn.b_o"]  # (C, C), (C,)
        t[g + "ln_2.weight"], t[g + "ln_2.bias"] = p[m + "ln2.gamma"], p[m + "ln2.beta"]  # (C,)
        t[g + "mlp.c_fc.weight"], t[g + "mlp.c_fc.bias"] = p[m + "ffn.W1"], p[m + "ffn.b1"]  # (C, 4C), (4C,)
        t[g + "mlp.c_proj.weight"], t[g + "mlp.c_proj.bias"] = p[m + "ffn.W2"], p[m + "ffn.b2"]  # (4C, C), (C,)
    t["ln_f.weight"], t["ln_f.bias"] = p["ln_f.gamma"], p["ln_f.beta"]  # (C,)
    return {k: np.ascontiguousarray(v) for k, v in t.items()}


def gpt2_shapes(cfg: M.TransformerConfig) -> dict[str, tuple[int, ...]]:
    """The name and shape of every GPT-2 tensor of ``cfg``."""
    C, V, T = cfg.n_embd, cfg.vocab_size, cfg.block_size
    shapes = {"wte.weight": (V, C), "wpe.weight": (T, C)}
    for l in range(cfg.n_layer):
        g = f"h.{l}."
        shapes |= {g + "ln_1.weight": (C,), g + "ln_1.bias": (C,), g + "attn.c_attn.weight": (C, 3 * C),
                   g + "attn.c_attn.bias": (3 * C,), g + "attn.c_proj.weight": (C, C), g + "attn.c_proj.bias": (C,),
                   g + "ln_2.weight": (C,), g + "ln_2.bias": (C,), g + "mlp.c_fc.weight": (C, 4 * C),
                   g + "mlp.c_fc.bias": (4 * C,), g + "mlp.c_proj.weight": (4 * C, C), g + "mlp.c_proj.bias": (C,)}
    return shapes | {"ln_f.weight": (C,), "ln_f.bias": (C,)}


def _strip(name: str) -> str:
    return name[len("transformer."):] if name.startswith("transformer.") else name


def from_gpt2(tensors: dict, cfg: M.TransformerConfig, dtype=np.float32, where: str = WEIGHTS) -> dict:
    """minilm's parameters from GPT-2's tensors (with or without ``transformer.``), checked against ``cfg``.

    A missing tensor, a wrong shape or a tensor minilm has no place for is a one-line ValueError.
    The causal-mask buffers older files store (``h.l.attn.bias``, ``.masked_bias``) are not weights
    and are skipped; a stored ``lm_head.weight`` must equal ``wte.weight`` (tied).
    """
    t = {_strip(k): v for k, v in tensors.items()}
    shapes = gpt2_shapes(cfg)
    for k, shape in shapes.items():
        if k not in t:
            raise ValueError(f"{where}: missing tensor {k} (config.json describes {cfg.n_layer} layers)")
        if tuple(t[k].shape) != shape:
            raise ValueError(f"{where}: tensor {k} has shape {tuple(t[k].shape)}, config.json says {shape}")
    for k in set(t) - set(shapes):
        if k.endswith((".attn.bias", ".attn.masked_bias")):
            continue
        if k == "lm_head.weight" and t[k].shape == t["wte.weight"].shape and np.array_equal(t[k], t["wte.weight"]):
            continue
        raise ValueError(f"{where}: tensor {k} has no place in a GPT-2 with a tied output layer")
    a = {k: np.asarray(t[k], dtype=dtype) for k in shapes}  # float16 or float32 in the file -> dtype
    C = cfg.n_embd
    p = {"wte": a["wte.weight"], "wpe": a["wpe.weight"]}  # (V, C), (T, C)
    for l in range(cfg.n_layer):
        m, g = f"h{l}.", f"h.{l}."
        p[m + "ln1.gamma"], p[m + "ln1.beta"] = a[g + "ln_1.weight"], a[g + "ln_1.bias"]
        w, b = a[g + "attn.c_attn.weight"], a[g + "attn.c_attn.bias"]  # (C, 3C), (3C,)
        for i, q in enumerate("qkv"):
            p[m + f"attn.W_{q}"] = np.ascontiguousarray(w[:, i * C:(i + 1) * C])  # (C, C)
            p[m + f"attn.b_{q}"] = b[i * C:(i + 1) * C].copy()  # (C,)
        p[m + "attn.W_o"], p[m + "attn.b_o"] = a[g + "attn.c_proj.weight"], a[g + "attn.c_proj.bias"]
        p[m + "ln2.gamma"], p[m + "ln2.beta"] = a[g + "ln_2.weight"], a[g + "ln_2.bias"]
        p[m + "ffn.W1"], p[m + "ffn.b1"] = a[g + "mlp.c_fc.weight"], a[g + "mlp.c_fc.bias"]
        p[m + "ffn.W2"], p[m + "ffn.b2"] = a[g + "mlp.c_proj.weight"], a[g + "mlp.c_proj.bias"]
    p["ln_f.gamma"], p["ln_f.beta"] = a["ln_f.weight"], a["ln_f.bias"]
    return {k: p[k] for k in M.param_shapes(cfg)}


# ---- directories ----

def save(directory, params: dict, cfg: M.TransformerConfig, tokenizer) -> list[Path]:
    """Write config.json, model.safetensors, vocab.json and merges.txt into ``directory``.

    Refused (a one-line ValueError, nothing written) unless the model is a
    GPT-2 (``gpt2_lacks``) and its tokenizer is byte-level BPE: GPT-2's
    tokenizer files have no way to say "one token per character" without
    the 256 byte tokens, which a character vocabulary does not have; or if
    ``directory`` already holds one of those files.  Returns the paths written.
    """
    check_exportable(cfg)
    if getattr(tokenizer, "kind", None) != "bpe":
        raise ValueError(f"GPT-2's tokenizer files (vocab.json + merges.txt) describe byte-level BPE; this model's "
                         f"tokenizer is {getattr(tokenizer, 'kind', tokenizer)!r} (train with --tokenizer bpe)")
    if tokenizer.vocab_size != cfg.vocab_size:
        raise ValueError(f"the tokenizer has {tokenizer.vocab_size} tokens, the model {cfg.vocab_size}")
    st = _safetensors()
    directory = Path(directory)
    names = (CONFIG, WEIGHTS, *TOKENIZER_FILES)
    taken = [n for n in names if (directory / n).exists()]
    if taken:
        raise ValueError(f"{directory} already holds {', '.join(taken)}; choose a new directory")
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"{directory} is a file, not a directory")
    config = config_to_gpt2(cfg, tokenizer)
    tensors = {"transformer." + k: v.astype(np.float32) for k, v in to_gpt2(params, cfg).items()}
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    st.save_file(tensors, str(directory / WEIGHTS), metadata={"format": "pt"})  # "pt": transformers asks for it
    tokenizer.save_hf(directory)
    return [directory / n for n in names]


def load(directory, dtype=np.float32, tokenizer: bool = True):
    """(cfg, params, tokenizer) from a GPT-2 directory; tokenizer None when ``tokenizer`` is False.

    A mismatch between config.json and model.safetensors, a config field
    minilm cannot honour, or a missing file is a one-line ValueError.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(f"{directory} is not a directory (a GPT-2 directory holds {CONFIG} and {WEIGHTS})")
    for name in (CONFIG, WEIGHTS):
        if not (directory / name).is_file():
            raise ValueError(f"{directory}: no {name}")
    try:
        d = json.loads((directory / CONFIG).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{directory / CONFIG}: not JSON ({e})") from None
    cfg = config_from_gpt2(d, str(directory / CONFIG))
    st = _safetensors()
    try:
        tensors = st.load_file(str(directory / WEIGHTS))
    except Exception as e:  # safetensors raises its own error types for a damaged or foreign file
        raise ValueError(f"{directory / WEIGHTS}: not a readable safetensors file ({str(e).splitlines()[0]})") \
            from None
    params = from_gpt2(tensors, cfg, dtype, str(directory / WEIGHTS))
    tok = None
    if tokenizer:
        from minilm.bpe import BPETokenizer

        tok = BPETokenizer.load_hf(directory)
        if tok.vocab_size != cfg.vocab_size:
            raise ValueError(f"{directory}: vocab.json has {tok.vocab_size} tokens, config.json's vocab_size is "
                             f"{cfg.vocab_size}")
    return cfg, params, tok

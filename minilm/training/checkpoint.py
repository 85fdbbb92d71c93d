"""Checkpoints: one ``.npz`` file, written atomically.

Inside the archive:

    meta           a JSON string: format, model name, config, tokenizer, options,
                   step, the training generator's state, the loss history
    params/<k>     the model's parameters
    opt_m/<k>      AdamW's first moments     opt_v/<k>  its second moments
    carry/<i>      a recurrent model's state carried to the next batch (if any)

The file is written to a temporary name in the same directory and renamed
over the old one with ``os.replace``, so a crash or Ctrl-C while saving
leaves the previous checkpoint whole.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from minilm.training.paths import publish

FORMAT = "minilm-checkpoint"
VERSION = 1


def save(path, meta: dict, params: dict, opt_state: dict | None = None, carry: list | None = None) -> None:
    """Write the checkpoint to ``path`` atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "version": VERSION, **meta}
    arrays = {"meta": np.array(json.dumps(meta))}
    arrays.update({f"params/{k}": v for k, v in params.items()})
    if opt_state is not None:
        arrays["opt_t"] = np.array(int(opt_state["t"]))
        arrays.update({f"opt_m/{k}": v for k, v in opt_state["m"].items()})
        arrays.update({f"opt_v/{k}": v for k, v in opt_state["v"].items()})
    for i, a in enumerate(carry or []):
        arrays[f"carry/{i}"] = a
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        publish(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load(path) -> dict:
    """Read a checkpoint: {"meta", "params", "opt_state" (or None), "carry"}.

    A ValueError names the problem when the file is missing, is not a
    checkpoint, or is damaged.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no such checkpoint: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError) as e:
        raise ValueError(f"corrupt checkpoint {path}: not a readable .npz archive ({e})") from None
    if "meta" not in arrays:
        raise ValueError(f"corrupt checkpoint {path}: no metadata (not written by minilm?)")
    try:
        meta = json.loads(str(arrays["meta"]))
    except json.JSONDecodeError as e:
        raise ValueError(f"corrupt checkpoint {path}: metadata is not JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"corrupt checkpoint {path}: not a minilm checkpoint")
    if meta.get("version") != VERSION:
        raise ValueError(f"checkpoint {path} has format version {meta.get('version')}, this minilm reads {VERSION}")
    for key in ("model", "config", "tokenizer", "step"):
        if key not in meta:
            raise ValueError(f"corrupt checkpoint {path}: metadata lacks {key!r}")

    def group(prefix):
        return {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}

    params, m, v = group("params/"), group("opt_m/"), group("opt_v/")
    opt_state = None
    if "opt_t" in arrays:
        if set(m) != set(params) or set(v) != set(params):
            raise ValueError(f"corrupt checkpoint {path}: optimiser state does not match the parameters")
        opt_state = {"t": int(arrays["opt_t"]), "m": m, "v": v}
    carry = [arrays[f"carry/{i}"] for i in range(len(group("carry/")))]
    return {"meta": meta, "params": params, "opt_state": opt_state, "carry": carry}


def check_params(params: dict, expected: dict, path) -> None:
    """The loaded parameters must have exactly the keys and shapes a fresh model of the saved config has."""
    missing, extra = set(expected) - set(params), set(params) - set(expected)
    if missing or extra:
        raise ValueError(f"checkpoint {path} does not match its config: missing parameters {sorted(missing)}, "
                         f"unexpected {sorted(extra)}")
    for k, e in expected.items():
        if params[k].shape != e.shape:
            raise ValueError(f"checkpoint {path} does not match its config: {k} has shape {params[k].shape}, "
                             f"expected {e.shape}")
        if not np.issubdtype(params[k].dtype, np.floating):
            raise ValueError(f"checkpoint {path}: parameter {k} has dtype {params[k].dtype}")

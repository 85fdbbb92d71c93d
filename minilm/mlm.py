"""The masked language model (§3.2: 掩码语言模型): hide some words, predict them
from the words on both sides.

The model is ``minilm.transformer`` with ``causal=False`` (a bidirectional
encoder: every position attends to every real position) and one extra token,
[MASK].  Its objective, the rule of BERT (Devlin et al. 2018):

* choose 15% of the real (non-padded) positions of each sequence;
* of the chosen, replace 80% by [MASK], 10% by a random ordinary token, and
  leave 10% unchanged (so the model cannot learn that only [MASK] positions
  matter, nor that a visible word is always correct);
* predict the original token at the chosen positions only: every other
  target is ``IGNORE_INDEX`` and does not count in the loss.

Vocabulary: [MASK] is an id of its own.  ``mlm_config`` appends it after an
ordinary vocabulary of size V0: mask_token = V0, vocab_size = V0 + 1.
Padding needs no id of its own: ``pad_mask`` (True = real token) marks it,
whatever id the padded positions hold.
"""

from __future__ import annotations

import numpy as np

from minilm.transformer import IGNORE_INDEX, TransformerConfig, forward
from minilm.validate import check_ids


def mlm_config(n_ordinary: int, **kwargs) -> TransformerConfig:
    """A bidirectional TransformerConfig whose vocabulary is the n_ordinary tokens then [MASK] (id n_ordinary)."""
    return TransformerConfig(vocab_size=n_ordinary + 1, mask_token=n_ordinary, causal=False, **kwargs)


def mask_tokens(ids, cfg: TransformerConfig, rng: np.random.Generator, *, pad_mask=None, rate: float = 0.15,
                ignore_index: int = IGNORE_INDEX):
    """Draw the masked-LM inputs and targets for a batch.

    Inputs:  ids (B, T) ordinary token ids (no [MASK]); pad_mask (B, T)
             boolean, True = real token (padding is never chosen).
    Returns: inputs (B, T) ids, with the chosen positions replaced by the
             80/10/10 rule; targets (B, T), the original id at chosen
             positions and ``ignore_index`` elsewhere.

    Each sequence with n real tokens gets exactly max(1, round(rate * n))
    chosen positions (none if n = 0), drawn uniformly without replacement.
    """
    if cfg.mask_token is None:
        raise ValueError("the config has no mask_token: build it with mlm_config or set mask_token")
    if not 0 < rate <= 1:
        raise ValueError(f"rate must be in (0, 1], got {rate}")
    ids = check_ids(ids, cfg.vocab_size, "ids")
    if ids.ndim != 2:
        raise ValueError(f"ids must be a (B, T) array, got shape {ids.shape}")
    real = np.ones(ids.shape, bool) if pad_mask is None else np.asarray(pad_mask, bool)  # (B, T)
    if real.shape != ids.shape:
        raise ValueError(f"pad_mask must have the shape of ids {ids.shape}, got {real.shape}")
    if (ids[real] == cfg.mask_token).any():
        raise ValueError(f"ids already contain the [MASK] id {cfg.mask_token}")
    n_real = real.sum(axis=1)  # (B,)
    n_chosen = np.where(n_real > 0, np.maximum(1, np.round(rate * n_real)), 0)  # (B,)
    keys = np.where(real, rng.random(ids.shape), 2.0)  # (B, T), padding sorts last
    rank = np.argsort(np.argsort(keys, axis=1), axis=1)  # (B, T), 0 = smallest key of its row
    chosen = rank < n_chosen[:, None]  # (B, T)
    u = rng.random(ids.shape)  # (B, T), one draw per position decides its fate
    random_ids = rng.integers(0, cfg.vocab_size - 1, size=ids.shape)  # (B, T), ordinary ids ...
    random_ids = random_ids + (random_ids >= cfg.mask_token)  # ... skipping the [MASK] id
    inputs = np.where(chosen & (u < 0.8), cfg.mask_token, ids)  # 80%: [MASK]
    inputs = np.where(chosen & (u >= 0.8) & (u < 0.9), random_ids, inputs)  # 10%: a random token; 10%: kept
    targets = np.where(chosen, ids, ignore_index)  # (B, T)
    return inputs, targets


def fill_masks(params, cfg: TransformerConfig, inputs, *, pad_mask=None) -> np.ndarray:
    """inputs with every [MASK] replaced by the model's most probable ordinary token."""
    logits, _ = forward(params, cfg, inputs, pad_mask=pad_mask)  # (B, T, V)
    logits[..., cfg.mask_token] = -np.inf  # [MASK] is never an answer
    return np.where(inputs == cfg.mask_token, logits.argmax(-1), inputs)  # (B, T)

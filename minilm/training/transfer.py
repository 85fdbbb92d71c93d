"""Pre-training then fine-tuning, against training from scratch (§3.2 and §7): the experiment of BERT, small.

    1. pre-train (预训练) a masked LM on unlabelled text: true statements "a<b", "a>b" (minilm.tasks.compare);
    2. fine-tune (微调) a classifier on its encoder with few labelled statements, true or false;
    3. train the same classifier from random weights on the same labels, for the same steps;
    4. score both on statements about pairs that neither pre-training nor fine-tuning ever saw.

Every loop is AdamW with gradient clipping and warmup + cosine (minilm.optim),
seeded; nothing here is specific to a backward pass, which the models own.
"""

from __future__ import annotations

import time

import numpy as np

from minilm import finetune as F
from minilm import mlm, optim
from minilm import transformer as TR
from minilm.tasks import compare as T


def pretrain(pairs, cfg: TR.TransformerConfig, steps: int, rng: np.random.Generator, batch_size: int = 64,
             lr: float = 3e-3, params=None) -> tuple[dict, list[float]]:
    """Train a masked LM on true statements about ``pairs``; returns (params, masked-token loss per step)."""
    params = TR.init_params(cfg, rng) if params is None else params
    state, losses = optim.init_state(params), []
    for step in range(steps):
        ids, pad = T.true_statements(pairs[rng.integers(0, len(pairs), batch_size)], rng)  # (B, T)
        inputs, targets = mlm.mask_tokens(ids, cfg, rng, pad_mask=pad)
        loss, grads = TR.loss_and_grads(params, cfg, inputs, targets, pad_mask=pad)
        optim.clip_grad_norm(grads, 1.0)
        optim.adamw_step(params, grads, state, optim.lr_at(step, lr, lr / 10, max(1, steps // 20), steps),
                         weight_decay=0.01)
        losses.append(loss)
    return params, losses


def fine_tune(params, cfg: F.ClassifierConfig, data, steps: int, rng: np.random.Generator, batch_size: int = 32,
              lr: float = 1e-3) -> tuple[dict, list[float]]:
    """Train every parameter of a classifier on (ids, pad_mask, labels); returns (params, loss per step)."""
    x, pad, y = data
    state, losses = optim.init_state(params), []
    for step in range(steps):
        i = rng.integers(0, len(y), min(batch_size, len(y)))  # (b,)
        loss, grads = F.loss_and_grads(params, cfg, x[i], y[i], pad_mask=pad[i])
        optim.clip_grad_norm(grads, 1.0)
        optim.adamw_step(params, grads, state, optim.lr_at(step, lr, lr / 10, max(1, steps // 20), steps),
                         weight_decay=0.01)
        losses.append(loss)
    return params, losses


def experiment(max_number: int = 999, pretrain_steps: int = 2000, finetune_steps: int = 300,
               label_sizes=(256,), test_size: int = 4000, width: int = 32, layers: int = 2, heads: int = 4,
               scratch_steps: int | None = None, seed: int = 0, log=print):
    """Pre-train once, then for each number of labelled statements fine-tune the pre-trained encoder
    and train one from scratch (for ``scratch_steps``, default the same ``finetune_steps``);
    held-out accuracy of both.  Returns (report, a JSON-ready dict; the masked LM's params; its config)."""
    train_pairs, held_pairs = T.split_pairs(max_number, 0.2, seed)
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4)]
    cfg = mlm.mlm_config(len(T.VOCAB), block_size=2 * len(str(max_number)) + 2, n_layer=layers, n_head=heads,
                         n_embd=width)
    t0 = time.perf_counter()
    mlm_params, mlm_losses = pretrain(train_pairs, cfg, pretrain_steps, rngs[0])
    pre_seconds = time.perf_counter() - t0
    if mlm_losses:
        log(f"pre-trained the masked LM for {pretrain_steps} steps in {pre_seconds:.1f} s; "
            f"masked-token loss {np.mean(mlm_losses[-100:]):.3f} over the last 100 steps")
    test = T.labelled_statements(held_pairs[rngs[1].permutation(len(held_pairs))[:test_size]], rngs[1])
    order = rngs[2].permutation(len(train_pairs))
    rows = []
    for n in label_sizes:
        data = T.labelled_statements(train_pairs[order[:n]], np.random.default_rng([seed, n]))
        row = {"labels": n}
        for name in ("pretrained", "scratch"):
            head_rng, run_rng = np.random.default_rng([seed, n, 1]), np.random.default_rng([seed, n, 2])
            if name == "pretrained":
                params, ccfg = F.from_pretrained(mlm_params, cfg, head_rng)
            else:
                ccfg = F.from_pretrained(mlm_params, cfg, head_rng)[1]
                params = F.init_params(ccfg, head_rng)
            t0 = time.perf_counter()
            steps = finetune_steps if name == "pretrained" or scratch_steps is None else scratch_steps
            params, losses = fine_tune(params, ccfg, data, steps, run_rng)
            row[name] = {"train_accuracy": F.accuracy(params, ccfg, data[0], data[2], pad_mask=data[1]),
                         "test_accuracy": F.accuracy(params, ccfg, test[0], test[2], pad_mask=test[1]),
                         "steps": steps, "seconds": time.perf_counter() - t0,
                         "final_loss": float(np.mean(losses[-20:]))}
        log(f"{n:5d} labelled statements: held-out accuracy {row['pretrained']['test_accuracy']:.3f} "
            f"pre-trained + fine-tuned, {row['scratch']['test_accuracy']:.3f} from scratch")
        rows.append(row)
    report = {"max_number": max_number, "pretrain_steps": pretrain_steps, "finetune_steps": finetune_steps,
              "width": width, "layers": layers, "heads": heads, "test_statements": len(test[2]),
              "pretrain_seconds": pre_seconds, "mlm_loss": [float(v) for v in mlm_losses], "rows": rows}
    return report, mlm_params, cfg

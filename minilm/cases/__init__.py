"""The gradient-check cases listed by ``python -m minilm gradcheck``.

Each module below registers its cases with ``@case(group, name)``: a function
of no arguments that builds small float64 inputs from a fixed seed, runs a
check from ``minilm.gradcheck`` and returns ``{gradient name: relative error}``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

MODULES = [
    "minilm.cases.ops",
    "minilm.cases.attention",
    "minilm.cases.transformer",
    "minilm.cases.ngram",
    "minilm.cases.rnn",
    "minilm.cases.lstm",
    "minilm.cases.seq2seq",
    "minilm.cases.finetune",
    "minilm.cases.las",
]


@dataclass(frozen=True)
class Case:
    group: str
    name: str
    run: Callable[[], dict[str, float]]


REGISTRY: list[Case] = []


def case(group: str, name: str):
    """Register a gradient-check case."""

    def register(fn):
        REGISTRY.append(Case(group, name, fn))
        return fn

    return register


def all_cases() -> list[Case]:
    for m in MODULES:
        importlib.import_module(m)
    return list(REGISTRY)

"""Gradient-check cases for the positional encodings (§5.1)."""

from __future__ import annotations

import numpy as np

from minilm.cases import case
from minilm.gradcheck import check_pair
from minilm.positional import (
    learned_position_backward,
    learned_position_forward,
    sinusoidal_backward,
    sinusoidal_forward,
)


@case("position", "sinusoidal, scaled by sqrt(C)")
def _sinusoidal_scaled():
    return check_pair(sinusoidal_forward, sinusoidal_backward, [np.random.default_rng(0).standard_normal((2, 5, 6))],
                      ["x"], {"scale_embed": True})


@case("position", "sinusoidal, unscaled")
def _sinusoidal():
    return check_pair(sinusoidal_forward, sinusoidal_backward, [np.random.default_rng(0).standard_normal((2, 5, 6))],
                      ["x"], {"scale_embed": False})


@case("position", "learned positions, T < block_size")
def _learned():
    r = np.random.default_rng(0)
    return check_pair(learned_position_forward, learned_position_backward,
                      [r.standard_normal((2, 3, 4)), r.standard_normal((5, 4))], ["x", "wpe"], {"scale_embed": True})

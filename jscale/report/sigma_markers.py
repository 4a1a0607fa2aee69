"""The one weight std sigma that amounts to an init rule, marked on accuracy-vs-sigma figures.

An experiment that sweeps W ~ N(0, sigma^2) on every kernel (the tutorial's protocol) marks where He, Glorot
and geometric init would sit on its sigma axis: the sigma whose end-to-end forward gain prod_l fan_in_l sigma^2
equals the rule's prod_l fan_in_l E[W_l^2] over the same kernels.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from jscale import initializers

# The rules marked, as (label, initializer spec).
MARKER_RULES = (("He", "he_normal"), ("Glorot", "glorot_normal"), ("geometric", "geometric:c=2"))


def equivalent_sigma_of_shapes(shapes: Sequence[tuple], init) -> tuple[float, list]:
  """The single sigma (same for every kernel, as in the tutorial) whose end-to-end forward gain
  prod_l fan_in_l sigma^2 equals the rule's prod_l fan_in_l E[W_l^2] over kernels of these shapes: the
  geometric mean of the rule's per-kernel stds. Returns (sigma, per-kernel stds)."""
  init = initializers.get(init)
  per = [math.sqrt(init.second_moment(tuple(shape))) for shape in shapes]
  return float(np.exp(np.mean(np.log(per)))), per


def equivalent_sigma(widths: Sequence[int], init) -> tuple[float, list]:
  """`equivalent_sigma_of_shapes` for the MLP of `widths`."""
  return equivalent_sigma_of_shapes(list(zip(widths[:-1], widths[1:])), init)


def rule_markers(shapes: Sequence[tuple]) -> dict[str, float]:
  """Label -> the equivalent sigma of each of MARKER_RULES over kernels of these shapes."""
  return {name: equivalent_sigma_of_shapes(shapes, spec)[0] for name, spec in MARKER_RULES}

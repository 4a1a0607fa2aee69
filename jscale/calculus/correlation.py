"""Correlation maps (beyond the paper; used for batch effects and average pooling).

r is the uncentered correlation E[u v] / E[u^2] between two *distinct* entries (two examples, or two
positions) of the same unit. Zero-mean shared weights keep r; an activation maps it by its arc-cosine
kernel (Cho & Saul): relu outputs have E[x]^2 = E[x^2] / pi, hence r = 1/pi from independent inputs.
"""
from __future__ import annotations

import math

from jscale.calculus.moments import LEAKY_SLOPE


def relu_corr(r: float) -> float:
  """E[relu(u) relu(v)] / E[relu(u)^2] for unit-variance Gaussians u, v with correlation r."""
  r = min(max(r, -1.0), 1.0)
  return (math.sqrt(1 - r * r) + (math.pi - math.acos(r)) * r) / math.pi


def act_corr(kind: str, r: float) -> tuple[float, float]:
  """(forward r after the activation, backward factor on the gradient correlation) for input corr r."""
  r = min(max(r, -1.0), 1.0)
  if kind in ("identity", "linear"):
    return r, 1.0
  if kind == "tanh":  # linear regime only
    return r, 1.0
  a = LEAKY_SLOPE if kind == "leaky_relu" else 0.0
  # phi(u) = relu(u) - a relu(-u); E[relu(u) relu(-v)] has correlation -r.
  fwd = ((1 + a * a) * relu_corr(r) - 2 * a * relu_corr(-r)) / (1 + a * a)
  both = (math.pi - math.acos(r)) / (2 * math.pi)  # P(u > 0, v > 0) = P(u < 0, v < 0)
  bwd = ((1 + a * a) * both + a * math.acos(r) / math.pi) / ((1 + a * a) / 2)
  return fwd, bwd

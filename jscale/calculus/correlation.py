"""Correlation maps (beyond the paper; used for batch effects and average pooling).

r is the uncentered correlation E[u v] / E[u^2] between two *distinct* entries (two examples, or two
positions) of the same unit. Zero-mean shared weights keep r; an activation maps it by its arc-cosine
kernel (Cho & Saul): relu outputs have E[x]^2 = E[x^2] / pi, hence r = 1/pi from independent inputs.
`pair_corr` measures r on a batch; `relu_corr` and `act_corr` map it through an activation.
"""
from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from jscale.calculus.moments import LEAKY_SLOPE


def pair_corr(v, *, traced: bool = False, pairs_first: bool = False):
  """Mean over example pairs b != b' of E[v_b v_b'] / E[v^2] (uncentred, per entry) of v: (batch, ...); 0 for
  one example or a zero v.

  Default: numpy float64, a Python float. `traced=True`: jnp in float32, a 0-d array (inside jit).
  `pairs_first=True`: jnp in v's own dtype, the pair sum divided by the pair count before the second moment:
  the rounding `measure`'s x0_corr has always had, kept so that its value stays bit-identical.
  """
  B = v.shape[0]
  if pairs_first:
    f = v.reshape(B, -1)
    s = jnp.sum(f, axis=0)
    total = jnp.sum(s * s) - jnp.sum(f * f)
    return jnp.where(B > 1, total / jnp.maximum(B * (B - 1), 1) / jnp.maximum(jnp.mean(f * f) * f.shape[1], 1e-30),
                     0.0)
  if traced:
    f = v.reshape(B, -1).astype(jnp.float32)
    s = jnp.sum(f, 0)
    ms = jnp.mean(f * f)
    return jnp.where((B > 1) & (ms > 0),
                     (jnp.sum(s * s) - jnp.sum(f * f)) / jnp.maximum(B * (B - 1) * f.shape[1] * ms, 1e-30), 0.0)
  if B < 2:
    return 0.0
  f = np.asarray(v, np.float64).reshape(B, -1)
  s = f.sum(0)
  ms = float(np.mean(f * f))
  return float((np.sum(s * s) - np.sum(f * f)) / (B * (B - 1) * f.shape[1] * ms)) if ms > 0 else 0.0


def _by_position(v):
  """v: (batch, positions..., features) as float64 (batch, P, features) with B, P, D and the mean square; None
  when v has no position axis."""
  f = np.asarray(v, np.float64)
  if f.ndim < 3:
    return None
  B, D = f.shape[0], f.shape[-1]
  f = f.reshape(B, -1, D)
  return f, B, f.shape[1], D, float(np.mean(f * f))


def position_corr(v) -> float | None:
  """Mean over pairs of distinct positions t != t' of one example of E[v_t . v_t'] / E[v^2] (uncentred), for
  v: (batch, positions..., features); None when v has no position axis (numpy float64)."""
  got = _by_position(v)
  if got is None:
    return None
  f, B, P, D, ms = got
  if P < 2 or ms <= 0:
    return 0.0
  s = f.sum(1)
  return float((np.sum(s * s) - np.sum(f * f)) / (B * P * (P - 1) * D * ms))


def cross_position_corr(v) -> float | None:
  """Mean over pairs of distinct examples b != b' and distinct positions t != t' of E[v_bt . v_b't'] / E[v^2]
  (uncentred), for v: (batch, positions..., features); None when v has no position axis (numpy float64). With
  `pair_corr` (same position) and `position_corr` (same example) it is the third correlation a leaf shared by
  the positions needs in its minibatch G."""
  got = _by_position(v)
  if got is None:
    return None
  f, B, P, D, ms = got
  if B < 2 or P < 2 or ms <= 0:
    return 0.0
  tot, per_ex, per_pos = f.sum((0, 1)), f.sum(1), f.sum(0)
  pairs = tot @ tot - np.sum(per_ex * per_ex) - np.sum(per_pos * per_pos) + np.sum(f * f)
  return float(pairs / (B * (B - 1) * P * (P - 1) * D * ms))


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


def relu_gate_coupling(r: float, n: int) -> float:
  """E[x_p,i x_p',i m_p m_p'] / E[x_p,i^2 m_p] for two positions p != p' of one example, x the patches of a
  weight layer with fan-in n (correlation r between the two patches), m the ReLU gate 1{w.x > 0} of one output
  unit: how strongly two positions' terms of a shared weight's gradient add up.

  Per weight column w (unit norm; x isotropic Gaussian), x_i = w_i u + z_i with u = w.x and z independent of u,
  so the sum over i gives (2/n) [E[u u' m m'] + (n - 1) r E[m m']], with the ReLU's arc-cosine kernels
  E[u u' m m'] = (sin t + (pi - t) cos t) / (2 pi) and E[m m'] = (pi - t) / (2 pi), t = acos r. At r = 0 it is
  1 / (pi n): the gate correlates each position's gradient with its own patch, a 1/fan-in effect that the
  leading order drops and that matters below an average pooling, where the positions share their gradient.
  """
  r = min(max(float(r), -1.0), 1.0)
  t = math.acos(r)
  j1 = (math.sin(t) + (math.pi - t) * math.cos(t)) / (2 * math.pi)
  return 2.0 / n * (j1 + (n - 1) * r * (math.pi - t) / (2 * math.pi))

"""Design helpers: inits, scales and diagnostics that follow from the calculus (docs/calculus.md)."""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jscale import checks, mlp
from jscale.calculus.moments import dense_moments, init_weight_sq


def geometric_weight_sq(widths: Sequence[int], c: float = 2.0, kernel_taps: Sequence[int] | None = None) -> np.ndarray:
  """E[W_l^2] = c / sqrt(k_l n_l n_{l+1}) per layer: the geometric init, G_l = nu / c^2 for every l."""
  widths = mlp.check_widths(widths)
  if not (c > 0 and math.isfinite(c)):
    raise ValueError(f"c must be finite and > 0, got {c!r}")
  k = np.ones(len(widths) - 1) if kernel_taps is None else np.asarray(kernel_taps, np.float64)
  if k.shape != (len(widths) - 1,) or np.any(k < 1):
    raise ValueError(f"kernel_taps needs {len(widths) - 1} entries >= 1, got {kernel_taps!r}")
  n = np.asarray(widths, np.float64)
  return c / np.sqrt(k * n[:-1] * n[1:])


def geometric_output_sq(widths: Sequence[int], c: float = 2.0, x0_sq: float = 1.0) -> float:
  """Telescoping output moment of a geometric-init ReLU MLP: c^L / 2^(L-1) sqrt(n_0 / n_L) E[x_0^2]."""
  widths = mlp.check_widths(widths)
  L = len(widths) - 1
  return c ** L / 2 ** (L - 1) * math.sqrt(widths[0] / widths[-1]) * x0_sq


def output_multiplier(out: jax.Array, target_std: float = 0.05) -> jax.Array:
  """The fixed scalar that brings the outputs measured on one batch to std `target_std` (paper App. H)."""
  if not target_std > 0:
    raise ValueError(f"target_std must be > 0, got {target_std!r}")
  return target_std / jnp.std(out)


def bias_balance_input_scale(x0_sq, n_0: int, k: int = 1):
  """Multiplier s on the inputs so that E[(s x_0)^2] = 1 / sqrt(k n_0): first-layer weights and biases
  (a weight on a constant-1 input) then have equal scale."""
  n_0, k = checks.positive_int(n_0, "n_0"), checks.positive_int(k, "k")
  # float32 on the host, as jnp computed it (division and square root are correctly rounded either way): in
  # jnp, three programs compiled in every inspect of a fresh process
  return np.sqrt(np.float32(1.0 / math.sqrt(k * n_0)) / np.asarray(x0_sq, np.float32))


def feature_weight_G(widths: Sequence[int], feature_scales, weight_scales, x0_sq: float = 1.0,
                     init="glorot_normal", activation: str = "relu") -> np.ndarray:
  """Predicted batch-1 G_l (unit gradient at the logits) with the inputs divided by a feature scale f
  (E[x_0^2] = x0_sq / f^2) and the first layer's weights by a weight scale w (E[W_0^2] / w^2), the rest
  as `init` designs them. Shape (len(weight_scales), len(feature_scales), L), float64."""
  base = init_weight_sq(widths, init)
  out = np.empty((len(weight_scales), len(feature_scales), len(base)))
  for i, w in enumerate(weight_scales):
    wsq = base.copy()
    wsq[0] /= w * w
    for j, f in enumerate(feature_scales):
      out[i, j] = dense_moments(widths, wsq, x0_sq=x0_sq / (f * f), activation=activation).G
  return out


class Preconditioning(NamedTuple):
  ratio: np.ndarray   # G_l / median_l G_l
  verdicts: tuple     # per layer: "balanced" (within 2x), "mild" (10x), "poor" (100x), "severe"
  score: float        # max_l |log10(G_l / median G)|: 0 for a perfectly preconditioned network


def preconditioning(G) -> Preconditioning:
  """How far each layer's G_l is from the network's median: the paper's preconditioning criterion."""
  G = np.asarray(G, np.float64)
  if G.ndim != 1 or G.size == 0:
    raise ValueError(f"G must be a non-empty 1-d array, got shape {G.shape}")
  if np.any(~np.isfinite(G)) or np.any(G <= 0):
    return Preconditioning(np.full(G.shape, np.nan), ("undefined",) * G.size, float("inf"))
  ratio = G / np.median(G)
  dev = np.abs(np.log10(ratio))
  verdicts = tuple("balanced" if d <= math.log10(2) else "mild" if d <= 1 else "poor" if d <= 2 else "severe"
                   for d in dev)
  return Preconditioning(ratio, verdicts, float(dev.max()))


class CalculusCheck(NamedTuple):
  ok: bool
  nu_spread: float  # max nu / min nu over the weight layers (1 when nu is kept)
  reason: str


def check_calculus(nu, tol: float = 0.5) -> CalculusCheck:
  """Flags a network whose measured nu_l is not the same across layers (tanh saturating, max-pool, ...):
  there the calculus does not apply. `tol` is the allowed relative spread of nu (set it from the
  Monte-Carlo error of the measurement; the default 50% is far above the error at width >= 64)."""
  nu = np.asarray(nu, np.float64)
  if nu.size == 0 or np.any(~np.isfinite(nu)) or np.any(nu <= 0):
    return CalculusCheck(False, float("nan"), "nu is zero or not finite: no signal propagates")
  spread = float(nu.max() / nu.min())
  if spread > 1 + tol:
    return CalculusCheck(False, spread, f"nu varies {spread:.3g}x across layers: outside the calculus "
                         "(a non-homogeneous activation out of its linear regime, or another nu-breaking layer)")
  return CalculusCheck(True, spread, "nu is kept across layers")

"""Each example's own scale: why a smooth activation's G is not E[x^2] E[dy^2] (docs/calculus.md, "Each
example's own scale").

A kernel's per-example gradient is an outer product, so its G is E_b[|x_b|^2 |dy_b|^2] over examples, which the
rules factor as E[x^2] E[dy^2]. Examples differ in scale: the inputs' own norms (|x_b|^2 / d has s.d.
sqrt(2 / d)), and at every layer a finite-width spread of its own (one draw's W and units treat each example's
direction differently). Through a positively homogeneous activation (ReLU) an example's gradient does not
depend on its scale; through SiLU or GELU, E[phi'^2] grows with it (tanh: shrinks), so an example large at
layer l is large again in its backward, and the two factors covary. [derived] With l_b = log E_units[y_b^2] of
one example, and V its variance over examples:
  dense   V_out = V_in + 2 (1 - r^2) / n_out     (|y_b|^2 = x_b^T W W^T x_b: the example's shared part
                                                   m and its own part e_b meet one draw's W W^T; r = |m|^2 / n q)
  phi     V_out = gamma^2 V_in + (var(phi^2) - cov(phi^2, y^2)^2 / var(y^2)) / (n E[phi^2]^2)
          (the units' own spread given the example's scale; pooled over units at the draw's offsets)
  gamma = d log E[phi^2] / d log q,  beta = d log E[phi'^2] / d log q,  the spread moving at fixed offsets
  (Stein: d E[f(m + s z)] / d s^2 = E[f(m + s z) (z^2 - 1)] / (2 s^2)).
The backward carries b = d log |g_b|^2 / d l_b (Backward.b): 0 at the outputs of the random projection (its
v_b does not depend on the example), unchanged through a dense layer, beta + gamma b through phi. Then, for
per-example scales lognormal over examples:
  G (a kernel)        times exp(V_x b_y)                  (Cov(log |x_b|^2, log |dy_b|^2))
  E[phi^2], E[phi'^2] times 1 + (q^2 F'' / 2F) (e^V - 1), F'' the moment's second derivative in q (E over
                      examples of each one's own moment: Jensen; the carried mean alike, draw_mean.py), with V
                      the scale the input sets: without the last dense layer's own term, its units' sample
  E[dy^2] at phi      times exp(b (beta gamma V + c))      (E[phi'^2] of an example against its |dx_b|^2; c the
                      units' own covariance of phi'^2 and phi^2 given y^2)
Tracked only without token positions (a LayerNorm resets each token's scale) and only where the draw's offsets
are carried (elementwise.py); a ReLU, whose beta is 0 and gamma 1, changes nothing.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from jscale.calculus import activation_maps as am

ORDER = 32


class ScaleResponse(NamedTuple):
  gamma: float        # d log E[phi^2] / d log q
  beta: float         # d log E[phi'^2] / d log q
  fresh: float        # the units' own contribution to V_out (per example, over its n units)
  cross: float        # c: the units' own covariance of log E[phi'^2] and log E[phi^2] of one example
  curv_f: float       # q^2 F'' / (2 F), F = E[phi^2] as a function of q: E_b[F(q_b)] = F(q) (1 + curv_f var)
  curv_b: float       # the same for E[phi'^2]  (var = Var(q_b) / q^2 = e^V - 1)

  def jensen(self, v: float) -> tuple[float, float]:
    """The factors on E[phi^2] and E[phi'^2] when each example has its own q_b, lognormal with V = v."""
    var = math.expm1(v)
    return 1.0 + self.curv_f * var, 1.0 + self.curv_b * var


def dense_fresh(n_out: int, r: float) -> float:
  """What one draw's W adds to V: 2 (1 - r^2) / n_out (r the output's example correlation)."""
  r = min(max(float(r), 0.0), 1.0)
  return 2.0 * (1.0 - r * r) / max(int(n_out), 1)


def response(phi, m: np.ndarray, q: float, n: int, nodes: am.OffsetNodes | None = None) -> ScaleResponse | None:
  """gamma, beta and the units' own terms of phi at per-unit offsets m (common spread s^2 = q - mean(m^2)),
  n units per example; None where the spread is ~0 (no scale to move). `nodes`: this phi's
  `am.offset_nodes(phi, m, am.offset_spread(m, q), ORDER)`, where the caller has it already."""
  m = np.asarray(m, np.float64).reshape(-1)
  s2 = q - float(np.mean(m * m))
  if not (s2 > 1e-6 * q and q > 0):
    return None
  y, v, d, z, w = nodes if nodes is not None else am.offset_nodes(phi, m, math.sqrt(s2), ORDER)
  a, c, y2 = v * v, d * d, y * y
  F, C = float(np.mean(a @ w)), float(np.mean(c @ w))
  if not (F > 0 and C > 0 and np.isfinite(F) and np.isfinite(C)):
    return None
  zz = (z * z - 1) * w
  gamma = q * float(np.mean(a @ zz)) / (2 * s2 * F)
  beta = q * float(np.mean(c @ zz)) / (2 * s2 * C)
  # d^2 E[f(m + s z)] / d(s^2)^2 = E[f(m + s z) He_4(z)] / (4 s^4)
  z4 = am.he4_weights(ORDER)
  curv_f = q * q * float(np.mean(a @ z4)) / (8 * s2 * s2 * F)
  curv_b = q * q * float(np.mean(c @ z4)) / (8 * s2 * s2 * C)

  def cov(p, r):   # over one unit's examples, pooled over units
    return float(np.mean((p * r) @ w - (p @ w) * (r @ w)))

  var_y = cov(y2, y2)
  if not var_y > 0:
    return None
  ay, cy = cov(a, y2), cov(c, y2)
  fresh = max(cov(a, a) - ay * ay / var_y, 0.0) / (n * F * F)
  cross = (cov(c, a) - cy * ay / var_y) / (n * F * C)
  return ScaleResponse(gamma, beta, fresh, cross, curv_f, curv_b)


def input_var(x: np.ndarray) -> float | None:
  """V of the input: the variance over examples of log E[x_b^2]; None for a zero example or one example."""
  f = np.asarray(x, np.float64).reshape(x.shape[0], -1)
  sq = np.mean(f * f, axis=1)
  if f.shape[0] < 2 or not np.all(sq > 0):
    return None
  return float(np.var(np.log(sq)))


def kernel_factor(v_x: float | None, b_y: float | None) -> float | None:
  """exp(V_x b_y): E_b[|x_b|^2 |dy_b|^2] / (E[x^2] E[dy^2]); None where either is not tracked or b is 0
  (nothing to correct: the ReLU networks' predictions stay as they were)."""
  if v_x is None or b_y is None or b_y == 0.0:
    return None
  return math.exp(v_x * b_y)

"""Each unit's own column and own value: what a smooth activation's slopes owe to the dense kernels beside it
(docs/calculus.md, "Each unit's own column and own value").

The rules take a unit's slope phi'(y_k) independent of the weights that carry its gradient. Two couplings
are not, both O(1 / width) and both from one draw's kernels (nothing measured inside the network):

  (a) the dense layer below the activation: unit k's input y_k = h . W_k has its own spread s_k^2 ~ |W_k|^2
      (isotropic h), so its E[phi'^2] follows its column norm, and the same column carries its gradient back:
      |dx|^2 = sum_k |W_k|^2 g_k^2 (+ cross terms of mean 0), so the layer's backward factor is
          mean_k(|W_k|^2 C_k) / (mean_k |W_k|^2 mean_k C_k),   C_k = E[phi'(m_k + s_k z)^2],
      s_k^2 = s^2 |W_k|^2 / mean |W|^2 (the draw's offsets m_k, the common spread s^2 shared in proportion).
  (b) the dense layer above the activation: unit k's own value h_k = phi(y_k) enters every y'_j = h . W'_j
      above, so the gradient dx_k = sum_j W'_kj phi_a'(y'_j) c_j comes back through slopes it moved itself.
      To second order in h_k W'_kj (the first order has W'^3, mean 0):
          E[dx_k^2 | h_k] = E[dx^2] (1 + R h_k^2),   R = (mean W'^4 / mean W'^2) (d C_a / d s_a^2) / C_a
      (d C_a / d s^2 = E[(phi_a'^2)''] / 2 = E[phi_a'^2 He_2(z)] / (2 s^2), Stein, at the offsets above), and
      since h_k^2 and phi'(y_k)^2 vary together, E[phi'^2 dx^2] = E[phi'^2] E[dx^2] (1 + R Cov(phi'^2,
      phi^2) / E[phi'^2]) (the covariance over units and examples at the draw's offsets). SiLU and GELU's
      slopes grow with the spread and with the value (R > 0, Cov > 0); tanh's both shrink: positive too.
Two kernels up (`chain_step`): h_k's perturbation delta reaches the activation above the next kernel as
delta J_kj + delta^2 J'_kj / 2 (J the Jacobian through the first activation above), which adds
kappa (3 E[J^2] + 5 Cov(J', y)) to R (J^4 by its Gaussian 4th moment; 5/2 J^2 J' phi'^2' by Stein, with
Cov(J', y) = fan-in E[W^2] E[phi'' phi] E[W'^2] from the first activation above's curvature). For SiLU the two
add; for tanh they cancel (Monte Carlo, 3 draws: -0.042 and +0.046 of E[dx^2]; the adjacent term -0.037).
Carried no further: the same recursion a third kernel up predicted tanh's R at -0.019 where Monte Carlo
measured -0.047 (SiLU +0.059 vs +0.046 +- 0.007), so some third-order coupling is missing there.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from jscale.calculus import activation_maps as am

ORDER = 32


def column_factor(phi, m: np.ndarray, q: float, col_sq: np.ndarray) -> float | None:
  """(a): the dense layer's backward factor mean(|W_k|^2 C_k) / (mean |W_k|^2 mean C_k), unit k's spread
  following its column norm col_sq[k]; None where there is no spread or no column."""
  m = np.asarray(m, np.float64).reshape(-1)
  col = np.asarray(col_sq, np.float64).reshape(-1)
  s2 = q - float(np.mean(m * m))
  if col.shape != m.shape or not (s2 > 1e-6 * q and q > 0) or not np.mean(col) > 0:
    return None
  _, _, d, _, w = am.offset_nodes(phi, m, np.sqrt(s2 * col / np.mean(col)), ORDER)
  C = (d * d) @ w
  f = float(np.mean(col * C) / (np.mean(col) * np.mean(C)))
  return f if math.isfinite(f) and f > 0 else None


class Slopes(NamedTuple):
  """A smooth activation's slope terms at the draw's offsets (means over the units; common spread)."""
  C: float        # E[phi'^2]
  kappa: float    # (d C / d s^2) / C = E[phi'^2 He_2(z)] / (2 s^2 C): how E[phi'^2] grows with added variance
  cov: float      # Cov(phi'^2, phi^2) / C over the entries (between units too)
  d_pp: float     # E[(phi phi')'] = E[phi phi' z] / s (Stein): a second-order shift's carry-over with y
  pp2: float      # E[phi'' phi] = E[(phi phi')'] - C: a first-order shift's square turned into a shift along y


def slopes(phi, m: np.ndarray, q: float, nodes: am.OffsetNodes | None = None) -> Slopes | None:
  """The terms above; None where the spread is ~0. `nodes`: this phi's
  `am.offset_nodes(phi, m, am.offset_spread(m, q), ORDER)`, where the caller has it already."""
  m = np.asarray(m, np.float64).reshape(-1)
  s2 = q - float(np.mean(m * m))
  if not (s2 > 1e-6 * q and q > 0):
    return None
  _, v, d, z, w = nodes if nodes is not None else am.offset_nodes(phi, m, math.sqrt(s2), ORDER)
  a, c = v * v, d * d
  C = float(np.mean(c @ w))
  if not (C > 0 and math.isfinite(C)):
    return None
  kappa = float(np.mean(c @ ((z * z - 1) * w))) / (2 * s2 * C)
  cov = (float(np.mean((a * c) @ w) - np.mean(a @ w) * np.mean(c @ w))) / C
  d_pp = float(np.mean((v * d) @ (z * w))) / math.sqrt(s2)
  out = Slopes(C, kappa, cov, d_pp, d_pp - C)
  return out if all(math.isfinite(t) for t in out) else None


def chain_step(state: tuple, gain: float, sl: Slopes) -> tuple[float, tuple]:
  """One smooth activation M above a lower unit's value (its perturbation delta): `state` (J2, D) at the
  output of the activation below M, i.e. (E[J^2] C, E[(phi phi')'] D + E[phi'' phi] E[J^2]) of that one,
  `gain` = fan-in x E[W^2] of M's kernel. At M's input the perturbation is delta J (E[J^2] = gain J2) plus
  delta^2 J' / 2 with Cov(J', y) = gain D; the unit's gradient gains, per delta^2 and relative,
  kappa_M (3 E[J^2] + 5 Cov(J', y)) (the J^4 term, and 5/2 J^2 J' F' by Stein). Returns that and the state
  at M's output."""
  j2, dd = gain * state[0], gain * state[1]
  return sl.kappa * (3 * j2 + 5 * dd), (sl.C * j2, sl.d_pp * dd + sl.pp2 * j2)


def kernel_ratio(W: np.ndarray) -> float | None:
  """mean W^4 / mean W^2 of one draw's kernel (3 E[W^2] for a Gaussian; a truncated normal's is lower)."""
  W = np.asarray(W, np.float64)
  w2 = float(np.mean(W * W))
  return float(np.mean(W ** 4)) / w2 if w2 > 0 else None

"""One ReLU unit's mask-flip correction after a shift of its pre-activation, in closed form
(docs/calculus.md, *ReLU mask flips after the first step*). **[derived, beyond the paper]**

A unit with pre-activation y moved by d has, beyond the first order m d (m = 1[y > 0]),

    c = relu(y + d) - relu(y) - m d = relu(|d| - |y|) 1[sign y = -sign d]   (>= 0: relu is convex),

non-zero only where the step crosses zero: a unit switched on (y < 0 < y + d) or off (y + d < 0 < y). For
y ~ N(0, v) and a fixed d (t = |d| / sqrt(v), phi / Phi the standard normal's density / cdf),

    E[c]       = |d| (Phi(t) - 1/2) - sqrt(v) (phi(0) - phi(t))                (~ d^2 phi(0) / 2 sqrt(v))
    E[c^2]     = d^2 (Phi(t) - 1/2) - 2 |d| sqrt(v) (phi(0) - phi(t)) + v (Phi(t) - 1/2 - t phi(t))
    E[m d c]   = d E[c]     if d < 0, else 0   (only a unit switched off was counted in m d)
    E[relu(y) c] = |d| sqrt(v) (phi(0) - phi(t)) - v (Phi(t) - 1/2 - t phi(t))   if d < 0, else 0.

The step's shift here is d = kappa y + delta s + e: a change along the unit's own pre-activation (kappa, the
regression of the step on y: the own-activation component), a sign step of size delta (a bias under Adam; s = +-1
with equal odds) and a Gaussian part e ~ N(0, s2) independent of y (the kernels' change), averaged over e by
Gauss-Hermite. Since relu is positively homogeneous, kappa only rescales y: with y' = (1 + kappa) y and a = delta s
+ e, c = relu(y' + a) - relu(y') - 1[y' > 0] a, so E[c], E[c^2] are those of v' = (1 + kappa)^2 v at shift a,
E[m d c] = E[m a c] + kappa / (1 + kappa) E[relu(y') c] and E[relu(y) c] = E[relu(y') c] / (1 + kappa).
Not modelled: the spread of v over units and the step's dependence on y beyond kappa.

At the unit itself the flips' second-order effect cancels: E[relu(y + d)^2] - E[(relu(y) + m d)^2] =
E[2 (relu(y) + m d) c + c^2] = E[(y + d)^2 (1[y + d > 0] - 1[y > 0])], switched-on units adding what
switched-off ones take away, exactly so for this law (y symmetric, the sign step's s independent of y). What the
step's flips cost a layer's E[h^2] comes from the sign's dependence on the unit's state and from the coherence of
c with the change through the weights above (docs/calculus.md: measured, not modelled).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.special import ndtr

_PHI0 = 1.0 / np.sqrt(2 * np.pi)
_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(48)
_WEIGHTS = _WEIGHTS / _WEIGHTS.sum()


class Flips(NamedTuple):
  c: np.ndarray       # E[c]
  c2: np.ndarray      # E[c^2]
  mdc: np.ndarray     # E[m d c]
  hc: np.ndarray      # E[relu(y) c]


def _fixed(v: np.ndarray, d: np.ndarray) -> Flips:
  """The moments for y ~ N(0, v) at a fixed shift d (broadcast)."""
  a, sd = np.abs(d), np.sqrt(v)
  t = a / sd
  half, dens = ndtr(t) - 0.5, np.exp(-0.5 * t * t) * _PHI0
  sec = v * (half - t * dens)              # int_0^|d| u^2 phi_v(u) du
  c = a * half - sd * (_PHI0 - dens)
  neg = d < 0
  return Flips(c, d * d * half - 2 * a * sd * (_PHI0 - dens) + sec, np.where(neg, d * c, 0.0),
               np.where(neg, a * sd * (_PHI0 - dens) - sec, 0.0))


def moments(v, delta=0.0, s2=0.0, kappa=0.0) -> Flips:
  """E over y ~ N(0, v) and d = kappa y + delta s + e (s = +-1, e ~ N(0, s2), independent of y) of the flip
  correction's moments (module doc); v, delta, s2, kappa broadcast."""
  v, delta, s2, kappa = np.broadcast_arrays(*(np.asarray(q, np.float64) for q in (v, delta, s2, kappa)))
  if np.any(v <= 0) or np.any(delta < 0) or np.any(s2 < 0) or np.any(kappa <= -1):
    raise ValueError("need v > 0, delta >= 0, s2 >= 0, kappa > -1")
  e = np.sqrt(s2)[..., None] * _NODES
  g = (1 + kappa)[..., None]
  parts = [_fixed(v[..., None] * g * g, sign * delta[..., None] + e) for sign in (1.0, -1.0)]
  c, c2, mac, hc = (0.5 * np.sum((p + q) * _WEIGHTS, -1) for p, q in zip(*parts))
  return Flips(c, c2, mac + kappa / (1 + kappa) * hc, hc / (1 + kappa))

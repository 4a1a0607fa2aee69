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
c with the change through the weights above (docs/calculus.md: measured, not modelled). The first of these, the
bias's sign given the unit's mean, and the unit's net term it gives are below (sign_given_mean, state_net).
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


# -- The bias's sign step given the unit's state (docs/calculus.md, *The sign step given the unit's state*) --
# A unit's pre-activation over the batch is y_b = mu + eps_b: mu ~ N(0, rho v) the unit's mean over the examples
# (rho its share of v), eps_b ~ N(0, (1 - rho) v). The bias's gradient g = (1/B) sum_b m_b (W_j . gamma_b) (W_j the
# unit's outgoing weights, gamma_b = p_b - e_y the logits' gradient) has an own-activation part: the unit's
# share W_j h_b of the logits moves gamma_b by A_b W_j h_b (A_b = diag p_b - p_b p_b^T), so
#     g = k_A |W_j|^2 hbar(mu) + r,   hbar = E_eps[relu(mu + eps)],   k_A = E[W_j^T A_b W_j] / E|W_j|^2,
# positive and growing with mu; the rest r = W_j . Gamma, Gamma = (1/B) sum_b m_b gamma_b, is symmetric in W_j, so
# taken as Gaussian around 0 with Var = |W_j|^2 / p (q^2 |gbar|^2 + q E|gamma - gbar|^2 / B) (q = Phi(mu / sd eps)
# the share of examples on, p the logits). Adam's step is s = -sign(g), so with |W_j|^2 = E[W^2] chi^2_p,
#     E[s | mu] = -E_W[2 Phi(t) - 1],   t = k_A |W_j| hbar sqrt(p) / sqrt(q^2 |gbar|^2 + q E|gamma - gbar|^2 / B).
_CHI_Q = (np.arange(64) + 0.5) / 64


def sign_given_mean(mu, v, rho, k_a, w2, p, g_mean2, g_var, batch):
  """E[s | mu] of the bias's Adam sign step (comment above); mu broadcasts, the rest are scalars."""
  mu = np.asarray(mu, np.float64)[..., None]
  se = np.sqrt((1 - rho) * v)
  q = ndtr(mu / se)
  hbar = mu * q + se * np.exp(-0.5 * (mu / se) ** 2) * _PHI0
  from scipy.stats import chi2  # at first use: scipy.stats costs every `import jscale` ~0.8 CPU s
  wn = np.sqrt(w2 * chi2.ppf(_CHI_Q, p))
  t = k_a * wn * hbar * np.sqrt(p) / np.sqrt(q * q * g_mean2 + q * g_var / batch)
  return -np.mean(2 * ndtr(t) - 1, -1)


def sign_moments(v, rho, **law):
  """(E[s], E[s sign mu]) over mu ~ N(0, rho v), the sign law sign_given_mean's (law: its other arguments)."""
  mu = np.sqrt(rho * v) * _NODES
  es = sign_given_mean(mu, v, rho, **law)
  return float(np.sum(_WEIGHTS * es)), float(np.sum(_WEIGHTS * es * np.sign(mu)))


def _net_fixed(mu, a, sd):
  """E[(y + a)^2 (1[y + a > 0] - 1[y > 0])] for y ~ N(mu, sd^2), a fixed shift."""
  def pos2(m):   # E[x^2 1[x > 0]], x ~ N(m, sd^2)
    return (m * m + sd * sd) * ndtr(m / sd) + m * sd * np.exp(-0.5 * (m / sd) ** 2) * _PHI0
  P, dens = ndtr(mu / sd), np.exp(-0.5 * (mu / sd) ** 2) * _PHI0
  return pos2(mu + a) - pos2(mu) - 2 * a * (mu * P + sd * dens) - a * a * P


def state_net(v, rho, delta, sign_law=None, s2=0.0, kappa=0.0):
  """The unit's own flip term E[(y + d)^2 (1[y + d > 0] - 1[y > 0])] (its E[h^2] after the step less the first
  order's, per unit) for y = mu + eps as above and d = kappa y + delta s + e, e ~ N(0, s2), where the sign step s
  depends on the unit's mean: E[s | mu] = sign_law(mu) (None: s independent of y, where the term is 0). kappa only
  rescales y (relu is positively homogeneous), so mu is rescaled back for the sign law."""
  g = 1.0 + kappa
  vp = g * g * v
  mu = (np.sqrt(rho * vp) * _NODES)[:, None]
  e = (np.sqrt(s2) * _NODES)[None, :]
  es = np.zeros_like(mu) if sign_law is None else np.asarray(sign_law(mu / g), np.float64)
  sd = np.sqrt((1 - rho) * vp)
  f = 0.5 * (1 + es) * _net_fixed(mu, delta + e, sd) + 0.5 * (1 - es) * _net_fixed(mu, -delta + e, sd)
  return float(_WEIGHTS @ f @ _WEIGHTS)


def shift_net(v, mu, kappa, s2) -> np.ndarray:
  """The unit's own flip term E[(y + d)^2 (1[y + d > 0] - 1[y > 0])] for y ~ N(0, v) and d = mu + kappa y + e,
  e ~ N(0, s2) independent of y: a mean shift mu common to the units, a part along y and a Gaussian rest;
  broadcast, 0 where v is 0. With mu = 0 it is 0 (what switched-on units add, switched-off ones take away); a
  shift down (mu < 0) switches more active units off than it switches inactive ones on, and the term is negative
  (for a small step ~ mu (mu^2 / 3 + s2) / sqrt(2 pi v'), v' = (1 + kappa)^2 v: odd and cubic in the shift,
  so no spread of the shift over the units gives it without a mean). kappa only rescales y (relu is positively
  homogeneous); Gauss-Hermite over e."""
  v, mu, kappa, s2 = np.broadcast_arrays(*(np.asarray(q, np.float64) for q in (v, mu, kappa, s2)))
  ok = v > 0
  sd = np.sqrt(np.where(ok, v, 1.0)) * np.maximum(1 + kappa, 1e-6)
  f = _net_fixed(0.0, mu[..., None] + np.sqrt(s2)[..., None] * _NODES, sd[..., None])
  return np.where(ok, f @ _WEIGHTS, 0.0)


def shift_regression(v, mu, kappa, s2) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                                   np.ndarray]:
  """For y ~ N(0, v), d = mu + kappa y + e (a mean shift mu of fixed sign, e ~ N(0, s2)), h = relu(y),
  dh = 1[y > 0] d and the flip rest c = relu(y + d) - h - dh: (E[h c], E[dh c], E[h^2], E[h dh], E[dh^2], E[c^2]),
  broadcast. Only units switched off (y > 0 > y + d) give c along h or dh; `moments` with the shift's sign fixed.
  The regression of c on (h, dh) pooled over tokens is the flips' carry as a rescale of h and dh
  (docs/calculus.md, *The flips' rest as a rescale of h and dh*)."""
  v, mu, kappa, s2 = np.broadcast_arrays(*(np.asarray(q, np.float64) for q in (v, mu, kappa, s2)))
  ok = v > 0
  vv = np.where(ok, v, 1.0)
  g = np.maximum(1 + kappa, 1e-6)
  f = _fixed((vv * g * g)[..., None], mu[..., None] + np.sqrt(s2)[..., None] * _NODES)
  c2, mac, hc = (np.sum(p * _WEIGHTS, -1) for p in (f.c2, f.mdc, f.hc))
  ey = np.sqrt(vv) * _PHI0
  out = (hc / g, mac + kappa / g * hc, vv / 2, kappa * vv / 2 + mu * ey,
         kappa ** 2 * vv / 2 + 2 * kappa * mu * ey + (mu * mu + s2) / 2, c2)
  return tuple(np.where(ok, o, 0.0) for o in out)


# Gauss-Legendre nodes on [0, 8] for a half-normal standard variable (its density folded in the weights): the
# integrand of half_net is smooth in y on each half, where Gauss-Hermite over the whole line would straddle the kink
_HALF_Y, _HALF_W = np.polynomial.legendre.leggauss(64)
_HALF_Y = 4.0 * (_HALF_Y + 1.0)
_HALF_W = 4.0 * _HALF_W * np.exp(-0.5 * _HALF_Y ** 2) * _PHI0


def _pos2(m, s):
  """E[x^2 1[x > 0]] for x ~ N(m, s^2) (s > 0)."""
  return (m * m + s * s) * ndtr(m / s) + m * s * np.exp(-0.5 * (m / s) ** 2) * _PHI0


def half_net(v, on: tuple, off: tuple) -> np.ndarray:
  """The unit's own flip term E[(y + d)^2 (1[y + d > 0] - 1[y > 0])] for y ~ N(0, v) whose step has its own law
  on each side of zero: d = mu + kappa y + e, e ~ N(0, s2), with (mu, kappa, s2) = on where y > 0 and off where
  y < 0 (docs/calculus.md, *The step's law on each side of zero*). An SGD step's rest is linear in the unit's own
  mask over the batch, so a unit off at a token is mostly off where that token's change comes from and moves
  less: shift_net's one law on both sides lets as many units switch on as the active side's spread would.
  Exact over e (the closed form of E[relu(x)^2] for Gaussian x), Gauss-Legendre over each half of y; broadcast,
  0 where v is 0."""
  v = np.asarray(v, np.float64)
  ok = v > 0
  sd = np.sqrt(np.where(ok, v, 1.0))[..., None]
  out = 0.0
  for sign, (mu, kappa, s2) in ((1.0, on), (-1.0, off)):
    y = sign * sd * _HALF_Y
    m = (1.0 + np.asarray(kappa, np.float64)[..., None]) * y + np.asarray(mu, np.float64)[..., None]
    s = np.sqrt(np.maximum(np.asarray(s2, np.float64), 1e-30))[..., None] * np.ones_like(y)
    # on: relu(u)^2 - u^2 (the first order counted all of u = y + d); off: relu(u)^2 (it counted none)
    f = _pos2(m, s) - (m * m + s * s) if sign > 0 else _pos2(m, s)
    out = out + f @ _HALF_W
  return np.where(ok, out, 0.0)

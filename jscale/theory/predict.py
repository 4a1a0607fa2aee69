r"""Predicted average squared singular value of every diagonal Hessian block, at batch 1 and batch B.

Setting: a bias-free-at-init ReLU MLP, y_l = x_l W_l + b_l (W_l is n_l x n_{l+1}, i.i.d. centred entries
with second moment w_l = E[W_l^2]), x_{l+1} = relu(y_l), a linear last layer out = y_{L-1}, and a mean
loss (1/B) sum_b ell(out_b) with per-example output Hessian H_b = d^2 ell / d out_b^2 (n_L x n_L).

Exact structure (Gauss-Newton identity, `hessian.py`): with J_b = d out_b / d y_l and M_b = J_b^T H_b J_b,
    H_{W_l} = (1/B) sum_b (x_b x_b^T) kron M_b,   so
    s_l := ||H_{W_l}||_F^2 / (n_l n_{l+1})
         = [ (1/B^2) sum_b ||x_b||^4 tr(M_b^2) + (1/B^2) sum_{b != b'} (x_b . x_b')^2 tr(M_b M_b') ] / (n_l n_{l+1}).
The bias block is the same with x_b replaced by the constant 1 (and n_l by 1).
Assumption (the calculus's A3): forward quantities (x) and backward ones (M) are independent, so each
expectation factorises into a forward factor and a backward factor:
    E[s_l] = [ R_l Bq_l / B + (1 - 1/B) P_l C_l ] / (n_l n_{l+1}),
    R_l = E||x_l||^4,  P_l = E[(x_b . x_b')^2],  Bq_l = E tr(M_l^2),  C_l = E tr(M_l^b M_l^b').

Forward factors (exact Gaussian-conditional recursions, no width limit taken). Given x_l, the
pre-activations y_l of one example are i.i.d. N(0, q) over units with q = w_l ||x_l||^2; two examples'
pre-activations have correlation rho_l = cosine(x_b, x_b'), estimated by kappa_l = E[x.x'] / E||x||^2.
With theta = arccos(rho), the arc-cosine kernels (Cho & Saul 2009) give, for unit-variance u, v:
    E[relu(u) relu(v)] = J1 / (2 pi),  E[relu(u)^2 relu(v)^2] = J2 / (2 pi),  P(u > 0, v > 0) = (pi - theta) / (2 pi),
    J1 = sin(theta) + (pi - theta) cos(theta),  J2 = 3 sin(theta) cos(theta) + (pi - theta)(1 + 2 cos^2(theta)).
Hence, with n = n_{l+1}, S = E||x||^2 and T = E[||x_b||^2 ||x_b'||^2] (b != b'):
    S_{l+1} = n w S_l / 2,            R_{l+1} = w^2 R_l (n^2 + 5 n) / 4          (E relu^4 = 3 q^2 / 2),
    kappa_{l+1} = J1(theta_l) / pi,   T_{l+1} = w^2 T_l [n J2 / (2 pi) + n (n - 1) / 4],
    P_{l+1} = w^2 T_l [n^2 (J1 / 2pi)^2 + n (J2 / 2pi - (J1 / 2pi)^2)].
kappa is where minibatches part from batch 1: ReLU outputs are uncentred (E[x]^2 = E[x^2] / pi for a
ReLU of a centred Gaussian: kappa_1 = 1/pi even for independent centred inputs), and kappa grows with
depth (the arc-cosine map has fixed point 1), so (x_b . x_b')^2 ~ (kappa n E[x^2])^2 is of the same
order as ||x_b||^4 and B - 1 such cross terms add up: every layer above the first is dominated by them.
The input's S_0, R_0, kappa_0, T_0, P_0 are statistics of the input distribution (`input_stats`).

Backward factors. J_l = J_{l+1} W_{l+1}^T D_l (D_l = diag(y_l > 0)), so M_l = D_l W_{l+1} M_{l+1} W_{l+1}^T D_l
and M_{L-1} = H. Taking W = W_{l+1} independent of M_{l+1} and of the masks (the usual gradient-
independence assumption), Wick's theorem for i.i.d. Gaussian W gives, for diagonal A and symmetric Q1, Q2,
    E tr(A W Q1 W^T A W Q2 W^T) = w^2 [ tr(A^2)(tr Q1 tr Q2 + tr(Q1 Q2)) + (tr A)^2 tr(Q1 Q2) ],
    E[tr(A W Q1 W^T) tr(A' W Q2 W^T)] = w^2 [ tr A tr A' tr Q1 tr Q2 + 2 tr(A A') tr(Q1 Q2) ].
Tracking the four moments  A = E(tr M)^2, Bq = E tr M^2, Ax = E[tr M^b tr M^b'], C = E tr(M^b M^b')
with h = E|D| = n/2, h2 = E|D|^2 = n (n + 1)/4, both-active count e = n p (p = P(both > 0) at rho_l),
e2 = E e^2 = n p + n (n - 1) p^2 and dd = E|D^b||D^b'| = n p + n (n - 1)/4:
    A_l  = w^2 [h2 A + 2 h Bq],        Bq_l = w^2 [h A + (h + h2) Bq],
    Ax_l = w^2 [dd Ax + 2 e C],        C_l  = w^2 [e Ax + (e + e2) C],
starting from the output Hessians' statistics (`loss_stats`): A = E(tr H_b)^2, Bq = E tr H_b^2,
Ax = E[tr H_b tr H_b'], C = E tr(H_b H_b').

Batch 1 and the paper. Keeping only the leading order in width, Bq_l ~ (n_{l+1} E[dy_l^2])^2 tr(H^2)/(tr H)^2
(with E[dy_out^2] = tr H / n_L, so that n_{l+1} E[dy_l^2] = E||J^T u||^2 for u ~ N(0, H)) and
R_l ~ (n_l E[x_l^2])^2, so
    s_l(batch 1) ~ n_l n_{l+1} E[x_l^2]^2 E[dy_l^2]^2 tr(H^2)/(tr H)^2 = nu_l G_l tr(H^2)/(tr H)^2,
proportional to G_l with a layer-independent factor: the paper's Proposition 4 (`predict_leading`, built
on `jscale.calculus.predict_dense`). The recursion above keeps the O(1/n) terms that the paper leaves as
O(n_L / n_{l+1}): the h A term (size (tr H)^2 / (h tr H^2), about n_L / n_{l+1} for a random quadratic loss).

"Uncorrected" at batch B means the batch-1 model with independent, centred examples: the cross terms
vanish and s_l(B) = s_l(1) / B. "Corrected" adds the (1 - 1/B) P_l C_l cross-example term.

Pair-cosine averaging (`pair_cosine=True`). P_l C_l treats (x_b . x_b')^2 and tr(M_b M_b') as independent, but
both rise with the pair's cosine rho_l, which spreads over pairs at finite width. Exactly (Gaussian weights,
weights of the backward pass independent of the masks): given x_l's pair, y_l's pair is n = n_{l+1} i.i.d.
bivariate normals with correlation rho_l, so the pair is a Markov chain in rho, and M_b depends on the pair
only through its directions:
    E[(x_b . x_b')^2 tr(M_b M_b')] = T_l E_w[rho_l^2 C_l(rho_l)],   C_l(rho) = E[tr(M_b M_b') | rho_l = rho],
    C_l(rho)  = w^2 E[ e Ax_{l+1}(rho') + (e + e^2) C_{l+1}(rho') | rho ],
    Ax_l(rho) = w^2 E[ |D_b||D_b'| Ax_{l+1}(rho') + 2 e C_{l+1}(rho') | rho ],
with e the both-active count and rho' the next layer's pair cosine (E_w: weighted by ||x_b||^2 ||x_b'||^2).
Per unit, (e, |D_b||D_b'|, rho') are sums over the n units; to O(1/n) (delta method on the ratio rho') they
are jointly Gaussian with E rho' = J1/pi + O(1/n) bias, Var rho' = Var(phi)/n, Cov(e, rho') = Cov(1_both, phi),
Cov(|D_b||D_b'|, rho') = n Cov(1_{u>0}, phi), phi = 2 relu(u) relu(v) - (J1/pi)(relu(u)^2 + relu(v)^2) centred;
the unit moments are closed-form orthant moments plus one 1-D quadrature (`_unit_moments`). Regressing e and
|D_b||D_b'| on rho' turns each conditional expectation into a 1-D Gauss-Hermite sum over rho'; C_l and Ax_l are
tabulated on a grid of theta = arccos(rho). The outer average takes rho_l ~ N(kappa_l, Var rho_l) with
Var rho_l = P_l / T_l - kappa_l^2 (`_pair_var`). Batch 1 is unchanged: for one example the mask count at every
layer is Binomial(n, 1/2) whatever the direction, so its factorisation is exact under the same assumptions.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import jax.numpy as jnp
import numpy as np

from jscale import calculus, checks, mlp

# Quadrature: u in [0, 10] (Gauss-Legendre, weights include the normal density) for `_unit_moments`;
# probabilists' Gauss-Hermite nodes for averages over a Gaussian pair cosine; the theta grid for C_l(rho).
_LX, _LW = np.polynomial.legendre.leggauss(200)
_QU = 5.0 * (_LX + 1.0)
_QW = 5.0 * _LW * np.exp(-_QU ** 2 / 2) / math.sqrt(2 * math.pi)
_GH_X, _GH_W = np.polynomial.hermite_e.hermegauss(24)
_GH_W = _GH_W / _GH_W.sum()
_THETA = np.linspace(0.0, math.pi, 361)

# The ReLU's backward gain in the calculus, P(y > 0): also E|D| / n, the expected fraction of active units.
_RELU_ACTIVE = calculus.HOMOGENEOUS_GAINS["relu"][1]


class InputStats(NamedTuple):
  """Statistics of the network input's distribution (see the module docstring)."""
  sq_norm: float      # S_0 = E||x||^2
  sq_norm_sq: float   # R_0 = E||x||^4
  dot: float          # E[x_b . x_b'], b != b'
  dot_sq: float       # P_0 = E[(x_b . x_b')^2]
  norm_cross: float   # T_0 = E[||x_b||^2 ||x_b'||^2]
  norm_dot: float | None = None  # E[||x_b|| ||x_b'|| (x_b . x_b')] (None: taken as T_0 E[x.x'] / S_0)


class LossStats(NamedTuple):
  """Statistics of the per-example output Hessians H_b (n_L x n_L)."""
  trace_sq: float        # E (tr H_b)^2
  tr_sq: float           # E tr(H_b^2)
  trace_cross: float     # E tr H_b tr H_b'  (b != b')
  tr_cross: float        # E tr(H_b H_b')    (b != b')


class BlockPrediction(NamedTuple):
  """Predicted average squared singular values of the diagonal blocks, shape (L,) each."""
  weight: np.ndarray
  bias: np.ndarray


def _pair_mean(g: np.ndarray) -> float:
  """Mean of the off-diagonal entries of a square matrix (NaN for 1 x 1)."""
  n = g.shape[0]
  if n < 2:
    return float("nan")
  return float((g.sum() - np.trace(g)) / (n * (n - 1)))


def input_stats(x_BxD) -> InputStats:
  """`InputStats` estimated from a sample of inputs (needs >= 2 rows for the cross terms)."""
  x = np.asarray(x_BxD, np.float64)
  if x.ndim != 2 or x.shape[0] < 2:
    raise ValueError(f"input_stats needs a (B >= 2, D) sample, got shape {x.shape}")
  g = x @ x.T
  sq = np.diag(g)
  norm = np.sqrt(sq)
  return InputStats(float(sq.mean()), float((sq ** 2).mean()), _pair_mean(g), _pair_mean(g ** 2),
                    _pair_mean(np.outer(sq, sq)), _pair_mean(np.outer(norm, norm) * g))


def gaussian_input_stats(n_0: int, sq: float = 1.0) -> InputStats:
  """Closed-form `InputStats` of x ~ N(0, sq I_{n_0}) (independent examples)."""
  return InputStats(n_0 * sq, (n_0 ** 2 + 2 * n_0) * sq ** 2, 0.0, n_0 * sq ** 2, (n_0 * sq) ** 2, 0.0)


def loss_stats(h_BxOxO) -> LossStats:
  """`LossStats` from per-example output Hessians (B >= 2, or B = 1 for a loss with constant H)."""
  h = np.asarray(h_BxOxO, np.float64)
  if h.ndim != 3 or h.shape[1] != h.shape[2]:
    raise ValueError(f"loss_stats needs (B, O, O) output Hessians, got shape {h.shape}")
  tr = np.trace(h, axis1=1, axis2=2)
  flat = h.reshape(h.shape[0], -1)
  gram = flat @ flat.T  # tr(H_b H_b') for symmetric H
  if h.shape[0] == 1:
    return LossStats(float(tr[0] ** 2), float(gram[0, 0]), float(tr[0] ** 2), float(gram[0, 0]))
  return LossStats(float((tr ** 2).mean()), float(np.diag(gram).mean()), _pair_mean(np.outer(tr, tr)),
                   _pair_mean(gram))


def constant_loss_stats(h_OxO) -> LossStats:
  """`LossStats` of a loss whose output Hessian is the same matrix for every example (quadratic)."""
  return loss_stats(np.asarray(h_OxO)[None])


def xent_loss_stats(probs_DxExO) -> LossStats:
  """`LossStats` of softmax cross-entropy from probabilities (draws, examples, n_L): H = diag(p) - p p^T per
  example; pair statistics within each draw (one network, hence a common logit offset), averaged over draws."""
  per_draw = []
  for p in np.asarray(probs_DxExO, np.float64):
    h = np.einsum("eo,op->eop", p, np.eye(p.shape[-1])) - p[:, :, None] * p[:, None, :]
    per_draw.append(loss_stats(h))
  return LossStats(*np.mean(np.array(per_draw), axis=0))


def weight_second_moments(widths: Sequence[int], kernel_init) -> list[float]:
  """E[W_l^2] of each layer as designed by `kernel_init` (a spec, an Initializer, or one per layer)."""
  return calculus.init_weight_sq(widths, kernel_init, what="kernel_init").tolist()


def _j1(theta):
  return math.sin(theta) + (math.pi - theta) * math.cos(theta)


def _j2(theta):
  return 3 * math.sin(theta) * math.cos(theta) + (math.pi - theta) * (1 + 2 * math.cos(theta) ** 2)


def _check(widths, weight_sq, batch_size, activation):
  widths = mlp.check_widths(widths)
  if activation != "relu":
    raise ValueError(f"the block prediction is derived for ReLU networks only, got activation {activation!r}")
  if len(weight_sq) != len(widths) - 1:
    raise ValueError(f"weight_sq has {len(weight_sq)} entries for {len(widths) - 1} weight layers")
  if any(not (w > 0 and math.isfinite(w)) for w in weight_sq):
    raise ValueError(f"weight_sq entries must be finite and > 0, got {list(weight_sq)}")
  checks.positive_int(batch_size, "batch_size")
  return widths


def _pair_var(p, t, kappa):
  """Variance over pairs of the cosine rho_bb', from E[(x.x')^2] / E[|x|^2 |x'|^2] - kappa^2."""
  return max(p / t - kappa * kappa, 0.0) if t > 0 else 0.0


def forward_moments(widths, weight_sq, inputs: InputStats):
  """Per weight layer l: (S_l, R_l, kappa_l, P_l, T_l) of its input x_l, as numpy arrays of shape (L,).

  S_l = n_l E[x_l^2] is the calculus's second-moment propagation (`calculus.dense_moments`); the fourth
  moments R, P, T and the cosine kappa are this module's recursions."""
  L = len(widths) - 1
  x_sq = calculus.dense_moments(widths, weight_sq, x0_sq=inputs.sq_norm / widths[0], activation="relu").x_sq
  r, t, p = inputs.sq_norm_sq, inputs.norm_cross, inputs.dot_sq
  kappa = inputs.dot / inputs.sq_norm
  out = []
  for l in range(L):
    s = inputs.sq_norm if l == 0 else float(widths[l] * x_sq[l])
    out.append((s, r, kappa, p, t))
    if l == L - 1:
      break
    w, n = weight_sq[l], widths[l + 1]
    theta = math.acos(min(1.0, max(-1.0, kappa)))
    var = _pair_var(p, t, kappa)
    m1, m2 = _j1(theta) / (2 * math.pi), _j2(theta) / (2 * math.pi)
    # Pairs differ in rho (e.g. +-1/sqrt(n_0) for independent centred inputs): E[m1(rho)^2] gains
    # (dm1/drho)^2 Var(rho), dm1/drho = (pi - theta) / (2 pi); without it P_1 came out 11% low at n_0 = 30.
    m1sq = m1 * m1 + ((math.pi - theta) / (2 * math.pi)) ** 2 * var
    r = w * w * r * (n * n + 5 * n) / 4
    p = w * w * t * (n * n * m1sq + n * (m2 - m1sq))
    t = w * w * t * (n * m2 + n * (n - 1) / 4)
    # No Var(rho) term in kappa: the curvature gain of E[m1(rho)] is cancelled to this order by
    # E|x_b| E|x_b'| < E|x|^2 (measured: kappa within 1% without it, 1.6% high with it at n_0 = 30).
    kappa = 2 * m1
  return tuple(np.array(v) for v in zip(*out))


def backward_moments(widths, weight_sq, kappas, loss: LossStats, pair_vars=None):
  """Per weight layer l: (A_l, Bq_l, Ax_l, C_l) of M_l = J_l^T H J_l (see the module docstring)."""
  L = len(widths) - 1
  a, bq, ax, c = loss.trace_sq, loss.tr_sq, loss.trace_cross, loss.tr_cross
  out = [None] * L
  out[L - 1] = (a, bq, ax, c)
  for l in range(L - 2, -1, -1):
    w, n = weight_sq[l + 1], widths[l + 1]
    theta = math.acos(min(1.0, max(-1.0, kappas[l])))
    p = (math.pi - theta) / (2 * math.pi)
    # E[p^2] over pairs, dp/drho = 1 / (2 pi sin theta)
    psq = p * p + (0.0 if pair_vars is None else pair_vars[l] / (2 * math.pi * max(math.sin(theta), 1e-12)) ** 2)
    h = n * _RELU_ACTIVE  # E|D| and E|D|^2 of a Binomial(n, P(y > 0)) count of active units
    h2 = h * (1 - _RELU_ACTIVE) + h * h
    e, e2, dd = n * p, n * p + n * (n - 1) * psq, n * p + n * (n - 1) / 4
    a, bq, ax, c = (w * w * (h2 * a + 2 * h * bq), w * w * (h * a + (h + h2) * bq),
                    w * w * (dd * ax + 2 * e * c), w * w * (e * ax + (e + e2) * c))
    out[l] = (a, bq, ax, c)
  return tuple(np.array(v) for v in zip(*out))


_ERFC = np.vectorize(math.erfc)


def _ndtr(a):
  return 0.5 * _ERFC(-np.asarray(a) / math.sqrt(2.0))


def _unit_moments(rho):
  """(o2, o31) = (E[u^2 1{u, v > 0}], E[u^3 v 1{u, v > 0}]) for unit normals with correlation rho.

  o2 has the closed form (pi - theta + sin theta cos theta) / (2 pi); o31 is a 1-D quadrature over u of
  u^3 E[v 1{v > 0} | u] (v | u ~ N(rho u, 1 - rho^2))."""
  s = math.sqrt(max(1.0 - rho * rho, 0.0))
  mu = rho * _QU
  if s < 1e-12:
    e1 = np.maximum(mu, 0.0)
  else:
    a = mu / s
    e1 = mu * _ndtr(a) + s * np.exp(-a * a / 2) / math.sqrt(2 * math.pi)
  theta = math.acos(min(1.0, max(-1.0, rho)))
  o2 = (math.pi - theta + math.sin(theta) * math.cos(theta)) / (2 * math.pi)
  return o2, float(np.sum(_QW * _QU ** 3 * e1))


def cosine_step(rho: float, n: int):
  """One ReLU layer of n units acting on a pair with cosine rho, to O(1/n):
  (p, E rho', Var rho', Cov(e, rho'), Cov(|D_b||D_b'|, rho')) with p = P(both units active), e the
  both-active count and rho' the output pair's cosine (delta method; see the module docstring)."""
  rho = min(1.0, max(-1.0, rho))
  theta = math.acos(rho)
  p = (math.pi - theta) / (2 * math.pi)
  m1, m2 = _j1(theta) / (2 * math.pi), _j2(theta) / (2 * math.pi)
  o2, o31 = _unit_moments(rho)
  mean = 2 * m1
  var_r, var_s, cov_ss, cov_rs = m2 - m1 * m1, 1.25, m2 - 0.25, o31 - m1 / 2  # E relu^4 = 3/2, E relu^2 = 1/2
  var_phi = 4 * var_r + mean * mean * (2 * var_s + 2 * cov_ss) - 8 * mean * cov_rs
  cov_e = 2 * m1 * (1 - p) - 2 * mean * (o2 - p / 2)
  cov_d = m1 - mean * o2
  # Second-order bias of the ratio R / sqrt(S_u S_v) with R = sum relu(u) relu(v), S = sum relu^2.
  bias = mean * (-cov_rs / (m1 * 0.5) + 3 * var_s + cov_ss) / n if m1 > 0 else 0.0
  return p, mean + bias, max(var_phi, 0.0) / n, cov_e, n * cov_d


def pair_gain_dot(rho: float, n: int) -> float:
  """E[sqrt(S_u S_v) R_uv] over n i.i.d. pairs of unit normals with correlation rho, S_u = sum relu(u)^2,
  R_uv = sum relu(u) relu(v), to O(1/n) (delta method on the square root):
  n^2 m1 / 2 + n [m1 (Cov(relu(u)^2, relu(v)^2) - Var relu(u)^2) / 2 + Cov(relu(u)^2, relu(u) relu(v))].
  Given a pair of layer inputs, E[|x'_b| |x'_b'| (x'_b . x'_b')] = w^2 |x_b|^2 |x_b'|^2 pair_gain_dot(rho, n): the
  recursion of the norm-weighted mean cosine (`full_order.weighted_pair_law`). Within 0.5% of a 400k-draw Monte
  Carlo at n = 8, 9, 22, 64 and rho = 0.5-0.95."""
  rho = min(1.0, max(-1.0, rho))
  theta = math.acos(rho)
  m1, m2 = _j1(theta) / (2 * math.pi), _j2(theta) / (2 * math.pi)
  _, o31 = _unit_moments(rho)
  return n * n * m1 / 2 + n * (m1 * ((m2 - 0.25) - 1.25) / 2 + (o31 - m1 / 2))


def _theta_interp(values, rho):
  return np.interp(np.arccos(np.clip(rho, -1.0, 1.0)), _THETA, values)


def pair_backward(widths, weight_sq, loss: LossStats):
  """Per weight layer l: (Ax_l, C_l) as functions of the pair cosine of x_l, tabulated on `_THETA`
  (theta = arccos rho). The conditional recursion of the module docstring ("Pair-cosine averaging")."""
  L = len(widths) - 1
  g = _THETA.size
  ax, c = np.full(g, loss.trace_cross), np.full(g, loss.tr_cross)
  out = [None] * L
  out[L - 1] = (ax, c)
  for l in range(L - 2, -1, -1):
    w, n = weight_sq[l + 1], widths[l + 1]
    new_ax, new_c = np.empty(g), np.empty(g)
    for i, theta in enumerate(_THETA):
      p, mean, var, cov_e, cov_d = cosine_step(math.cos(theta), n)
      d = math.sqrt(var) * _GH_X
      ax_n, c_n = _theta_interp(ax, mean + d), _theta_interp(c, mean + d)
      be, bd = (cov_e / var, cov_d / var) if var > 1e-14 else (0.0, 0.0)
      e = n * p + be * d  # E[e | rho'] (linear regression on rho'); the residual keeps Var e - be^2 Var rho'
      var_res = max(n * p * (1 - p) - be * be * var, 0.0)
      dd = n * p + n * (n - 1) / 4 + bd * d
      new_ax[i] = w * w * np.sum(_GH_W * (dd * ax_n + 2 * e * c_n))
      new_c[i] = w * w * np.sum(_GH_W * (e * ax_n + (e + e * e + var_res) * c_n))
    ax, c = new_ax, new_c
    out[l] = (ax, c)
  return out


def predict_sq_sv(widths, weight_sq, inputs: InputStats, loss: LossStats, batch_size: int = 1, *,
                  activation: str = "relu", corrected: bool = True, pair_cosine: bool = False) -> BlockPrediction:
  """Predicted E[average squared singular value] of each diagonal block at minibatch size `batch_size`.

  `corrected=False` gives the batch-1 model applied to a minibatch of independent centred examples,
  s(1) / B; `corrected=True` adds the cross-example terms (the two agree at B = 1). `pair_cosine=True`
  averages the cross term over the spread of the pair cosine (module docstring; docs/calculus.md).
  """
  widths = _check(widths, weight_sq, batch_size, activation)
  n = np.array(widths, np.float64)
  s, r, kappa, p, t = forward_moments(widths, weight_sq, inputs)
  var = [_pair_var(pi, ti, ki) for pi, ti, ki in zip(p, t, kappa)]
  _, bq, _, c = backward_moments(widths, weight_sq, kappa, loss, var)
  cross_w, cross_b = p * c, c
  if corrected and pair_cosine and batch_size > 1:
    fns = pair_backward(widths, weight_sq, loss)
    cross_w, cross_b = np.empty(len(p)), np.empty(len(p))
    for l, (_, c_fn) in enumerate(fns):
      rho = np.clip(kappa[l] + math.sqrt(var[l]) * _GH_X, -1.0, 1.0)
      c_rho = _theta_interp(c_fn, rho)
      # Normalised by the nodes' own E[rho^2]: clipping nodes at |rho| = 1 (kappa near 1) must not move P_l itself.
      cross_w[l] = p[l] * np.sum(_GH_W * rho * rho * c_rho) / np.sum(_GH_W * rho * rho)
      cross_b[l] = np.sum(_GH_W * c_rho)
  inv_b = 1.0 / batch_size
  cross = (1.0 - inv_b) if corrected else 0.0
  weight = (r * bq * inv_b + cross * cross_w) / (n[:-1] * n[1:])
  bias = (bq * inv_b + cross * cross_b) / n[1:]
  return BlockPrediction(weight, bias)


def predict_leading(widths, weight_sq, inputs: InputStats, loss: LossStats, batch_size: int = 1, *,
                    activation: str = "relu") -> BlockPrediction:
  """The paper's leading-order batch-1 form nu_l G_l tr(H^2)/(tr H)^2 (divided by B), via the calculus.

  Uses `jscale.calculus.predict_dense` with E[x_0^2] = S_0 / n_0 and E[dy_out^2] = sqrt(E (tr H)^2) / n_L;
  bias blocks: (n_{l+1} E[dy_l^2])^2 tr(H^2)/(tr H)^2 / n_{l+1}.
  """
  widths = _check(widths, weight_sq, batch_size, activation)
  n = np.array(widths, np.float64)
  m = calculus.predict_dense(widths, jnp.asarray(weight_sq), x0_sq=inputs.sq_norm / widths[0],
                              dy_out_sq=math.sqrt(loss.trace_sq) / widths[-1], activation=activation)
  x_sq, dy_sq = np.asarray(m.x_sq, np.float64), np.asarray(m.dy_sq, np.float64)
  shape = loss.tr_sq / loss.trace_sq
  weight = n[:-1] * n[1:] * x_sq ** 2 * dy_sq ** 2 * shape / batch_size
  bias = n[1:] * dy_sq ** 2 * shape / batch_size
  return BlockPrediction(weight, bias)

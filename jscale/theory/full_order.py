r"""One full-order prediction of the diagonal Hessian blocks for dense and strided-conv ReLU nets (`predict_wick`).

A dense layer is a conv with one position, so one recursion serves both. Layer l maps patches x_{b,p} (k_l
taps x n_l channels, one per output position p of example b; stride = kernel, so patches tile the input) to
y_{b,p} = x_{b,p} W_l, n_{l+1} channels; flatten + the first dense layer is a conv whose kernel is the whole last
grid (k = its positions, one output position). With V_{b,p} = A_b d out_b / d y_{b,p} (A_b^T A_b = H_b) the
Gauss-Newton identity gives the kernel block (`conv_pairs.lenet_pair_stats`)
    f_l(b, b') = || sum_{p,p'} (x_{b,p} . x_{b',p'}) V_{b,p} V_{b',p'}^T ||_F^2 / (k n_l n_{l+1}),
    E s_l(B) = E f_l(b, b) / B + (1 - 1/B) E f_l(b, b'),
and the bias block with the patch products replaced by 1 (and k n_l n_{l+1} by n_{l+1}).

Points. Every (example, position) at a layer is a "point"; points are functions of disjoint regions of i.i.d.
input entries through the SAME weights, so their joint law is exchangeable: one statistic per layer describes
all pairs of distinct points, whether of one example (two positions) or of two. Per point: s = E|x|^2,
r = E|x|^4; per pair of distinct points: d = E x.x', p2 = E (x.x')^2, t = E|x|^2|x'|^2. A patch of k distinct
points has S = k s, R = k r + k (k - 1) t, two distinct patches D = k d, P = k p2 + k (k - 1) v (v = E|mu|^4, four
distinct points: `four_moment`, carried through each layer by `four_points_out`), T = k^2 t: exact at the input
(independent pixels). Through a layer
the MLP's Gaussian-conditional step (`predict.forward_moments`: arc-cosine kernels) gives the next point
statistics, with the pair cosine's spread averaged by quadrature and the mean cosine corrected for the norms'
spread (`curvature`: `_kernel_moments`, `norm_factor`).

Backward (the calculus's A3: the weights above a layer independent of its masks, Gaussian weights).
V_{b,p} = V_{b,P} W_t^T D_{b,p} with P the parent of p one layer up and t its tap in P's patch. Wick's theorem
on the four weight slices of E tr(V_a V_b^T V_c V_d^T) gives a closed recursion over the points of two
examples (`backward_tables`; weight sharing: equal taps of different positions are the same slice), started
from the loss's output factors (`output_tables`). Summed against the forward 4-point table (`forward_tables`)
it gives E f(b, b) and E f(b, b') (`predict_wick`). For an MLP (rho = k = 1) it is `predict.predict_sq_sv`'s
recursion (tested to 1e-9 with `curvature=False`; with its pair-cosine law, `pair_cosine_two`, by default).

Average pooling (`PointLayer.pool`, after a conv's ReLU): a pooled point is the mean of q exchangeable points,
whose statistics come from the four-point table (`pool_points`, with the shared-point moment `shared_moment`);
below it, the q positions share their parent and tap (one weight slice) and each carries 1/q of the signal
(`_parents`, `backward_tables`). Under a pool with zero-mean pixels the first conv's patches are correlated with
their own masks (A3 fails coherently): given the input law, the first layer's block takes the two jointly
(`first_layer_joint`, `first_layer_coupled`).

Cross-entropy's output Hessian is a function of the logits, which a bias-free ReLU net scales with the gains of
the weights below and above each layer: `layer_output_tables` weights each loss-sample draw by those gains
(`jscale.theory.gains`), one set of tables per layer. What it leaves out (measurements in docs/calculus.md,
"Full order"): the masks' overlaps of the conv recursion at their means given the mean cosine, and their
correlation with the weights above the first layer when the inputs have a mean (U[0, 1] pixels: every unit's
offset w.mu sets its mask at all positions; the second conv's block stays ~0.83 at batch 1024); on the LeNet, the
correlation of the softmax with the directions (not only the sizes) of the weights above a layer (the MLP's is
measured on its loss sample, `gains.mlp_direction_coupling`, and applied by `predict_wick(..., weight_factors=,
bias_factors=)`). The points' pair statistics of a conv net come from the pair cosine's law weighted by the
pair's norms (`weighted_pair_terms`): over weight draws the norms and the cosine rise together.
"""
from __future__ import annotations

import functools
import math
from typing import NamedTuple, Sequence

import numpy as np
from scipy.special import roots_jacobi  # scikit-learn depends on scipy, so it is always installed

from jscale import checks
from jscale.theory import predict


class PointLayer(NamedTuple):
  """One weight layer as a strided conv: channels in/out, kernel (taps per axis), its output grid, and the
  window of the average pool after its ReLU (1: none; the layer above reads the pooled grid)."""
  n_in: int
  n_out: int
  kernel: tuple  # (kh, kw); a dense layer on one position: (1, 1); flatten + dense: the whole last grid
  grid: tuple    # (gh, gw) output positions
  pool: int = 1

  @property
  def taps(self) -> int:
    return self.kernel[0] * self.kernel[1]


def mlp_layers(widths: Sequence[int]) -> tuple:
  """An MLP as `PointLayer`s: one position, one tap."""
  return tuple(PointLayer(int(a), int(b), (1, 1), (1, 1)) for a, b in zip(widths[:-1], widths[1:]))


def lenet_layers(config) -> tuple:
  """A strided LeNet (`jscale.models.lenet.LeNetConfig`) as `PointLayer`s."""
  config = config.check()
  (h, w), c, out = tuple(config.image[:2]), int(config.image[2]), []
  for n, (kh, kw), q in zip(config.channels, config.kernels, config.pool_windows()):
    h, w = h // kh, w // kw
    out.append(PointLayer(c, int(n), (int(kh), int(kw)), (h, w), int(q)))
    c, h, w = int(n), h // q, w // q
  kernel = (h, w)
  for n in tuple(config.hidden) + (config.n_out,):
    out.append(PointLayer(c, int(n), kernel, (1, 1)))
    c, kernel = int(n), (1, 1)
  return tuple(out)


class PointStats(NamedTuple):
  """Per-point statistics of one layer's input points (see the module docstring); u = E (x_a.x_b)(x_a.x_c) over
  three distinct points (NaN: a ReLU layer's, `shared_moment`)."""
  s: float
  r: float
  d: float
  p2: float
  t: float
  u: float = math.nan
  v: float = math.nan  # E (x_a.x_b)(x_c.x_d), four distinct points (NaN: (d / s)^2 t, the cosine at its mean)
  m: float | None = None  # E |x||x'| (x.x') (the norm-weighted mean cosine's numerator; None: (d / s) t)


def shared_moment(st: PointStats) -> float:
  """u = E (h_a.h_b)(h_a.h_c), three distinct points, one in both dots. Given the weights below, distinct points
  are i.i.d. (functions of disjoint regions of i.i.d. inputs through the same weights) with mean mu and second
  moment M, so u = E mu^T M mu = E|mu|^4 + E mu^T C mu (C = M - mu mu^T). E|mu|^4 is the four-distinct-point
  moment, (d / s)^2 t; with per-channel ReLUs of Gaussian pre-activations mu_c^2 = C_cc / (pi - 1), so
  mu^T C mu is 1 / (pi + 1) of p2 - E|mu|^4 = 2 mu^T C mu + tr C^2 (channels uncorrelated given the weights).
  The cosine-at-its-mean value (d / s)^2 t left it out: a 2x2 pool's E|z|^4 was 6-13% low and E (z.z')^2
  10-18% low (MC, 200k draws of one conv layer, 4-16 channels; with u: -1.5 to -4.5% and 0 to +4%)."""
  if math.isfinite(st.u):
    return st.u
  mu4 = four_moment(st)
  return mu4 + max(st.p2 - mu4, 0.0) / (math.pi + 1)


def four_moment(st: PointStats) -> float:
  """v = E (h_a.h_b)(h_c.h_d) over four distinct points = E|mu|^4 (mu the points' mean given the weights below).
  NaN in `st`: the cosine at its mean, (d / s)^2 t, which leaves out the spread of mu's share over weight draws
  (`next_points`)."""
  if math.isfinite(st.v):
    return st.v
  return (st.d / st.s) ** 2 * st.t if st.s > 0 else 0.0


class Patch(NamedTuple):
  S: float
  R: float
  P: float
  T: float
  kappa: float        # the mean cosine of two distinct patches (what the masks and arc-cosine kernels see)
  ratio: float = 0.0  # E x_a.x_b / E|x|^2 = kappa c, c = E|x_a||x_b| / E|x|^2 (`norm_factor`)
  U: float = math.nan  # E (x_a.x_b)(x_a.x_c), three distinct patches (NaN: ratio^2 T, the cosine at its mean)
  V: float = math.nan  # E (x_a.x_b)(x_c.x_d), four distinct patches (NaN: ratio^2 T)
  M: float = math.nan  # E |x_a||x_b| (x_a.x_b), two distinct patches (`weighted_mean`; NaN: not carried)


def norm_factor(R: float, T: float) -> float:
  """c = E|x_a||x_b| / E|x|^2 for two distinct patches, from R = E|x|^4 and T = E|x_a|^2 |x_b|^2.

  Model: |x|^2 = G chi with G a gain shared by every point (the weights below) and chi independent per point,
  Gamma-distributed with the shape that gives R / T = E chi^2 / (E chi)^2: alpha = T / (R - T), and
  c = (E sqrt chi)^2 / E chi = Gamma(alpha + 1/2)^2 / (alpha Gamma(alpha)^2) (exact for a patch of i.i.d.
  Gaussian pixels: chi^2 with 2 alpha degrees of freedom; 0.88 for a 2x2 one-channel patch, 1 - 1/(4 alpha)
  for wide layers)."""
  if not (R > T > 0):
    return 1.0
  alpha = T / (R - T)
  if alpha > 1e6:
    return 1.0
  return math.exp(2 * math.lgamma(alpha + 0.5) - 2 * math.lgamma(alpha) - math.log(alpha))


def pixel_stats(inputs: predict.InputStats, entries: int = 1) -> PointStats:
  """Input points (pixels, or the whole input of an MLP): `InputStats` of one point's entries. `entries`: how
  many i.i.d. entries a point has (a pixel's channels), which gives u exactly (the inputs do not depend on
  the weights: u = mu^T M mu with mu, M the entries' law's). An MLP's input is one point per example: no three
  distinct points, so u is unused there."""
  c = int(entries)
  u = inputs.dot / c * (inputs.sq_norm + (c - 1) * inputs.dot / c)
  # Four distinct points: mu is the law's own (no weights below), so v = |mu|^4 = d^2 exactly.
  return PointStats(inputs.sq_norm, inputs.sq_norm_sq, inputs.dot, inputs.dot_sq, inputs.norm_cross, u,
                    inputs.dot ** 2, inputs.norm_dot)


def patch(st: PointStats, k: int, curvature: bool = True) -> Patch:
  """Statistics of a patch of k distinct points (the 4-point terms from the points' v, `four_moment`). With
  `curvature`, the mean cosine is the mean dot ratio over `norm_factor` (the norms' spread: E x.x' =
  E[rho |x||x'|]); without, the two are taken equal (`predict.forward_moments`)."""
  S, D = k * st.s, k * st.d
  R, T = k * st.r + k * (k - 1) * st.t, k * k * st.t
  kappa = D / S if S > 0 else 0.0
  if curvature:
    kappa = min(kappa / norm_factor(R, T), 1.0)
  # Two pairs of distinct points, E (x_a.x_b)(x_c.x_d): v (`four_moment`; it carries the spread of the points'
  # mean over weight draws, which the cosine at its mean, (d / s)^2 t, leaves out). Three distinct patches, one
  # in both dots: the same tap's points give u, different taps' four distinct points.
  v = four_moment(st)
  U = k * shared_moment(st) + k * (k - 1) * v
  M = weighted_mean(st, k) * T if st.m is not None else math.nan
  return Patch(S, R, k * st.p2 + k * (k - 1) * v, T, kappa, D / S if S > 0 else 0.0, U, k * k * v, M)


def weighted_mean(st: PointStats, k: int) -> float:
  """M / T of a patch of k distinct points: the mean of its pair cosine under the weight N = |x_a|^2 |x_b|^2
  (what `next_points`' pair terms weigh it by), from the points' weighted mean m / t and the weight-draw level
  sqrt(v / t):  sqrt(v / t) + (m / t - sqrt(v / t)) / k.
  Why: given the weights below, a patch's cosine is the cosine of the points' mean (|mu|^2 / s_W, whose
  N-weighted second moment is v / t) plus the points' own scatter, of which a k-point patch keeps 1/k; a single
  point (k = 1) is its own m / t. Monte Carlo (float64, 6000 draws x 8 examples, LeNet development seed 0's
  structures, U[0, 1] and N(0, 1) pixels): within 0.005 of the patches' M / T at k = 1-16 (e.g. 16 points of
  0.860 and sqrt(v / t) 0.819: 0.822, MC 0.818; 4 points 0.427 / 0.319: 0.346, MC 0.344), where the mean
  cosine kappa reads 0.76-0.85 for M / T 0.76-0.94."""
  if not st.t > 0:
    return 0.0
  base = math.sqrt(max(four_moment(st), 0.0) / st.t)
  return min(base + (st.m / st.t - base) / k, math.sqrt(max(st.p2, 0.0) / st.t))


_CURV_X, _CURV_W = np.polynomial.hermite_e.hermegauss(32)
_CURV_W = _CURV_W / _CURV_W.sum()


def _j1(th):
  """The first arc-cosine function J1(theta) = sin theta + (pi - theta) cos theta: E relu(u) relu(u') of unit
  Gaussians at angle theta is J1 / (2 pi)."""
  return np.sin(th) + (math.pi - th) * np.cos(th)


def _kernel_moments(kappa: float, var: float, curvature: bool):
  """(m1(kappa), E m1(rho)^2, E m2(rho)) over pair cosines rho ~ N(kappa, var) clipped to [-1, 1].

  curvature=False: `predict.forward_moments`'s linearisation (m1^2 + m1'^2 var, m2 at the mean). True: the
  Gaussian average by quadrature. It matters where patches are small: a 2x2 patch of one-channel pixels has
  cosines spread +-0.5, and m2 (E relu(u)^2 relu(v)^2: 0 at rho = -1, 1/4 at 0, 3/2 at 1) is strongly convex:
  at the mean it left E|x_a|^2 |x_b|^2 of the LeNet's flattened conv output 4-11% low and E(x_b . x_b')^2
  10-16% low (LeNet development seed 0, 4000 forward draws)."""
  theta = math.acos(min(1.0, max(-1.0, kappa)))
  m1 = predict._j1(theta) / (2 * math.pi)
  if not curvature or var <= 0:
    return m1, m1 * m1 + ((math.pi - theta) / (2 * math.pi)) ** 2 * var, predict._j2(theta) / (2 * math.pi)
  th = np.arccos(np.clip(kappa + math.sqrt(var) * _CURV_X, -1.0, 1.0))
  j1 = _j1(th) / (2 * math.pi)
  j2 = (3 * np.sin(th) * np.cos(th) + (math.pi - th) * (1 + 2 * np.cos(th) ** 2)) / (2 * math.pi)
  return m1, float(np.sum(_CURV_W * j1 * j1)), float(np.sum(_CURV_W * j2))


def next_points(pa: Patch, n: int, w: float, curvature: bool = True, weighted: bool = False) -> PointStats:
  """The ReLU output points of a layer of n channels, E[W^2] = w, from its patches (`predict.forward_moments`,
  with the pair cosine's spread averaged by quadrature where `curvature`: `_kernel_moments`). `weighted` (and
  the patches' M known): the pair statistics t, p2 and m from the N-weighted law of the pair cosine
  (`weighted_pair_terms`) instead of the kappa-centred one."""
  var = predict._pair_var(pa.P, pa.T, pa.kappa)
  m1, m1sq, m2 = _kernel_moments(pa.kappa, var, curvature)
  s = n * w * pa.S / 2
  # The mean dot of the outputs: n w E[|x_a||x_b| m1(rho)] = (mean dot ratio / mean cosine) S n w E m1(rho).
  if curvature and var > 0:
    th = np.arccos(np.clip(pa.kappa + math.sqrt(var) * _CURV_X, -1.0, 1.0))
    m1 = float(np.sum(_CURV_W * _j1(th))) / (2 * math.pi)
  # At a zero mean cosine (zero-mean inputs) the factor is 1, not the norms' c: that overstates the mean dot of a
  # conv0's outputs by 1/c (6-13% for 2x2-3x3 patches of N(0, 1) pixels, MC). Correcting it lowered the layer
  # above at batch 1024 by ~10% on LeNet development seed 0 (a compensating error downstream): kept, open.
  c = pa.ratio / pa.kappa if curvature and pa.kappa > 0 else 1.0
  kappa = 2 * m1 * c
  t = w * w * pa.T * (n * m2 + n * (n - 1) / 4)
  v = four_points_out(pa, n, w, m1 * c) if curvature else math.nan
  p2, m = w * w * pa.T * (n * n * m1sq + n * (m2 - m1sq)), None
  if weighted and math.isfinite(pa.M):
    t, p2, m = weighted_pair_terms(pa, n, w)
  return PointStats(s, w * w * pa.R * (n * n + 5 * n) / 4, kappa * s, p2, t, math.nan, v, m)


def weighted_pair_terms(pa: Patch, n: int, w: float) -> tuple:
  """(t, p2, m) of a ReLU layer's output points from two distinct patches. Given the patches (x_a, x_b), the n
  pre-activation pairs are i.i.d. bivariate normals of correlation rho (their cosine), so with N = |x_a|^2 |x_b|^2
    t = w^2 E[N (n m2(rho) + n (n - 1) / 4)],  p2 = w^2 E[N (n m2(rho) + n (n - 1) m1(rho)^2)],
    m = E |h_a||h_b| h_a.h_b = w^2 E[N g_n(rho)]   (`predict.pair_gain_dot`),
  expectations over the N-weighted law of rho (mean M / T, second moment P / T: `cosine_nodes`), the MLP's
  `weighted_pair_law` step on patches. Why not the kappa-centred law: over weight draws a patch's norms and
  its cosine rise together (a draw whose units have large positive offsets has larger outputs and a higher
  cosine), so the N-weighted cosine sits well above kappa with a small spread (U[0, 1] pixels, LeNet
  development seed 0: M / T 0.82-0.94 where kappa is 0.79-0.85); the kappa-centred law left the dense layers'
  inputs' P 2-11% low after conv1 and 16-30% low one dense layer up (Monte Carlo, 6-16k draws)."""
  mean = min(max(pa.M / pa.T, -1.0), 1.0) if pa.T > 0 else 0.0
  rho, wq = cosine_nodes(mean, max(pa.P / pa.T - mean * mean, 0.0) if pa.T > 0 else 0.0)
  th = np.arccos(np.clip(rho, -1.0, 1.0))
  j1 = _j1(th) / (2 * math.pi)
  j2 = (3 * np.sin(th) * np.cos(th) + (math.pi - th) * (1 + 2 * np.cos(th) ** 2)) / (2 * math.pi)
  g = np.array([predict.pair_gain_dot(float(r), n) for r in rho])
  e = lambda f: float(np.sum(wq * f))
  k = w * w * pa.T
  return k * (n * e(j2) + n * (n - 1) / 4), k * (n * e(j2) + n * (n - 1) * e(j1 * j1)), k * e(g)


def _mean_factor(kappa):
  """f(z) = E_e relu(sqrt(kappa) z + sqrt(1 - kappa) e) at the Gauss-Hermite nodes z: a unit's mean over points
  of pairwise cosine kappa given the common factor z (one-factor model)."""
  k = min(max(kappa, 0.0), 1.0 - 1e-12)
  a, b = math.sqrt(k), math.sqrt(1.0 - k)
  x = a * _CURV_X / b
  pdf = np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
  return b * pdf + a * _CURV_X * _erf_cdf(x)


def four_points_out(pa: Patch, n: int, w: float, m1e: float) -> float:
  """v of a ReLU layer's output points: E (h_a.h_b)(h_c.h_d) = sum_{i,j} E relu(w_i.x_a) relu(w_i.x_b)
  relu(w_j.x_c) relu(w_j.x_d) over four distinct patches.
  - i != j: n (n - 1) w^2 E[S_W^2 m1(kappa_W)^2] with kappa_W the points' cosine given the weights below, whose
    spread over weight draws is var_W = V / T - ratio^2 (V = E|mu|^4 of the patches, T = E S_W^2): zero at the
    input, it grows with depth;
  - i = j: n w^2 E Pi_j |x_j| E_z f(z)^4 (one-factor model of four points of cosine kappa, `_mean_factor`),
    with the norms' factor c^2 as the pair's c (`norm_factor`). The cosine-at-its-mean value 4 m2 m1^2 is
    the same at kappa = 0 and 1 but 30% low at kappa = 0.75 (U[0, 1] pixels' patches): at 5-20 channels
    conv0's outputs' v was 4-9% low (MC), and P, U of the patches above 9-16% low, growing with depth.
  `m1e`: the pair factor E[|x_a||x_b| m1(rho)] / S of `next_points` (its d = n w S m1e)."""
  V = pa.V if math.isfinite(pa.V) else pa.ratio ** 2 * pa.T
  var_w = max(V / pa.T - pa.ratio ** 2, 0.0) if pa.T > 0 else 0.0
  m1k = _kernel_moments(pa.kappa, 0.0, False)[0]
  c = m1e / m1k if m1k > 0 else 1.0
  nodes = np.clip(pa.kappa + math.sqrt(var_w) * _CURV_X, -1.0, 1.0) if var_w > 0 else np.array([pa.kappa])
  wts = _CURV_W if var_w > 0 else np.ones(1)
  th = np.arccos(nodes)
  m1 = _j1(th) / (2 * math.pi)
  f4 = np.array([np.sum(_CURV_W * _mean_factor(float(k)) ** 4) for k in nodes])
  return float(w * w * pa.T * c * c * (n * (n - 1) * np.sum(wts * m1 * m1) + n * np.sum(wts * f4)))


def pool_points(st: PointStats, window: int) -> PointStats:
  r"""The points of an average pool (window x window, stride = window) over exchangeable points `st`.

  A pooled point is z = (1/q) sum_{i in A} h_i over q = window^2 distinct points, and two pooled points read
  disjoint sets A, B, so (exchangeability) s' = (s + (q - 1) d) / q, d' = d, and the fourth moments are means of
  the four-point table over the sets: r' = E|z|^4 = mean_{A^4} E (h_a.h_b)(h_c.h_d), p2' = mean_{(A B)^2},
  t' = mean_{A^2 B^2} (`forward_tables` on points: the same four-point model the patches' dots use). Most of
  r' are pairs of distinct points (the pool correlates its members: ReLU outputs have a positive mean)."""
  q = int(window) ** 2
  if q == 1:
    return st
  ratio = st.d / st.s if st.s > 0 else 0.0
  u, mu4 = shared_moment(st), four_moment(st)
  g4 = forward_tables(Patch(st.s, st.r, st.p2, st.t, ratio, ratio, u, mu4), q)
  A, B = slice(0, q), slice(q, 2 * q)
  # The pooled points' u: their mean is mu and their second moment M / q + (1 - 1/q) mu mu^T; their v: mu's, v.
  p2, t = float(np.mean(g4[A, B, A, B])), float(np.mean(g4[A, A, B, B]))
  m = None
  if st.m is not None and t > 0 and st.t > 0:
    # The pooled points' weighted mean cosine as a patch's (`weighted_mean`): the mean of q points keeps 1/q of
    # their own scatter around the weight-draw level sqrt(v / t).
    lo = math.sqrt(max(mu4, 0.0) / st.t)
    mean = math.sqrt(max(mu4, 0.0) / t) + (st.m / st.t - lo) / q
    m = min(mean, math.sqrt(max(p2, 0.0) / t)) * t
  return PointStats((st.s + (q - 1) * st.d) / q, float(np.mean(g4[A, A, A, A])), st.d, p2, t,
                    u / q + (1 - 1 / q) * mu4, mu4, m)


def forward_patches(layers, weight_sq, first: PointStats, curvature: bool = True, weighted: bool = False) -> list:
  """The `Patch` statistics of every weight layer's input (through the pools: `pool_points`); `weighted`: the
  pair statistics from the N-weighted cosine law (`next_points`)."""
  out, st = [], first
  for l, layer in enumerate(layers):
    out.append(patch(st, layer.taps, curvature))
    if l < len(layers) - 1:
      st = pool_points(next_points(out[-1], layer.n_out, weight_sq[l], curvature, weighted), layer.pool)
  return out


def has_positions(layers) -> bool:
  """Whether a net has a layer with more than one tap or position (a conv net: the point recursion's own law)."""
  return any(l.taps != 1 or l.grid != (1, 1) for l in layers)


def _parents(layer: PointLayer, above: PointLayer):
  """Per output position of `layer` (row-major): its parent position in `above`'s grid and its tap there
  (through `layer`'s pool: the window^2 positions of a pooled point share its parent and tap, one slice)."""
  gh, gw = layer.grid
  i, j = np.divmod(np.arange(gh * gw), gw)
  i, j = i // layer.pool, j // layer.pool
  kh, kw = above.kernel
  parent = (i // kh) * above.grid[1] + (j // kw)
  tap = (i % kh) * kw + (j % kw)
  return parent, tap


def _check(layers, weight_sq, batch_size):
  if len(weight_sq) != len(layers):
    raise ValueError(f"weight_sq has {len(weight_sq)} entries for {len(layers)} weight layers")
  if any(not (w > 0 and math.isfinite(w)) for w in weight_sq):
    raise ValueError(f"weight_sq entries must be finite and > 0, got {list(weight_sq)}")
  checks.positive_int(batch_size, "batch_size")


class Parts(NamedTuple):
  """Per weight layer: the same-example and two-example expectations of f (weight and bias blocks)."""
  weight_same: np.ndarray
  weight_two: np.ndarray
  bias_same: np.ndarray
  bias_two: np.ndarray


# ---------------------------------------------------------------------------------------------------
# Every Wick pairing: four-point backward tables over the points of two examples.

_GH4_X, _GH4_W = np.polynomial.hermite_e.hermegauss(48)
_GH4_W = _GH4_W / _GH4_W.sum()


def _erf_cdf(x):
  return 0.5 * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def orthant(kappa: float) -> np.ndarray:
  """P(all of j unit normals > 0), j = 0..4, pairwise correlation kappa (clipped to [0, 1)): the probability
  that a unit is active at j distinct points. j = 2 is (pi - theta) / (2 pi); j = 3, 4 by the one-factor form
  u_i = sqrt(kappa) z + sqrt(1 - kappa) e_i, E_z Phi(z sqrt(kappa / (1 - kappa)))^j (Gauss-Hermite)."""
  k = min(max(kappa, 0.0), 1.0 - 1e-9)
  phi = _erf_cdf(_GH4_X * math.sqrt(k / (1.0 - k)))
  out = np.array([1.0] + [float(np.sum(_GH4_W * phi ** j)) for j in range(1, 5)])
  out[2] = (math.pi - math.acos(min(1.0, max(-1.0, kappa)))) / (2 * math.pi)  # exact for any sign
  return out


def _distinct(a, b, c, d):
  """Number of distinct points among four broadcast index arrays."""
  return 1 + (b != a) + ((c != a) & (c != b)) + ((d != a) & (d != b) & (d != c))


def _grid(n):
  i = np.arange(n)
  return i[:, None, None, None], i[None, :, None, None], i[None, None, :, None], i[None, None, None, :]


def output_tables(factors_DxExOxO, gains_DxE=None) -> tuple:
  """(F4, F22) on the two examples' output points (2 x 2 x 2 x 2 each) from per-example output factors A_e
  (A^T A = H_e; draws x examples x O x O): F4[a,b,c,d] = E tr(A_a A_b^T A_c A_d^T), F22[a,b,c,d] =
  E tr(A_a A_b^T) tr(A_c A_d^T), with a..d in {0, 1} two distinct examples of one draw (pairs averaged).

  `gains_DxE` (one positive number per example of each draw): each draw's term of entry (a, b, c, d) is
  weighted by sqrt(G_a G_b G_c G_d) over that weight's mean, the entry's share of a block whose four points
  carry the gains G (`layer_output_tables`); constant gains give the unweighted tables."""
  f = np.asarray(factors_DxExOxO, np.float64)
  return _tables(lambda c, idx: np.einsum("dxop,dyqp->dxyoq", f[c][:, idx], f[c][:, idx], optimize=True), f.shape[0], f.shape[1],
                 gains_DxE)


def _tables(products, d: int, e: int, gains_DxE) -> tuple:
  """`output_tables` from `products(draws, examples)` = A_x A_y^T over those draws and examples ((c, k, k, O, O)),
  a chunk of draws at a time (the products of 8 examples are E^2 O^2 numbers per draw)."""
  root = None if gains_DxE is None else np.sqrt(np.asarray(gains_DxE, np.float64))
  f4, f22, w4 = np.zeros((2,) * 4), np.zeros((2,) * 4), np.zeros((2,) * 4)
  pairs_ = [(i, j) for i in range(e) for j in range(e) if i != j]
  for lo in range(0, d, 16):
    c = slice(lo, min(lo + 16, d))
    b = products(c, np.arange(e))  # (c, E, E, O, O)
    n, o = b.shape[0], b.shape[-1]
    # tr(B_xy B_zw) for every (x, y, z, w): one matrix product of the flattened B with the flattened B^T.
    t_all = np.matmul(b.reshape(n, e * e, o * o), np.swapaxes(b, -1, -2).reshape(n, e * e, o * o).transpose(0, 2, 1))
    t_all = t_all.reshape(n, e, e, e, e)
    tr_all = np.trace(b, axis1=-2, axis2=-1)  # (n, E, E)
    for i, j in pairs_:
      ix = np.array([i, j])
      t4 = t_all[:, ix[:, None, None, None], ix[None, :, None, None], ix[None, None, :, None], ix[None, None, None, :]]
      tr = tr_all[:, ix[:, None], ix[None, :]]
      if root is None:
        wt = np.ones((n,) + (2,) * 4)
      else:
        r = root[c][:, ix]
        wt = np.einsum("dx,dy,dz,dw->dxyzw", r, r, r, r)
      f4 += np.sum(wt * t4, 0)
      f22 += np.einsum("dxyzw,dxy,dzw->xyzw", wt, tr, tr)
      w4 += wt.sum(0)
  return f4 / w4, f22 / w4


def layer_output_tables(factors_DxExOxO, forward_DxExL, backward_DxExL) -> list:
  """One `output_tables` per weight layer l, its draws weighted by the gains G_l = g_l k_l of the same draw
  (`gains`: g_l = |x_l|^2 the weights below, k_l = ||d z / d y_l||_F^2 / n_L the weights above).

  Why: the block is E[sum over four points of (x.x)(x.x) tr(V V^T V V^T)], V = A K, and in a bias-free ReLU
  net the logits z = K y_l scale with both gains, so the loss's factors A are correlated with the
  forward and backward sizes the recursion takes as independent of them. Model: x_l = sqrt(g_l) u and
  K_l = sqrt(k_l) K~ with (u, K~) independent of (g_l, k_l) and of A given the gains; then the block is
  E g^2 k^2 tr(...) = E[g^2] E[k^2] x (the A-tables weighted by g^2 k^2 over its mean), what the recursion
  computes from the weighted tables when g and k are independent of each other (the forward and backward
  sides' own moments are the recursion's)."""
  g, k = np.asarray(forward_DxExL, np.float64), np.asarray(backward_DxExL, np.float64)
  return [output_tables(factors_DxExOxO, g[..., l] * k[..., l]) for l in range(g.shape[-1])]


def quadratic_output_tables(q) -> tuple:
  """`output_tables` of a loss with the same output Hessian Q for every example (A = Q^{1/2} symmetric)."""
  lam, v = np.linalg.eigh(np.asarray(q, np.float64))
  a = (v * np.sqrt(np.clip(lam, 0.0, None))) @ v.T
  return output_tables(np.broadcast_to(a, (1, 2) + a.shape))


def _xent_terms(p: np.ndarray):
  """Per draw, ordered pair of distinct examples (i, j) and entry (x, y, z, w) in {i, j}^4:
  t = tr(A_x A_y^T A_z A_w^T) (D, P, 16) and tr(A_x A_y^T) (D, P, 2, 2), with `xent_output_tables`' expansion;
  and the example index of x, y, z, w (P, 4, 16)."""
  d, e, _ = p.shape
  pairs_ = np.array([(i, j) for i in range(e) for j in range(e) if i != j])  # (P, 2)
  bits = np.array(np.meshgrid(*[[0, 1]] * 4, indexing="ij")).reshape(4, -1)  # (4, 16): x, y, z, w in {0, 1}
  ix = pairs_[:, bits]  # (P, 4, 16)
  X, Y, Z, W = (ix[:, k].reshape(-1) for k in range(4))
  i2 = pairs_[:, bits[:2, ::4]]  # (P, 2, 4): (x, y) in {0, 1}^2
  ts, trs = [], []
  for lo in range(0, d, 16):
    pc = p[lo:lo + 16]
    sc = np.sqrt(pc)
    a, b, a2, b2 = pc[:, X], pc[:, Y], pc[:, Z], pc[:, W]
    c, c2 = np.sum(a * b, -1, keepdims=True), np.sum(a2 * b2, -1, keepdims=True)
    u, v = sc[:, X] * sc[:, W], sc[:, Y] * sc[:, Z]
    U = lambda f: np.sum(u * f, -1, keepdims=True)
    V = lambda g: np.sum(v * g, -1, keepdims=True)
    u1, v1 = U(1.0), V(1.0)
    t = (np.sum(u * v * (1 - a - b + c - a2 - b2 + c2), -1, keepdims=True) + V(a) * U(a2) + u1 * V(a * b2)
         - c2 * u1 * V(a) + U(b * a2) * v1 + U(b) * V(b2) - c2 * U(b) * v1 - c * U(a2) * v1 - c * u1 * V(b2)
         + c * c2 * u1 * v1)
    ts.append(t[..., 0].reshape(len(pc), len(pairs_), 16))
    px, py = pc[:, i2[:, 0]], pc[:, i2[:, 1]]  # (n, P, 4, O)
    trs.append(np.sum(np.sqrt(px * py) * (1 - px - py + np.sum(px * py, -1, keepdims=True)), -1)
               .reshape(len(pc), -1, 2, 2))
  return np.concatenate(ts), np.concatenate(trs), ix


def _weighted(terms, gains_DxE, pair_DxExE=None) -> tuple:
  """`pair_DxExE`: where given, the entries with each of the two examples twice (their two-example traces) are
  weighted by pair_DxExE[d, i, j] instead of the product of the gains."""
  t, tr, ix = terms
  if gains_DxE is None:
    wt = np.ones(t.shape)
  else:
    wt = np.prod(np.sqrt(np.asarray(gains_DxE, np.float64))[:, ix], axis=2)  # (D, P, 16)
  if pair_DxExE is not None:
    two = np.sum(ix == ix[:, :1, :], axis=1) == 2  # (P, 16): x, y, z, w hold each example twice
    i, j = ix[:, 0, 0], ix[:, 0, -1]  # entry 0 is (i, i, i, i), entry 15 (j, j, j, j)
    pw = np.asarray(pair_DxExE, np.float64)[:, i, j]  # (D, P)
    wt = np.where(two[None], pw[:, :, None], wt)
  w4 = np.sum(wt, axis=(0, 1))
  f4 = np.sum(wt * t, axis=(0, 1)) / w4
  f22 = np.einsum("dpxyzw,dpxy,dpzw->xyzw", wt.reshape(wt.shape[:2] + (2,) * 4), tr, tr) / w4.reshape((2,) * 4)
  return f4.reshape((2,) * 4), f22


def xent_output_tables(probs_DxExO, gains_DxE=None) -> tuple:
  """`output_tables(xent_factors(p), gains)` in O(O) per entry instead of O(O^3): with s = sqrt p,
  A_x A_y^T = diag(s_x) (I + X) diag(s_y), X[o, q] = -p_x[q] - p_y[o] + p_x . p_y, so
  tr(A_x A_y^T A_z A_w^T) = sum_{o,q} u_o v_q (I + X)[o, q] (I + Y)[q, o] (u = s_x s_w, v = s_y s_z) expands into
  products of weighted sums over the outputs (tested against `output_tables`)."""
  return _weighted(_xent_terms(np.asarray(probs_DxExO, np.float64)), gains_DxE)


def xent_layer_output_tables(probs_DxExO, forward_DxExL, backward_DxExL, dots_DxExExL=None) -> list:
  """`layer_output_tables` of the cross-entropy (`xent_output_tables`; the traces are computed once).

  `dots_DxExExL` ((x_b . x_b')^2 of each layer's input, `gains.mlp_pair_dots`): the two-example traces are
  weighted by the same draw's (x_b . x_b')^2 k_b k_b' instead of g_b g_b' k_b k_b': the block's two-example term is
  E[(x_b . x_b')^2 tr(M_b M_b')], and the pair's cosine and its softmax outputs are correlated (at the last
  layer, k = 1, the weighted table is that expectation's loss factor exactly). For the two-example terms of
  one-position nets only (`pair_cosine_two`); the other entries keep the gains."""
  g, k = np.asarray(forward_DxExL, np.float64), np.asarray(backward_DxExL, np.float64)
  terms = _xent_terms(np.asarray(probs_DxExO, np.float64))
  if dots_DxExExL is None:
    return [_weighted(terms, g[..., l] * k[..., l]) for l in range(g.shape[-1])]
  dots = np.asarray(dots_DxExExL, np.float64)
  return [_weighted(terms, g[..., l] * k[..., l], dots[..., l] * k[:, :, None, l] * k[:, None, :, l])
          for l in range(g.shape[-1])]


def xent_bias_output_tables(probs_DxExO, backward_DxExL) -> list:
  """The bias blocks' `xent_layer_output_tables`: each draw weighted by the backward gains k_l alone (two-example
  entries by k_b k_b'). A bias block is E tr(M_b M_b') with no forward factor, so the forward gains g and the
  pair's (x_b . x_b')^2, which the kernel blocks' tables carry, do not belong in its weights."""
  k = np.asarray(backward_DxExL, np.float64)
  return xent_layer_output_tables(probs_DxExO, np.ones_like(k), k)


def xent_factors(probs_DxExO) -> np.ndarray:
  """Cross-entropy's output factors A = diag(sqrt p) (I - 1 p^T) (the exact side's, `pairs._output_factor`)."""
  p = np.asarray(probs_DxExO, np.float64)
  eye = np.eye(p.shape[-1])
  return np.sqrt(p)[..., :, None] * (eye - p[..., None, :])


def _point_maps(layer: PointLayer, above: PointLayer):
  """Parent point and tap of each of the two examples' points (example-major) of `layer` in `above`."""
  par, tap = _parents(layer, above)
  rho_up = above.grid[0] * above.grid[1]
  return np.concatenate([par, par + rho_up]), np.concatenate([tap, tap])


def backward_tables(layers, weight_sq, patches, top: tuple, stop: int = 0) -> list:
  """Per weight layer, (F4, F22) over the two examples' points ((2 rho)^4 each), from the output `top` down:
  V_x = V_X W_t^T D_x, and Wick's theorem on the four weight slices (pairings allowed where the taps agree):
    F4(a,b,c,d)  = w^2 [ [ab|cd] F4(A,B,C,D) 1{ta=tb, tc=td} + e4 F22(B,C,D,A) 1{tb=tc, ta=td}
                         + e4 F4(A,C,B,D) 1{ta=tc, tb=td} ],
    F22(a,b,c,d) = w^2 [ [ab|cd] F22(A,B,C,D) 1{ta=tb, tc=td} + e4 F4(A,C,D,B) 1{ta=tc, tb=td}
                         + e4 F4(A,D,C,B) 1{ta=td, tb=tc} ],
  with the masks' overlaps at their means given the patch cosine: e4 = n P_k (k distinct points among a..d)
  and [ab|cd] = E (D_a . D_b)(D_c . D_d) = n P_k + n (n - 1) P_k(ab) P_k(cd) (`orthant`). Layers below
  `stop` are left None. Through an average pool of q points after layer l each point's signal is 1/q of its
  pooled point's (the same parent and tap for the q of them): a factor q^-4 on the four V's."""
  L = len(layers)
  out = [None] * L
  out[L - 1] = top
  for l in range(L - 2, stop - 1, -1):
    f4u, f22u = out[l + 1]
    w2, n = weight_sq[l + 1] ** 2 / float(layers[l].pool) ** 8, layers[l].n_out
    pk = orthant(patches[l].kappa)
    par, tap = _point_maps(layers[l], layers[l + 1])
    a, b, c, d = _grid(par.size)
    A, B, C, D = par[a], par[b], par[c], par[d]
    ta, tb, tc, td = tap[a], tap[b], tap[c], tap[d]
    e4 = n * pk[_distinct(a, b, c, d)]
    k_ab, k_cd = np.where(a == b, 1, 2), np.where(c == d, 1, 2)
    abcd = e4 + n * (n - 1) * pk[k_ab] * pk[k_cd]
    # One pair twice: E P(both active)^2 over the spread of the pair's cosine (as `predict.backward_moments`).
    theta = math.acos(min(1.0, max(-1.0, patches[l].kappa)))
    var = predict._pair_var(patches[l].P, patches[l].T, patches[l].kappa)
    psq = pk[2] ** 2 + var / (2 * math.pi * max(math.sin(theta), 1e-12)) ** 2
    same_pair = (a != b) & (((a == c) & (b == d)) | ((a == d) & (b == c)))
    abcd = np.where(same_pair, e4 + n * (n - 1) * psq, abcd)
    p1, p2, p3 = (ta == tb) & (tc == td), (tb == tc) & (ta == td), (ta == tc) & (tb == td)
    f4 = w2 * (np.where(p1, abcd * f4u[A, B, C, D], 0.0) + np.where(p2, e4 * f22u[B, C, D, A], 0.0)
               + np.where(p3, e4 * f4u[A, C, B, D], 0.0))
    p4 = (ta == td) & (tb == tc)
    f22 = w2 * (np.where(p1, abcd * f22u[A, B, C, D], 0.0) + np.where(p3, e4 * f4u[A, C, D, B], 0.0)
                + np.where(p4, e4 * f4u[A, D, C, B], 0.0))
    out[l] = (f4, f22)
  return out


def _pattern(a, b, c, d):
  """The coincidence pattern of four broadcast index arrays as a restricted growth string (0, rb, rc, rd),
  coded rb 16 + rc 4 + rd: which of the four are the same point."""
  rb = np.where(b == a, 0, 1)
  rc = np.where(c == a, 0, np.where(c == b, rb, rb + 1))
  rd = np.where(d == a, 0, np.where(d == b, rb, np.where(d == c, rc, np.maximum(rb, rc) + 1)))
  return rb * 16 + rc * 4 + rd


_PATTERNS = sorted({(0, int(b), int(c), int(d)) for b in range(2) for c in range(3) for d in range(4)
                    if c <= b + 1 and d <= max(b, c) + 1})  # the 15 set partitions of four slots


@functools.lru_cache(maxsize=64)
def first_layer_joint(layer: PointLayer, input_kind: str, draws: int = 65536, seed: int = 0,
                      coupled: bool = True) -> tuple:
  """(J1, J4): per coincidence pattern of four points (`_pattern`, a 64-entry lookup) of the first layer's
  patches, the joint expectations of their dots and their own masks D = 1{x W > 0}:
    J1 = E (x_a.x_b)(x_c.x_d)(D_a.D_b)(D_c.D_d),   J4 = E (x_a.x_b)(x_c.x_d) sum_i D_ai D_bi D_ci D_di,
  by numpy Monte Carlo over Gaussian weights and patches of i.i.d. pixels of the input law (fixed seed: the
  prediction is deterministic; cached per layer and law; with the control variates below the coupled block's
  relative sampling error is 0.1-0.6% at batch 1 and 1-2% for the two-example term at 65536 draws). The recursion takes
  these as (forward table) x (mask overlaps at their means), i.e. the patches independent of their own masks
  (A3). Under an average pool with zero-mean pixels that fails: q positions share one weight slice above, and a
  unit is active where its patch leans towards its weight vector, so patches that share active units have a
  positive mean dot (E[x | x.w > 0] = sqrt(2 / pi) w / |w|), which the recursion's zero dot leaves out
  (conv0's block as the recursion had it: 0.66 / 0.53 (batch 1 / two-example term) of the exact one for a 2x2
  kernel and 5 channels, 0.66 / 0.35 for 23 channels, 0.89 / 0.75 for 4x4 and 6 channels; with the coupled
  first layer 1.00-1.09; quadratic loss, float64 MC, 1500 draws of dev seed 0's pooled N(0, 1) structures).
  `coupled=False`: the masks of independent patches (A3 on; the recursion's own layer-0 block, for tests)."""
  k, n = layer.taps * layer.n_in, layer.n_out
  rng = np.random.default_rng(seed)
  j1, j4 = np.full(64, np.nan), np.full(64, np.nan)
  acc = np.zeros((len(_PATTERNS), 5))
  done = 0
  while done < draws:
    m = min(8192, draws - done)
    x = rng.standard_normal((m, 4, k)) if input_kind == "normal" else rng.uniform(size=(m, 4, k))
    xm = x if coupled else (rng.standard_normal(x.shape) if input_kind == "normal" else rng.uniform(size=x.shape))
    mask = (np.einsum("dpk,dkn->dpn", xm, rng.standard_normal((m, k, n))) > 0).astype(np.float64)
    gram, gm = np.einsum("dpk,dqk->dpq", x, x), np.einsum("dpk,dqk->dpq", xm, xm)
    # Two different units are independent given the patches: their part of J1 is n (n - 1) P(ab) P(cd) with the
    # arc-cosine orthant P(w.x_a > 0, w.x_b > 0) = (pi - theta_ab) / (2 pi) exactly (1/2 for a = b), which takes
    # most of the sampling noise out of the two-example term (N(0, 1) pixels: 4-9% -> the one-unit part's).
    norm = np.sqrt(np.einsum("dpp->dp", gm))
    p2 = (math.pi - np.arccos(np.clip(gm / (norm[:, :, None] * norm[:, None, :]), -1.0, 1.0))) / (2 * math.pi)
    for i, (_, rb, rc, rd) in enumerate(_PATTERNS):
      dots = gram[:, 0, rb] * gram[:, rc, rd]
      one = np.sum(mask[:, 0] * mask[:, rb] * mask[:, rc] * mask[:, rd], -1)
      both = one + n * (n - 1) * p2[:, 0, rb] * p2[:, rc, rd]
      acc[i] += [np.sum(dots * both), np.sum(dots * one), np.sum(dots), np.sum(both), np.sum(one)]
    done += m
  mom = _entry_moments(input_kind)
  for i, (_, rb, rc, rd) in enumerate(_PATTERNS):
    # Control variate: the dots' mean is known exactly (`_pattern_dots`), so E dots M = E dots (M - E M) + E dots E M
    # with the sample's own E M: the zero-mean dots of N(0, 1) pixels carried most of the sampling noise.
    s1, s4, sd, sb, so = acc[i] / draws
    exact = _pattern_dots((0, rb, rc, rd), k, mom)
    j1[rb * 16 + rc * 4 + rd] = s1 - sd * sb + exact * sb
    j4[rb * 16 + rc * 4 + rd] = s4 - sd * so + exact * so
  return j1, j4


def _entry_moments(input_kind: str) -> tuple:
  """E x^j, j = 0..4, of one pixel entry of the input law."""
  return (1.0, 0.0, 1.0, 0.0, 3.0) if input_kind == "normal" else (1.0, 1 / 2, 1 / 3, 1 / 4, 1 / 5)


def _pattern_dots(pattern, k: int, mom) -> float:
  """E (x_a.x_b)(x_c.x_d) of k-entry patches of i.i.d. entries, points equal as `pattern` says: the same entry
  (k terms) takes each point's moment of its multiplicity, different entries (k (k - 1)) a pair's moments."""
  mult = np.bincount(np.asarray(pattern), minlength=4)
  same = float(np.prod([mom[j] for j in mult if j]))
  pair = lambda i, j: mom[2] if pattern[i] == pattern[j] else mom[1] ** 2
  return k * same + k * (k - 1) * pair(0, 1) * pair(2, 3)


def first_layer_coupled(layers, weight_sq, upper: tuple, joint: tuple) -> tuple:
  """(weight_same, weight_two) of the first weight layer with its patches and its own masks taken jointly
  (`first_layer_joint`) instead of independently: the layer's step of `backward_tables` from the tables one layer
  up (`upper`), each Wick pairing's mask overlap multiplied into the forward table inside one expectation."""
  layer, above = layers[0], layers[1]
  f4u, f22u = upper
  w2 = weight_sq[1] ** 2 / float(layer.pool) ** 8
  par, tap = _point_maps(layer, above)
  a, b, c, d = _grid(par.size)
  # F4's index order (a, b, c, d) is the block's (a, b, d, c): the forward dots pair (a, b) and (d, c).
  A, B, C, D = par[a], par[b], par[c], par[d]
  ta, tb, tc, td = tap[a], tap[b], tap[c], tap[d]
  p1, p2, p3 = (ta == tb) & (tc == td), (tb == tc) & (ta == td), (ta == tc) & (tb == td)
  x1 = w2 * np.where(p1, f4u[A, B, C, D], 0.0)
  x4 = w2 * (np.where(p2, f22u[B, C, D, A], 0.0) + np.where(p3, f4u[A, C, B, D], 0.0))
  code = _pattern(a, b, d, c)
  j1, j4 = joint
  k = j1[code] * x1 + j4[code] * x4
  rho = layer.grid[0] * layer.grid[1]
  e0, e1 = slice(0, rho), slice(rho, 2 * rho)
  dim = layer.taps * layer.n_in * layer.n_out
  return float(np.sum(k[e0, e0, e0, e0])) / dim, float(np.sum(k[e0, e1, e1, e0])) / dim


def forward_tables(pa: Patch, rho: int) -> np.ndarray:
  """G4[a,b,c,d] = E (x_a . x_b)(x_c . x_d) over the two examples' patches ((2 rho)^4): R, T and P where the
  points pair up; elsewhere the cosine kappa per dot of distinct points times the norms' moment (T; sqrt(R T)
  where one point carries three of the four factors)."""
  a, b, c, d = _grid(2 * rho)
  cos = np.where(a == b, 1.0, pa.ratio) * np.where(c == d, 1.0, pa.ratio)
  k = _distinct(a, b, c, d)
  three = ((a == b) & ((c == a) ^ (d == a))) | ((c == d) & ((a == c) ^ (b == c)))
  g = cos * np.where(three, math.sqrt(pa.R * pa.T), pa.T)
  if math.isfinite(pa.U):  # one point in both dots (`shared_moment`)
    g = np.where((k == 3) & (a != b) & (c != d), pa.U, g)
  if math.isfinite(pa.V):  # four distinct points (`four_moment`)
    g = np.where(k == 4, pa.V, g)
  g = np.where(k == 1, pa.R, g)
  g = np.where((k == 2) & (a == b) & (c == d), pa.T, g)
  return np.where((k == 2) & (a != b) & (((a == c) & (b == d)) | ((a == d) & (b == c))), pa.P, g)


def predict_parts_wick(layers, weight_sq, first: PointStats, top: tuple, curvature: bool = True,
                       input_kind: str | None = None) -> Parts:
  """`Parts` with every pairing of the four positions (`backward_tables`, `forward_tables`). `top`: the output
  tables (F4, F22), or a list of them, one per weight layer (`layer_output_tables`): layer l's block is then
  the recursion from its own tables. A net with positions (a conv net) takes its points' pair statistics from the
  N-weighted cosine law (`weighted_pair_terms`); a one-position net (an MLP) keeps the kappa-centred one here and
  gets that law in its two-example terms (`pair_cosine_two`). `input_kind` (an `inputs.KINDS` law of the pixels),
  on a net with positions: the first layer's weight block takes its patches and its own masks jointly
  (`first_layer_coupled`)."""
  patches = forward_patches(layers, weight_sq, first, curvature, weighted=curvature and has_positions(layers))
  if isinstance(top, list):
    if len(top) != len(layers):
      raise ValueError(f"{len(top)} output tables for {len(layers)} weight layers")
    full0 = backward_tables(layers, weight_sq, patches, top[0], stop=0)
    back = [full0[0]] + [backward_tables(layers, weight_sq, patches, t, stop=l)[l] for l, t in enumerate(top) if l]
  else:
    back = full0 = backward_tables(layers, weight_sq, patches, top)
  ws, wt, bs, bt = [], [], [], []
  for layer, pa, (f4, _) in zip(layers, patches, back):
    rho = layer.grid[0] * layer.grid[1]
    g4 = forward_tables(pa, rho)
    # f(b, b') = sum g(bp, b'p') g(bq, b'q') F4(bp, b'p', b'q', bq): G4[a,b,c,d] F4[a,b,d,c]
    k = np.swapaxes(f4, 2, 3)
    e0, e1 = slice(0, rho), slice(rho, 2 * rho)
    dim = layer.taps * layer.n_in * layer.n_out
    ws.append(float(np.sum(g4[e0, e0, e0, e0] * k[e0, e0, e0, e0])) / dim)
    wt.append(float(np.sum(g4[e0, e1, e0, e1] * k[e0, e1, e0, e1])) / dim)
    bs.append(float(np.sum(k[e0, e0, e0, e0])) / layer.n_out)
    bt.append(float(np.sum(k[e0, e1, e0, e1])) / layer.n_out)
  if input_kind is not None and len(layers) > 1 and has_positions(layers):
    ws[0], wt[0] = first_layer_coupled(layers, weight_sq, full0[1], first_layer_joint(layers[0], input_kind))
  return Parts(*(np.array(v) for v in (ws, wt, bs, bt)))


def table_loss_stats(top: tuple) -> predict.LossStats:
  """The `predict.LossStats` that output tables (F4, F22) hold (one example's and two examples' traces)."""
  f4, f22 = top
  return predict.LossStats(float(f22[0, 0, 0, 0]), float(f4[0, 0, 0, 0]), float(f22[0, 0, 1, 1]),
                           float(f4[0, 1, 1, 0]))


class PairLaw(NamedTuple):
  """The law of a one-position net's pair cosine rho at a layer input, weighted by N = |x_b|^2 |x_b'|^2 (what the
  two-example terms weigh it by): T = E N, P = E N rho^2 = E (x_b . x_b')^2, and the weighted mean and variance
  of rho (a Gaussian clipped to [-1, 1] in the quadratures)."""
  T: float
  P: float
  mean: float
  var: float


def cosine_nodes(mean: float, var: float, nodes: int = 32):
  """Quadrature (nodes, weights) of a cosine law on [-1, 1] with this mean and variance: a Beta law rescaled to
  [-1, 1] (Gauss-Jacobi), a Gaussian (Gauss-Hermite) where the Beta is that close to one (a + b > 400), the
  two-point law at +-1 where the variance is at its bound (1 - mean^2). Why a Beta: below a narrow ReLU layer
  the weighted cosine sits ~1 sd below its bound 1 with a long left tail; a Gaussian clipped at 1 puts that
  sd's mass on the bound."""
  x = (mean + 1.0) / 2.0
  vx = var / 4.0
  if vx <= 0 or not 0 < x < 1:
    return np.array([min(max(mean, -1.0), 1.0)]), np.ones(1)
  if vx >= x * (1 - x):  # no law on [-1, 1] is wider: the two-point one at the ends, with this mean
    return np.array([-1.0, 1.0]), np.array([1 - x, x])
  ab = x * (1 - x) / vx - 1.0
  if ab > 400:
    return np.clip(mean + math.sqrt(var) * _CURV_X, -1.0, 1.0), _CURV_W
  t, wt = roots_jacobi(nodes, (1 - x) * ab - 1.0, x * ab - 1.0)
  return t, wt / wt.sum()


def weighted_pair_law(widths, weight_sq, first: PointStats) -> list:
  """`PairLaw` of every weight layer's input of an MLP. Given a pair of inputs (x_b, x_b'), the next pair's
  pre-activations are n i.i.d. bivariate normals with correlation rho (the cosine), so the cosine is a Markov
  chain and N is multiplied by a factor that depends on rho only:
    T' = w^2 E[N (n m2(rho) + n (n - 1) / 4)],   P' = w^2 E[N (n m2(rho) + n (n - 1) m1(rho)^2)],
    M' = E N' rho' = w^2 E[N g_n(rho)]         (g_n: `predict.pair_gain_dot`),
  every expectation over the N-weighted law of rho, a Gaussian of mean M / T and variance P / T - (M / T)^2.
  Why not the unweighted mean cosine (`patch`'s kappa): after a narrow layer the two are far apart (8 units:
  weighted mean 0.87, D / S 0.79) because examples with more active units have larger norms and share more of
  them; the kappa-centred law left E (x.x')^2 10-20% low below a narrow layer (MLP development seed 0, 40k
  forward draws) and with it the last layer's two-example term (batch 1024: 0.88-0.91)."""
  t, p = float(first.t), float(first.p2)
  m = float(first.m) if first.m is not None else (first.d / first.s) * t if first.s > 0 else 0.0
  out = []
  for l in range(len(widths) - 1):
    mean = m / t if t > 0 else 0.0
    out.append(PairLaw(t, p, mean, max(p / t - mean * mean, 0.0) if t > 0 else 0.0))
    if l == len(widths) - 2:
      break
    w, n, law = weight_sq[l], widths[l + 1], out[-1]
    rho, wq = cosine_nodes(law.mean, law.var)
    th = np.arccos(rho)
    j1 = _j1(th) / (2 * math.pi)
    j2 = (3 * np.sin(th) * np.cos(th) + (math.pi - th) * (1 + 2 * np.cos(th) ** 2)) / (2 * math.pi)
    g = np.array([predict.pair_gain_dot(float(r), n) for r in rho])
    e = lambda f: float(np.sum(wq * f))
    t, p, m = (w * w * t * (n * e(j2) + n * (n - 1) / 4), w * w * t * (n * e(j2) + n * (n - 1) * e(j1 * j1)),
               w * w * t * e(g))
  return out


def pair_cosine_two(layers, weight_sq, first: PointStats, top, curvature: bool = True):
  """(weight_two, bias_two) of a one-position net (an MLP) with the pair cosine's spread carried through the
  backward recursion (`predict.pair_backward`: the two-example backward term as a function of the pair's
  cosine, a Markov chain over layers), averaged against the forward (x_b . x_b')^2 over the cosine's spread:
  E[(x.x')^2 C(rho)] = P E[rho^2 C(rho)] / E rho^2 instead of P C(kappa). Both rise with the cosine, so the
  product of means is low (MLP development seed 0, batch 1024, quadratic loss: 0.906). None for a net with
  positions (the conv recursion keeps the masks' overlaps at their means)."""
  if any(l.taps != 1 or l.grid != (1, 1) for l in layers):
    return None
  widths = [layers[0].n_in] + [l.n_out for l in layers]
  patches = forward_patches(layers, weight_sq, first, curvature)
  if curvature:  # the pair's law weighted as the two-example term weighs it (`weighted_pair_law`)
    laws = weighted_pair_law(widths, weight_sq, first)
  else:
    laws = [PairLaw(pa.T, pa.P, pa.kappa, predict._pair_var(pa.P, pa.T, pa.kappa)) for pa in patches]
  tops = top if isinstance(top, list) else [top] * len(layers)
  # The conditional recursion is linear in the top's two-example traces (Ax, C): two runs serve every layer's tables.
  unit = [predict.pair_backward(widths, weight_sq, predict.LossStats(0.0, 0.0, ax, c)) for ax, c in ((1.0, 0.0),
                                                                                                    (0.0, 1.0))]
  wt, bt = [], []
  for l, (law, pa, t) in enumerate(zip(laws, patches, tops)):
    ls = table_loss_stats(t)
    c_fn = ls.trace_cross * unit[0][l][1] + ls.tr_cross * unit[1][l][1]
    rho = np.clip(law.mean + math.sqrt(law.var) * predict._GH_X, -1.0, 1.0)
    c_rho = predict._theta_interp(c_fn, rho)
    # Normalised by the nodes' own E[rho^2] (as `predict.predict_sq_sv`): clipping must not move P itself.
    wt.append(law.P * np.sum(predict._GH_W * rho * rho * c_rho) / np.sum(predict._GH_W * rho * rho)
              / (widths[l] * widths[l + 1]))
    # The bias block has no forward factor: its pair law is not norm-weighted (the mean cosine kappa).
    rho = np.clip(pa.kappa + math.sqrt(predict._pair_var(pa.P, pa.T, pa.kappa)) * predict._GH_X, -1.0, 1.0)
    bt.append(float(np.sum(predict._GH_W * predict._theta_interp(c_fn, rho))) / widths[l + 1])
  return np.array(wt), np.array(bt)


def predict_wick(layers, weight_sq, first: PointStats, top: tuple, batch_size: int = 1,
                 curvature: bool = True, pair_cosine: bool = True, bias_top=None,
                 weight_factors=None, bias_factors=None, input_kind: str | None = None) -> predict.BlockPrediction:
  """The full-order prediction with every Wick pairing (`predict_parts_wick`) at minibatch `batch_size`;
  `pair_cosine`: on a one-position net (an MLP) the two-example terms from `pair_cosine_two`; `input_kind`: a conv
  net's first layer with its patches and masks taken jointly (`first_layer_coupled`).

  `bias_top`: the bias blocks' own output tables (None: `top`'s). A bias block has no forward factor, so where
  `top` weighs each loss-sample draw by the forward gains too (cross-entropy's `xent_layer_output_tables`), the
  bias blocks need tables weighted by the backward gains alone (`xent_bias_output_tables`).

  `weight_factors`: (same, two), per weight layer, factors on the kernel blocks' same-example and two-example
  terms: cross-entropy's coupling of the softmax with the directions of the weights above, which the tables
  cannot carry (`gains.mlp_direction_coupling`, measured on the loss sample); `bias_factors` the same for the
  bias blocks."""
  _check(layers, weight_sq, batch_size)
  pt = predict_parts_wick(layers, weight_sq, first, top, curvature, input_kind)
  two = pair_cosine and batch_size > 1
  if two:
    pc = pair_cosine_two(layers, weight_sq, first, top, curvature)
    if pc is not None:
      pt = pt._replace(weight_two=pc[0], bias_two=pc[1])
  if bias_top is not None:
    pb = predict_parts_wick(layers, weight_sq, first, bias_top, curvature, input_kind)
    pc = pair_cosine_two(layers, weight_sq, first, bias_top, curvature) if two else None
    pt = pt._replace(bias_same=pb.bias_same, bias_two=pb.bias_two if pc is None else pc[1])
  if weight_factors is not None:
    same, two = (np.asarray(f, np.float64) for f in weight_factors)
    pt = pt._replace(weight_same=pt.weight_same * same, weight_two=pt.weight_two * two)
  if bias_factors is not None:
    same, two = (np.asarray(f, np.float64) for f in bias_factors)
    pt = pt._replace(bias_same=pt.bias_same * same, bias_two=pt.bias_two * two)
  inv = 1.0 / batch_size
  return predict.BlockPrediction(pt.weight_same * inv + (1 - inv) * pt.weight_two,
                                 pt.bias_same * inv + (1 - inv) * pt.bias_two)

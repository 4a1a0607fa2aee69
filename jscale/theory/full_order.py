r"""One full-order prediction of the diagonal Hessian blocks for dense and strided-conv ReLU nets (`predict_points`).

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
points has S = k s, R = k r + k (k - 1) t, two distinct patches D = k d, P = k p2 + k (k - 1) d^2 (the 4-point
term at its mean), T = k^2 t: exact at the input (independent pixels), the mean of the 4-point terms above
it. Through a layer the MLP's Gaussian-conditional step (`predict.forward_moments`: arc-cosine kernels at the
patch cosine kappa = D / S) gives the next point statistics.

Backward (the calculus's A3: the weights above a layer independent of its masks, Gaussian weights, Wick's
theorem as in `predict.backward_moments`). V_{b,p} = V_{b,P} W_t^T D_{b,p} with P the parent of p one layer
up and t its tap in P's patch. Per point (A, Bq) = (E (tr M)^2, E tr M^2), M = V^T V: the MLP recursion.
Per ordered pair of distinct points (Ax, C) = (E tr M tr M', E tr(M M')), tabulated over the pair's positions:
  - same tap, parents (P, P') distinct: the MLP's pair step from the parents' (Ax, C) (e = both-active count);
  - different taps (independent weight slices): Ax = w^2 dd Ax_parents, C = w^2 e Ax_parents, where
    Ax_parents = A of the parent when both points share it (the two paths meet there).
Same-example pairs start at the output from nothing (one point) and are born where paths meet; pairs of two
examples start from the loss's cross statistics and never meet. Summing the pairing {p = q, p' = q'} of the
four-position expansion:
    E f(b, b)  = [rho R Bq + P sum_{p != p'} C_same(p, p')] / (k n_l n_{l+1}),
    E f(b, b') = P sum_{p, p'} C_two(p, p') / (k n_l n_{l+1}).
For an MLP (rho = k = 1) this is `predict.predict_sq_sv` (corrected, no pair-cosine averaging), tested.
What it leaves out, with measurements in docs/calculus.md: the two other pairings of the four positions
({p = p', q = q'} and {p = q', p' = q}: products of backward signals of different positions meeting through
shared weights), which dominate the low convs at batch 1024 (uncentred ReLU outputs make every patch product
large); the spread of the pair cosine (the MLP's `pair_cosine`); the cross-entropy Hessian's correlation with
the forward pass.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np

from jscale import checks
from jscale.theory import predict


class PointLayer(NamedTuple):
  """One weight layer as a strided conv: channels in/out, kernel (taps per axis) and its output grid."""
  n_in: int
  n_out: int
  kernel: tuple  # (kh, kw); a dense layer on one position: (1, 1); flatten + dense: the whole last grid
  grid: tuple    # (gh, gw) output positions

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
  for n, (kh, kw) in zip(config.channels, config.kernels):
    h, w = h // kh, w // kw
    out.append(PointLayer(c, int(n), (int(kh), int(kw)), (h, w)))
    c = int(n)
  kernel = (h, w)
  for n in tuple(config.hidden) + (config.n_out,):
    out.append(PointLayer(c, int(n), kernel, (1, 1)))
    c, kernel = int(n), (1, 1)
  return tuple(out)


class PointStats(NamedTuple):
  """Per-point statistics of one layer's input points (see the module docstring)."""
  s: float
  r: float
  d: float
  p2: float
  t: float


class Patch(NamedTuple):
  S: float
  R: float
  P: float
  T: float
  kappa: float


def pixel_stats(inputs: predict.InputStats) -> PointStats:
  """Input points (pixels, or the whole input of an MLP): `InputStats` of one point's entries."""
  return PointStats(inputs.sq_norm, inputs.sq_norm_sq, inputs.dot, inputs.dot_sq, inputs.norm_cross)


def patch(st: PointStats, k: int) -> Patch:
  """Statistics of a patch of k distinct points (the 4-point terms at the mean of their pairs)."""
  S, D = k * st.s, k * st.d
  # E (x_a.x_b)(x_c.x_d) over two pairs of distinct points: the cosine at its mean, the norms correlated as any
  # two distinct points' are (they share every weight below): (d / s)^2 t, not d^2.
  cos = st.d / st.s if st.s > 0 else 0.0
  return Patch(S, k * st.r + k * (k - 1) * st.t, k * st.p2 + k * (k - 1) * cos * cos * st.t, k * k * st.t,
               D / S if S > 0 else 0.0)


def next_points(pa: Patch, n: int, w: float) -> PointStats:
  """The ReLU output points of a layer of n channels, E[W^2] = w, from its patches (`predict.forward_moments`)."""
  theta = math.acos(min(1.0, max(-1.0, pa.kappa)))
  var = predict._pair_var(pa.P, pa.T, pa.kappa)
  m1, m2 = predict._j1(theta) / (2 * math.pi), predict._j2(theta) / (2 * math.pi)
  m1sq = m1 * m1 + ((math.pi - theta) / (2 * math.pi)) ** 2 * var
  s = n * w * pa.S / 2
  kappa = 2 * m1
  return PointStats(s, w * w * pa.R * (n * n + 5 * n) / 4, kappa * s,
                    w * w * pa.T * (n * n * m1sq + n * (m2 - m1sq)), w * w * pa.T * (n * m2 + n * (n - 1) / 4))


def forward_patches(layers, weight_sq, first: PointStats) -> list:
  """The `Patch` statistics of every weight layer's input."""
  out, st = [], first
  for l, layer in enumerate(layers):
    out.append(patch(st, layer.taps))
    if l < len(layers) - 1:
      st = next_points(out[-1], layer.n_out, weight_sq[l])
  return out


def _parents(layer: PointLayer, above: PointLayer):
  """Per output position of `layer` (row-major): its parent position in `above`'s grid and its tap there."""
  gh, gw = layer.grid
  i, j = np.divmod(np.arange(gh * gw), gw)
  kh, kw = above.kernel
  parent = (i // kh) * above.grid[1] + (j // kw)
  tap = (i % kh) * kw + (j % kw)
  return parent, tap


class Backward(NamedTuple):
  """Per weight layer: the single-point (A, Bq) and the (rho x rho) pair tables (Ax, C) within one example
  (diagonal unused) and across two examples."""
  a: float
  bq: float
  ax_same: np.ndarray
  c_same: np.ndarray
  ax_two: np.ndarray
  c_two: np.ndarray
  psi_same: np.ndarray  # E tr(N_p N_q), N = V V^T (O x O): the pairing {p = p', q = q'} within one example
  psi_two: np.ndarray   # E tr(V_bp V_b'p^T V_b'q V_bq^T): the same pairing across two examples


def backward_points(layers, weight_sq, patches, loss: predict.LossStats) -> list:
  """`Backward` of every weight layer, from the output down (module docstring)."""
  L = len(layers)
  out = [None] * L
  z = np.zeros((1, 1))
  out[L - 1] = Backward(loss.trace_sq, loss.tr_sq, z, z, np.full((1, 1), loss.trace_cross),
                        np.full((1, 1), loss.tr_cross), z, z)
  for l in range(L - 2, -1, -1):
    up, w, n = out[l + 1], weight_sq[l + 1], layers[l].n_out
    # The masks D_l of y_l = x_l W_l follow the cosine of layer l's patches.
    theta = math.acos(min(1.0, max(-1.0, patches[l].kappa)))
    var = predict._pair_var(patches[l].P, patches[l].T, patches[l].kappa)
    pr = (math.pi - theta) / (2 * math.pi)
    psq = pr * pr + var / (2 * math.pi * max(math.sin(theta), 1e-12)) ** 2
    h = n * 0.5
    h2 = h * 0.5 + h * h
    e, e2, dd = n * pr, n * pr + n * (n - 1) * psq, n * pr + n * (n - 1) / 4
    w2 = w * w
    a, bq = w2 * (h2 * up.a + 2 * h * up.bq), w2 * (h * up.a + (h + h2) * up.bq)
    par, tap = _parents(layers[l], layers[l + 1])
    same_tap = tap[:, None] == tap[None, :]
    same_par = par[:, None] == par[None, :]

    def step(ax_up, c_up, meet_a):
      axp, cp = ax_up[par[:, None], par[None, :]], c_up[par[:, None], par[None, :]]
      if meet_a is not None:  # two positions of one example under one parent: their paths meet there
        axp = np.where(same_par, meet_a, axp)
      ax_t, c_t = w2 * (dd * axp + 2 * e * cp), w2 * (e * axp + (e + e2) * cp)
      return np.where(same_tap, ax_t, w2 * dd * axp), np.where(same_tap, c_t, w2 * e * axp)

    ax_s, c_s = step(up.ax_same, up.c_same, up.a)
    ax_x, c_x = step(up.ax_two, up.c_two, None)
    # {p = p', q = q'}: E[W_t^T D W_t] = w |D| I for each slice (the leading Wick term; the crossing term of a
    # shared tap is O(1/n) and left out). Where the parents coincide the pair is one point: tr(N_P^2) = Bq_P,
    # and across examples tr(M_bP M_b'P) = C_two(P, P).
    pp = (par[:, None], par[None, :])
    psi_s = w2 * dd * np.where(same_par, up.bq, up.psi_same[pp])
    diag_two = np.diag(up.c_two)
    psi_x = w2 * e * e * np.where(same_par, diag_two[par][:, None], up.psi_two[pp])
    out[l] = Backward(a, bq, ax_s, c_s, ax_x, c_x, psi_s, psi_x)
  return out


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


def predict_parts(layers, weight_sq, first: PointStats, loss: predict.LossStats) -> Parts:
  """E f(b, b) and E f(b, b') of every layer's kernel and bias block (module docstring)."""
  patches = forward_patches(layers, weight_sq, first)
  back = backward_points(layers, weight_sq, patches, loss)
  ws, wt, bs, bt = [], [], [], []
  for layer, pa, bk in zip(layers, patches, back):
    rho = layer.grid[0] * layer.grid[1]
    off = ~np.eye(rho, dtype=bool)
    c_off = float(bk.c_same[off].sum())
    dim = layer.taps * layer.n_in * layer.n_out
    psi_s, psi_x = float(bk.psi_same[off].sum()), float(bk.psi_two[off].sum())
    dbar2 = pa.kappa ** 2 * pa.T  # E (x_bp . x_b'p)(x_bq . x_b'q), four distinct patches: as in `patch`
    ws.append((rho * pa.R * bk.bq + pa.P * c_off + pa.T * psi_s) / dim)
    wt.append((pa.P * float(bk.c_two.sum()) + dbar2 * psi_x) / dim)
    bs.append((rho * bk.bq + c_off + psi_s) / layer.n_out)
    bt.append((float(bk.c_two.sum()) + psi_x) / layer.n_out)
  return Parts(*(np.array(v) for v in (ws, wt, bs, bt)))


def predict_points(layers, weight_sq, first: PointStats, loss: predict.LossStats,
                   batch_size: int = 1) -> predict.BlockPrediction:
  """The full-order prediction of every weight layer's block average squared singular value at minibatch
  `batch_size`: E f(b, b) / B + (1 - 1/B) E f(b, b')."""
  _check(layers, weight_sq, batch_size)
  pt = predict_parts(layers, weight_sq, first, loss)
  inv = 1.0 / batch_size
  return predict.BlockPrediction(pt.weight_same * inv + (1 - inv) * pt.weight_two,
                                 pt.bias_same * inv + (1 - inv) * pt.bias_two)

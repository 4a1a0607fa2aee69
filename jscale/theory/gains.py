r"""Per-example forward and backward gains of a drawn ReLU net: what ties cross-entropy's output Hessian to a block.

A bias-free ReLU net is positively homogeneous: the logits of example b are z_b = K_{l,b} y_{l,b} with
K_{l,b} = d z_b / d y_{l,b} (Euler), so they grow with the gain of the weights below layer l (g_l = |x_{l,b}|^2,
the layer input's squared norm) and with the gain of the weights above it (k_l = ||K_{l,b}||_F^2 / n_L). The
layer-l block is E[g_l^2 tr((H K K^T)^2)]: its two gains and the loss's H = A^T A (a function of z) are
correlated, which a factorised prediction (E g^2 x E tr(...)) misses. `full_order.layer_output_tables` weights
each draw's output factors by these gains (`docs/calculus.md`, "Full order").
"""
from __future__ import annotations

import functools
import math
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jscale.models import lenet as lenet_lib
from jscale.theory import inputs, pairs


def mlp_gains(weights: Sequence, x, n_out: int) -> tuple[np.ndarray, np.ndarray]:
  """(forward gains g (R, E, L): |x_{l,b}|^2 of every weight layer's input; backward gains k (R, E, L):
  ||d z_b / d y_{l,b}||_F^2 / n_out, 1 at the last layer) of a round of MLP draws (`pairs.sample_round`'s
  weights, possibly zero-padded beyond the true widths; `n_out` the true output width). Built from the exact
  side's own per-layer programs (`pairs._forward`, `pairs._backward`), compiled once per padded shape, not
  once per setup."""
  ys, g, h = [], [], x
  for l, w in enumerate(weights):
    h, sq, _ = pairs._forward(h, w, l > 0)
    ys.append(h)
    g.append(np.asarray(sq, np.float64))
  r, e, o = ys[-1].shape
  dt = np.dtype(x.dtype)  # the 0/1 mask built on the host: on the device it is ~5 programs per shape
  k = jnp.asarray(np.broadcast_to((np.arange(o) < n_out).astype(dt) * np.eye(o, dtype=dt), (r, e, o, o)))
  ks = [None] * len(weights)
  for l in range(len(weights) - 1, -1, -1):
    ks[l] = np.asarray(_frob(k), np.float64) / n_out
    if l > 0:  # d z / d y_{l-1} = K_l W_l^T D_{l-1}
      k = pairs._backward(k, weights[l], ys[l - 1])
  return np.stack(g, -1), np.stack(ks, -1)


def mlp_pair_dots(weights: Sequence, x) -> np.ndarray:
  """(x_{l,b} . x_{l,b'})^2 of every weight layer's input and pair of examples of a round of MLP draws
  (R, E, E, L), from the exact side's programs (`pairs._forward`, `pairs._input_gram`): what a two-example
  term weighs its draw by (`full_order.xent_layer_output_tables`' pair weights)."""
  out, h = [], x
  for l, w in enumerate(weights):
    out.append(np.asarray(pairs._input_gram(h, l > 0), np.float64) ** 2)
    h, _, _ = pairs._forward(h, w, l > 0)
  return np.stack(out, -1)


@jax.jit
def _frob(k):
  return jnp.sum(k * k, axis=(-2, -1))


def lenet_gains(params: dict, x, pools: tuple = ()) -> tuple[np.ndarray, np.ndarray]:
  """`mlp_gains` of one strided LeNet draw (`lenet.apply_lenet` params, zero biases) on images x (E, H, W, C):
  g (E, L) the squared norm of every weight layer's whole input (all positions, after a pool), k (E, L) the
  squared Frobenius norm of d logits / d (its pre-activation, all positions) over the number of logits.
  `pools`: `LeNetConfig.pools`."""
  return tuple(np.asarray(a, np.float64) for a in _lenet_gains(params, x, tuple(pools)))


@functools.partial(jax.jit, static_argnums=2)
def _lenet_gains(params, x, pools=()):
  convs = sorted((n for n in params if n.startswith("conv")), key=lambda n: int(n[4:]))
  denses = sorted((n for n in params if n.startswith("dense")), key=lambda n: int(n[5:]))
  names = convs + denses
  windows = dict(zip(convs, lenet_lib.pool_windows(pools, len(convs))))

  def act(name, y):
    """The ReLU after weight layer `name` and its pool."""
    h = jnp.maximum(y, 0.0)
    return lenet_lib.avg_pool(h[None], int(windows[name]))[0] if name in windows else h

  def layer(name, xin):
    """Weight layer `name`'s pre-activation (zero bias) for one example's input xin."""
    w = params[name]["kernel"]
    if name.startswith("conv"):
      return jax.lax.conv_general_dilated(xin[None], w, w.shape[:2], "VALID",
                                          dimension_numbers=("NHWC", "HWIO", "NHWC"))[0]
    return xin.reshape(-1) @ w

  def from_layer(l, y):
    """The logits of one example from weight layer l's pre-activation y (with its ReLU, unless the last)."""
    h = y
    for below, name in zip(names[l:], names[l + 1:]):
      h = layer(name, act(below, h))
    return h

  def one(xe):
    g, k, h = [], [], xe
    for l, name in enumerate(names):
      xin = act(names[l - 1], h) if l > 0 else h
      g.append(jnp.sum(xin * xin))
      h = layer(name, xin)
      jac = jax.jacrev(lambda y, l=l: from_layer(l, y))(h)
      k.append(jnp.sum(jac * jac) / jac.shape[0])
    return jnp.stack(g), jnp.stack(k)

  return jax.vmap(one)(x)


def lenet_loss_sample(config: lenet_lib.LeNetConfig, weight_sq: Sequence[float], input_kind: str, key, *,
                      draws: int, examples: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Cross-entropy's loss statistics of a strided LeNet from `draws` fresh draws of (normal weights with
  E[W^2] = `weight_sq`, zero biases; `examples` images of `input_kind` pixels): softmax probabilities
  (D, E, n_out) and the forward and backward gains (D, E, L) of the same draws (`lenet_gains`)."""
  shapes = config.check().kernel_shapes()
  if len(weight_sq) != len(shapes):
    raise ValueError(f"weight_sq has {len(weight_sq)} entries for {len(shapes)} weight layers")
  stds = [float(np.sqrt(v)) for v in weight_sq]
  n_pix = int(np.prod(config.image))

  @jax.jit
  def one(k):
    kp, kx = jax.random.split(k)
    params = {name: {"kernel": std * jax.random.normal(kk, shape), "bias": jnp.zeros(shape[-1])}
              for (name, shape), std, kk in zip(shapes.items(), stds, jax.random.split(kp, len(shapes)))}
    x = inputs.sample_inputs(kx, input_kind, examples, n_pix).reshape((examples,) + tuple(config.image))
    g, kb = _lenet_gains(params, x, tuple(config.pools))
    return jax.nn.softmax(lenet_lib.apply_lenet(params, x, pools=config.pools), axis=-1), g, kb

  out = jax.lax.map(one, jax.random.split(key, draws))
  return tuple(np.asarray(a, np.float64) for a in out)


def _swapped_partners(p, mats, wts, shifts: int, chunk: int):
  """(sum_j w_j tr((H_b M_j)^2), sum_j w_j) per draw r and example b, over the examples j of draws r + 1 ..
  r + `shifts` (cyclically): the direction-swapped side Y of both couplings (`mats` already normalised by each
  example's own gains), in chunks of `chunk` draws to bound the (chunk, E, E') trace table."""
  rr, e = p.shape[:2]
  y, w = np.zeros((rr, e)), np.zeros((rr, e))
  for s in range(1, shifts + 1):
    ms, ws = np.roll(mats, -s, axis=0), np.roll(wts, -s, axis=0)
    for lo in range(0, rr, chunk):
      c = slice(lo, lo + chunk)
      tr = _h_trace(p[c][:, :, None], p[c][:, :, None], ms[c][:, None])  # (c, E, E')
      y[c] += np.einsum("ref,rf->re", tr, ws[c])
      w[c] += ws[c].sum(1)[:, None]
  return y, w


def _h_trace(pa, pb, c):
  """tr(H_a C H_b C^T) with H = diag(p) - p p^T (cross-entropy's output Hessian), batched over leading axes:
  p_a^T (C o C) p_b - p_a^T (C p_b)^2 - p_b^T (C^T p_a)^2 + (p_a^T C p_b)^2 (O^2 per pair instead of O^3)."""
  cpb = np.einsum("...ij,...j->...i", c, pb)
  ctpa = np.einsum("...ij,...i->...j", c, pa)
  return (np.einsum("...i,...ij,...j->...", pa, c * c, pb) - np.einsum("...i,...i->...", pa, cpb * cpb)
          - np.einsum("...j,...j->...", pb, ctpa * ctpa) + np.einsum("...i,...i->...", pa, cpb) ** 2)


class Coupling(NamedTuple):
  """Per weight layer, the loss-sample estimate of how far the softmax's dependence on the directions of the
  weights above moves a block: same / two = (same-draw sum) / (direction-swapped sum), with the se of log."""
  same: np.ndarray
  two: np.ndarray
  same_se: np.ndarray
  two_se: np.ndarray
  bias_same: np.ndarray  # the bias blocks' (no forward factor: weights k^2, k_a k_b)
  bias_two: np.ndarray
  bias_same_se: np.ndarray | None = None  # None: not measured (the LeNet's bias factors are 1)
  bias_two_se: np.ndarray | None = None
  draws: int = 0       # draws of the loss sample it was measured on
  notes: tuple = ()    # why a factor was set to 1 (`guarded`)

  def max_se(self) -> float:
    """The largest log-SE of any measured factor (kernel and bias, same and two)."""
    ses = [self.same_se, self.two_se] + [a for a in (self.bias_same_se, self.bias_two_se) if a is not None]
    return float(max(np.max(a) for a in ses))


# The couplings' guard (`guarded`). MIN_COUPLING_DRAWS: the log-SE of a ratio of sums over draws (`_ratio`, the
# delta method) is an SE only once the sums are near-normal; under these heavy tails 128 draws gave calibrated SEs
# on the LeNet's development seeds (z of the 128-draw factor against a 1,024-draw one: sd 0.92), and 16 draws
# x 4 examples once read a factor of 11. MAX_COUPLING_LOG_SE: a factor known to +-25% (log) or worse has a 95%
# interval wider than x0.6..x1.6, wider than the goal band and than the spread of the true factors across the
# development seeds' layers (log sd 0.13): applying it is expected to add more error than the coupling removes.
# Both chosen before looking at any held-out seed, not fitted.
MIN_COUPLING_DRAWS = 64
MAX_COUPLING_LOG_SE = 0.25


def guarded(cp: Coupling, min_draws: int = MIN_COUPLING_DRAWS, max_log_se: float = MAX_COUPLING_LOG_SE) -> Coupling:
  """`cp` with every factor the sample cannot carry set to 1, the reason in `notes`: all of them when the loss
  sample has fewer than `min_draws` draws (its SEs are not SEs), otherwise each whose log-SE exceeds `max_log_se`.
  The SEs are kept as measured (they say why)."""
  rows = {"same": "same_se", "two": "two_se", "bias_same": "bias_same_se", "bias_two": "bias_two_se"}
  fields, notes = {}, list(cp.notes)
  for name, se_name in rows.items():
    f, se = np.array(getattr(cp, name), np.float64), getattr(cp, se_name)
    if cp.draws < min_draws:
      drop = f != 1.0
      why = f"{cp.draws} draws < {min_draws}"
    elif se is not None:
      drop = np.asarray(se) > max_log_se
      why = f"log-SE > {max_log_se} after {cp.draws} draws"
    else:
      continue
    for l in np.flatnonzero(drop):
      se_l = "" if se is None else f" (log-SE {float(se[l]):.2f})"
      notes.append(f"layer {l} {name}: factor {f[l]:.3g}{se_l} set to 1: {why}")
    f[drop] = 1.0
    fields[name] = f
  return cp._replace(notes=tuple(notes), **fields)


def grown_coupling(draw_round, measure, target_log_se: float, max_rounds: int):
  """(sample, coupling) of a loss sample grown until its coupling is measured to `target_log_se`:
  `draw_round(i)` draws round i (a tuple of arrays, draws first; round 0 alone is the fixed-size sample),
  `measure(*sample)` its `Coupling`. The rounds double (1, 2, 4, .. of them) until every factor's log-SE is at
  most `target_log_se` or `max_rounds` rounds are drawn; the same round program throughout (no new compile)."""
  parts = [draw_round(0)]
  while True:
    sample = parts[0] if len(parts) == 1 else tuple(np.concatenate(a) for a in zip(*parts))
    cp = measure(*sample)
    if cp.max_se() <= target_log_se or len(parts) >= max_rounds:
      return sample, cp
    parts += [draw_round(i) for i in range(len(parts), min(2 * len(parts), max_rounds))]


def _ratio(x_r, y_r):
  """Ratio estimator sum x / sum y over draws r and the SE of its log (delta method over the draws)."""
  c = float(np.sum(x_r) / np.sum(y_r))
  r = len(x_r)
  se = math.sqrt(r / max(r - 1, 1) * float(np.sum((x_r - c * y_r) ** 2))) / float(np.sum(x_r))
  return c, se


def mlp_direction_coupling(weights: Sequence, x, probs, n_out: int, shifts: int = 4,
                           neighbours: int = 8, chunk: int = 8) -> Coupling:
  r"""Cross-entropy's direction coupling of every weight layer, measured on a round of MLP draws (the loss
  sample: `pairs.sample_round`'s weights and inputs, `probs` their softmax (R, E, n_out)).

  The predictor takes the loss's H from tables weighted by the gains (`full_order.layer_output_tables`) and the
  backward directions K~ = K / sqrt(k) (K = d z / d y_l) from its Wick recursion, as if independent of H. They
  are not: z = K y_l, so a softmax that saturates does so along the directions K amplifies. Per example b the
  batch-1 block's term is X_b = g_b^2 tr((H_b K_b K_b^T)^2); the same with K_b's direction swapped for other
  draws' (the examples of draws r + 1 .. r + `shifts`) is Y_b = g_b^2 k_b^2 mean_j tr((H_b K~_j K~_j^T)^2),
  whose mean is what the factorised model predicts. Both carry the same draw's heavy-tailed g_b^2 k_b^2 and H_b,
  so their ratio sum X / sum Y (a control variate: only the covariance of H with the directions is estimated)
  has a small fraction of the noise of either (a factor measured against independent draws' H read +-40%).
  At the last layer K = I: 1 exactly.

  Two examples (pairs (0, 1), (2, 3), .. of each draw): X = (x_a . x_b)^2 tr(H_a C H_b C^T), C = K_a K_b^T, and
  Y the same with C~ = C / sqrt(k_a k_b) taken from the `neighbours` pairs of other draws nearest in the pair's
  cosine at this layer: the predictor already carries the pair cosine's effect on the backward pair
  (`full_order.pair_cosine_two`), so the swap keeps it and removes only the coupling with H. The bias blocks'
  factors are the same sums without the forward weights (g_b^2; (x_a . x_b)^2).

  The partner directions are weighted by k_j^2 (two examples: k_a k_b of the partner pair), as the predictor's
  Wick recursion weighs them (it computes E[k^2 tr(..K~..)], not the plain mean over directions): below a
  narrow layer k and the rank of K~ K~^T move together, and the plain mean read 0.7-0.85 on blocks the
  predictor already had within 5% (MLP development seed 0)."""
  p = np.asarray(probs, np.float64)[..., :n_out]
  rr, e, _ = p.shape
  ys, gram, h = [], [], x
  for l, w in enumerate(weights):
    gram.append(np.asarray(pairs._input_gram(h, l > 0), np.float64))
    h, _, _ = pairs._forward(h, w, l > 0)
    ys.append(h)
  o = ys[-1].shape[-1]
  dt = np.dtype(x.dtype)
  k = jnp.asarray(np.broadcast_to((np.arange(o) < n_out).astype(dt) * np.eye(o, dtype=dt), (rr, e, o, o)))
  a_ix, b_ix = np.arange(0, e - 1, 2), np.arange(1, e, 2)
  L = len(weights)
  out = np.ones((8, L))
  out[[2, 3, 6, 7]] = 0.0  # the SEs (the last layer's factor is exactly 1)
  for l in range(L - 1, -1, -1):
    if l < L - 1:  # the last layer's K is the identity: no direction to couple
      kk = np.asarray(k, np.float64)[:, :, :n_out, :]
      q = np.einsum("reom,reqm->reoq", kk, kk)
      kb = np.trace(q, axis1=-2, axis2=-1) / n_out
      g = np.einsum("ree->re", gram[l])
      qt = q / np.where(kb > 0, kb, 1.0)[..., None, None]  # a dead draw (k = 0) has q = 0: X = Y = 0
      x1 = _h_trace(p, p, q)
      y1, w1 = _swapped_partners(p, qt, kb * kb, shifts, chunk)
      y1 *= kb * kb / np.maximum(w1, 1e-300)
      out[4, l], out[6, l] = _ratio(x1.sum(1), y1.sum(1))
      x1, y1 = g * g * x1, g * g * y1
      out[0, l], out[2, l] = _ratio(x1.sum(1), y1.sum(1))
      # Two examples: pairs (a, b) of each draw, partners matched in the pair's cosine.
      cm = np.einsum("reom,reqm->reoq", kk[:, a_ix], kk[:, b_ix])  # (R, E/2, O, O)
      kab = kb[:, a_ix] * kb[:, b_ix]
      dot = gram[l][:, a_ix, b_ix]
      rho = (dot / np.sqrt(np.maximum(g[:, a_ix] * g[:, b_ix], 1e-300))).reshape(-1)
      pa, pb = p[:, a_ix].reshape(-1, n_out), p[:, b_ix].reshape(-1, n_out)
      cm = cm.reshape((-1,) + cm.shape[2:])
      wt = (dot * dot).reshape(-1)
      x2 = _h_trace(pa, pb, cm)
      ct = cm / np.sqrt(np.where(kab > 0, kab, 1.0)).reshape(-1)[:, None, None]
      draw = np.repeat(np.arange(rr), len(a_ix))
      order = np.argsort(rho, kind="stable")
      pos = np.empty_like(order)
      pos[order] = np.arange(len(order))
      offs = np.array([s for j in range(1, neighbours // 2 + 1) for s in (j, -j)])
      nb = order[np.clip(pos[:, None] + offs[None, :], 0, len(order) - 1)]  # (N, neighbours)
      ok = draw[nb] != draw[:, None]
      tr = np.zeros(nb.shape)
      for lo in range(0, len(nb), chunk * 4):
        c = slice(lo, lo + chunk * 4)
        tr[c] = _h_trace(pa[c][:, None], pb[c][:, None], ct[nb[c]])
      wn = ok * kab.reshape(-1)[nb]
      mean_tr = np.sum(tr * wn, 1) / np.maximum(wn.sum(1), 1e-300)
      y2 = kab.reshape(-1) * mean_tr
      out[5, l], out[7, l] = _ratio(x2.reshape(rr, -1).sum(1), y2.reshape(rr, -1).sum(1))
      x2, y2 = wt * x2, wt * y2
      out[1, l], out[3, l] = _ratio(x2.reshape(rr, -1).sum(1), y2.reshape(rr, -1).sum(1))
    if l > 0:
      k = pairs._backward(k, weights[l], ys[l - 1])
  return Coupling(*out, draws=rr)


def _neighbours(rho, draw, neighbours: int):
  """Per pair, the indices of the `neighbours` pairs nearest in rho (sorted order, clipped at the ends) and
  whether each is from another draw."""
  order = np.argsort(rho, kind="stable")
  pos = np.empty_like(order)
  pos[order] = np.arange(len(order))
  offs = np.array([s for j in range(1, neighbours // 2 + 1) for s in (j, -j)])
  nb = order[np.clip(pos[:, None] + offs[None, :], 0, len(order) - 1)]
  return nb, draw[nb] != draw[:, None]


def lenet_direction_coupling(probs, g, k, m, c, dots, shifts: int = 4, neighbours: int = 8,
                             chunk: int = 8) -> Coupling:
  r"""`mlp_direction_coupling` for a strided LeNet, from its loss sample with directions
  (`lenet_slots.loss_sample(..., directions=True)`: probs (R, E, O), gains g, k (R, E, L), M_b = J_b J_b^T
  (R, E, L, O, O) and C_ab = J_a J_b^T (R, E/2, L, O, O) with J = d logits / d kernel, the pairs' input dots
  (R, E/2, L)).

  A conv kernel's Jacobian is J_b = sum_p K_{b,p} (x) x_{b,p} over output positions p, so the block's
  output-side matrix M_b = sum_{p,p'} (x_{b,p} . x_{b,p'}) K_{b,p} K_{b,p'}^T mixes the forward patches with the
  backward directions and does not split into g K K^T. The swap therefore exchanges the whole normalised
  matrix: X_b = tr((H_b M_b)^2) against Y_b = (g_b k_b)^2 mean_j tr((H_b M_j / (g_j k_j))^2) over the examples j
  of draws r + 1 .. r + `shifts`, weighted by k_j^2 as in the MLP; on a dense layer M = g K K^T and this is
  `mlp_direction_coupling`'s same-example factor. Two examples: X = tr(H_a C H_b C^T) against
  Y = g_a g_b k_a k_b mean_j tr(H_a C_j H_b C_j^T) / (g_a' g_b' k_a' k_b')_j over the `neighbours` pairs j of
  other draws nearest in the pair cosine (x_a . x_b) / sqrt(g_a g_b), weighted by k_a' k_b' (on a dense layer:
  the MLP's, up to rho_j^2 for rho^2 of the matched pair). The factor is a scalar per layer: the positions
  enter only through M and C. The last layer (K = I, M = g I) is 1 exactly. Bias factors are not measured
  (1): the LeNet's predictor has no bias tables of its own."""
  p = np.asarray(probs, np.float64)
  rr, e, o = p.shape
  L = g.shape[-1]
  a_ix, b_ix = np.arange(0, e - 1, 2), np.arange(1, e, 2)
  out = np.ones((6, L))
  out[2:4] = 0.0
  for l in range(L - 1):
    gk = g[..., l] * k[..., l]  # (R, E)
    ml = np.asarray(m[:, :, l], np.float64)
    mt = ml / np.where(gk > 0, gk, 1.0)[..., None, None]  # a dead example (M = 0): X = Y = 0
    x1 = _h_trace(p, p, ml)
    y1, w1 = _swapped_partners(p, mt, k[..., l] ** 2, shifts, chunk)
    y1 *= gk * gk / np.maximum(w1, 1e-300)
    out[0, l], out[2, l] = _ratio(x1.sum(1), y1.sum(1))
    # Two examples, partners matched in the pair's cosine at this layer.
    ga, gb, ka, kb = g[:, a_ix, l], g[:, b_ix, l], k[:, a_ix, l], k[:, b_ix, l]
    scale = (ga * gb * ka * kb).reshape(-1)
    rho = (dots[..., l] / np.sqrt(np.maximum(ga * gb, 1e-300))).reshape(-1)
    pa, pb = p[:, a_ix].reshape(-1, o), p[:, b_ix].reshape(-1, o)
    cl = np.asarray(c[:, :, l], np.float64).reshape(-1, o, o)
    x2 = _h_trace(pa, pb, cl)
    ct = cl / np.sqrt(np.where(scale > 0, scale, 1.0))[:, None, None]
    nb, ok = _neighbours(rho, np.repeat(np.arange(rr), len(a_ix)), neighbours)
    tr = np.zeros(nb.shape)
    for lo in range(0, len(nb), chunk * 4):
      cs = slice(lo, lo + chunk * 4)
      tr[cs] = _h_trace(pa[cs][:, None], pb[cs][:, None], ct[nb[cs]])
    wn = ok * (ka * kb).reshape(-1)[nb]
    y2 = scale * np.sum(tr * wn, 1) / np.maximum(wn.sum(1), 1e-300)
    out[1, l], out[3, l] = _ratio(x2.reshape(rr, -1).sum(1), y2.reshape(rr, -1).sum(1))
  return Coupling(*out, draws=rr)

"""The backward counterpart of the draw's mean: each example's gradient through the network's mean Jacobian.

A leaf's minibatch gradient has a cross-example term, the sum over pairs b != b' of E[g_b . g_b'] (times the
input's), and the rules carry its expectation over weight draws: a dense layer keeps the gradient's example
correlation r. One draw is not its expectation: the loss's gradients v_b at the outputs have a batch mean of
their own (the random projection's r_v (B - 1) = +-1 / sqrt(n_out)), and each block's realised W^T maps it
to a vector whose length fluctuates by ~sqrt(2 / width) per projection, as the forward mean's does
(draw_mean.py). [measured, docs/calculus.md "G_batch, diagnosed, not fixed"] Per draw, the error of G_batch
beyond G's follows the measured cross term; at the head, where the rules take r as measured, the cross term
is predicted within 0.04-0.13, below it the rules carried about half of it.

For independent examples and a loss gradient v_b that does not depend on them (the random projection), the
pair term is E[g_b . g_b'] = v_b^T Jbar Jbar^T v_b' with Jbar the network's Jacobian averaged over examples.
So each example's loss gradient is carried down through Jbar, with the leaves as drawn (`MeanBackward`):
  - an equation linear in its activation operands (draw_mean.LINEAR): its exact transpose (jax.vjp of the
    primitive bound on the batch);
  - an elementwise activation: E[phi'(m_i + s z)] per entry, at the draw's offsets m carried forward
    (the derivative of draw_mean.activation_mean with the spread held);
  - a LayerNorm / RMSNorm: the scale over the rule's sqrt(var + eps), the row mean removed, and the xhat
    direction removed with the carried mean of xhat and an isotropic rest (E[xhat xhat^T] = mhat mhat^T +
    (E[xhat^2] - mean(mhat^2)) I);
  - attention: the block at the carried means of Q, K, V with its softmax linearised around the forward
    mean's uniform weights, transposed (values: the uniform weights; queries and keys: the logits' first
    order at the means), plus, for self-attention, the covariance of one token's projections (the query's
    mean gradient scale e^2 (1 - 1/T) J_K J_V^T c_q per head: K_k and V_k are projections of one x_k). The
    rules had set the queries' and keys' cross-example correlation to 0; measured on development draws it is
    -0.1 ... -0.2 (times B - 1), and a Monte Carlo mean of the per-example Jacobian over 2048 fresh examples
    agrees with the carried one within ~0.03 on most blocks.
A leaf's minibatch cross term is then the product of its input's and its gradient's correlations
(inspection_assembly.batch_factor), except the key kernel, whose gradient sum_t x_t (x) dK_t pairs x_t with
a dK_t that depends on it (through V_t): there the pairs of the examples' expected gradients are summed
directly (`leaf_cross`), with that dependence's term.
`condition` then takes a gradient signal's r (same position) and rc (two positions) from the carried
gradients' pair sums, r = sum_{b != b'} G_bt . G_b't / (B (B - 1) n E[g^2]) with E[g^2] the rule's (the carried
gradients lack each example's own fluctuation, so their own square is too small; their pair products are not).
Where a use of a value has no transpose here, the value's carried gradient is incomplete and not used.
At each dense leaf use the gradient's second moment also takes the carried part at the drawn weights
(`realised`): the per-draw wander of the backward is W^T along the loss's few directions, which the carried
part has exactly. Where a value has several uses (a residual add), the uses' carried gradients' cross term is
added to the rules' sum (`with_cross`): one draw's branch Jacobian turns the stream's gradient one way.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jscale.calculus import draw_mean
from jscale.calculus.activation_maps import hermite, value_and_slope
from jscale.calculus.tracing import Lit

CROSS = True   # `with_cross`: the carried cross term between a value's uses (False: the sum, as before)
# The activation's mean slope with each entry's own spread (issue 21, twenty-second session, tw7): E[phi'(m_j + s_j z)]
# with s_j^2 draw_mean.example_spread's, the derivative in m_j of the mean that draw_mean.EXAMPLE_SPREAD takes per
# entry, where one spread s for all entries was taken: the mean Jacobian that carries the gradients down here and the
# batch's examples up (token_carry.block), at the spreads the mean is taken at. Off: it moves the backward by
# -0.0013 (0.0003) in log per activation (at most 0.011), far below the draws' own backward offsets (s.d. 0.03-0.07);
# on dev with EXAMPLE_SPREAD the backward misses were 60 -> 64 and the kernel misses 4 -> 5 (48 draws), not judged.
EXAMPLE_SLOPE = False


def _acts(pred, e):
  return [a for a in e.ins if not isinstance(a, Lit) and pred.tag(a).kind == "act"]


def linear_transpose(pred, e):
  """The transpose of e in its activation operands, as fn(cotangent of e.outs[0]) -> [(in id, cotangent)]
  (batch-shaped arrays), when e is linear in them; else None."""
  if getattr(e, "prim", None) is None or e.name not in draw_mean.LINEAR or e.prim.multiple_results:
    return None
  acts = _acts(pred, e)
  if not acts:
    return None
  if e.name in ("mul", "div", "dot_general", "conv_general_dilated") and len(acts) != 1:
    return None
  if e.name == "div" and e.ins[0] not in acts:
    return None
  fixed = {}
  for n, a in enumerate(e.ins):
    if isinstance(a, Lit):
      fixed[n] = a.val
    elif a not in acts:
      v = pred.pvals.get(a, pred.const(a))
      if v is None:
        return None
      fixed[n] = v
  pos = [n for n, a in enumerate(e.ins) if n not in fixed]
  dtype = pred.g.avals[e.outs[0]].dtype
  out_shape = tuple(pred.g.avals[e.outs[0]].shape)
  if e.name == "add" and all(tuple(pred.g.avals[e.ins[n]].shape) == out_shape for n in pos):
    # the transpose of an add in an operand of the output's shape hands the cotangent on as it is (JAX's
    # transpose of the bias add also sums it down to the bias's shape, for nothing)
    def back_add(c):
      ct = np.asarray(np.asarray(c, dtype), np.float64)
      got = {}
      for n in pos:
        got[e.ins[n]] = got.get(e.ins[n], 0.0) + ct
      return list(got.items())

    return back_add

  def f(*zs):
    vals = dict(fixed)
    vals.update(zip(pos, zs))
    return e.prim.bind(*[vals[n] for n in range(len(e.ins))], **e.params)

  # traced, not evaluated: a vjp ran f at zeros first (a forward conv or product compiled per shape for
  # nothing); the transposed operations are the same
  avals = [jax.ShapeDtypeStruct(pred.g.avals[e.ins[n]].shape, pred.g.avals[e.ins[n]].dtype) for n in pos]
  try:
    transpose = jax.linear_transpose(f, *avals)
  except Exception:  # noqa: BLE001 - a primitive this pass cannot transpose: the gradient stays unknown below
    return None

  def back(c):
    cts = transpose(np.asarray(c, dtype))
    got = {}
    for n, ct in zip(pos, cts):
      got[e.ins[n]] = got.get(e.ins[n], 0.0) + np.asarray(ct, np.float64)
    return list(got.items())

  return back


def activation_slope(phi, m: np.ndarray, sq: float, order: int = 32, ex: np.ndarray | None = None) -> np.ndarray:
  """E[phi'(m + s z)] per entry, s^2 = sq - mean(m^2): the derivative of draw_mean.activation_mean in m. With `ex`
  (the carried examples' deviations, EXAMPLE_SLOPE) each entry's own spread, draw_mean.example_spread."""
  s2 = max(sq - float(np.mean(m * m)), 0.0)
  s = math.sqrt(s2) if ex is None else np.sqrt(draw_mean.example_spread(ex, s2)).reshape(-1, 1)
  z, w = hermite(order)
  pts = m.reshape(-1, 1) + s * z.reshape(1, -1)
  _, d = value_and_slope(phi, pts.reshape(-1))
  return (d.reshape(pts.shape) @ w).reshape(m.shape)


def block_transpose(pred, b):
  """A block's (blocks.py) mean Jacobian, transposed, as linear_transpose's; None where it has none here."""
  info = b.info
  if b.kind == "activation":
    at = draw_mean.activation_at_mean(pred, info)
    if at is None:
      return None
    slope = activation_slope(*at, ex=draw_mean.examples_at(pred, info, at[1]) if EXAMPLE_SLOPE else None)
    return lambda c: [(info["base"], np.asarray(c, np.float64) * slope)]
  if b.kind in ("layer_norm", "rms_norm"):
    return _norm_transpose(pred, b)
  if b.kind == "attention":
    return _attention_transpose(pred, b)
  return None


def _norm_transpose(pred, b):
  info = b.info
  m, s = pred.mean.get(info["x"]), pred.fwd[info["x"]]
  if m is None:
    return None
  D = info["D"]
  centred = b.kind == "layer_norm"
  rf = min(max(s.rf or 0.0, 0.0), 1.0)
  var = s.sq * (1 - rf) * (1 - 1 / D) if centred else s.sq
  sd = math.sqrt(var + info["eps"])
  mhat = (m - m.mean(axis=-1, keepdims=True) if centred else m) / sd
  iso = max(var / (var + info["eps"]) - float(np.mean(mhat * mhat)), 0.0)
  scale = 1.0
  if info["scale"] is not None:
    val = pred.leaf_vals[info["scale"]] if pred.leaf_vals is not None else None
    if val is None or np.size(val) != D:
      return None
    scale = np.asarray(val, np.float64).reshape(-1)

  def back(c):
    g = np.asarray(c, np.float64) * scale
    proj = np.sum(g * mhat, axis=-1, keepdims=True)
    dx = (1 - iso / D) * g - mhat * proj / D
    if centred:
      dx = dx - dx.mean(axis=-1, keepdims=True)
    return [(info["x"], dx / sd)]

  # each row's 1 / s_t against the carried 1 / sqrt(E[s^2]): E[mu^2] = E[s^2] E[1 / s^2], the rule's Jensen factor
  dof = D - 1 if centred else D
  jensen = dof / (dof - 2) if dof > 2 else 1.0
  back.coherence = {info["x"]: lambda m2: jensen * m2}
  return back


def _uses(pred):
  """The graph's producers and consumers (blocks.uses), computed once per pass."""
  from jscale.calculus.blocks import uses
  got = getattr(pred, "_graph_uses", None)
  if got is None:
    got = pred._graph_uses = uses(pred.g)
  return got


def _attention_transpose(pred, b):
  """The attention block at the carried means of Q, K, V with its softmax linearised around the uniform
  weights of the forward mean, p = w (1 + z - sum_k w z) (w uniform over the unmasked keys, z the logits),
  transposed: the values receive the mean weights' transpose, the queries and keys the logits' first-order
  term at the means (what the position-dependent means of K and V give them)."""
  from jscale.calculus import attention
  info = b.info
  n, p = info.get("dot"), info.get("p")
  ids = (info["q"], info["k"], info["v"])
  if n is None or any(pred.mean.get(a) is None for a in ids):
    return None
  g = pred.g
  z = attention._softmax_input(g, _uses(pred), pred.tags, p)
  if z is None:
    return None
  shape = g.avals[p].shape
  mask = info["mask"]
  w = np.ones(shape[-2:]) if mask is None else np.broadcast_to(np.asarray(mask, bool), shape)
  w = np.broadcast_to(w / np.maximum(w.sum(axis=-1, keepdims=True), 1), shape)
  w = np.asarray(w, g.avals[p].dtype)   # host arrays here and below: a compiled program per shape otherwise
  order = sorted(b.eqns)

  def read(env, a):
    if isinstance(a, Lit):
      return a.val
    if a in env:
      return env[a]
    v = pred.pvals.get(a, pred.const(a))
    if v is None:
      raise ValueError("an attention operand is neither carried nor constant")
    return v

  def weights(q, k, v):
    env = dict(zip(ids, (q, k, v)))
    for i in order:
      if z in env:
        break
      e = g.eqns[i]
      env.update(zip(e.outs, draw_mean.bind_eqn(e, [read(env, a) for a in e.ins])))
    zz = jnp.where(w > 0, env[z], 0.0)
    return w * (1 + zz - jnp.sum(w * zz, axis=-1, keepdims=True))

  def f(q, k, v):
    env = {p: weights(q, k, v), info["v"]: v}
    for i in order:
      if i < n:
        continue
      e = g.eqns[i]
      if not all(isinstance(a, Lit) or a in env for a in e.ins):
        continue
      env.update(zip(e.outs, draw_mean.bind_eqn(e, [a.val if isinstance(a, Lit) else env[a] for a in e.ins])))
      if info["out"] in env:
        return env[info["out"]], env[p]
    raise ValueError("the attention's output is not reached from its product")

  primal = [np.broadcast_to(np.asarray(pred.mean[a], g.avals[a].dtype), g.avals[a].shape) for a in ids]
  try:
    # the weights at the means come back as the pass's own (its primal: the same operations; evaluated
    # again outside the trace they compiled five more programs)
    _, vjp, w_mean = jax.vjp(f, *primal, has_aux=True)
  except Exception:  # noqa: BLE001
    return None
  dtype = g.avals[info["out"]].dtype
  cov = _query_key_covariance(pred, b)

  def back(c):
    cts = [np.asarray(ct, np.float64) for ct in vjp(np.asarray(c, dtype))]
    if cov is not None:
      c = np.asarray(c, np.float64)
      cts[0] = cts[0] + np.einsum("hkv,bthv->bthk", cov.dq, c)
      cts[1] = cts[1] + np.einsum("hkv,bthv->bthk", cov.dk, c - c.mean(axis=1, keepdims=True))
      if cov.key_out is not None:
        # the key kernel's gradient sum_t x_t (x) dK_t: x_t and dK_t are dependent through V_t = x_t J_V
        # (dK_t = scale sum_q w (c_q . (V_t - Vbar)) Q_q), so its mean over examples has, beside the means'
        # product, scale e^2 (1 - 1/T) sum_q (J_V c_q) (x) mean(Q_q) per head
        jvc = np.einsum("ihv,bqhv->bqih", cov.jv, c)
        pred.leaf_extra[cov.key_out] = cov.key_f * np.einsum("bqih,qhk->bihk", jvc, pred.mean[info["q"]])
    return list(zip(ids, cts))

  # the values' gradient sum_q P_qk mu_q c_q against the carried one: for a c common to the queries it is
  # C_k c, E[C_k^2] + (E[mu^2] - 1) E[sum_q P_qk^2] relative to the column sums of the uniform weights (C the
  # column sums of P; mu_q independent over queries; GaussianAttention.coherence); the queries' and keys'
  # gradients are along K and Q, not along the carried one. The carried weights' own column
  # sums at the means (Cm: the position-dependent means of Q and K tilt them) are the part it already has, so
  # E[mu_V^2] = max(E[C^2] + (E[mu^2] - 1) E[sum_q P_qk^2], mean Cm^2) / mean Cm^2
  c2, a2 = pred.coherence_at.get(info["v"], (1.0, 0.0))
  cm = float(np.mean(np.square(np.asarray(w_mean, np.float64).sum(-2))))
  cm = cm if cm > 0 and math.isfinite(cm) else 1.0
  back.coherence = {info["q"]: lambda m2: None, info["k"]: lambda m2: None,
                    info["v"]: lambda m2: max(c2 + (m2 - 1.0) * a2, cm) / cm}
  return back


def _chain_matrix(pred, x, y, n_in: int):
  """The linear part of the projection x -> y (a dense layer through a bias, scalings, reshapes: attention's
  `_projected_from`) as a (n_in, per-token shape of y) array: the chain bound on basis rows, minus on zero."""
  parts = _chain_parts(pred, x, y, n_in)
  return None if parts is None else parts[0]


def _chain_parts(pred, x, y, n_in: int):
  """(_chain_matrix, the constant part: the projection's value at x = 0 per token, i.e. its bias) of the
  projection x -> y, or None."""
  from jscale.calculus import attention
  g, u = pred.g, _uses(pred)
  chain, a = [], y
  while a != x:
    e = attention._prod(g, u, a)
    if e is None:
      return None
    chain.append(e)
    a = next(i for i in e.ins if not isinstance(i, Lit) and pred.tag(i).kind == "act")
  chain.reverse()
  shape = g.avals[x].shape
  B = shape[0]
  if n_in > B or len(shape) != 3 or shape[-1] != n_in:
    return None

  def run(v):
    env = {x: v}
    for e in chain:
      env.update(zip(e.outs, draw_mean.bind_eqn(e, [a.val if isinstance(a, Lit) else env[a] if a in env
                                                    else pred.pvals.get(a, pred.const(a)) for a in e.ins])))
    return np.asarray(env[y], np.float64)

  basis = np.zeros(shape, np.float32)
  basis[np.arange(n_in), :, np.arange(n_in)] = 1.0
  zero = run(np.zeros(shape, g.avals[x].dtype))
  lin = run(np.asarray(basis, g.avals[x].dtype)) - zero
  return lin[:n_in, 0], zero[0, 0]


def _query_key_covariance(pred, b):
  """Within one example the queries, keys and values are projections of the same token vectors x_t, so
  E[K_k (V_k - Vbar)^T] has, beside the product of the means, the covariance of the two projections of one
  token: e^2 (1 - 1/T) J_K J_V^T per head, with e^2 the token's own variance (E[x^2] (1 - rp): neither the
  mean nor the part shared by the example's tokens). Under uniform weights the queries' mean gradient gains
  scale e^2 (1 - 1/T) J_K J_V^T c_q and the keys' scale e^2 / T J_Q J_V^T (c_k - cbar) (the 1/T of
  uniform weights inside). As (per-head maps for dQ, for dK) acting on the output cotangent's head layout
  (batch, tokens, heads, d_v), or None outside self-attention without a mask in that layout."""
  info = b.info
  q, k, v = info["q"], info["k"], info["v"]
  srcs = _self_attention_sources(pred, b)
  if srcs is None:
    return None
  x, n_in = srcs[0][0], srcs[0][1]
  sx = pred.fwd[x]
  sq_ = pred.g.avals[q].shape
  mats = [_chain_matrix(pred, x, a, n_in) for a in (q, k, v)]
  if any(m is None for m in mats):
    return None
  jq, jk, jv = mats                                  # (n_in, heads, d)
  T = sq_[1]
  e2 = sx.sq * (1 - sx.rp)
  sc = info["scale"]
  # the key kernel's own leaf-level term needs K = x W_K + b directly (no scaling between)
  key_out = srcs[1][2]
  direct = _chain_matrix_is_kernel(pred, key_out, k, jk)
  return _Cov(dq=sc * e2 * (1 - 1 / T) * np.einsum("ihk,ihv->hkv", jk, jv),
              dk=sc * e2 / T * np.einsum("ihk,ihv->hkv", jq, jv), jv=jv,
              key_out=key_out if direct else None, key_f=sc * e2 * (1 - 1 / T))


def _self_attention_sources(pred, b):
  """The sources (`attention._projected_from`) of a self-attention block's queries, keys and values when the block
  has the layout the draw-level rules read: no mask, (batch, token, head, d) projections of one token vector x
  whose forward signal is known; else None."""
  from jscale.calculus import attention
  info = b.info
  g = pred.g
  q, k, v, out = info["q"], info["k"], info["v"], info["out"]
  if info["mask"] is not None or info.get("d_in") is None:
    return None
  sq_, sk, sv = (g.avals[a].shape for a in (q, k, v))
  if len(sq_) != 4 or sq_ != sk or sv[:3] != sq_[:3] or g.avals[out].shape != sv:
    return None
  d1 = next((g.eqns[i] for i in b.eqns if g.eqns[i].name == "dot_general" and list(g.eqns[i].ins) == [q, k]),
            None)
  if d1 is None:
    return None
  (cl, cr), (bl, br) = d1.params["dimension_numbers"]
  if (tuple(cl), tuple(cr), tuple(bl), tuple(br)) != ((3,), (3,), (0, 2), (0, 2)):
    return None   # logits of (batch, token, head, d) queries and keys, per (batch, head)
  srcs = [attention._projected_from(g, _uses(pred), pred.tags, pred.const, a) for a in (q, k, v)]
  if any(s_ is None for s_ in srcs) or len({s_[0] for s_ in srcs}) != 1:
    return None
  sx = pred.fwd.get(srcs[0][0])
  if sx is None or sx.why or sx.rp is None:
    return None
  return srcs


class _Cov(NamedTuple):
  dq: np.ndarray       # (heads, d_qk, d_v): the queries' mean gradient per output cotangent
  dk: np.ndarray       # the same for the keys, on the cotangent's deviation from its token mean
  jv: np.ndarray       # (n_in, heads, d_v): the value projection's linear part
  key_out: int | None  # the key projection's dense output (its leaf use), where K is that output plus a bias
  key_f: float


def _chain_matrix_is_kernel(pred, dense_out, k, jk) -> bool:
  """Whether K is the key projection's dense output through a bias add only, its kernel of jk's shape."""
  from jscale.calculus import attention
  e = attention._prod(pred.g, _uses(pred), k)
  if not (k == dense_out or (e is not None and e.name == "add" and dense_out in e.ins)):
    return False
  use = next((u for u in pred.ops if u.out_id == dense_out and u.kind == "dense"), None)
  vals = pred.leaf_vals
  return use is not None and vals is not None and tuple(np.shape(vals[use.leaf])) == tuple(jk.shape)


def leaf_cross(pred, use, G: np.ndarray, extra) -> float | None:
  """For a dense leaf use: the mean over pairs of examples b != b' and over the leaf's entries of
  E[dW_b] E[dW_b'], with E[dW_b] example b's expected gradient given its carried output gradient G_b: the
  dense equation's transpose in W at the input's carried mean, plus `extra` (batch, *kernel shape)."""
  e = pred.g.eqns[_uses(pred).producer[use.out_id]]
  m = pred.mean.get(use.in_id)
  if m is None or e.name != "dot_general" or pred.leaf_vals is None:
    return None
  w_id = next((a for a in e.ins if a != use.in_id), None)
  W = pred.pvals.get(w_id)
  if W is None:
    return None
  x1 = np.asarray(m[None], pred.g.avals[use.in_id].dtype)   # one example at the input's mean

  def dense(w):
    return e.prim.bind(*([x1, w] if e.ins[0] == use.in_id else [w, x1]), **e.params)

  try:
    # linear in W: the transpose at any W, once per example's carried output gradient
    _, vjp = jax.vjp(dense, W)   # W and G as host arrays: jnp.asarray compiled a copy per shape
    per = jax.vmap(lambda gb: vjp(gb[None].astype(pred.g.avals[use.out_id].dtype))[0])(np.asarray(G, np.float32))
  except Exception:  # noqa: BLE001
    return None
  M = np.asarray(per, np.float64).reshape(G.shape[0], -1)
  if extra is not None:
    M = M + np.asarray(extra, np.float64).reshape(G.shape[0], -1)
  B = M.shape[0]
  tot = M.sum(0)
  return float((tot @ tot - np.sum(M * M)) / (B * (B - 1) * M.shape[1]))


def pair_moments(G: np.ndarray) -> tuple[float, float | None]:
  """From carried gradients G (batch, positions, ...): the mean over pairs of examples b != b' of G_bt . G_b't
  per entry at the same position t, and at two positions t != t' (None without a position axis)."""
  B = G.shape[0]
  if B < 2:
    return 0.0, None
  if G.ndim < 3:
    F = G.reshape(B, -1)
    s = F.sum(0)
    return float((s @ s - np.sum(F * F)) / (B * (B - 1) * F.shape[1])), None
  F = G.reshape(B, G.shape[1], -1)
  T, n = F.shape[1], F.shape[2]
  per_pos = F.sum(0)                      # (T, n): summed over examples
  same = (np.sum(per_pos * per_pos) - np.sum(F * F)) / (B * (B - 1) * T * n)
  if T < 2:
    return float(same), None
  tot, per_ex = per_pos.sum(0), F.sum(1)
  pairs = tot @ tot - np.sum(per_ex * per_ex) - np.sum(per_pos * per_pos) + np.sum(F * F)
  return float(same), float(pairs / (B * (B - 1) * T * (T - 1) * n))


def realised(c, g, above: np.ndarray, below: np.ndarray, excess: float = 0.0):
  """A dense layer's backward `c` (the rule's, E[W^2]-scaled from `g`) with the carried part at the draw's own
  weights: the gradient above is mu a + f, a = Jbar^T v_b the carried mean-Jacobian part (few directions: the
  loss's), mu a per-(example, position) factor of mean 1 (`MeanBackward.excess`: E[(mu^2 - 1) a^2], what the
  blocks above scaled along a), f the rest, each example's own fluctuation in many directions (E_x[f_b] = 0, so
  the pair a_b . f_b averages out over examples). |W^T mu a|^2 is mu^2 |W^T a|^2, `below`'s exactly for this
  draw; W^T acts on f as its expectation:
  E[dx^2] = m2 mean(below^2) + k (E[g^2] - m2 mean(above^2)), m2 = E[mu^2], k the rule's factor."""
  if (c.why or g.why or c.sq is None or g.sq is None or not g.sq > 0 or above is None
      or not np.all(np.isfinite(above)) or not np.all(np.isfinite(below))):
    return c
  k = c.sq / g.sq
  own_out, own_in = float(np.mean(above * above)), float(np.mean(below * below))
  m2 = 1.0 + excess / own_out if own_out > 0 and math.isfinite(excess) else 1.0
  return c._replace(sq=m2 * own_in + k * max(g.sq - m2 * own_out, 0.0))


def with_cross(sig, carried: "MeanBackward", i):
  """`sig` (the rules' gradient at value i, summed over its uses with their cross terms dropped) plus the carried
  gradients' cross term between its uses: with each use's gradient a_u + f_u (a_u carried, exact at the drawn
  weights; f_u the rest), E[(sum_u a_u + f_u)^2] - sum_u E[(a_u + f_u)^2] = sum_{u != u'} a_u . a_u' +
  (a_u . f_u' and f_u . f_u', zero: E_x[f | v] = 0 as in `realised`, and the rests' over weight draws). At a
  residual add the branch's Jacobian is one draw's, and its carried cross term is what makes the measured
  stream gradient fall short of the sum of its two uses. Only where CROSS is set; the total is kept at or
  above the carried total's own square."""
  if not CROSS or sig.why or sig.sq is None or carried.uses.get(i, 0) < 2:
    return sig
  G = carried.at(i)
  if G is None or not np.all(np.isfinite(G)):
    return sig
  tot = float(np.mean(G * G))
  return sig._replace(sq=max(sig.sq + tot - carried.own[i], tot))


def condition(sig, G: np.ndarray):
  """`sig` (a gradient's Backward, with token positions tracked) with its cross-example correlations r and rc
  taken from the carried gradients' pair products over its E[g^2]."""
  if sig.why or sig.rp is None or sig.sq is None or not sig.sq > 0 or not np.all(np.isfinite(G)):
    return sig
  same, cross = pair_moments(G)
  clip = lambda v: min(max(v / sig.sq, -1.0), 1.0)  # noqa: E731
  return sig._replace(r=clip(same), rc=sig.rc if cross is None else clip(cross))


class MeanBackward:
  """The carried gradients of a pass: `seed` at the outputs, `step` per recorded equation in reverse order
  (accumulating a value's uses), `at` a value's gradient once complete (None when a use had no transpose).

  Beside each carried gradient a, `excess` keeps E[(mu^2 - 1) a^2] (per entry): the part of the rules'
  gradient that is the carried one scaled per example and position by a factor mu of mean 1 (`realised`).
  A block whose Jacobian is the carried one times a per-row factor says so (`back.coherence`: input id ->
  fn(E[mu^2] above) -> E[mu^2] below, or None for an input whose gradient is not along the carried one): a
  LayerNorm's 1 / s_t against the carried 1 / sqrt(E[s^2]) (times Jensen's (D - 1) / (D - 3)), the values'
  column sums of the attention weights against the carried uniform ones (dV_k = sum_q P_qk g_q is C_k g for a
  gradient common to the queries; the queries and keys: None). Any other transpose carries mu along with a
  (an activation's slope fluctuation is not along a: it is the rest).
  [derived; docs/calculus.md "The gradient along the carried one"]"""

  def __init__(self):
    self.G, self.X, self.broken = {}, {}, set()
    self.own, self.uses = {}, {}   # per value: the sum over its uses of mean(ct^2), and their number

  def seed(self, i, g):
    self.G[i] = np.asarray(g, np.float64)

  def at(self, i):
    return None if i in self.broken else self.G.get(i)

  def excess(self, i) -> float:
    return self.X.get(i, 0.0)

  def step(self, back, out_id, ins):
    c = self.at(out_id)
    got = None
    if back is not None and c is not None:
      try:
        got = back(c)
      except Exception:  # noqa: BLE001 - a transpose that fails on this graph: the values below are unknown
        got = None
    if got is None:
      self.broken.update(ins)
      return None
    c_sq = float(np.mean(c * c))
    m2 = 1.0 + self.excess(out_id) / c_sq if c_sq > 0 else 1.0
    coherence = getattr(back, "coherence", {})
    for a, ct in got:
      if a in self.broken:
        continue
      self.G[a] = self.G[a] + ct if a in self.G else ct
      ct_sq = float(np.mean(np.square(ct)))
      self.own[a] = self.own.get(a, 0.0) + ct_sq
      self.uses[a] = self.uses.get(a, 0) + 1
      m2_in = coherence[a](m2) if a in coherence else m2
      if m2_in is not None:
        self.X[a] = self.X.get(a, 0.0) + ct_sq * (m2_in - 1.0)
    return dict(got)

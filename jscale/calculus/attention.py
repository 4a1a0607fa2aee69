"""Softmax attention at initialisation, recognised from the jaxpr, and its rule.

Recognised: dot_general(P, V) (either order) of two activations where P = exp(Z - max) / sum exp(Z - max) over
the last axis, Z the logits dot_general(Q, K) of two activations, possibly masked (select_n with a constant
mask, or a constant added). The projections producing Q, K, V and the output projection are ordinary dense
leaves; multi-head reshapes and transposes keep moments.

The rule (docs/calculus.md, "Softmax attention"): the logits l_qk = Q_q . K_k have E[l^2] = d E[Q^2] E[K^2]
(1 - rp_K) across keys (a component shared by all keys does not change the softmax). The attention weights
P are taken as those of independent Gaussian logits of that variance under the mask, averaged over a few fixed
draws (exactly the uniform average over allowed keys when the logits are 0); then, with rp the correlation
between two positions and the gradient g at the output independent of P,
  forward   E[o^2]  = E[V^2] (A + rp_V (1 - A)),      A = mean_q sum_k P_qk^2
            rp_o    = E[V^2] (C + rp_V (1 - C)) / E[o^2],  C = mean_{q != q'} sum_k P_qk P_q'k
  backward  E[dV^2] = E[g^2] mean_k [(1 - rp_g) sum_q P_qk^2 + rp_g (sum_q P_qk)^2]
            dl_qk   = P_qk g_q . (V_k - sum_j P_qj V_j): E[dl_qk^2] = d_v E[g^2] E[V^2] (1 - rp_V) P_qk^2
                      (1 - 2 P_qk + sum_j P_qj^2)
            E[dQ^2] = E[K^2] (1 - rp_K) mean_q sum_k E[dl_qk^2]   (rows of dl sum to 0: K's shared part drops)
            E[dK^2] = E[Q^2] mean_k [sum_q E[dl_qk^2] + rp_Q rp_g sum_{q != q'} (cross terms)], rp_Q
                      raised by E[Q^2] E[K^2] (1 - A)^2: two queries attending to one key both lean towards it
Where it breaks: large logits (trained or badly scaled Q, K: the weights concentrate on few keys and the
independent-logit approximation of the softmax is rough), logits correlated across keys beyond the shared
component, and gradients that depend on V (the loss reading the attention output twice).
"""
from __future__ import annotations

import math

import numpy as np

from jscale.calculus.blocks import Block, between
from jscale.calculus.propagation import ActivationUse
from jscale.calculus.signals import Forward
from jscale.calculus.tracing import Lit, scalar_value

N_DRAWS = 16   # fixed draws of the logits (seeded): the weights' statistics, deterministic
_VIEWS = {"broadcast_in_dim", "reshape", "convert_element_type", "copy", "copy_p", "stop_gradient"}


def _prod(graph, u, v):
  return graph.eqns[u.producer[v]] if not isinstance(v, Lit) and v in u.producer else None


def _acts(tags, e):
  return [a for a in e.ins if not isinstance(a, Lit) and tags.get(a) is not None and tags[a].kind == "act"]


def _softmax_input(graph, u, tags, p):
  """The logits Z when p = exp(Z - m) / sum exp(Z - m) over the last axis, else None."""
  d = _prod(graph, u, p)
  if d is None or d.name != "div":
    return None
  ex, den = d.ins
  e = _prod(graph, u, ex)
  if e is None or e.name != "exp":
    return None
  s = _prod(graph, u, den)
  while s is not None and s.name in _VIEWS:
    s = _prod(graph, u, s.ins[0])
  if s is None or s.name != "reduce_sum" or s.ins[0] != ex:
    return None
  if tuple(s.params["axes"]) != (len(graph.avals[ex].shape) - 1,):
    return None
  z = e.ins[0]
  sub = _prod(graph, u, z)
  if sub is not None and sub.name == "sub":
    z = sub.ins[0]
  return z


def _strip(graph, u, tags, const, z):
  """Walk back through transposes, reshapes and scalings by a constant: (the value reached, the scale)."""
  scale = 1.0
  while True:
    e = _prod(graph, u, z)
    if e is None:
      return z, scale
    if e.name in ("transpose", "reshape", "convert_element_type", "copy", "copy_p"):
      z = e.ins[0]
      continue
    if e.name in ("mul", "div") and len(_acts(tags, e)) == 1 and len(e.ins) == 2:
      a = _acts(tags, e)[0]
      other = e.ins[1] if e.ins[0] == a else e.ins[0]
      c = scalar_value(other.val) if isinstance(other, Lit) else scalar_value(const(other))
      if c is None or c == 0 or (e.name == "div" and e.ins[0] != a):
        return z, scale
      scale *= c if e.name == "mul" else 1.0 / c
      z = a
      continue
    return z, scale


def _logits(graph, u, tags, const, z):
  """(the dot_general equation of the logits, the mask (bool array, True where allowed; "data" when it is
  computed from the input) or None, the constant the logits were scaled by after the product)."""
  mask = None
  z, scale = _strip(graph, u, tags, const, z)
  e = _prod(graph, u, z)
  if e is not None and e.name == "select_n" and len(e.ins) == 3:
    pred, c0, c1 = e.ins
    act_case = 1 if c1 in _acts(tags, e) else 0 if c0 in _acts(tags, e) else None
    m = const(pred) if not isinstance(pred, Lit) else pred.val
    if act_case is None:
      return None, None, 1.0
    if m is None:   # a mask computed from the input (padding): its statistics are data, not init
      mask = "data"
    else:
      m = np.asarray(m).astype(bool)
      mask = m if act_case == 1 else ~m
    z = e.ins[1 + act_case]
  elif e is not None and e.name == "add" and len(_acts(tags, e)) == 1:
    other = next(a for a in e.ins if a not in _acts(tags, e))
    c = other.val if isinstance(other, Lit) else const(other)
    if c is None:
      return None, None, 1.0
    mask = np.asarray(c) > -1e9   # a large negative bias is a mask; a finite one is ignored (kept as 0)
    z = _acts(tags, e)[0]
  z, scale2 = _strip(graph, u, tags, const, z)
  e = _prod(graph, u, z)
  if e is None or e.name != "dot_general" or len(_acts(tags, e)) != 2:
    return None, None, 1.0
  return e, mask, scale * scale2


def find(graph, tags, const, u, taken) -> list:
  blocks = []
  for n, e in enumerate(graph.eqns):
    if n in taken or e.name != "dot_general" or len(_acts(tags, e)) != 2 or len(e.ins) != 2:
      continue
    for pi in (0, 1):
      p, v = e.ins[pi], e.ins[1 - pi]
      z = _softmax_input(graph, u, tags, p)
      if z is None:
        continue
      d1, mask, scale = _logits(graph, u, tags, const, z)
      if d1 is None:
        continue
      q, k = d1.ins
      out_n, out = _batch_first(graph, u, n, e)
      eqns = between(graph, u, out, [q, k, v])
      if eqns is None or eqns & taken:
        continue
      (cq, _), (bq, _) = d1.params["dimension_numbers"]
      (c2, b2), side = e.params["dimension_numbers"], 1 - pi   # V's side: 0 lhs, 1 rhs
      qs, vs, ls = graph.avals[q].shape, graph.avals[v].shape, graph.avals[z].shape
      d_qk = math.prod(qs[i] for i in cq)
      d_v = math.prod(vs[i] for i in range(len(vs)) if i not in c2[side] and i not in b2[side])
      n_q = math.prod(qs[i] for i in range(len(qs)) if i not in cq and i not in bq)
      if isinstance(mask, np.ndarray) and (mask.ndim < 2 or mask.shape[-2:] != (n_q, ls[-1])):
        mask = "data" if mask.size > 1 else None
      blocks.append(Block("attention", out_n, (q, k, v), eqns, attention_rule,
                          dict(q=q, k=k, v=v, out=out, logits_shape=tuple(ls[:-2]) + (n_q, ls[-1]),
                               mask=mask, d_qk=d_qk, d_v=d_v, scale=scale)))
      break
  return blocks


def _batch_first(graph, u, n, e):
  """(equation index, value) ending the attention block: the product's output, or the last value of the chain of
  transposes / reshapes after it at which the example axis is back at axis 0 (some layouts move it away)."""
  best, pos, v = (n, e.outs[0]), 0, e.outs[0]
  while True:
    cs = u.consumers.get(v, [])
    if len(cs) != 1 or v in u.outputs:
      return best
    c = graph.eqns[cs[0]]
    if c.name == "transpose":
      pos = list(c.params["permutation"]).index(pos)
    elif c.name == "reshape":
      if pos != 0 or graph.avals[c.outs[0]].shape[0] != graph.avals[v].shape[0]:
        return best
    else:
      return best
    v = c.outs[0]
    if pos == 0:
      best = (cs[0], v)


def weights(s_logit: float, masks: np.ndarray, draws: int = N_DRAWS) -> np.ndarray:
  """Attention weights (draws * masks, Tq, Tk) of independent N(0, s_logit) logits under each mask."""
  rng = np.random.default_rng(0)
  m = np.repeat(masks, draws, axis=0)
  z = math.sqrt(max(s_logit, 0.0)) * rng.standard_normal(m.shape)
  z = np.where(m, z, -np.inf)
  z = z - np.max(np.where(m, z, -np.inf), axis=-1, keepdims=True)
  z = np.where(np.isfinite(z), z, -np.inf)
  w = np.exp(z)
  tot = w.sum(-1, keepdims=True)
  return np.where(tot > 0, w / np.where(tot > 0, tot, 1.0), 0.0)


class AttentionMoments:
  """The statistics of the weights P the rule needs (module docstring), averaged over draws and masks."""

  def __init__(self, P: np.ndarray, rp_v: float, rp_g: float, rp_q: float):
    n, Tq, Tk = P.shape
    off = ~np.eye(Tq, dtype=bool)
    PP = np.einsum("nqk,nrk->nqr", P, P)                  # sum_k P_qk P_rk
    self.A = float(np.mean(np.sum(P * P, -1)))
    self.C = float(np.mean(PP[:, off])) if Tq > 1 else 0.0
    S1, S2 = P.sum(1), (P * P).sum(1)                     # over queries, per key
    self.Bv = float(np.mean((1 - rp_g) * S2 + rp_g * S1 * S1))
    PtP = np.einsum("nqk,nqj->nkj", P, P)
    offk = ~np.eye(Tk, dtype=bool)
    cross_v = (1 - rp_g) * PtP + rp_g * S1[:, :, None] * S1[:, None, :]
    self.rp_dv = float(np.mean(cross_v[:, offk]) / self.Bv) if Tk > 1 and self.Bv > 0 else 0.0
    dev = 1 - 2 * P + np.sum(P * P, -1, keepdims=True)      # E[(V_k - Vbar_q)^2] / (E[V^2] (1 - rp_V))
    dl = P * P * dev                                       # E[dl_qk^2] / (d_v E[g^2] E[V^2] (1 - rp_V))
    self.dq = float(np.mean(dl.sum(-1)))
    # dK_k = sum_q dl_qk Q_q: the pairs q != q' add rp_Q rp_g P_qk P_q'k (1 - P_qk - P_q'k + (P P^T)_qq')
    pair = P[:, :, None, :] * P[:, None, :, :] * (1 - P[:, :, None, :] - P[:, None, :, :] + PP[:, :, :, None])
    pair_sum = pair.sum((1, 2)) - np.einsum("nqqk->nk", pair)
    self.dk = float(np.mean(dl.sum(1) + rp_q * rp_g * pair_sum))


def attention_rule(pred, block) -> str | None:
  info = block.info
  sq_, sk, sv = pred.fwd[info["q"]], pred.fwd[info["k"]], pred.fwd[info["v"]]
  ls = info["logits_shape"]
  Tq, Tk = ls[-2], ls[-1]
  mask = info["mask"]
  if isinstance(mask, str):
    return ("attention with a mask computed from the input (padding) has no rule: the rule needs the mask "
            "before any data")
  masks = np.ones((1, Tq, Tk), bool) if mask is None else mask.reshape(-1, Tq, Tk)
  masks = np.unique(masks, axis=0)[:8]
  rp_k, rp_v, rp_q = (s.rp if s.rp is not None else 0.0 for s in (sk, sv, sq_))
  s_logit = info["scale"] ** 2 * info["d_qk"] * sq_.sq * sk.sq * (1 - rp_k)
  P = weights(s_logit, masks)
  pred.acts.append(ActivationUse(kind=f"attention (E[logit^2] = {s_logit:.3g})", in_id=info["v"], out_id=info["out"]))
  st0 = AttentionMoments(P, rp_v, 0.0, rp_q)
  # Two queries attending to the same key are both tilted towards it (Stein: E[Q P_qk] = E[Q^2] dP/dQ), which
  # correlates them as seen from that key's gradient: an effective rp_Q (checked against autodiff in tests).
  rp_q = rp_q + (1 - rp_q) * info["scale"] ** 2 * sq_.sq * sk.sq * (1 - rp_k) * (1 - st0.A) ** 2
  sq = sv.sq * (st0.A + rp_v * (1 - st0.A))
  if not sq > 0:
    return "attention over values with E[V^2] = 0"
  rp_o = sv.sq * (st0.C + rp_v * (1 - st0.C)) / sq
  out = Forward(sq, sv.r * sv.sq / sq, sv.sym, None, min(rp_o, 1.0), (sv.rf or 0.0) * sv.sq / sq)
  cache = {}

  def stats(g):
    rp_g = g.rp if g.rp is not None else 0.0
    if rp_g not in cache:
      cache[rp_g] = AttentionMoments(P, rp_v, rp_g, rp_q)
    return cache[rp_g], rp_g

  c_dl = info["d_v"] * sv.sq * (1 - rp_v)

  def back_v(g):
    st, _ = stats(g)
    return g.scaled(st.Bv, r=g.r * sv.r, rp=st.rp_dv)

  def back_q(g):
    st, rp_g = stats(g)
    return g.scaled(info["scale"] ** 2 * c_dl * sk.sq * (1 - rp_k) * st.dq, r=0.0, rp=rp_g)

  def back_k(g):
    st, _ = stats(g)
    return g.scaled(info["scale"] ** 2 * c_dl * sq_.sq * st.dk, r=0.0, rp=0.0)

  pred.set_out(pred.g.eqns[block.out_eqn], out, [(info["v"], back_v), (info["q"], back_q), (info["k"], back_k)])
  return None


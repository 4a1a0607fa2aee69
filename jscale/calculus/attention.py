"""Softmax attention at initialisation, recognised from the jaxpr, and its rule.

Recognised: dot_general(P, V) (either order) of two activations where P = exp(Z - max) / sum exp(Z - max) over
the last axis, Z the logits dot_general(Q, K) of two activations, possibly masked (select_n with a constant
mask, or a constant added). The projections producing Q, K, V and the output projection are ordinary dense
leaves; multi-head reshapes and transposes keep moments.

The rule (docs/calculus.md, "Softmax attention") is the Gaussian model, evaluated by seeded Monte Carlo
(`GaussianAttention`): per example, Q, K, V (d_qk, d_qk, d_v features per token) and the gradient g at the
output are Gaussian with the signals' second moments, each with a component shared by all tokens (its
token correlation rp), g independent of Q, K, V (the calculus's independence assumption); the logits are
scale * Q K^T (rank d_qk, under the mask), and the forward E[o^2], rp_o and the backward E[dV^2], E[dQ^2],
E[dK^2] with their token correlations are those of the exact attention and its backward on the draws. A
shared component of K adds the same logit to every key of a query and drops out of the softmax; one shared
by the queries makes them all favour the same keys; a long K_k is favoured by every query. The earlier
closed forms (independent logits per (query, key), a first-order Stein term for two queries leaning on the
same key) missed the last two and left the values' gradient too correlated across tokens: rp_dV 0.94 where
models.Transformer measured 0.79 (docs/calculus.md, "What the measurements showed (transformer)").
Where it breaks: large logits (trained Q, K), Q, K, V that are far from Gaussian or depend on each other
beyond second moments (the same token's query and key), and gradients that depend on V (the loss reading
the attention output twice).
"""
from __future__ import annotations

import math
import weakref
from typing import NamedTuple

import numpy as np

from jscale.calculus import attention_own, token_carry
from jscale.calculus.blocks import Block, between
from jscale.calculus.propagation import ActivationUse
from jscale.calculus.signals import Forward, cross_position
from jscale.calculus.tracing import Lit, scalar_value

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
      srcs = [_projected_from(graph, u, tags, const, a) for a in (q, k, v)]
      same = all(s_ is not None and s_[:2] == srcs[0][:2] for s_ in srcs)
      d_in = srcs[0][1] if same else None
      x_in = srcs[0][0] if same else None
      proj = tuple(s_[2] for s_ in srcs) if same else None
      blocks.append(Block("attention", out_n, (q, k, v), eqns, attention_rule,
                          dict(q=q, k=k, v=v, out=out, logits_shape=tuple(ls[:-2]) + (n_q, ls[-1]),
                               mask=mask, d_qk=d_qk, d_v=d_v, scale=scale, d_in=d_in, x=x_in, proj=proj,
                               dot=n, p=p)))
      break
  return blocks


def _projected_from(graph, u, tags, const, a):
  """(x, D_in, y) when the activation a is a dense projection y = x @ W (through a bias, scalings by
  constants, reshapes and transposes) contracting D_in features of the activation x, else None. Self-attention's Q, K
  and V are three projections of one x: within one draw of the weights they are correlated (module
  docstring)."""
  while True:
    e = _prod(graph, u, a)
    if e is None:
      return None
    if e.name in ("transpose", "reshape", "convert_element_type", "copy", "copy_p"):
      a = e.ins[0]
      continue
    if e.name in ("mul", "div", "add") and len(_acts(tags, e)) == 1 and len(e.ins) == 2:
      other = next(b for b in e.ins if b not in _acts(tags, e))
      t = None if isinstance(other, Lit) else tags.get(other)
      fixed = isinstance(other, Lit) or const(other) is not None
      if (e.name == "add" and t is not None and t.kind == "param") or (e.name != "add" and fixed):
        a = _acts(tags, e)[0]
        continue
      return None
    if e.name == "dot_general" and len(_acts(tags, e)) == 1 and len(e.ins) == 2:
      x = _acts(tags, e)[0]
      w = e.ins[1] if e.ins[0] == x else e.ins[0]
      t = None if isinstance(w, Lit) else tags.get(w)
      if t is None or t.kind != "param":
        return None
      (cl, cr), (bl, br) = e.params["dimension_numbers"]
      cx = cl if e.ins[0] == x else cr
      if bl or br:
        return None
      return x, math.prod(graph.avals[x].shape[i] for i in cx), e.outs[0]
    return None


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


# -------------------------------------------------------------------------------------------------
# The Gaussian model, by Monte Carlo: Q, K, V and the output's gradient G drawn Gaussian per token with the
# signals' second moments and a component shared by all tokens of an example (correlation rp), G independent
# of Q, K, V; the attention and its exact backward evaluated on each draw. Unlike the closed forms above it
# keeps the logits' structure: l = Q K^T has rank d_qk, so a key with a long K_k is favoured by every query
# and a query with a long Q_q is sharper (the independent-logit weights miss both), and a component shared by
# the queries makes them all lean towards the same keys (the Stein term of the closed forms, to all orders).

MC_DRAWS = 256   # per mask at d_qk >= 16, more for smaller heads (`_draws`); seeded, so the rule is deterministic
MC_ENTRIES = 2 ** 22   # at most this many attention weights in all (draws shrink for long sequences, >= 8)


def _draws(d_qk: int) -> int:
  """Monte-Carlo draws for heads of d_qk units. Each draw has weights of its own, so the draws, not the entries,
  are the independent units, and one draw's E[dK^2] is heavy-tailed when the head is small (a long query or key
  in 4 units sharpens a whole row): over seeds, 256 draws read dk_sq with a relative s.d. of 12.6% at d_qk = 4
  (2.2% at 2048 draws) against 3.4% at 16 (T = 16, d_in = 32 / 64); on models.Transformer at width 32 and 8
  heads the fixed seed's 256 draws read E[dK^2] +0.22 in log above the measured one, 4096 draws +0.09 (dev
  draws 1040-1041, 12 blocks). (16 / d)^2 times the draws keeps the error of the d >= 16 heads."""
  return MC_DRAWS * max(1, 16 // max(d_qk, 1)) ** 2


def _shared(rng, n, T, d, rp):
  """(n, T, d) unit-variance Gaussians whose tokens share a component of correlation rp (clipped to [0, 1])."""
  rp = min(max(rp, 0.0), 1.0)
  return math.sqrt(rp) * rng.standard_normal((n, 1, d)) + math.sqrt(1 - rp) * rng.standard_normal((n, T, d))


def _with_rp(v: np.ndarray, rp: float) -> np.ndarray:
  """v (n, T, d) with its token-mean part and the rest rescaled so that its token correlation is rp (its mean
  square kept)."""
  T = v.shape[1]
  rp = min(max(rp, 0.0), 1.0)
  vm = v.mean(1, keepdims=True)
  ms, mm = float(np.mean(v * v)), float(np.mean(vm * vm))
  if T < 2 or not 0 < mm < ms:
    return v
  target = rp + (1 - rp) / T   # the token mean's share of E[v^2]
  return math.sqrt(target * ms / mm) * vm + math.sqrt((1 - target) * ms / (ms - mm)) * (v - vm)


def _position_corr(v: np.ndarray) -> float:
  """mean over t != t' of v_t . v_t' / (d E[v^2]) for v: (n, T, d)."""
  n, T, d = v.shape
  ms = float(np.mean(v * v))
  if T < 2 or ms <= 0:
    return 0.0
  s = v.sum(1)
  return float((np.sum(s * s) - np.sum(v * v)) / (n * T * (T - 1) * d * ms))


def token_vectors(rng, n: int, T: int, d_in: int, rp_k: float, tokens: tuple | None = None,
                  norm: str | None = None) -> np.ndarray:
  """The self-attention model's token vectors x (n, T, d_in), in units of E[x^2]: isotropic with a shared
  component of correlation rp_k, or with the carried tokens (`_token_model`) as below; a normalisation's output
  has each token centred (LayerNorm) and of squared length d_in."""
  if tokens is None:
    x = _shared(rng, n, T, d_in, rp_k)
  else:
    # each token's own part from the carried covariance (token_carry.py), in units of E[x^2]: z L (rows L:
    # (r, d_in)) and the draw's position means P (T, d_in), both times `shrink`, plus an isotropic rest
    # that fills the own part's share f_own = 1 - rp (what the carry lacks: the activations' curvature,
    # the attention weights' spread); rp is the shared part's. In place where the old expression's
    # temporaries were (x * y == y * x bitwise)
    L, P, shrink, f_own, rp = tokens[:5]
    fixed = tokens[5] if len(tokens) > 5 else None
    own = rng.standard_normal((n, T, L.shape[0])) @ L
    own += P
    own *= math.sqrt(shrink)
    f_iso = max(f_own - shrink * (float(np.sum(L * L)) / d_in + float(np.mean(P * P))), 0.0)
    rest = rng.standard_normal((n, T, d_in))
    rest *= math.sqrt(f_iso)
    own += rest
    del rest
    if fixed is None:
      x = math.sqrt(rp) * rng.standard_normal((n, 1, d_in))
    else:
      # the shared part's component common to the batch's examples is one fixed vector, not a draw of its
      # own per example: only the rest of the shared part fluctuates (chi-square) from example to example
      x = math.sqrt(max(rp - float(np.mean(fixed * fixed)), 0.0)) * rng.standard_normal((n, 1, d_in))
      x += fixed
    x = np.add(x, own, out=own)
  if norm is not None:
    # a LayerNorm / RMSNorm output (scale 1 at initialisation): each token centred (LayerNorm) and of
    # squared length d_in exactly, as the network's are
    if norm == "layer_norm":
      x -= x.mean(-1, keepdims=True)
    x *= np.sqrt(d_in / np.maximum(np.sum(x * x, -1, keepdims=True), 1e-30))
  return x


# The forward arrays all AttentionDraws may hold at once (every attention block's, from the forward pass until its
# backward); past it a block keeps only its arguments and its backward draws the forward half again, at the cost
# of the old two-models-per-block rule, not of a deep network's memory (~90 MB a block with 4-unit heads).
HELD_BYTES = 2 ** 30
_HELD = [0]


def _release(size: int):
  _HELD[0] -= size


class AttentionDraws:
  """The Gaussian model's draws up to the output's gradient G: x, Q, K, V, the weights P and the forward
  moments (o_sq, rp_o, A, C, coherence, mean_weights, as in GaussianAttention). None of it depends on G's token
  correlation rp_g, and G is drawn last from the same stream, so one set of draws serves every rp_g:
  `backward(rp_g)` draws G from the generator's state as it stood after the forward draws and gives exactly what
  GaussianAttention(..., rp_g, ...) gives (the attention rule asks for rp_g = 0 in the forward pass and for the
  gradient's rp_g in the backward one: two whole models per block were 2.1x a warm inspect's CPU at width 32 /
  8 heads / depth 6, docs/performance.md "The attention model's draws"). Holds P, Q, K, V and the tokens' Gram
  matrices until it is dropped (~90 MB a block at MC_ENTRIES with 4-unit heads), within HELD_BYTES."""

  def __init__(self, masks: np.ndarray, d_qk: int, d_v: int, lsq: float, rp_q: float, rp_k: float, rp_v: float,
               draws: int | None = None, seed: int = 0, d_in: int | None = None, tokens: tuple | None = None,
               norm: str | None = None, hold: bool = False):
    rng = np.random.default_rng(seed)
    draws = _draws(d_qk) if draws is None else draws
    m, Tq, Tk = masks.shape
    draws = max(8, min(draws, MC_ENTRIES // (m * Tq * Tk)))
    n = draws * m
    full = bool(masks.all())   # no masked entry: the np.where's below would copy their operand
    mask = None if full else np.repeat(masks, draws, axis=0)
    x = None
    if d_in is not None and Tq == Tk:
      # self-attention: Q, K, V = x W_q, x W_k, x W_v of one token vector x (D_in features, shared component
      # rp_k), the W's drawn per draw (a network draw); then K_k and V_k, Q_q and V_q are correlated within the
      # draw through W_k^T W_v (entries of mean square E[K^2] E[V^2] / D_in)
      x = token_vectors(rng, n, Tk, d_in, rp_k, tokens, norm)
      Q, K, V = (x @ (rng.standard_normal((n, d_in, d)) / math.sqrt(d_in)) for d in (d_qk, d_qk, d_v))
      # one network draw gives Q, K and V shared components of their own size (the draw's mean through each
      # W, draw_mean.py): each keeps its direction but takes its signal's rp
      Q, V = _with_rp(Q, rp_q), _with_rp(V, rp_v)
    else:
      Q, K = _shared(rng, n, Tq, d_qk, rp_q), _shared(rng, n, Tk, d_qk, rp_k)
      V = _shared(rng, n, Tk, d_v, rp_v)
    self._state = rng.bit_generator.state   # before G: the same for every rp_g
    self._n, self._Tq, self._d_v = n, Tq, d_v
    c = math.sqrt(max(lsq, 0.0))
    z = np.einsum("nqd,nkd->nqk", Q, K)
    z *= c
    if not full:
      z = np.where(mask, z, -np.inf)
    top = np.max(z, -1, keepdims=True)
    z -= np.where(np.isfinite(top), top, 0.0)
    w = np.exp(z, out=z)
    if not full:
      w = np.where(mask, w, 0.0)
    tot = w.sum(-1, keepdims=True)
    P = np.divide(w, np.where(tot > 0, tot, 1.0), out=w)
    o = P @ V
    PP2 = P * P
    self.A = float(np.mean(np.sum(PP2, -1)))
    # the values' gradient against the carried one's at uniform weights (draw_gradient.MeanBackward): E[C_k^2]
    # and E[sum_q P_qk^2] over E[Cw_k^2], C and Cw the column sums of P and of the uniform weights on the mask
    # (per distinct mask, then repeated as the draws repeat it: the same column sums, in a draw's size)
    u = masks / np.maximum(masks.sum(-1, keepdims=True), 1)
    cw = float(np.mean(np.square(np.repeat(u.sum(-2), draws, axis=0))))
    self.coherence = (float(np.mean(np.square(P.sum(-2)))) / cw, float(np.mean(np.sum(PP2, -2))) / cw)
    del PP2
    PP = np.einsum("nqk,nrk->nqr", P, P)
    self.C = float(np.mean(PP[:, ~np.eye(Tq, dtype=bool)])) if Tq > 1 else 0.0
    del PP
    self.o_sq, self.rp_o = float(np.mean(o * o)), _position_corr(o)
    self.mean_weights = _mean_weight_sums(P.reshape(m, draws, Tq, Tk).mean(1))
    # the projections' position factors (backward) read x only through its Gram matrices and mean square
    gram = None if x is None else (np.einsum("nta,nsa->nts", x, x), np.mean(np.sum(x * x, -1)))
    size = P.nbytes + Q.nbytes + K.nbytes + V.nbytes + (0 if gram is None else gram[0].nbytes)
    self._args = (masks, d_qk, d_v, lsq, rp_q, rp_k, rp_v, draws, seed, d_in, tokens, norm)
    self._held = hold or _HELD[0] + size <= HELD_BYTES
    if self._held:
      _HELD[0] += size
      weakref.finalize(self, _release, size)
      self._P, self._Q, self._K, self._V, self._gram = P, Q, K, V, gram

  def backward(self, rp_g: float) -> "AttentionBackward":
    if not self._held:   # past HELD_BYTES: the forward half drawn again (the same draws, so the same numbers)
      return AttentionDraws(*self._args, hold=True).backward(rp_g)
    rng = np.random.default_rng()
    rng.bit_generator.state = self._state
    P, Q, K, V = self._P, self._Q, self._K, self._V
    G = _shared(rng, self._n, self._Tq, self._d_v, rp_g)
    dV = np.einsum("nqk,nqd->nkd", P, G)
    dP = np.einsum("nqd,nkd->nqk", G, V)
    # dl = P * (dP - sum_k P dP), through the softmax
    dl = np.subtract(dP, np.sum(P * dP, -1, keepdims=True), out=dP)
    dl *= P
    dQ, dK = dl @ K, np.einsum("nqk,nqd->nkd", dl, Q)      # per unit scale: c multiplies both, counted in dq_sq
    # Self-attention: the projections' position factors E|sum_t x_t (x) d_t|^2 / (T E|x|^2 E|d|^2) with the
    # x the gradients d depend on (dK_t on x_t through P_qt: the product form 1 + (T - 1) rp_x rp_d misses it)
    pf = (None,) * 3 if self._gram is None else (_gram_position_factor(*self._gram, d) for d in (dQ, dK, dV))
    return AttentionBackward(float(np.mean(dV * dV)), _position_corr(dV), float(np.mean(dQ * dQ)),
                             _position_corr(dQ), float(np.mean(dK * dK)), _position_corr(dK), *pf)


class AttentionBackward(NamedTuple):
  """The backward moments of AttentionDraws for one rp_g (GaussianAttention's names)."""
  dv_sq: float
  rp_dv: float
  dq_sq: float
  rp_dq: float
  dk_sq: float
  rp_dk: float
  pf_q: float | None
  pf_k: float | None
  pf_v: float | None


class GaussianAttention:
  """Moments of softmax attention on the Gaussian model (above), per unit E[Q^2], E[K^2], E[V^2], E[g^2]
  except where the logits' scale enters (`lsq` = scale^2 E[Q^2] E[K^2]): o_sq = E[o^2] / E[V^2], dv_sq =
  E[dV^2] / E[g^2], dq_sq = E[dQ^2] / (E[g^2] E[V^2] scale^2 E[K^2]), dk_sq likewise with E[Q^2]; the rp_* the
  token correlations of each; A, C as in AttentionMoments. AttentionDraws and its backward for one rp_g."""

  def __init__(self, masks: np.ndarray, d_qk: int, d_v: int, lsq: float, rp_q: float, rp_k: float, rp_v: float,
               rp_g: float, draws: int | None = None, seed: int = 0, d_in: int | None = None,
               tokens: tuple | None = None, norm: str | None = None):
    f = AttentionDraws(masks, d_qk, d_v, lsq, rp_q, rp_k, rp_v, draws, seed, d_in, tokens, norm)
    self.A, self.coherence, self.C, self.o_sq, self.rp_o = f.A, f.coherence, f.C, f.o_sq, f.rp_o
    self.mean_weights = f.mean_weights
    for name, v in f.backward(rp_g)._asdict().items():
      setattr(self, name, v)


class MeanWeightSums(NamedTuple):
  """Sums of the mean attention weights Pbar (Tq, Tk) (mean over draws, per mask, then over masks), which
  carry correlations between two *examples*: their weights are taken as independent, so that
  E[o_bq . o_b'q'] = sum_kk' Pbar_qk Pbar_q'k' E[V_bk . V_b'k'] and E[dV_bk . dV_b'k'] likewise with the
  gradients; S = Pbar Pbar^T, R = Pbar^T Pbar, c = Pbar's column sums."""
  s_same: float     # mean_q S_qq
  s_cross: float    # mean_{q != q'} S_qq'
  r_same: float     # mean_k R_kk
  r_cross: float    # mean_{k != k'} R_kk'
  c_same: float     # mean_k c_k^2
  c_cross: float    # mean_{k != k'} c_k c_k'


def _mean_weight_sums(pbar: np.ndarray) -> MeanWeightSums:
  def diag_off(M):
    n = M.shape[-1]
    d = float(np.mean(np.diagonal(M, axis1=-2, axis2=-1)))
    off = float(np.mean(M[:, ~np.eye(n, dtype=bool)])) if n > 1 else 0.0
    return d, off
  c = pbar.sum(-2)
  return MeanWeightSums(*diag_off(pbar @ np.swapaxes(pbar, -1, -2)), *diag_off(np.swapaxes(pbar, -1, -2) @ pbar),
                        *diag_off(c[:, :, None] * c[:, None, :]))


def _position_factor(x: np.ndarray, d: np.ndarray) -> float:
  """E over draws of |sum_t x_t (x) d_t|^2 / (T E[|x_t|^2] E[|d_t|^2]) for x: (n, T, a), d: (n, T, c):
  G's position factor for a weight y_t = x_t W whose output gradient is d."""
  return _gram_position_factor(np.einsum("nta,nsa->nts", x, x), np.mean(np.sum(x * x, -1)), d)


def _gram_position_factor(xx: np.ndarray, x_sq, d: np.ndarray) -> float:
  """_position_factor from x's Gram matrices xx (n, T, T) and x_sq = E[|x_t|^2] (one x, several d's)."""
  T = xx.shape[1]
  dd = np.einsum("ntc,nsc->nts", d, d)
  den = T * x_sq * np.mean(np.sum(d * d, -1))
  return float(np.mean(np.sum(xx * dd, (1, 2))) / den) if den > 0 else 1.0


# With the carried tokens, the model takes this many seeds' worth of draws: one seed's luck in dq_sq / dk_sq is
# not noise over network draws but the same for every call, and grows with the tokens' and gradients'
# correlations (s.d. of log 0.05 at the top of depth 12; seed 0 read +0.06 / +0.08 above seeds 1-7 there,
# docs/calculus.md "The keys' and queries' own error"); 4x halves it, at 1.6-3.9x an inspect's CPU (judged runs:
# most at 4 units per head and at width 128) while each rp_g drew the whole model; with the forward draws shared
# (AttentionDraws) the model's part is 2.0-2.8x smaller (docs/performance.md "The attention model's draws").
SEEDS = 4

# the token model's shared component split into the batch's common mean (fixed) and a per-example rest (issue 21,
# twelfth session); False reproduces the eleventh session's rule byte for byte
FIXED_MEAN = True


def _norm_kind(pred, x):
  """'layer_norm' / 'rms_norm' when x is a normalisation block's output (through its scale and bias), else None."""
  outs = {b.info["out"]: b.kind for b in pred.block_at.values() if b.kind in ("layer_norm", "rms_norm")}
  for _ in range(3):
    if x in outs:
      return outs[x]
    e = next((e for e in pred.g.eqns if x in e.outs), None)
    if e is None or e.name not in ("add", "mul") or len(e.ins) != 2:
      return None
    acts = [a for a in e.ins if not isinstance(a, Lit) and pred.tag(a).kind == "act"]
    if len(acts) != 1 or not all(isinstance(a, Lit) or a in acts or pred.tag(a).kind == "param" for a in e.ins):
      return None
    x = acts[0]
  return None


def _token_model(pred, info):
  """(tokens, norm) for GaussianAttention where the projections' common input x has a carried token covariance
  (token_carry.py), else (None, None): its factor rows and the draw's position means in units of E[x^2], shrunk
  together where they would exceed the own part's share, that share, the shared part's rp; and whether x is a
  normalisation's output (each token's |x|^2 = d_in then)."""
  x, d_in = info.get("x"), info.get("d_in")
  tok = getattr(pred, "tok", None)
  if x is None or d_in is None or not tok or x not in tok:
    return None, None
  L = token_carry.covariance_factor(tok[x], d_in)
  sx, m = pred.fwd[x], pred.mean.get(x)
  T = info["logits_shape"][-1]
  if L is None or m is None or not sx.sq or not sx.sq > 0 or np.size(m) != T * d_in:
    return None, None
  # the draw's position means (draw_mean.py), each token's fixed part: the carried mean less its token average
  P = m.reshape(T, d_in) - m.reshape(T, d_in).mean(0)
  f_c, f_p = float(np.sum(L * L)) / (d_in * sx.sq), float(np.mean(P * P)) / sx.sq
  # the signal's rp already has the position means' cross term (sum_t P_t = 0: mean_{t != t'} P_t . P_t' =
  # -|P|^2 / (T - 1)), which the fixed P_t bring to the draws: the shared part takes it back
  rp_s = min(max(pred.fwd[info["k"]].rp or 0.0, 0.0) + f_p / max(T - 1, 1), 1.0)
  f_own = 1 - rp_s
  if not (f_c > 0 and f_own > 0):
    return None, None
  shrink = min(1.0, f_own / (f_c + f_p))   # the model's own part E[x^2] (1 - rp_s) holds both at most
  tokens = (L / math.sqrt(sx.sq), P / math.sqrt(sx.sq), shrink, f_own, rp_s)
  if FIXED_MEAN:
    # the draw's mean over the batch and the tokens: the part of each example's shared component that every
    # example has (0.6-0.7 of it in models.Transformer's first LayerNorm outputs), at most the shared part
    c = m.reshape(T, d_in).mean(0) / math.sqrt(sx.sq)
    f_m = float(np.mean(c * c))
    tokens += (c * math.sqrt(min(1.0, rp_s / f_m)) if f_m > 0 else c,)
  return tokens, _norm_kind(pred, x)


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
  lsq = info["scale"] ** 2 * sq_.sq * sk.sq
  s_logit = info["d_qk"] * lsq * (1 - rp_k)
  pred.acts.append(ActivationUse(kind=f"attention (E[logit^2] = {s_logit:.3g})", in_id=info["v"], out_id=info["out"]))
  tokens, norm = _token_model(pred, info)
  if tokens is None:
    model = AttentionDraws(masks, info["d_qk"], info["d_v"], lsq, rp_q, rp_k, rp_v, d_in=info.get("d_in"))
  else:
    model = AttentionDraws(masks, info["d_qk"], info["d_v"], lsq, rp_q, rp_k, rp_v, d_in=info["d_in"],
                         tokens=tokens, norm=norm, draws=SEEDS * _draws(info["d_qk"]))
  cache = {}   # rp_g -> model.backward(rp_g)
  pred.coherence_at[info["v"]] = model.coherence
  sq = sv.sq * model.o_sq
  if not sq > 0:
    return "attention over values with E[V^2] = 0"
  # two examples' outputs, with their weights independent (MeanWeightSums): the same query sees the values'
  # same-position correlation r on the S_qq part and rc on the rest
  mw, rc_v = model.mean_weights, cross_position(sv)
  if rc_v is None:
    out = Forward(sq, sv.r * sv.sq / sq, sv.sym, None, min(model.rp_o, 1.0), (sv.rf or 0.0) * sv.sq / sq)
  else:
    r_o = sv.sq * ((sv.r - rc_v) * mw.s_same + rc_v) / sq
    rc_o = sv.sq * ((sv.r - rc_v) * mw.s_cross + rc_v) / sq
    out = Forward(sq, r_o, sv.sym, None, min(model.rp_o, 1.0), (sv.rf or 0.0) * sv.sq / sq, rc_o)

  own = attention_own.make(pred, block, masks, tokens, norm)

  def stats(g):
    rp_g = g.rp if g.rp is not None else 0.0
    if rp_g not in cache:
      cache[rp_g] = model.backward(rp_g)
    st = cache[rp_g]
    ob = None if own is None else own(g)
    if ob is None:
      return st
    # the backward factors at the draw's own projections and carried gradient (attention_own.py), in the
    # Gaussian model's units
    st = st._replace(dq_sq=ob.dq * sq_.sq / (sv.sq * lsq), dk_sq=ob.dk * sk.sq / (sv.sq * lsq), pf_q=ob.pf_q,
                     pf_k=ob.pf_k)
    if attention_own.VALUES:
      return st._replace(dv_sq=ob.dv, pf_v=ob.pf_v)
    return st._replace(pf_v=ob.pf_v) if attention_own.PF_V else st

  def back_v(g):
    st = stats(g)
    factor(2, st, st.pf_v)
    rc_g = cross_position(g)
    if rc_v is None or rc_g is None or not st.dv_sq > 0:
      return g.scaled(st.dv_sq, r=g.r * sv.r, rp=st.rp_dv)
    # dV_bk = sum_q P_bqk g_bq: two examples' value gradients through the mean weights (MeanWeightSums)
    r_dv = ((g.r - rc_g) * mw.r_same + rc_g * mw.c_same) / st.dv_sq
    rc_dv = ((g.r - rc_g) * mw.r_cross + rc_g * mw.c_cross) / st.dv_sq
    return g.scaled(st.dv_sq, r=r_dv, rp=st.rp_dv, rc=rc_dv)

  proj = info.get("proj")

  def factor(which, st, f):
    # the projection's own position factor, from the model (GaussianAttention.pf_*), for its weight's G
    if proj is not None and f is not None:
      pred.position_factor_at[proj[which]] = f

  def back_q(g):
    st = stats(g)
    factor(0, st, st.pf_q)
    return g.scaled(sv.sq * lsq / sq_.sq * st.dq_sq, r=0.0, rp=st.rp_dq, rc=0.0)

  def back_k(g):
    st = stats(g)
    factor(1, st, st.pf_k)
    return g.scaled(sv.sq * lsq / sk.sq * st.dk_sq, r=0.0, rp=st.rp_dk, rc=0.0)

  pred.set_out(pred.g.eqns[block.out_eqn], out, [(info["v"], back_v), (info["q"], back_q), (info["k"], back_k)])
  return None

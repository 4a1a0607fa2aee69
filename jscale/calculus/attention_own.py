"""Self-attention's backward at the draw's own projections and the carried gradient (issue 21, fifteenth session).

The Gaussian model (attention.py) draws, per model draw, fresh W_q, W_k, W_v and an isotropic output gradient g
of the signal's E[g^2] and rp. Its per-draw error in the query, key and value kernels' G (s.d. 0.10-0.16 in log at
widths 32-64) is not the tokens' alone: with the network's own tokens and own W_q, W_k, W_v but an isotropic g
the s.d. stays 0.06-0.12; with g drawn from the covariance the network's gradient at the block has, it falls to
0.02-0.06 (docs/calculus.md, "The attention branch at the draw's own weights and gradient"). The gradient above
the attention is mostly the loss's few directions carried down through the drawn weights
(draw_gradient.MeanBackward: exact from the head to the first nonlinearity), and one draw's W_v, W_q, W_k are
aligned with those directions by chance: that alignment is the draw's own and no expectation over weights has it.

So, for the queries' and keys' backward factors (E[dQ^2], E[dK^2] over E[g^2], and their position factors; the
values' with VALUES, their position factor with PF_V) the model here evaluates the attention at:
- the draw's own projections: Q, K, V = x J + b, J and b the projection chains' linear and constant parts read
  from the graph at the drawn leaves (draw_gradient._chain_matrix), the logits' scale as the rule has it;
- the model's token vectors x: with DIRECT (the default) the batch's own examples as the linear carry has them
  (token_carry.EXAMPLES) plus an independent rest to the rule's E[x^2] (direct_tokens); else attention.token_vectors
  (the carried covariance, position means and batch mean); each token normalised where x is a LayerNorm's output;
- g = the carried gradient at the attention's output of example b (cycled over the batch) plus an isotropic
  rest that fills the rule's E[g^2] with the token correlation that keeps the rule's rp_g.
Nothing measured inside the network enters: the carried gradient is the loss's own (the random projection's v,
or the loss gradient at the outputs) through the drawn leaves' mean Jacobians. The forward moments stay the
Gaussian model's. On by default (OWN); where any part is missing (no carried gradient, no chain matrix, cross
attention, another layout) the Gaussian model's factors stand.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

# on: judged on fresh draws 2840-2855 and adopted (docs/calculus.md, the section named above); False reproduces the
# fourteenth session's inspect byte for byte
OWN = True
# the values' factors too: off, their spread did not fall on dev (docs/calculus.md, the section named above)
VALUES = False
EXAMPLES = 4   # model examples per example of the batch (the carried gradients are cycled over them)
# The batch's own examples as the token vectors (issue 21, sixteenth session; docs/calculus.md "The batch's own
# examples in the attention branch"): DIRECT, PF_V and token_carry.EXAMPLES together are the rule, judged on fresh
# draws 2872-2887 and adopted (kernels outside [0.8, 1.25] 48 -> 15 of 3232); all three False reproduce the
# fifteenth session's inspect byte for byte. DIRECT: the token vectors are the carried examples themselves (mean
# plus deviation) and an independent rest, not the Gaussian model's draws. (Two variants tried on dev and dropped,
# the input tokens' coordinates times the carried rows and the examples for the values only, are in 4d86e1e.)
DIRECT = True
# the values' position factor from this model too (E[dV^2] stays the Gaussian model's)
PF_V = True
# The batch mean of the attention's output at this model's mean weights over the batch instead of uniform ones
# (draw_mean._attention_mean; issue 21, seventeenth session, tf): the position embeddings give the logits a part
# common to all examples, so the batch's mean weights are not uniform and the mean output keeps more of the values'
# position-varying mean. Judged once on fresh draws 2888-2903 and
# adopted (backward misses 165 -> 130 of 2128); False reproduces the sixteenth session's inspect.
MEAN_WEIGHTS = True
# The batch mean of the attention's output with the covariance of each example's weights with its own values,
# mean_i sum_k (P_i - Pbar)_qk (V_i - Vbar)_k over this model's examples, added to Pbar times the values' carried mean
# (draw_mean._attention_mean; issue 21, eighteenth session, tw): an example's tokens set both its logits and its
# values, so the mean of the product is not the product of the means. Judged once on fresh draws 2904-2919 and
# adopted by its rule (backward misses 85 -> 82 of 2128, kernels 6 -> 4 of 3232); False is 7603bd4's code path.
MEAN_COV = True
# The attention output's split into the shared part and each example's own (its r, which the W_o condition,
# draw_mean.condition, replaces by the draw's mean while keeping sq (1 - r); issue 21, nineteenth session, tw3;
# docs/calculus.md "The attention output's split"). The Gaussian model's sq (1 - r) is 0.12-0.14 in log above the
# network's on dev (its shared part is short), MEAN_COV's energy counted twice in it. "cov": that energy taken out of
# sq (1 - r) (draw_mean.cov_to_shared); "mean": sq (1 - r) = sq minus the draw's carried mean
# (draw_mean.mean_to_shared); "own": sq (1 - r) this model's own examples' spread around their mean
# (examples_energy, within 0.03 r.m.s. of the network's). E[o^2] kept in all three. Off: each made the forward
# better on dev but not the backward misses (with token_carry.ADD_CROSS too), so none was judged.
OUT_SPLIT = False


class OwnBackward(NamedTuple):
  dq: float    # E[dQ^2] / E[g^2]
  dk: float
  dv: float
  pf_q: float
  pf_k: float
  pf_v: float


def make(pred, block, masks, tokens, norm, seed: int = 0):
  """A function g (Backward at the attention's output) -> OwnBackward or None, or None where the block is not
  a self-attention of (batch, token, head, d) projections with a carried token model."""
  from jscale.calculus import attention, draw_gradient
  info = block.info
  if not OWN or tokens is None or masks.shape[0] != 1:
    return None
  if draw_gradient._self_attention_sources(pred, block) is None:   # the layout this reads (no mask, 4-d heads)
    return None
  x, d_in = info.get("x"), info.get("d_in")
  chains = [draw_gradient._chain_parts(pred, x, info[n], d_in) for n in ("q", "k", "v")]   # (J, b) or None
  if any(c is None for c in chains) or pred.fwd.get(x) is None or not pred.fwd[x].sq > 0:
    return None
  (jq, bq), (jk, bk), (jv, bv) = chains
  B, T = pred.g.avals[info["out"]].shape[:2]
  scale = info["scale"]
  sx = pred.fwd[x]
  rng = np.random.default_rng(seed)
  n = EXAMPLES * B
  m = pred.mean.get(x)
  parts = own_token_parts(pred, x, B, T, d_in) if DIRECT else None
  if parts is not None and np.size(m) == T * d_in:
    xs = direct_tokens(rng, EXAMPLES, np.asarray(m, np.float64).reshape(T, d_in) + parts, sx.sq, norm)
  else:   # no carried examples here: the adopted OWN model's Gaussian token vectors
    xs = attention.token_vectors(rng, n, T, d_in, pred.fwd[info["k"]].rp or 0.0, tokens, norm) * math.sqrt(sx.sq)
  fwd = forward(xs, (jq, bq), (jk, bk), (jv, bv), scale)
  if MEAN_WEIGHTS and DIRECT and parts is not None:
    mean_weights = getattr(pred, "mean_weights", None)
    if mean_weights is not None:
      mean_weights[info["p"]] = fwd.P.mean(axis=0)   # (heads, T, T): the model examples' mean softmax weights
      if MEAN_COV:   # (T, heads, d_v), keyed beside the weights (draw_mean.own_cov)
        mean_weights[("cov", info["p"])] = weights_values_cov(fwd)
      if OUT_SPLIT == "own":
        mean_weights[("examples", info["p"])] = examples_energy(fwd)
  cache = {}

  def back(g):
    a = pred.carried.at(info["out"]) if getattr(pred, "carried", None) is not None else None
    if a is None or g.why or not g.sq > 0 or np.shape(a)[:2] != (B, T) or np.shape(a)[2:] != fwd.V.shape[2:]:
      return None
    key = (g.sq, g.rp)
    if key in cache:
      return cache[key]
    a = np.asarray(a, np.float64) / math.sqrt(g.sq)
    f_a = min(float(np.mean(a * a)), 1.0)
    rp_a = attention._position_corr(a.reshape(B, T, -1)) if f_a > 0 else 0.0
    f_rest = 1.0 - f_a
    rp_g = g.rp if g.rp is not None else 0.0
    # the rest keeps the rule's rp_g for the sum (the carried part is nearly common to the tokens)
    rp_rest = min(max((rp_g - rp_a * f_a) / f_rest, 0.0), 1.0) if f_rest > 1e-9 else 0.0
    r = np.random.default_rng(seed + 1)
    G = np.tile(a, (EXAMPLES, 1, 1, 1))
    if f_rest > 0:
      G = G + math.sqrt(f_rest) * (math.sqrt(rp_rest) * r.standard_normal((n, 1) + fwd.V.shape[2:])
                                   + math.sqrt(1 - rp_rest) * r.standard_normal(fwd.V.shape))
    cache[key] = factors(fwd, G, scale)
    return cache[key]

  return back


def weights_values_cov(f) -> np.ndarray:
  """(T, heads, d_v) mean_i sum_k (P_i - Pbar)_{h q k} (V_i - Vbar)_{k h d} over the model's examples: the part of
  the batch mean of the attention product that the mean weights times the mean values leave out."""
  dP = f.P - f.P.mean(axis=0, keepdims=True)
  dV = f.V - f.V.mean(axis=0, keepdims=True)
  return np.einsum("nhqk,nkhd->qhd", dP, dV) / f.P.shape[0]


def examples_energy(f) -> float:
  """mean over the model's examples and the output's entries of |o_i - obar|^2, o_i = P_i V_i: the attention
  output's per-example energy at the draw's own projections (OUT_SPLIT = "own")."""
  o = np.einsum("nhqk,nkhd->nqhd", f.P, f.V)
  return float(np.mean(np.square(o - o.mean(axis=0, keepdims=True))))


def direct_tokens(rng, k: int, lin: np.ndarray, sq: float, norm: str | None) -> np.ndarray:
  """(k B, T, d_in) token vectors: the batch's examples as the linear carry has them (`lin`: the carried mean plus
  each example's carried deviation), k times, plus a rest independent over tokens and examples that fills the
  rule's E[x^2] (what the linear carry misses: the activations' curvature, the attention weights' spread), then
  normalised per token where x is a normalisation's output (as attention.token_vectors)."""
  n, T, d_in = k * lin.shape[0], lin.shape[1], lin.shape[2]
  f = max(sq - float(np.mean(lin * lin)), 0.0)
  x = np.tile(lin, (k, 1, 1)) + math.sqrt(f) * rng.standard_normal((n, T, d_in))
  if norm is not None:
    if norm == "layer_norm":
      x -= x.mean(-1, keepdims=True)
    x *= np.sqrt(d_in * sq / np.maximum(np.sum(x * x, -1, keepdims=True), 1e-30))
  return x


def own_token_parts(pred, x, B: int, T: int, d_in: int) -> np.ndarray | None:
  """(B, T, d_in) each example's carried deviation from the batch mean at x (token_carry.EXAMPLES' rows), or None
  where x has none."""
  ex = getattr(pred, "tok_ex", {}).get(x)
  return np.asarray(ex, np.float64) if ex is not None and np.shape(ex) == (B, T, d_in) else None


class Forward(NamedTuple):
  x: np.ndarray      # (n, T, d_in) token vectors
  Q: np.ndarray      # (n, T, heads, d_qk)
  K: np.ndarray
  V: np.ndarray      # (n, T, heads, d_v)
  P: np.ndarray      # (n, heads, T, T) attention weights
  gram: np.ndarray   # (n, T, T) the tokens' Gram matrices
  x_sq: float        # E[|x_t|^2]


def forward(xs, q, k, v, scale: float) -> Forward:
  """Softmax self-attention of token vectors xs through projections (J, b) each (J: (d_in, heads, d))."""
  Q, K, V = (np.einsum("ntd,dhk->nthk", xs, J) + b for J, b in (q, k, v))
  z = scale * np.einsum("nqhd,nkhd->nhqk", Q, K)
  z -= z.max(-1, keepdims=True)
  P = np.exp(z)
  P /= P.sum(-1, keepdims=True)
  return Forward(xs, Q, K, V, P, np.einsum("nta,nsa->nts", xs, xs), float(np.mean(np.sum(xs * xs, -1))))


def factors(f: Forward, G: np.ndarray, scale: float) -> OwnBackward:
  """E[dQ^2], E[dK^2], E[dV^2] over E[G^2] and the projections' position factors
  E|sum_t x_t (x) d_t|^2 / (T E|x_t|^2 E|d_t|^2) for the output gradient G (n, T, heads, d_v)."""
  from jscale.calculus import attention
  n, T = G.shape[:2]
  dV = np.einsum("nhqk,nqhd->nkhd", f.P, G)
  dP = np.einsum("nqhd,nkhd->nhqk", G, f.V)
  dl = f.P * (dP - np.sum(f.P * dP, -1, keepdims=True))
  dQ = scale * np.einsum("nhqk,nkhd->nqhd", dl, f.K)
  dK = scale * np.einsum("nhqk,nqhd->nkhd", dl, f.Q)
  g_sq = float(np.mean(G * G))
  ds = [d.reshape(n, T, -1) for d in (dQ, dK, dV)]
  sq = [float(np.mean(d * d)) / g_sq for d in ds]
  pf = [attention._gram_position_factor(f.gram, f.x_sq, d) for d in ds]
  return OwnBackward(*sq, *pf)

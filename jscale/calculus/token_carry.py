"""The tokens' own covariance: each value's token-individual part, carried as a low-rank factor with the drawn leaves.

Self-attention's Gaussian model (attention.py) draws each token's own part (its deviation from the example's
shared component) isotropic. The network's are aligned: in models.Transformer they stay in about the span of
the random token embeddings at every depth (participation ratio ~ N D / (N + D) for N = 32 tokens), and the
keys' position factor and the queries' gradient read the pairs' (x_t . x_t')^2, which alignment raises
(docs/calculus.md, "The keys' and queries' own error"). This carries that part's covariance from the input,
where it is the data's own (one-hot tokens: exact through the token embedding), through the network's mean
Jacobian at the leaves as drawn, as draw_mean.py carries the mean:

- the input: its deviations from the per-position batch mean, pooled over positions, as `R` factor rows
  `F_r` (top eigenvectors times sqrt(eigenvalue) of their covariance): the covariance of a token's own part is
  `sum_r F_r^T F_r`, the same at every position;
- an equation linear in its activation operands: `F -> f(m + F) - f(m)` (exact for affine maps), bound on a
  batch of rows like draw_mean.linear_mean;
- an elementwise activation: its mean slope at the draw's offsets, `E[phi'(m + s z)] F` (the linear part; what
  the nonlinearity adds beyond it is left to the isotropic remainder the attention model fills in);
- a LayerNorm / RMSNorm: centred (LayerNorm) and divided by the rule's `sqrt(var + eps)`, times the scale;
- attention: zero (uniform weights give every query the same average of the values; what the weights' spread
  makes token-specific is left to the isotropic remainder).
With POINTS (off: judged and not adopted, issue 21's tenth session), one-hot inputs are carried as the batch's
token points and an activation maps each through itself smoothed over the rest of its input
(`activation_points`) instead of its mean slope. Nothing measured inside the network enters. Carried only where
a self-attention block is recognised, so that every other network's prediction is unchanged.
"""
from __future__ import annotations

import math

import numpy as np

from jscale.calculus import draw_mean

MAX_ROWS = 64   # the factor's rank at most (the one-hot input of models.Transformer has vocab - 1 = 31)
# one-hot inputs carried as token points, mapped through activations (issue 21, tenth session): off, judged on
# draws 2724-2739 and not adopted (docs/calculus.md, "The token points through the activations")
POINTS = False
# the batch's own examples carried too (pred.tok_ex: each example's deviation from the batch mean, through the
# same linear maps, and the attention's uniform average of its values), for attention_own.DIRECT (issue 21,
# sixteenth session: judged with it on draws 2872-2887 and adopted)
EXAMPLES = True
# a residual add's forward with the cross term of the two summands' carried example deviations (`cross_examples`;
# issue 21, eighteenth session, second part): False, "sq" (E[y^2] only) or True (r, rp, rc rescaled too)
ADD_CROSS = False
SMOOTH_ORDER = 32   # Gauss-Hermite nodes of the smoothing over the rest of an activation's input


def input_factor(x: np.ndarray, points: bool | None = None) -> np.ndarray | None:
  """(R, T, F) factor rows of the input's token-individual covariance, x: (batch, T, F), or None without tokens.

  With `points` (default POINTS), where the batch holds at most MAX_ROWS distinct token vectors (one-hot
  tokens), the rows are those tokens themselves: sqrt(w_v) (u_v - sum_v' w_v' u_v'), w_v the token's share of
  the batch's B T tokens, so that an activation maps each token's point through its nonlinearity
  (`activation_points`; `token_weights` recovers w). Otherwise the top eigenvectors of the per-position
  deviations' covariance, times sqrt(eigenvalue)."""
  if x.ndim != 3 or x.shape[0] < 2 or x.shape[1] < 2:
    return None
  B, T, F = x.shape
  if POINTS if points is None else points:
    u, counts = np.unique(np.asarray(x, np.float64).reshape(B * T, F), axis=0, return_counts=True)
    if 2 <= len(u) <= min(MAX_ROWS, F + 1):
      w = counts / counts.sum()
      rows = np.sqrt(w)[:, None] * (u - w @ u)                    # (V, F)
      return np.broadcast_to(rows[:, None, :], (len(u), T, F)).copy()
  d = (x - x.mean(axis=0, keepdims=True)).reshape(B * T, F)
  lam, U = np.linalg.eigh(d.T @ d / (B * T))
  keep = np.argsort(lam)[::-1][:MAX_ROWS]
  keep = keep[lam[keep] > 1e-9 * max(float(lam.max()), 1e-300)]
  rows = (U[:, keep] * np.sqrt(lam[keep])).T                     # (R, F)
  return np.broadcast_to(rows[:, None, :], (len(keep), T, F)).copy()


def input_examples(x: np.ndarray) -> np.ndarray | None:
  """(B, T, F) the input examples' deviations from the per-position batch mean (pred.tok_ex's rows)."""
  if x.ndim != 3 or x.shape[0] < 2:
    return None
  x = np.asarray(x, np.float64)
  return x - x.mean(axis=0, keepdims=True)


def token_weights(rows: np.ndarray) -> np.ndarray | None:
  """The tokens' shares w (V,) where the input's factor rows are token points sqrt(w_v) p_v centred with
  weights w (input_factor), else None: sum_v sqrt(w_v) rows_v = 0, so sqrt(w) is the rows' one left null
  vector (unit length: sum w = 1). Eigenvector rows are orthogonal and have none."""
  M = np.asarray(rows, np.float64)[:, 0].reshape(len(rows), -1)
  if len(M) < 2 or len(M) > M.shape[1] + 1:
    return None
  U, s, _ = np.linalg.svd(M, full_matrices=True)
  s = np.concatenate([s, np.zeros(len(M) - len(s))])
  if not (s[-1] <= 1e-9 * s[0] and s[-2] > 1e-6 * s[0]):
    return None
  u = U[:, -1] * np.sign(U[:, -1].sum())
  return u * u if np.all(u > 0) else None


def linear(pred, e, B: int, tok: dict | None = None):
  """The factor rows of e's outputs when e is linear in its activation operands (draw_mean.linear_mean's
  cases) and each of them has rows, else None. `tok`: the rows' dict (pred.tok, or pred.tok_ex)."""
  tok = pred.tok if tok is None else tok
  acts = draw_mean.linear_acts(pred, e)
  if acts is None or any(a not in tok for a in acts):
    return None
  R = len(tok[acts[0]])
  if any(len(tok[a]) != R for a in acts) or B < 2:
    return None
  outs_rows = None
  for lo in range(0, R, B - 1):
    n = min(B - 1, R - lo)

    def rows_batch(a, lo=lo, n=n):
      # row 0 the mean, rows 1..n the mean plus one factor row each, the rest the mean
      m = np.asarray(pred.mean[a], np.float64)
      batch = np.broadcast_to(m, (B,) + m.shape).copy()
      batch[1:n + 1] += tok[a][lo:lo + n]
      return np.asarray(batch, pred.g.avals[a].dtype).reshape(pred.g.avals[a].shape)   # host: no compile

    outs = draw_mean.bind_at(pred, e, acts, rows_batch)
    if outs is None:
      return None
    got = []
    for o in outs:
      o = np.asarray(o, np.float64)
      if not np.ndim(o) or np.shape(o)[0] != B:
        return None
      got.append(o[1:n + 1] - o[:1])
    outs_rows = got if outs_rows is None else [np.concatenate([p, q]) for p, q in zip(outs_rows, got)]
  return outs_rows


def block(pred, b, tok: dict | None = None):
  """The factor rows of a block's output (blocks.py), from its input's; None where unknown. With `tok` =
  pred.tok_ex (the batch's own examples, EXAMPLES), attention averages each example's value rows with the
  uniform weights (`examples_attention`) instead of giving zero."""
  info = b.info
  ex = tok is not None and tok is not pred.tok
  tok = pred.tok if tok is None else tok
  if b.kind == "activation":
    F = tok.get(info["base"])
    at = draw_mean.activation_at_mean(pred, info)
    if F is None or at is None:
      return None
    w = token_weights(pred.tok[pred.g.x_id]) if POINTS and not ex else None
    if w is None or len(w) != len(F):
      from jscale.calculus import draw_gradient
      ex_in = draw_mean.examples_at(pred, info, at[1]) if draw_gradient.EXAMPLE_SLOPE else None
      return F * draw_gradient.activation_slope(*at, ex=ex_in)[None]
    return activation_points(*at, F, w)
  if b.kind in ("layer_norm", "rms_norm"):
    return draw_mean.normalised_rows(pred, b, tok.get(info["x"]))
  if b.kind == "attention" and ex:
    return examples_attention(pred, b, tok)
  if b.kind == "attention":
    m = pred.mean.get(info["out"])
    return None if m is None else np.zeros((len(next(iter(pred.tok.values()))),) + np.shape(m))
  return None


def examples_attention(pred, b, tok: dict):
  """The attention product's output rows for example rows of the values (B, ...): the uniform weights over the
  keys times each example's values (linear in them; draw_mean.uniform_attention, the equations the mean goes
  through). What an example's tokens put into every token of it at the next layers (its token average through
  W_v), which the factor rows' covariance cannot hold. None under a mask."""
  rows = tok.get(b.info["v"])
  if rows is None or b.info["mask"] is not None or np.shape(rows) != pred.g.avals[b.info["v"]].shape:
    return None
  return draw_mean.uniform_attention(pred, b, rows)


def activation_points(phi, m: np.ndarray, sq: float, F: np.ndarray, w: np.ndarray) -> np.ndarray:
  """An activation's output rows from its input's token points: token v's own part of the output is
  E_r[phi(m + p_v + r)] less its w-weighted mean over the tokens, r ~ N(0, s_r^2) per entry the rest of the
  input (the example's shared part and what attention mixed in, independent of the token), s_r^2 = sq -
  mean(m^2) - the points' own mean square. For small p_v this is E[phi'(m + s_r z)] p_v; beyond, the
  curvature's token-specific part, which the mean slope alone leaves out."""
  sw = np.sqrt(w).reshape((-1,) + (1,) * (F.ndim - 1))
  P = F / sw
  own = float(np.mean(np.sum(F * F, axis=0)))
  s_r = math.sqrt(max(sq - float(np.mean(m * m)) - own, 0.0))
  from jscale.calculus.activation_maps import hermite, values
  z, wz = hermite(SMOOTH_ORDER)
  y = (m[None] + P).reshape(-1, 1) + s_r * z.reshape(1, -1)
  g = values(phi, y.reshape(-1)).reshape(y.shape) @ wz
  g = g.reshape(P.shape)
  return sw * (g - np.tensordot(w, g, axes=1)[None])


def covariance_factor(F: np.ndarray, d_in: int) -> np.ndarray | None:
  """(r, d_in) rows L with L^T L the token-individual covariance per position (pooled over positions) of a
  value whose factor rows are F (R, ..., d_in): the attention model's draws take x_own = z L, z ~ N(0, I_r)."""
  if F is None or F.shape[-1] != d_in:
    return None
  M = F.reshape(-1, d_in) / math.sqrt(max(F[0].size // d_in, 1))
  _, s, Vt = np.linalg.svd(M, full_matrices=False)
  keep = s > 1e-9 * max(float(s.max()), 1e-300) if s.size else s > 0
  return (s[keep, None] * Vt[keep]) if np.any(keep) else None


def cross_examples(sig, ex_a: np.ndarray | None, ex_b: np.ndarray | None, sign: float = 1.0):
  """The sum (sign -1: difference) of two values, `sig` already conditioned on the draw's mean, with the cross term
  of the two values' carried example deviations: one draw's branch maps each example's stream deviation d_a to
  its own d_b (a residual add), and their dot product, which the rules drop as zero over weight draws, is this
  draw's (2 d_a . d_b in E[y^2]; the pairs of positions t != t' in rp). The rests' cross term stays 0."""
  if (ex_a is None or ex_b is None or sig.why or sig.sq is None or not sig.sq > 0 or sig.rp is None
      or np.shape(ex_a) != np.shape(ex_b) or np.ndim(ex_a) < 3
      or not (np.all(np.isfinite(ex_a)) and np.all(np.isfinite(ex_b)))):
    return sig
  B, T = np.shape(ex_a)[:2]
  a = np.asarray(ex_a, np.float64).reshape(B, T, -1)
  b = np.asarray(ex_b, np.float64).reshape(B, T, -1)
  same = float(np.mean(a * b))
  pair = 0.0
  if T > 1:
    pair = float((np.sum(a.sum(1) * b.sum(1)) - np.sum(a * b)) / (B * T * (T - 1) * a.shape[-1]))
  sq = sig.sq + 2 * sign * same
  if not sq > 0:
    return sig
  if ADD_CROSS == "sq":
    return sig._replace(sq=sq)
  f = sig.sq / sq
  out = sig._replace(sq=sq, r=sig.r * f, rp=min(max((sig.sq * sig.rp + 2 * sign * pair) / sq, -1.0), 1.0))
  return out._replace(rc=sig.rc * f) if sig.rc is not None else out

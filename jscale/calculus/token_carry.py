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
Nothing measured inside the network enters. Carried only where a self-attention block is recognised, so that
every other network's prediction is unchanged.
"""
from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from jscale.calculus import draw_mean
from jscale.calculus.tracing import Lit

MAX_ROWS = 64   # the factor's rank at most (the one-hot input of models.Transformer has vocab - 1 = 31)


def input_factor(x: np.ndarray) -> np.ndarray | None:
  """(R, T, F) factor rows of the input's token-individual covariance, x: (batch, T, F), or None without tokens."""
  if x.ndim != 3 or x.shape[0] < 2 or x.shape[1] < 2:
    return None
  B, T, F = x.shape
  d = (x - x.mean(axis=0, keepdims=True)).reshape(B * T, F)
  lam, U = np.linalg.eigh(d.T @ d / (B * T))
  keep = np.argsort(lam)[::-1][:MAX_ROWS]
  keep = keep[lam[keep] > 1e-9 * max(float(lam.max()), 1e-300)]
  rows = (U[:, keep] * np.sqrt(lam[keep])).T                     # (R, F)
  return np.broadcast_to(rows[:, None, :], (len(keep), T, F)).copy()


def linear(pred, e, B: int):
  """The factor rows of e's outputs when e is linear in its activation operands (draw_mean.linear_mean's
  cases) and each of them has rows, else None."""
  if e.name not in draw_mean.LINEAR:
    return None
  acts = [a for a in e.ins if not isinstance(a, Lit) and pred.tag(a).kind == "act"]
  if not acts or any(a not in pred.mean or a not in pred.tok for a in acts):
    return None
  if e.name in ("mul", "div", "dot_general", "conv_general_dilated") and len(acts) != 1:
    return None
  if e.name == "div" and e.ins[0] not in acts:
    return None
  R = len(pred.tok[acts[0]])
  if any(len(pred.tok[a]) != R for a in acts) or B < 2:
    return None
  outs_rows = None
  for lo in range(0, R, B - 1):
    n = min(B - 1, R - lo)
    vals = []
    for a in e.ins:
      if isinstance(a, Lit):
        vals.append(a.val)
      elif a in acts:
        # row 0 the mean, rows 1..n the mean plus one factor row each, the rest the mean
        m = np.asarray(pred.mean[a], np.float64)
        batch = np.broadcast_to(m, (B,) + m.shape).copy()
        batch[1:n + 1] += pred.tok[a][lo:lo + n]
        vals.append(jnp.asarray(batch, pred.g.avals[a].dtype).reshape(pred.g.avals[a].shape))
      else:
        v = pred.pvals.get(a, pred.const(a))
        if v is None:
          return None
        vals.append(v)
    try:
      outs = draw_mean.bind_eqn(e, vals)
    except Exception:  # noqa: BLE001 - not re-evaluable here: the factor stays unknown
      return None
    got = []
    for o in outs:
      o = np.asarray(o, np.float64)
      if not np.ndim(o) or np.shape(o)[0] != B:
        return None
      got.append(o[1:n + 1] - o[:1])
    outs_rows = got if outs_rows is None else [np.concatenate([p, q]) for p, q in zip(outs_rows, got)]
  return outs_rows


def block(pred, b):
  """The factor rows of a block's output (blocks.py), from its input's; None where unknown."""
  info = b.info
  if b.kind == "activation":
    F = pred.tok.get(info["base"])
    at = draw_mean.activation_at_mean(pred, info)
    if F is None or at is None:
      return None
    from jscale.calculus.draw_gradient import activation_slope
    return F * activation_slope(*at)[None]
  if b.kind in ("layer_norm", "rms_norm"):
    return draw_mean.normalised_rows(pred, b, pred.tok.get(info["x"]))
  if b.kind == "attention":
    m = pred.mean.get(info["out"])
    return None if m is None else np.zeros((len(next(iter(pred.tok.values()))),) + np.shape(m))
  return None


def covariance_factor(F: np.ndarray, d_in: int) -> np.ndarray | None:
  """(r, d_in) rows L with L^T L the token-individual covariance per position (pooled over positions) of a
  value whose factor rows are F (R, ..., d_in): the attention model's draws take x_own = z L, z ~ N(0, I_r)."""
  if F is None or F.shape[-1] != d_in:
    return None
  M = F.reshape(-1, d_in) / math.sqrt(max(F[0].size // d_in, 1))
  _, s, Vt = np.linalg.svd(M, full_matrices=False)
  keep = s > 1e-9 * max(float(s.max()), 1e-300) if s.size else s > 0
  return (s[keep, None] * Vt[keep]) if np.any(keep) else None

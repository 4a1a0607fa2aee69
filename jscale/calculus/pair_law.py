"""The minibatch cross term from the class-pair law (docs/calculus.md, "Prescription"; beyond the paper).

The minibatch rule E[dW^2]_batch = rho E[x^2] E[dy^2] (1/B + (1 - 1/B) r_x r_dy) takes the mean input and
output-gradient correlations over all example pairs and multiplies them. When examples come in groups
(classes), two examples of the same group have both more correlated inputs and more correlated gradients, so
the mean of the product exceeds the product of the means (cross-entropy on digits: the predicted G_batch was
1.3-4x low). The pair law splits the pairs b != b' into "same group" and "different group": for each type t
with share w_t of the pairs it takes the input's correlation r_0,t (measured on the batch's inputs) and the
loss gradient's correlation at the outputs r_out,t (measured, like inspect's overall one), runs the rules'
propagation once per type, and uses sum_t w_t r_x,l,t r_dy,l,t as layer l's cross term.
"""
from __future__ import annotations

import numpy as np

TYPES = ("same", "different")


def group_pair_corr(v, groups) -> dict:
  """Per pair type ("same", "different"): (share of the pairs b != b', uncentred correlation
  sum_pairs <v_b, v_b'> / (n_pairs E_b|v_b|^2)) of v: (batch, ...) with integer `groups` (batch,)."""
  f = np.asarray(v, np.float64).reshape(v.shape[0], -1)
  g = np.asarray(groups).reshape(-1)
  if g.shape[0] != f.shape[0]:
    raise ValueError(f"groups must have one entry per example ({f.shape[0]}), got {g.shape[0]}")
  B = f.shape[0]
  norm = float(np.mean(np.sum(f * f, 1)))
  diag = np.sum(f * f, 1)
  same_sum, same_n = 0.0, 0
  for c in np.unique(g):
    fc = f[g == c]
    s = fc.sum(0)
    same_sum += float(s @ s - diag[g == c].sum())
    same_n += len(fc) * (len(fc) - 1)
  tot = f.sum(0)
  all_sum, all_n = float(tot @ tot - diag.sum()), B * (B - 1)
  diff_sum, diff_n = all_sum - same_sum, all_n - same_n
  corr = lambda s, n: s / (n * norm) if n and norm > 0 else 0.0   # noqa: E731
  return {"same": (same_n / all_n if all_n else 0.0, corr(same_sum, same_n)),
          "different": (diff_n / all_n if all_n else 0.0, corr(diff_sum, diff_n))}


def pair_bins(x, g, groups, n_bins: int = 4) -> list:
  """The pair law as bins: pairs b != b' split by type (same / different group) and, within a type, into
  `n_bins` quantile bins of their input cosine-like correlation <x_b, x_b'> / E|x|^2; per bin (share of the
  pairs, mean input correlation, mean output-gradient correlation <g_b, g_b'> / E|g|^2). x, g: (batch, ...)."""
  f = np.asarray(x, np.float64).reshape(x.shape[0], -1)
  h = np.asarray(g, np.float64).reshape(g.shape[0], -1)
  grp = np.asarray(groups).reshape(-1)
  B = f.shape[0]
  if grp.shape[0] != B or h.shape[0] != B:
    raise ValueError(f"groups and the output gradient must have one entry per example ({B})")
  nx, ng = float(np.mean(np.sum(f * f, 1))), float(np.mean(np.sum(h * h, 1)))
  iu = np.triu_indices(B, 1)
  rx = (f @ f.T)[iu] / (nx if nx > 0 else 1.0)
  rg = (h @ h.T)[iu] / (ng if ng > 0 else 1.0)
  same = grp[iu[0]] == grp[iu[1]]
  out = []
  for m in (same, ~same):
    if not m.any():
      continue
    order = np.argsort(rx[m])
    for idx in np.array_split(order, min(n_bins, order.size)):
      out.append((idx.size / rx.size, float(rx[m][idx].mean()), float(rg[m][idx].mean())))
  return out


def cross_terms(run_types) -> dict:
  """sum_t w_t r_x,t r_dy,t per leaf use. `run_types`: {type: (w_t, Propagated)} from a propagation per pair
  type; a use is keyed by (leaf, in_id, out_id) and has no entry where a type lacks its correlations."""
  out: dict = {}
  for t, (w, prop) in run_types.items():
    for u in prop.uses:
      k = (u.leaf, u.in_id, u.out_id)
      if u.g is None or u.g.why or u.x_sig.why or k in out and out[k] is None:
        out[k] = None
        continue
      out[k] = out.get(k, 0.0) + w * u.x_sig.r * u.g.r
  return out

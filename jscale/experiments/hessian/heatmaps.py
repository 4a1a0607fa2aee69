"""Figure 2, one driver for every family: per init scheme, the exact (`jax.hessian`) block heat map of the
family's fixed network, its diagonal's evenness (max / min) and the predicted diagonal beside it.

Every scheme of a call sees the same keys (`HeatmapProblem.draw_keys`), so the schemes differ only in the
weights' scale. The prediction takes the loss statistics of the draws' output Hessians (`draws_loss_stats`).
"""
from __future__ import annotations

import numpy as np

from jscale import checks
from jscale.experiments.hessian.family import Family
from jscale.experiments.hessian.settings import Figure2Settings
from jscale.initializers import SCHEMES
from jscale.theory import hessian as hess
from jscale.theory import predict


def draws_loss_stats(loss: str, q, out_hessians) -> predict.LossStats:
  """`LossStats` of draws of per-example output Hessians (draws, B, n_L, n_L). A quadratic loss's Hessian is Q
  for every example. For cross-entropy the pair statistics are taken within each draw (examples of one
  minibatch share the network, hence a common logit offset) and averaged over draws; at B = 1 the draws are
  pooled."""
  if loss == "quadratic":
    return predict.constant_loss_stats(q)
  h = np.asarray(out_hessians, np.float64)
  if h.shape[1] == 1:
    return predict.loss_stats(h[:, 0])
  return predict.LossStats(*np.array([predict.loss_stats(hd) for hd in h]).mean(axis=0))


def heatmaps(family: Family, net=None, *, schemes=tuple(SCHEMES), batch: int = 1, draws: int = 8, seed: int = 0,
             loss: str = "quadratic", max_bytes: int = hess.DEFAULT_MAX_BYTES, progress: bool = False) -> dict:
  """Per scheme: the mean over `draws` of the exact (`jax.hessian`, float32) weight-block average squared
  singular value matrix (L x L) of `net` (default: the family's Figure 2 network), its diagonal and max/min,
  the bias diagonal where the family reports it, and the predicted diagonal. Same keys for every scheme.
  Refuses (ValueError with the estimate) before any compute when the Hessian would exceed `max_bytes`."""
  for s in schemes:
    checks.one_of(s, "scheme", SCHEMES)
  checks.positive_int(draws, "heatmaps draws")
  checks.positive_int(batch, "heatmaps batch")
  problem = family.heatmap_problem(family.fig2_net if net is None else net, loss=loss, batch=batch, seed=seed,
                                   max_bytes=max_bytes)
  bar = None
  if progress:
    from tqdm.auto import tqdm
    bar = tqdm(total=len(schemes) * draws, desc=f"{family.name} heat maps B={batch}", dynamic_ncols=True)
  out = {}
  for scheme in schemes:
    measured = []
    for k in problem.draw_keys(draws):
      measured.append(problem.measure(k, scheme))
      if bar is not None:
        bar.update(1)
    pred = problem.predict(scheme, draws_loss_stats(loss, problem.q, [d.out_hessians for d in measured]))
    m = np.mean([d.weights for d in measured], axis=0)
    diag = np.diag(m)
    entry = {"weights": m.tolist()}
    if measured[0].bias_diag is not None:
      entry["bias_diag"] = np.mean([d.bias_diag for d in measured], axis=0).tolist()
    entry.update(diag=diag.tolist(), diag_max_over_min=float(diag.max() / diag.min()),
                 predicted_diag=pred.weight.tolist(),
                 predicted_max_over_min=float(pred.weight.max() / pred.weight.min()))
    out[scheme] = entry
  if bar is not None:
    bar.close()
  return out


def figure2(family: Family, fig2: Figure2Settings, *, seed: int, progress: bool = True) -> dict:
  """{batch size: `heatmaps`}: batch 1 averaged over `fig2.draws` draws, and one draw at `fig2.minibatch`."""
  return {"1": heatmaps(family, batch=1, draws=fig2.draws, seed=seed, progress=progress),
          str(fig2.minibatch): heatmaps(family, batch=fig2.minibatch, draws=1, seed=seed, progress=progress)}

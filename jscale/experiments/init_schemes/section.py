"""The init_schemes experiment's report section: the paper's Section 9 table, measured."""
from __future__ import annotations

import os
from typing import NamedTuple, Sequence

import numpy as np

from jscale.experiments.init_schemes import config
from jscale.report import describe, plots
from jscale.report.document import Figure, Section, Table
from jscale.report.format import fmt
from jscale.report.stats import CI, fmt_ci, mean_ci95, verdict
from jscale.sweeps import Results


class SchemeSummary(NamedTuple):
  schemes: list
  normalised: np.ndarray    # (datasets, schemes): loss / the worst scheme's loss on that data set
  avg: np.ndarray           # (schemes,) mean over data sets
  ci: CI              # 95% interval of that mean over data sets
  worst_count: np.ndarray   # (schemes,) data sets on which the scheme is worst (ties count for all tied)
  best_count: np.ndarray    # (schemes,)


def init_scheme_summary(loss_DxS, schemes: Sequence[str]) -> SchemeSummary:
  """The paper's Section 9 summary: divide each data set's losses by its worst scheme's, average over data
  sets, count worst and best. `loss_DxS` is the median-over-seeds loss at each scheme's best lr."""
  l = np.asarray(loss_DxS, np.float64)
  if l.ndim != 2 or l.shape[1] != len(schemes):
    raise ValueError(f"loss must be (datasets, {len(schemes)} schemes), got {l.shape}")
  if not np.all(np.isfinite(l)) or np.any(l <= 0):
    raise ValueError("losses must be finite and positive to normalise by the worst")
  worst = l.max(1, keepdims=True)
  norm = l / worst
  return SchemeSummary(list(schemes), norm, norm.mean(0), mean_ci95(norm, 0),
                       (l == worst).sum(0), (l == l.min(1, keepdims=True)).sum(0))


def build(r: Results) -> Section:
  """The paper's Section 9. Engine layout: axes dataset, init (the paper's names: arithmetic, fan_in,
  fan_out, geometric), lr, seed, epoch; metric train_loss (the last epoch's mean minibatch loss is the
  "training loss after the epoch budget"). Hand-written layout: axis scheme and metric final_loss
  [dataset, scheme, lr, seed]. Median over seeds, best lr per (dataset, scheme) by that median (a
  diverged run counts as +inf), normalised by each data set's worst scheme."""
  scheme_axis = "init" if "init" in r.axes else "scheme"
  dsets = [os.path.basename(str(d).partition("libsvm:")[2]) if str(d).startswith("libsvm:") else str(d)
           for d in r.axis("dataset")]
  schemes, lrs = [str(x) for x in r.axis(scheme_axis)], [float(x) for x in r.axis("lr")]
  if r.has("final_loss"):
    loss = r.metric("final_loss", "dataset", scheme_axis, "lr", "seed")
  else:
    loss = r.metric("train_loss", "dataset", scheme_axis, "lr", "seed", "epoch")[..., -1]
  med = np.median(np.where(np.isfinite(loss), loss, np.inf), axis=-1)   # diverged runs count as +inf
  best_lr_idx = med.argmin(-1)
  best = np.take_along_axis(med, best_lr_idx[..., None], -1)[..., 0]
  s = Section("init_schemes: arithmetic, fan-in, fan-out, geometric (the paper's Section 9)", [describe.grid_text(r)])
  s.parts.append(f"**The data sets differ from the paper's.** The paper averaged over {config.PAPER_N_DATASETS} LIBSVM "
                 f"multi-class sets; this run used {len(dsets)}: {', '.join(dsets)} (see the data line above). "
                 "Pass the paper's LIBSVM files with `scripts/sweep.py --libsvm PATH` to run its table. The "
                 "paper does not state its optimizer or batch size; the settings above are this run's.")
  if r.is_sweep:
    narrow = sorted({os.path.basename(str(g["data"][0]).partition("libsvm:")[2]) or str(g["data"][0])
                     for g in r.config["groups"] if g["spec"].get("input_layernorm") and g["spec"]["widths"][0] <= 2})
    if narrow:
      s.parts.append(f"Flag: {', '.join(narrow)} has 2 input features, and LayerNorm over 2 features maps every "
                     "input to +-(1, -1): the net sees one bit (sign(x1 - x2)), so every init ends near the same "
                     "loss there. It is kept in the averages below (the protocol normalises every data set).")
  rows = [[d] + [f"{fmt(best[i, k])} (lr {lrs[best_lr_idx[i, k]]:g})" for k in range(len(schemes))]
          for i, d in enumerate(dsets)]
  s.parts.append(Table(["data set"] + schemes, rows, "Median training loss over seeds at each scheme's best "
                                                     "learning rate"))
  edge = [(dsets[i], schemes[k]) for i in range(len(dsets)) for k in range(len(schemes))
          if len(lrs) > 1 and best_lr_idx[i, k] in (0, len(lrs) - 1) and np.isfinite(best[i, k])]
  if edge:
    s.parts.append(f"The best lr is at an end of the lr grid ({lrs[0]:g} .. {lrs[-1]:g}) for "
                   f"{len(edge)} of {best.size} (data set, scheme) pairs ({', '.join(f'{d}/{k}' for d, k in edge[:8])}"
                   f"{', ...' if len(edge) > 8 else ''}): a wider grid could lower those losses.")
  if not np.all(np.isfinite(best)):
    s.parts.append("Some (data set, scheme) pairs diverged at every learning rate; they are left out of "
                   "the normalised summary: " + ", ".join(f"{dsets[i]}/{schemes[k]}" for i, k in
                                                         zip(*np.nonzero(~np.isfinite(best)))))
  keep = np.all(np.isfinite(best), axis=1)
  summ = init_scheme_summary(best[keep], schemes)
  n = int(keep.sum())
  rows = []
  for k, sch in enumerate(schemes):
    src = config.PAPER_INIT_TABLE.get(sch)
    rows.append([sch, fmt_ci(summ.ci, k, 3), f"{summ.worst_count[k]} / {n}", f"{summ.best_count[k]} / {n}",
                 fmt(src.avg_normalised_loss, 2) if src else "-",
                 f"{src.worst_count} / {config.PAPER_N_DATASETS}" if src else "-",
                 f"{src.best_count} / {config.PAPER_N_DATASETS}" if src else "-"])
  s.parts.append(Table(["scheme", "avg normalised loss (mean [95% CI over data sets])", "worst on", "best on",
                        "paper avg", "paper worst on", "paper best on"], rows,
                       "Normalised by each data set's worst scheme, beside the paper's table"))
  lines = [f"Measured on {n} data sets ({', '.join(str(d) for d, k in zip(dsets, keep) if k)}); the paper "
           f"used {config.PAPER_N_DATASETS} LIBSVM sets, so the averages compare protocols, not the same data."]
  for k, sch in enumerate(schemes):
    if sch in config.PAPER_INIT_TABLE and n >= 2:
      lines.append("- " + verdict(summ.normalised[:, k], config.PAPER_INIT_TABLE[sch].avg_normalised_loss,
                                  what=f"{sch} average normalised loss", digits=3).replace("seeds", "data sets"))
  order = [schemes[k] for k in np.argsort(summ.avg)]
  paper_order = sorted(config.PAPER_INIT_TABLE, key=lambda k: config.PAPER_INIT_TABLE[k].avg_normalised_loss)
  lines.append(f"Ranking by average normalised loss (best first): measured {', '.join(order)}; paper "
               f"{', '.join(paper_order)}.")
  s.parts.append("\n".join(lines))
  p = plots.scheme_bars(os.path.join(r.path, "init_schemes.png"), schemes, summ.avg,
                        errors=None if summ.ci.n < 2 else summ.ci.half, ylabel="average normalised loss",
                        title="Init schemes: loss / worst scheme's, averaged over data sets",
                        reference={k: v.avg_normalised_loss for k, v in config.PAPER_INIT_TABLE.items()},
                        reference_label=f"paper ({config.PAPER_N_DATASETS} LIBSVM sets)")
  s.parts.append(Figure(p, "Average normalised loss per scheme (error bars: 95% CI over data sets)."))
  return s

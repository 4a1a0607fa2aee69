"""The init_schemes experiment's report section: the paper's Section 9 table, measured."""
from __future__ import annotations

import os
from typing import NamedTuple, Sequence

import numpy as np

from jscale.experiments.sources.paper import PAPER_INIT_TABLE, PAPER_N_DATASETS
from jscale.report import describe, plots
from jscale.report.document import Figure, Headline, Section, Table
from jscale.report.format import fmt
from jscale.report import stats
from jscale.report.stats import CI, fmt_ci
from jscale.sweeps import Results


class SchemeSummary(NamedTuple):
  schemes: list
  normalised: np.ndarray    # (datasets, schemes): loss / the worst scheme's loss on that data set, in (0, 1]
  avg: np.ndarray           # (schemes,) mean over data sets
  ci: CI                    # 95% interval of that mean over data sets (t, cut at [0, 1])
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
  return SchemeSummary(list(schemes), norm, norm.mean(0), stats.mean_ci95(norm, 0, stats.UNIT),
                       (l == worst).sum(0), (l == l.min(1, keepdims=True)).sum(0))


def _short(d) -> str:
  d = str(d)
  return os.path.basename(d.partition("libsvm:")[2]) if d.startswith("libsvm:") else d


def collapsed_datasets(r: Results) -> set:
  """Data sets the input LayerNorm collapses: with 2 features it maps every input to +-(1, -1) (one bit)."""
  return {_short(g.data_name) for g in r.groups if g.input_layernorm and g.widths[0] <= 2}


def _loss(r: Results) -> tuple[np.ndarray, str, str]:
  """(loss [dataset, init, lr, seed], its metric name, a sentence on what it measures)."""
  order = ("dataset", "init", "lr", "seed")
  # A run without the pass still has the metric, all NaN ("not measured"): only finite values count as measured.
  if np.isfinite(r.metric("train_pass_loss")).any():
    return (r.metric("train_pass_loss", *order, "epoch")[..., -1], "train_pass_loss",
            "the training loss after the last epoch: a pass over the whole training split at the end of it "
            "(`train_pass_loss`), as the paper measures it.")
  return (r.metric("train_loss", *order, "epoch")[..., -1], "train_loss",
          "**not the paper's measure**: these results have no `train_pass_loss` (a pass over the training split "
          "at the end of the epoch), so this falls back to `train_loss`, the mean minibatch loss during the "
          "last epoch, taken while the weights still move (it runs above the end-of-epoch loss).")


def build(r: Results) -> Section:
  """The paper's Section 9. Axes dataset, init (the paper's names: arithmetic, fan_in, fan_out, geometric),
  lr, seed, epoch; metric train_pass_loss (the loss over the whole training split at the end of each epoch;
  train_loss, the epoch's mean minibatch loss, where the run did not measure it). Median over seeds, best lr
  per (dataset, scheme) by that median (a diverged run counts as +inf), normalised by each data set's worst
  scheme. Data sets the input LayerNorm collapses to one bit (2 features) are reported apart and left
  out of the averages."""
  dsets = [_short(d) for d in r.axis("dataset")]
  schemes, lrs = [str(x) for x in r.axis("init")], [float(x) for x in r.axis("lr")]
  loss, loss_name, loss_text = _loss(r)
  med = np.median(np.where(np.isfinite(loss), loss, np.inf), axis=-1)   # diverged runs count as +inf
  best_lr_idx = med.argmin(-1)
  best = np.take_along_axis(med, best_lr_idx[..., None], -1)[..., 0]
  n_seeds = loss.shape[-1]
  s = Section("init_schemes: arithmetic, fan-in, fan-out, geometric (the paper's Section 9)", [describe.grid_text(r)])
  s.parts.append(f"**The data sets differ from the paper's.** The paper averaged over {PAPER_N_DATASETS} LIBSVM "
                 f"multi-class sets; this run used {len(dsets)}: {', '.join(dsets)} (see the data line above). "
                 "Pass the paper's LIBSVM files with `scripts/sweep.py --libsvm PATH` to run its table. The "
                 "paper does not state its optimizer or batch size; the settings above are this run's.")
  s.parts.append("Loss per run: " + loss_text)
  narrow = collapsed_datasets(r)
  apart = np.array([d in narrow for d in dsets])
  if apart.any():
    s.parts.append(f"**Reported apart, left out of the averages: {', '.join(d for d in dsets if d in narrow)}.** It "
                   "has 2 input features, and the input LayerNorm over 2 features maps every input to +-(1, -1): "
                   "the net sees one bit (sign(x1 - x2)), so what it measures is that bit's loss, not how an init "
                   "trains on the data; its row is shown below the averages.")
  rows = [[d + (" (apart)" if apart[i] else "")] +
          [f"{fmt(best[i, k])} (lr {lrs[best_lr_idx[i, k]]:g})" for k in range(len(schemes))]
          for i, d in enumerate(dsets)]
  s.parts.append(Table(["data set"] + schemes, rows, f"Median {loss_name} over {n_seeds} seeds at each scheme's "
                                                     "best learning rate"))
  edge = [(dsets[i], schemes[k]) for i in range(len(dsets)) for k in range(len(schemes))
          if len(lrs) > 1 and best_lr_idx[i, k] in (0, len(lrs) - 1) and np.isfinite(best[i, k])]
  if edge:
    s.parts.append(f"The best lr is at an end of the lr grid ({lrs[0]:g} .. {lrs[-1]:g}) for "
                   f"{len(edge)} of {best.size} (data set, scheme) pairs ({', '.join(f'{d}/{k}' for d, k in edge[:8])}"
                   f"{', ...' if len(edge) > 8 else ''}): a wider grid could lower those losses.")
  finite = np.all(np.isfinite(best), axis=1)
  if not finite.all():
    s.parts.append("Some (data set, scheme) pairs diverged at every learning rate; their data sets are left out of "
                   "the normalised summary: " + ", ".join(f"{dsets[i]}/{schemes[k]}" for i, k in
                                                         zip(*np.nonzero(~np.isfinite(best)))))
  keep = finite & ~apart
  if not keep.any():
    s.parts.append("No data set is left for the normalised summary.")
    s.verdicts = []
    return s
  summ = init_scheme_summary(best[keep], schemes)
  n = int(keep.sum())
  kept = [d for d, k in zip(dsets, keep) if k]
  # Like settings only on the paper's own LIBSVM sets; on other data sets the same test is a transfer test.
  kind = stats.REPRODUCTION if all(str(d).startswith("libsvm:") for d in r.axis("dataset")) else stats.TRANSFER
  s.verdicts = [stats.judge(summ.normalised[:, k], PAPER_INIT_TABLE[sch].avg_normalised_loss,
                            cell={"init": sch}, metric=f"avg_normalised_{loss_name}", bounds=stats.UNIT,
                            n_future=PAPER_N_DATASETS, kind=kind)
                for k, sch in enumerate(schemes) if sch in PAPER_INIT_TABLE]
  s.headline = Headline(
      what=f"paper Sec. 9 protocol on {n} data sets ({', '.join(kept)}), {n_seeds} seeds",
      measured="average normalised training loss: " + ", ".join(f"{sch} {fmt(summ.avg[k], 3)}"
                                                                 for k, sch in enumerate(schemes)),
      source=f"{PAPER_N_DATASETS} LIBSVM sets: " + " / ".join(f"{PAPER_INIT_TABLE[k].avg_normalised_loss:.2f}"
                                                              for k in schemes if k in PAPER_INIT_TABLE),
      numbers={f"{sch}.avg_normalised_loss": float(summ.avg[k]) for k, sch in enumerate(schemes)})
  by_scheme = {v.cell["init"]: v for v in s.verdicts}
  rows = []
  for k, sch in enumerate(schemes):
    src, v = PAPER_INIT_TABLE.get(sch), by_scheme.get(sch)
    rows.append([sch, fmt_ci(summ.ci, k, 3), stats.fmt_interval(v.single_run_95, 3) if v else "-",
                 f"{summ.worst_count[k]} / {n}", f"{summ.best_count[k]} / {n}",
                 fmt(src.avg_normalised_loss, 2) if src else "-",
                 f"{src.worst_count} / {PAPER_N_DATASETS}" if src else "-",
                 f"{src.best_count} / {PAPER_N_DATASETS}" if src else "-", v.verdict if v else "-"])
  s.parts.append(Table(["scheme", f"avg normalised loss, mean [95% CI] over {n} data sets",
                        f"one {PAPER_N_DATASETS}-set average: 95% interval", "worst on", "best on",
                        "paper avg", "paper worst on", "paper best on", "verdict"], rows,
                       "Normalised by each data set's worst scheme, averaged over data sets, beside the paper's table"))
  apart_rows = [[dsets[i]] + [fmt(x, 3) for x in best[i] / best[i].max()] for i in np.nonzero(apart & finite)[0]]
  if apart_rows:
    s.parts.append(Table(["data set (apart)"] + schemes, apart_rows,
                         "Set apart (input LayerNorm collapses it to one bit): its normalised losses, not averaged"))
  lines = [
      f"Averaged over {n} data sets ({', '.join(kept)}); the paper used {PAPER_N_DATASETS} LIBSVM sets, so "
      "the averages compare protocols, not the same data. What varies: the data set. Each data set "
      f"contributes one number (the median over {n_seeds} seeds at the scheme's best lr, divided by the worst "
      f"scheme's), so the 95% CI ({stats.BOUNDED_CI_METHOD.replace('over seeds', 'over data sets')}, [0, 1]) "
      "says where the average over data sets like these lies.",
      f"Verdicts: the paper's number is one run of its protocol -- a single average over its "
      f"{PAPER_N_DATASETS} data sets -- so it is compared with where one such average lands: the 95% "
      f"normal-theory prediction interval for the mean of {PAPER_N_DATASETS} new data sets, mean +- "
      f"t_{{0.975, n-1}} s sqrt(1/n + 1/{PAPER_N_DATASETS}) over this run's n data sets, cut at [0, 1]. "
      f"Here a replicate is a data set, so `n_seeds` in `init_schemes/verdicts.json` counts data sets, and below "
      f"{stats.MIN_SEEDS} of them the verdict is \"too few seeds\" (too few data sets)."]
  lines.append("")
  for v in s.verdicts:
    lines.append("- " + stats.verdict_text(v, what=f"{v.cell['init']} average normalised loss", digits=3,
                                           source_name="the paper's", unit="data sets",
                                           single=f"one {PAPER_N_DATASETS}-set average"))
  order = [schemes[k] for k in np.argsort(summ.avg)]
  paper_order = sorted(PAPER_INIT_TABLE, key=lambda k: PAPER_INIT_TABLE[k].avg_normalised_loss)
  lines.append(f"\nRanking by average normalised loss (best first): measured {', '.join(order)}; paper "
               f"{', '.join(paper_order)}.")
  s.parts.append("\n".join(lines))
  err = None if summ.ci.n < 2 else np.stack([summ.avg - summ.ci.lo, summ.ci.hi - summ.avg])
  p = plots.scheme_bars(os.path.join(r.path, "init_schemes.png"), schemes, summ.avg,
                        errors=err, ylabel="average normalised loss",
                        title="Init schemes: loss / worst scheme's, averaged over data sets",
                        reference={k: v.avg_normalised_loss for k, v in PAPER_INIT_TABLE.items()},
                        reference_label=f"paper ({PAPER_N_DATASETS} LIBSVM sets)",
                        measured_label=f"measured, mean over n={n} data sets (95% CI)")
  left_out = f"; {', '.join(sorted(narrow))} left out, see above." if apart.any() else "."
  s.parts.append(Figure(p, f"Average normalised loss per scheme over {n} data sets (error bars: 95% CI over data "
                           "sets, cut at [0, 1])" + left_out))
  return s

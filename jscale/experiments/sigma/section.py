"""The sigma experiment's report section: curves per sigma, Table 1 beside the tutorial, accuracy vs sigma."""
from __future__ import annotations

import math
import os

import numpy as np

from jscale.experiments.sources.tutorial import TUTORIAL_TEST_ACC
from jscale.report import describe, plots, sigma_markers, stats
from jscale.report.document import Figure, Headline, Section, Table
from jscale.report.format import fmt, label
from jscale.report.stats import ci_text
from jscale.sweeps import Results

# The curves drawn per sigma: (metric, y label, log scale).
CURVES = (("train_loss", "training loss (cross-entropy, nats)", True),
          ("train_acc", "training accuracy", False),
          ("grad_norm", "gradient L2 norm (all parameters)", True),
          ("saturation", "fraction of near-zero ReLU outputs", False))


def build(r: Results) -> Section:
  """The tutorial. Axes sigma, seed, epoch, and optionally one more (the engine's batch_size: full batch
  and 32), drawn as side-by-side panels. Curves: train_loss, train_acc, grad_norm, saturation
  [.., sigma, seed, epoch]; test_acc [.., sigma, seed, epoch] (its last epoch). The run's widths place the
  He / Glorot / geometric markers."""
  sig = [float(x) for x in r.axis("sigma")]
  acc_name = "test_acc"
  known = ("sigma", "seed", "epoch", "layer")
  panel = describe.panel_axis(r, acc_name, known)
  pvals = r.axis(panel) if panel else [None]
  plabels = [label(v, panel) if panel else "" for v in pvals]
  s = Section("sigma: weight scale vs convergence (the tutorial, two moons)", [describe.grid_text(r, skip=("epoch",))])
  for i, (m, ylabel, logy) in enumerate(CURVES):
    bounds = None if logy else stats.UNIT   # the linear ones are accuracies and fractions
    v = describe.with_panels(r, m, ("sigma", "seed", "epoch"), describe.panel_axis(r, m, known))
    title = f"Figure {i + 1}: {ylabel} vs epoch, per sigma"
    groups = [{f"sigma={x:g}": v[p, k] for k, x in enumerate(sig)} for p in range(v.shape[0])]
    path = os.path.join(r.path, f"fig{i + 1}_{m}.png")
    if len(groups) > 1:
      path = plots.curve_panels(path, dict(zip(plabels, groups)), ylabel=ylabel, logy=logy,
                                epochs=r.axes.get("epoch"), title=title, bounds=bounds)
    else:
      path = plots.curves(path, groups[0], ylabel=ylabel, logy=logy, epochs=r.axes.get("epoch"), title=title,
                          bounds=bounds)
    what = {"saturation": f" ({m}: share of hidden ReLU outputs with |a| <= "
                          f"{r.settings(0)['saturation_threshold']:g}, averaged over "
                          "the epoch's steps)"}.get(m, "")
    avg = ("geometric mean over the seeds finite at each epoch with the 95% band of the log" if logy else
           "mean over the seeds finite at each epoch with its 95% band cut at [0, 1]")
    avg += "; legends give the n averaged (min-max where seeds diverge along the way)"
    s.parts.append(Figure(path, f"Figure {i + 1}: {ylabel} per epoch{what}, {avg}"
                                + (f"; panels: {panel} = {', '.join(plabels)}." if panel else ".")))
  acc = describe.with_panels(r, acc_name, ("sigma", "seed", "epoch"), panel)[..., -1]   # (panels, sigma, seed)
  src_idx = {k: next((i for i, x in enumerate(sig) if math.isclose(x, key, rel_tol=1e-9)), None)
             for k, key in enumerate(TUTORIAL_TEST_ACC)}
  s.verdicts, rows = [], []
  for t, (ts, tv) in enumerate(TUTORIAL_TEST_ACC.items()):
    k = src_idx[t]
    if k is None:
      continue
    for p, pv in enumerate(pvals):
      cell = {"sigma": ts, **({panel: pv} if panel else {})}
      v = stats.judge(acc[p, k], tv, cell=cell, metric=acc_name, bounds=stats.UNIT)
      s.verdicts.append(v)
      rows.append([f"{ts:g}"] + ([plabels[p]] if panel else []) +
                  [tv, f"{v.n_seeds} / {v.n_seeds + v.n_diverged}", ci_text(acc[p, k], bounds=stats.UNIT),
                   stats.fmt_interval(v.single_run_95), stats.verdict_cell(v)])
  if rows:
    s.parts.append(Table(["sigma"] + ([panel] if panel else []) +
                         ["tutorial (one run)", "seeds (finite / run)", "measured mean [95% CI of the mean]",
                          "one new run: 95% interval", "verdict"], rows,
                         "Table 1: test accuracy after the last epoch per sigma, beside the tutorial's single runs"))
    s.parts.append(
        "Verdicts: the tutorial reports one run per sigma, so its number is compared with where one run of "
        f"this protocol lands -- the {stats.PI_METHOD} -- not with the mean's interval, which shrinks as seeds "
        f"are added. Below {stats.MIN_SEEDS} finite seeds there is no verdict. The mean's interval: "
        f"{stats.BOUNDED_CI_METHOD} ([0, 1]). {describe.data_seed_text(r)}: both intervals inherit that. "
        "Diverged seeds are left out of both intervals "
        "and counted. Written to `sigma/verdicts.json`.")
    s.headline = Headline(
        what=f"tutorial protocol, {acc.shape[-1]} seeds, test accuracy at sigma "
             + " / ".join(f"{x:g}" for x in TUTORIAL_TEST_ACC),
        measured="; ".join((f"{plabels[p]} " if panel else "") + " / ".join(
            fmt(float(np.nanmean(acc[p, src_idx[t]])), 3) if src_idx[t] is not None else "-"
            for t in range(len(TUTORIAL_TEST_ACC))) for p in range(len(pvals))),
        source="one run each: " + " / ".join(f"{v:g}" for v in TUTORIAL_TEST_ACC.values()),
        numbers={f"{(str(plabels[p]) + '.') if panel else ''}sigma={ts:g}.test_acc": float(np.nanmean(acc[p, k]))
                 for p in range(len(pvals)) for t, ts in enumerate(TUTORIAL_TEST_ACC)
                 for k in [src_idx[t]] if k is not None})
  else:
    s.parts.append("The grid has none of the tutorial's sigmas (0.01, 0.1, 0.5, 1): no Table 1 comparison.")
  cols = ([f"measured, {l} (mean [95% CI])" for l in plabels] if panel else
          ["measured test accuracy (mean [95% CI])"])
  extra = [k for k in range(len(sig)) if k not in src_idx.values()]
  if extra:
    s.parts.append(Table(["sigma"] + cols, [[f"{sig[k]:g}"] + [ci_text(acc[p, k], bounds=stats.UNIT)
                                                                 for p in range(len(pvals))]
                                            for k in range(len(sig))],
                         "Test accuracy after the last epoch, every sigma of the grid"))
  widths = r.widths
  if len(sig) > 1 and min(sig) > 0:
    markers = {}
    if widths:
      markers = sigma_markers.rule_markers(list(zip(widths[:-1], widths[1:])))
      s.parts.append("Markers: the one sigma whose end-to-end forward gain equals the rule's (geometric "
                     "mean of the rule's per-layer stds) for widths " + str(list(widths)) + ": " +
                     ", ".join(f"{k} {v:.3g}" for k, v in markers.items()) + ".")
    series = {(l or "measured"): np.where(np.isfinite(acc[p]), acc[p], np.nan) for p, l in enumerate(plabels)}
    path = plots.metric_vs_param(os.path.join(r.path, "final_acc_vs_sigma.png"), sig, series,
                                 xlabel="sigma (weight std, log scale)", ylabel="test accuracy after the last epoch",
                                 title="Final test accuracy vs sigma", markers=markers,
                                 reference=TUTORIAL_TEST_ACC, reference_label="tutorial (one run)",
                                 bounds=stats.UNIT)
    s.parts.append(Figure(path, "Final test accuracy against sigma (mean over finite seeds, 95% CI of the mean "
                                "cut at [0, 1]; series nudged sideways so their bars stay apart); crosses: the "
                                "tutorial's single runs; vertical lines: the sigma each rule picks."))
  return s

"""The hessian experiment's report section: the paper's Figures 1-2 summaries."""
from __future__ import annotations

import os

import numpy as np

from jscale.report.document import Figure, Section, Table
from jscale.report.format import fmt
from jscale.sweeps import Results, store

RECORDS = "fig1_records.json"


def _get(r: Results, name: str, batches) -> list:
  return list(r.metric(name, "batch")) if r.has(name) else [float("nan")] * len(batches)


def _per_setup_table(r: Results) -> Table | None:
  """One row per setup: its draws and the largest relative SE of its exact weight blocks, per batch size."""
  path = os.path.join(r.path, RECORDS)
  if not os.path.isfile(path):
    return None
  records = store.read_json(path)["records"]
  batches = sorted({d["batch"] for d in records})
  rows = []
  for i in range(len(records) // len(batches)):
    by_b = {d["batch"]: d for d in records[i * len(batches):(i + 1) * len(batches)]}
    first = by_b[batches[0]]
    ratio = lambda d: np.median(np.array(d["corrected_w"]) / np.array(d["exact_w"]))
    rows.append([i, "-".join(map(str, first["widths"])), first["scheme"], first["loss"], first["input"],
                 first.get("draws", "")] + [f"{fmt(by_b[b].get('exact_w_rel_se_max', float('nan')))}" for b in batches]
                + [fmt(ratio(by_b[b])) for b in batches])
  return Table(["setup", "widths", "scheme", "loss", "input", "draws"] + [f"max rel SE, B={b}" for b in batches]
               + [f"median r, B={b}" for b in batches], rows,
               "Per setup: draws of (weights, examples) averaged, the largest relative standard error of its exact "
               "weight blocks, and its median predicted / exact (r) over layers")


def build(r: Results) -> Section:
  """Figures 1-2 of the Hessian check. Written by the `hessian` experiment (axis batch; JSON records)."""
  cfg = r.config
  batches = r.axis("batch")
  target = cfg.get("target_rel_se")
  draws_text = (f"at least {cfg['draws']} draws per setup, more (up to {cfg.get('max_draws')}) until every weight "
                f"block's relative standard error is at most {target}" if target else f"{cfg['draws']} draws per setup")
  s = Section("hessian: the calculus's Hessian-block predictions against exact blocks (the paper's Figures 1-2)", [
      f"{cfg['setups']} sampled setups (depth 3-6, widths 8-128, fan-in / fan-out / Xavier / geometric, random "
      f"input and loss), seed {cfg['seed']}; {draws_text}, {cfg.get('examples', '?')} examples per draw. "
      "Exact: the expectation of each diagonal block's average squared singular value, from the Gauss-Newton "
      "identity (equal to `jax.hessian` for ReLU nets, checked in the tests) split into same-example and "
      "two-example terms, with control variates of exactly known mean (`jscale.theory.pairs`). r = predicted / "
      "exact per weight block. 'Noise removed': the exact side's measurement noise deconvolved from the spread "
      "of log r (variance minus the mean squared relative SE; constrained-Bayes quantiles, "
      "`jscale.theory.setups.noise_removed`); the median's 95% CI is a bootstrap over setups. The paper shows "
      "the ratio as a histogram and gives no numeric summary, so there is no source number to print beside these."])
  med, p5, p95 = (_get(r, k, batches) for k in ("median", "p5", "p95"))
  medc, p5c, p95c = (_get(r, k, batches) for k in ("median_corrected", "p5_corrected", "p95_corrected"))
  mnr, p5nr, p95nr = (_get(r, k, batches) for k in ("median_corrected_nr", "p5_corrected_nr", "p95_corrected_nr"))
  lo, hi = _get(r, "median_corrected_ci_lo", batches), _get(r, "median_corrected_ci_hi", batches)
  sd, sdnr = _get(r, "sd_log_corrected", batches), _get(r, "sd_log_corrected_nr", batches)
  rows = [[b, f"{fmt(med[i])} [{fmt(p5[i])}, {fmt(p95[i])}]",
           f"{fmt(medc[i])} (CI {fmt(lo[i])}-{fmt(hi[i])}) [{fmt(p5c[i])}, {fmt(p95c[i])}]",
           f"{fmt(mnr[i])} [{fmt(p5nr[i])}, {fmt(p95nr[i])}]", f"{fmt(sd[i])} / {fmt(sdnr[i])}"]
          for i, b in enumerate(batches)]
  s.parts.append(Table(["batch", "batch-1 formula: median r [p5, p95]",
                        "with cross-example terms: median r (95% CI) [p5, p95], raw",
                        "same, noise removed: median [p5, p95]", "sd of log r: raw / noise removed"],
                       rows, "Figure 1 summary (at batch 1 the two formulas coincide)"))
  within, rse, rse_max = (_get(r, k, batches) for k in ("setups_within_target", "median_exact_rel_stderr",
                                                         "max_exact_rel_stderr"))
  if target:
    s.parts.append(Table(["batch", f"setups with every block's rel. SE <= {target}", "median rel. SE of a block",
                          "largest rel. SE"],
                         [[b, f"{fmt(within[i])} of {cfg['setups']}", fmt(rse[i]), fmt(rse_max[i])]
                          for i, b in enumerate(batches)], "The exact side's measurement error"))
  s.parts.append(Figure(os.path.join(r.path, "fig1_ratio_hist.png"),
                        "Figure 1: log10(predicted / exact) per weight block, per batch size."))
  table = _per_setup_table(r)
  if table is not None:
    s.parts.append(table)
  fig2 = cfg.get("fig2_diag_max_over_min") or {}
  if fig2:
    schemes = list(next(iter(fig2.values())))
    s.parts.append(Table(["batch"] + schemes, [[b] + [fmt(fig2[b][k]) for k in schemes] for b in fig2],
                         f"Figure 2: max/min of the diagonal blocks' average squared singular value, widths "
                         f"{tuple(cfg['fig2_widths'])} (1 = evenly weighted; the paper: geometric is the most even)"))
    s.parts.append(Figure(os.path.join(r.path, "fig2_heatmaps.png"),
                          "Figure 2: block heat maps (log10), one colour scale for every panel."))
  else:
    s.parts.append("Figure 2 (block heat maps) is part of the full grid only.")
  return s

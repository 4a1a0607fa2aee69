"""The hessian experiment's report section: the paper's Figures 1-2 summaries."""
from __future__ import annotations

import os

from jscale.report.document import Figure, Section, Table
from jscale.report.format import fmt
from jscale.sweeps import Results


def build(r: Results) -> Section:
  """Figures 1-2 of the Hessian check. Written by the `hessian` experiment (axis batch; JSON records)."""
  cfg = r.config
  batches = r.axis("batch")
  s = Section("hessian: the calculus's Hessian-block predictions against exact blocks (the paper's Figures 1-2)", [
      f"{cfg['setups']} sampled setups (depth 3-6, widths 8-128, fan-in / fan-out / Xavier / geometric, random "
      f"input and loss), seed {cfg['seed']}, {cfg['draws']} draw(s) per setup; exact diagonal blocks from the "
      "Gauss-Newton identity (equal to `jax.hessian` for ReLU nets, checked in the tests). r = predicted / exact "
      "average squared singular value of each weight block. The paper shows the ratio as a histogram and "
      "gives no numeric summary, so there is no source number to print beside these."])
  med, p5, p95 = (r.metric(k, "batch") for k in ("median", "p5", "p95"))
  medc, p5c, p95c = (r.metric(k, "batch") for k in ("median_corrected", "p5_corrected", "p95_corrected"))
  rows = [[b, f"{fmt(med[i])} [{fmt(p5[i])}, {fmt(p95[i])}]", f"{fmt(medc[i])} [{fmt(p5c[i])}, {fmt(p95c[i])}]"]
          for i, b in enumerate(batches)]
  s.parts.append(Table(["batch", "batch-1 formula: median r [p5, p95]", "with cross-example terms: median r [p5, p95]"],
                       rows, "Figure 1 summary (at batch 1 the two coincide)"))
  s.parts.append(Figure(os.path.join(r.path, "fig1_ratio_hist.png"),
                        "Figure 1: log10(predicted / exact) per weight block, per batch size."))
  fig2 = cfg.get("fig2_diag_max_over_min") or {}
  if fig2:
    schemes = list(next(iter(fig2.values())))
    s.parts.append(Table(["batch"] + schemes, [[b] + [fmt(fig2[b][k]) for k in schemes] for b in fig2],
                         f"Figure 2: max/min of the diagonal blocks' average squared singular value, widths "
                         f"{tuple(cfg['fig2_widths'])} (1 = evenly weighted; the paper: geometric is the most even)"))
    s.parts.append(Figure(os.path.join(r.path, "fig2_heatmaps.png"), "Figure 2: block heat maps (log10)."))
  else:
    s.parts.append("Figure 2 (block heat maps) is part of the full grid only.")
  return s

"""The hessian experiment's Figures 1 and 2 as PNG files, from the JSON-ready results of
`records.records_json` and `heatmaps.heatmaps` (scripts/hessian_figures.py and the experiment's run code both
draw through here). Bare `Figure` objects: importing this never changes
pyplot's backend.
"""
from __future__ import annotations

import os
from typing import Mapping, Sequence

import numpy as np


def _save(fig, path) -> str:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=120, bbox_inches="tight")
  return os.fspath(path)


def ratio_histogram(records: Sequence[Mapping], path) -> str:
  """Figure 1: histogram of log10(predicted / exact) per batch size; at minibatches the batch-1 model
  s(1)/B beside the prediction with cross-example terms. `records` as `records.records_json` gives."""
  return ratio_histograms({"": records}, path)


def ratio_histograms(by_model: Mapping[str, Sequence[Mapping]], path) -> str:
  """Figure 1 with one row per model (e.g. {"MLP": ..., "LeNet": ...}), one column per batch size, same bins."""
  by_model = {k: v for k, v in by_model.items() if v}
  batches = sorted({r["batch"] for recs in by_model.values() for r in recs})
  if not batches:
    raise ValueError("ratio_histogram: no records")
  from matplotlib.figure import Figure  # at first use: see jscale.report.plots
  fig = Figure(figsize=(5 * len(batches), 3.6 * len(by_model)))
  axes = fig.subplots(len(by_model), len(batches), squeeze=False)
  bins = np.linspace(-3.5, 1.5, 61)
  cells = [(ax, model, b, recs) for row, (model, recs) in zip(axes, by_model.items()) for ax, b in zip(row, batches)]
  for ax, model, b, records in cells:
    rs = [r for r in records if r["batch"] == b]
    if not rs:
      ax.set_visible(False)
      continue
    ratio = lambda key: np.log10(np.concatenate([np.array(r[key]) / np.array(r["exact_w"]) for r in rs]))
    if b == 1:
      ax.hist(ratio("leading_w"), bins, alpha=0.5, label="leading order (the paper's form)")
    else:
      ax.hist(ratio("batch1_w"), bins, alpha=0.5, label="batch-1 model, s(1)/B")
      ax.hist(ratio("corrected_w"), bins, alpha=0.5, label="previous prediction, with cross-example terms")
    if all(r.get("full_w") is not None for r in rs):
      ax.hist(ratio("full_w"), bins, alpha=0.7, label="full order (jscale.theory.full_order)")
    ax.axvline(0, color="k", lw=0.8)
    ax.set_title(f"{model + ', ' if model else ''}batch {b}: {len(rs)} setups, "
                 f"{sum(len(r['exact_w']) for r in rs)} weight blocks")
    ax.set_xlabel("log10(predicted / exact) avg squared singular value")
    ax.set_ylabel("weight blocks")
    ax.legend(fontsize=8)
  fig.tight_layout()
  return _save(fig, path)


def position_ratios(positions: Mapping[str, Mapping[str, Mapping]], path, title: str = "") -> str:
  """Figure 1 per layer position (`summary.position_summary`): median predicted / exact with its p5-p95 bar,
  full order and leading order side by side, one panel per batch size, log scale."""
  batches = sorted(positions, key=int)
  if not batches:
    raise ValueError("position_ratios: no batch sizes")
  from matplotlib.figure import Figure  # at first use: see jscale.report.plots
  fig = Figure(figsize=(max(5.0, 1.1 * max(len(positions[b]) for b in batches) + 2), 3.6 * len(batches)))
  axes = fig.subplots(len(batches), 1, squeeze=False)[:, 0]
  for ax, b in zip(axes, batches):
    names = list(positions[b])
    x = np.arange(len(names))
    for dx, tag, label in ((-0.15, "_full", "full order"), (0.15, "_leading", "leading order")):
      med = np.array([positions[b][n][f"median{tag}"] or np.nan for n in names], float)
      lo = np.array([positions[b][n][f"p5{tag}"] or np.nan for n in names], float)
      hi = np.array([positions[b][n][f"p95{tag}"] or np.nan for n in names], float)
      ax.errorbar(x + dx, med, yerr=[med - lo, hi - med], fmt="o", capsize=3, label=f"{label}: median [p5, p95]")
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_yscale("log")
    ax.set_xticks(x)
    ax.set_xticklabels([f"{n}\n({positions[b][n]['blocks']})" for n in names], fontsize=8)
    ax.set_ylabel("predicted / exact")
    ax.set_title(f"{title + ', ' if title else ''}batch {b}: per layer position (blocks)")
    ax.legend(fontsize=8)
  fig.tight_layout()
  return _save(fig, path)


def block_heatmaps(by_batch: Mapping[str, Mapping[str, Mapping]], widths: Sequence[int], path, title=None) -> str:
  """Figure 2 (`heatmap_figure`) saved to `path`."""
  return _save(heatmap_figure(by_batch, widths, title), path)


def heatmap_figure(by_batch: Mapping[str, Mapping[str, Mapping]], widths: Sequence[int], title=None) -> Figure:
  """Figure 2: log10 average squared singular value of every (W_i, W_j) block, one panel per scheme
  (columns) and batch size (rows). `by_batch[b][scheme]` as `heatmaps.heatmaps` returns. One colour
  scale for every panel (one colour bar), so that the evenness of the schemes can be compared."""
  schemes = list(next(iter(by_batch.values())))
  logs = {(b, s): np.log10(np.array(per[s]["weights"])) for b, per in by_batch.items() for s in schemes}
  finite = np.concatenate([m[np.isfinite(m)] for m in logs.values()])
  vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
  from matplotlib.figure import Figure  # at first use: see jscale.report.plots
  fig = Figure(figsize=(3.2 * len(schemes) + 1.0, 3.0 * len(by_batch)))
  axes = fig.subplots(len(by_batch), len(schemes), squeeze=False)
  im = None
  for row, (b, per) in zip(axes, by_batch.items()):
    for ax, s in zip(row, schemes):
      m = logs[(b, s)]
      im = ax.imshow(m, cmap="viridis", vmin=vmin, vmax=vmax)
      ax.set_title(f"{s}, B={b}\ndiag max/min {per[s]['diag_max_over_min']:.2f}", fontsize=9)
      ax.set_xticks(range(m.shape[0]))
      ax.set_yticks(range(m.shape[0]))
      ax.set_xlabel("layer j")
      ax.set_ylabel("layer i")
  fig.suptitle(title or f"avg squared singular value of Hessian blocks (W_i, W_j), widths {tuple(widths)}")
  fig.tight_layout()
  fig.colorbar(im, ax=axes.ravel().tolist(), fraction=0.02, label="log10 (one scale for all panels)")
  return fig

"""Figures for the experiments: matplotlib, one PNG per call, each call returns the path.

Figures are bare `matplotlib.figure.Figure`s rendered by the Agg canvas on save: no pyplot, no global
backend switch, so importing this module never changes a notebook's backend and needs no display.

Inputs are plain arrays, seeds on a named axis, so these work on results from any source:
  curves            metric vs epoch, one line per group (e.g. per sigma): the mean over the seeds finite at
                    each epoch, band = 95% interval, legend = the n averaged (log y: geometric mean and the
                    interval of the log, so the band stays positive); distinct line styles and markers
  curve_panels      the same, one panel per setting (e.g. full batch | batch 32), shared y axis
  draw_curves       what both draw on one matplotlib Axes
  metric_vs_param   final metric vs a log-scaled parameter, vertical markers for named values
  heatmap_pair      measured metric and predicted quantity over a categorical grid of two scales, side by side
  histogram_grid    per-layer activation histograms, rows = init schemes, cols = layers
  std_vs_depth      per-layer std, measured (solid) and predicted (dashed), log y
  scheme_bars       grouped bars: measured per scheme (with error bars) beside a source's numbers
Intervals come from `jscale.report.stats`.
"""
from __future__ import annotations

import os
from typing import Mapping, Sequence

import numpy as np

from jscale.report.stats import CI, finite_mean_ci95

_DPI = 110


def _subplots(nrows=1, ncols=1, *, figsize, **kw):
  # matplotlib is imported at first use, here and below, not with the module: every command line imports the
  # report through the experiments' sections, and matplotlib would add ~0.45 CPU s to each start, refusals of
  # bad input included.
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  fig = Figure(figsize=figsize)
  return fig, fig.subplots(nrows, ncols, **kw)


_CYCLE = 10  # matplotlib's default colour cycle


def _save(fig, path, tight: bool = True) -> str:
  """tight=False for a figure that lays itself out (subplots_adjust): a tight bounding box draws it twice."""
  path = os.fspath(path)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=_DPI, bbox_inches="tight" if tight else None)
  return path


def _seeds_first(values, seed_axis, what) -> np.ndarray:
  v = np.asarray(values, np.float64)
  if v.ndim == 1:
    return v[None]
  if v.ndim != 2:
    raise ValueError(f"{what}: expected (seeds, points) or (points,), got shape {v.shape}")
  return np.moveaxis(v, seed_axis, 0)


_STYLES = ("-", "--", "-.", ":")
_MARKS = "os^DvPX*"


def _n_text(n) -> str:
  """The number of seeds averaged: one number, or min-max where it varies (e.g. over epochs)."""
  n = np.asarray(n)
  lo, hi = int(n.min()), int(n.max())
  return f"n={lo}" if lo == hi else f"n={lo}-{hi}"


def _style(k: int, n_groups: int, n_points: int) -> dict:
  """Line style, open marker and staggered marker positions per group, so curves lying on top of each
  other (e.g. two inits whose spread is exactly 0) stay distinguishable."""
  step = max(1, n_points // 8)
  return dict(ls=_STYLES[k % len(_STYLES)], marker=_MARKS[k % len(_MARKS)], ms=4, mfc="none",
              markevery=((k * step) // max(n_groups, 1) % step, step))


def draw_curves(ax, values_by_group, *, epochs, seed_axis, logy=False, bounds=None, what="curves"):
  """Per epoch, the mean over the seeds that are finite there (a diverged seed is NaN from its divergence
  on): a curve stays drawn while any seed is finite, and its legend gives the n averaged (min-max when it
  varies over epochs). On a log y axis the line is the geometric mean and the band the 95% interval of
  log(values): an additive t-interval on a heavy-tailed positive quantity dips below zero, which a log
  axis cannot show. `bounds` cuts the band at a bounded metric's range."""
  # Past the 10-colour cycle colours would repeat: an ordered sweep (sigma, say) gets a sequential map.
  n_groups = len(values_by_group)
  import matplotlib  # pylint: disable=import-outside-toplevel
  colors = (matplotlib.colormaps["viridis"](np.linspace(0.0, 0.92, n_groups)) if n_groups > _CYCLE
            else [f"C{i}" for i in range(n_groups)])
  for k, (color, (label, vals)) in enumerate(zip(colors, values_by_group.items())):
    v = _seeds_first(vals, seed_axis, what)
    x = np.arange(1, v.shape[1] + 1) if epochs is None else np.asarray(epochs)
    if len(x) != v.shape[1]:
      raise ValueError(f"{what}: group {label!r} has {v.shape[1]} points but {len(x)} epochs")
    if logy:
      with np.errstate(divide="ignore", invalid="ignore"):
        ci = finite_mean_ci95(np.log(np.where(v > 0, v, np.nan)), 0)
      ci = CI(np.exp(ci.mean), np.exp(ci.lo), np.exp(ci.hi), ci.half, ci.n)
    else:
      ci = finite_mean_ci95(v, 0, bounds)
    line, = ax.plot(x, ci.mean, color=color, lw=1.4, label=f"{label} ({_n_text(ci.n)})",
                    **_style(k, n_groups, len(x)))
    if np.any(ci.n > 1):
      ax.fill_between(x, ci.lo, ci.hi, color=line.get_color(), alpha=0.2, linewidth=0)


def _legend(ax, n_groups, logy, below=False):
  """Few groups: inside the axes. Many: outside (on the right, or below for side-by-side panels, each of
  which has its own legend because the n averaged can differ per panel), so no curve is hidden."""
  kw = dict(fontsize=7, title=_band_title(logy), title_fontsize=7)
  if below and n_groups > 4:
    kw.update(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3, borderaxespad=0.0)
  elif n_groups > 6:
    kw.update(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
  ax.legend(**kw)


def _band_title(logy):
  return ("geometric mean over finite seeds, band = 95% CI of log" if logy else
          "mean over finite seeds, band = 95% CI")


def curves(path, values_by_group: Mapping[str, np.ndarray], *, ylabel: str, title: str,
           epochs: Sequence[float] | None = None, xlabel: str = "epoch", logy: bool = False,
           seed_axis: int = 0, bounds: tuple[float, float] | None = None) -> str:
  """One line per group (the mean over finite seeds) with a shaded 95% interval; `values_by_group[g]` has
  shape (seeds, epochs) (or (epochs,) for one seed: no band). `bounds`: a bounded metric's range."""
  if not values_by_group:
    raise ValueError("curves: values_by_group is empty")
  fig, ax = _subplots(figsize=(6.4, 4.2))
  draw_curves(ax, values_by_group, epochs=epochs, seed_axis=seed_axis, logy=logy, bounds=bounds)
  if logy:
    ax.set_yscale("log")
  ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
  ax.grid(alpha=0.3)
  _legend(ax, len(values_by_group), logy)
  return _save(fig, path)


def curve_panels(path, panels: Mapping[str, Mapping[str, np.ndarray]], *, ylabel: str, title: str,
                 epochs: Sequence[float] | None = None, xlabel: str = "epoch", logy: bool = False,
                 seed_axis: int = 0, bounds: tuple[float, float] | None = None) -> str:
  """`curves` side by side, one panel per setting (e.g. per batch size), sharing the y axis:
  `panels[panel_title][group]` has shape (seeds, epochs)."""
  if not panels or not all(panels.values()):
    raise ValueError("curve_panels: needs at least one panel, each with at least one group")
  n = len(panels)
  fig, axes = _subplots(1, n, figsize=(5.2 * n + 0.6, 4.2), squeeze=False, sharey=True)
  for ax, (name, groups) in zip(axes[0], panels.items()):
    draw_curves(ax, groups, epochs=epochs, seed_axis=seed_axis, logy=logy, bounds=bounds, what="curve_panels")
    if logy:
      ax.set_yscale("log")
    ax.set(xlabel=xlabel, title=name)
    ax.grid(alpha=0.3)
  axes[0, 0].set_ylabel(ylabel)
  for ax, groups in zip(axes[0], panels.values()):
    _legend(ax, len(groups), logy, below=True)
  fig.suptitle(title)
  return _save(fig, path)


def metric_vs_param(path, param: Sequence[float], values, *, xlabel: str, ylabel: str, title: str,
                    markers: Mapping[str, float] | None = None,
                    reference: Mapping[float, float] | None = None, reference_label: str = "source",
                    seed_axis: int = 1, logx: bool = True, bounds: tuple[float, float] | None = None) -> str:
  """Final metric against a (log-scaled) parameter: mean over the finite seeds with 95% error bars (cut at
  `bounds`, a bounded metric's range). `values` has shape (len(param), seeds) (seeds on `seed_axis`), or is
  a mapping label -> such an array (one series each, nudged sideways so their error bars do not cover each
  other). `markers` draws a labelled vertical line at each named value (e.g. the sigma He, Glorot and
  geometric would pick); `reference` plots a source's numbers as crosses. Legends give the n averaged."""
  p = np.asarray(param, np.float64)
  series = dict(values) if isinstance(values, Mapping) else {"measured": values}
  if logx and np.any(p <= 0):
    raise ValueError("metric_vs_param: a log x axis needs positive parameter values")
  cis = {}
  for name, vals in series.items():
    v = np.asarray(vals, np.float64)
    if v.ndim == 1:
      v = v[:, None]
    v = np.moveaxis(v, seed_axis, 1) if v.ndim == 2 else v
    if v.ndim != 2 or v.shape[0] != len(p):
      raise ValueError(f"metric_vs_param: values must be ({len(p)}, seeds), got shape {np.shape(vals)}")
    cis[name] = finite_mean_ci95(v, 1, bounds)
  fig, ax = _subplots(figsize=(6.4, 4.2))
  nser = len(cis)
  span = np.ptp(np.log(p) if logx else p) if len(p) > 1 else 1.0
  for k, (name, ci) in enumerate(cis.items()):
    shift = 0.012 * span * (k - (nser - 1) / 2)
    x = p * np.exp(shift) if logx else p + shift
    yerr = np.stack([ci.mean - ci.lo, ci.hi - ci.mean])
    ax.errorbar(x, ci.mean, yerr=np.where(np.isfinite(yerr), yerr, 0.0), marker="os^D"[k % 4], ms=4, capsize=3,
                color=f"C{k}", ls=_STYLES[k % len(_STYLES)], mfc="none",
                label=f"{name} (mean, 95% CI, {_n_text(ci.n)})")
  if reference:
    rx, ry = zip(*sorted(reference.items()))
    ax.plot(rx, ry, "kx", ms=8, mew=2, label=reference_label)
  for i, (name, value) in enumerate((markers or {}).items()):
    # Distinct dash patterns: two rules can pick the same value (He and geometric do when n_0 = n_L).
    ax.axvline(value, color=f"C{i + nser}", ls=("--", ":", "-.")[i % 3], lw=2.2 - 0.5 * (i % 3),
               label=f"{name}: {value:.3g}")
  if logx:
    ax.set_xscale("log")
  ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
  ax.grid(alpha=0.3, which="both")
  ax.legend(fontsize=8)
  return _save(fig, path)


def _tick_label(v: float) -> str:
  return f"{v:.3g}"


def heatmap_pair(path, xs: Sequence[float], ys: Sequence[float], measured, predicted, *, xlabel: str,
                 ylabel: str, measured_label: str, predicted_label: str, title: str,
                 measured_title: str = "measured", predicted_title: str = "predicted",
                 vmin: float | None = None, vmax: float | None = None, annotate: bool = True,
                 nan_label: str = "n/a") -> str:
  """Two heat maps over the same grid of (x, y) settings: `measured` on a linear colour scale (e.g.
  accuracy), `predicted` on a log colour scale (e.g. the calculus's layer-1 G ratio). Arrays are
  (len(ys), len(xs)). The axes are categorical: one equal cell per grid value, labelled with it (a sweep
  measured these values only; a continuous axis would draw cells over values never run). NaN cells are
  left blank and, when annotated, labelled `nan_label`."""
  xs = np.asarray(xs, np.float64)
  ys = np.asarray(ys, np.float64)
  m = np.asarray(measured, np.float64)
  p = np.asarray(predicted, np.float64)
  for name, a in (("measured", m), ("predicted", p)):
    if a.shape != (len(ys), len(xs)):
      raise ValueError(f"heatmap_pair: {name} must have shape (len(ys), len(xs)) = {(len(ys), len(xs))}, "
                       f"got {a.shape}")
  if not np.all(p[np.isfinite(p)] > 0):
    raise ValueError("heatmap_pair: the predicted map needs positive values (log colour scale)")
  # Cells in increasing value order along each axis, whatever order the grid listed them in.
  ox, oy = np.argsort(xs, kind="stable"), np.argsort(ys, kind="stable")
  xs, ys, m, p = xs[ox], ys[oy], m[np.ix_(oy, ox)], p[np.ix_(oy, ox)]
  xe, ye = np.arange(len(xs) + 1) - 0.5, np.arange(len(ys) + 1) - 0.5
  fig, axes = _subplots(1, 2, figsize=(11.5, 4.6))
  im0 = axes[0].pcolormesh(xe, ye, m, cmap="viridis", vmin=vmin, vmax=vmax, shading="flat")
  fig.colorbar(im0, ax=axes[0], label=measured_label)
  finite = p[np.isfinite(p)]
  import matplotlib.colors as mcolors  # pylint: disable=import-outside-toplevel
  im1 = axes[1].pcolormesh(xe, ye, p, cmap="magma",
                           norm=mcolors.LogNorm(vmin=finite.min(), vmax=max(finite.max(), finite.min() * 1.0001)),
                           shading="flat")
  fig.colorbar(im1, ax=axes[1], label=predicted_label)
  for ax, im, a, t, fmt in ((axes[0], im0, m, measured_title, "{:.2f}"),
                            (axes[1], im1, p, predicted_title, "{:.1e}")):
    ax.set(xlabel=xlabel, ylabel=ylabel, title=t)
    ax.set_xticks(np.arange(len(xs)), [_tick_label(x) for x in xs], fontsize=8)
    ax.set_yticks(np.arange(len(ys)), [_tick_label(y) for y in ys], fontsize=8)
    if annotate and a.size <= 64:
      shade = im.norm(a)  # 0..1 position on the colour scale: dark text on the bright end
      for i in range(len(ys)):
        for j in range(len(xs)):
          if not np.isfinite(a[i, j]):  # a blank cell says why
            ax.text(j, i, nan_label, ha="center", va="center", fontsize=7, color="0.3")
            continue
          ax.text(j, i, fmt.format(a[i, j]), ha="center", va="center", fontsize=7,
                  color="k" if shade[i, j] > 0.6 else "w")
  fig.suptitle(title)
  return _save(fig, path)


def histogram_grid(path, bin_edges, counts, *, row_labels: Sequence[str], col_labels: Sequence[str],
                   xlabel: str, title: str, logx: bool = False, extra: np.ndarray | None = None,
                   extra_label: str = "") -> str:
  """Grid of histograms: counts has shape (rows, cols, bins) on shared `bin_edges` (bins + 1) or per-row
  edges (rows, bins + 1). Bars show the fraction of samples per bin; `extra[r, c]` (e.g. the fraction of
  exact zeros of a ReLU layer, which a log x axis cannot show) is written in each panel."""
  c = np.asarray(counts, np.float64)
  if c.ndim != 3 or c.shape[:2] != (len(row_labels), len(col_labels)):
    raise ValueError(f"histogram_grid: counts must be (rows={len(row_labels)}, cols={len(col_labels)}, bins), "
                     f"got {c.shape}")
  e = np.asarray(bin_edges, np.float64)
  e = np.broadcast_to(e, (c.shape[0], c.shape[2] + 1)) if e.ndim == 1 else e
  if e.shape != (c.shape[0], c.shape[2] + 1):
    raise ValueError(f"histogram_grid: bin_edges must have {c.shape[2] + 1} entries, got shape {np.shape(bin_edges)}")
  rows, cols = c.shape[:2]
  import matplotlib.ticker as mticker  # pylint: disable=import-outside-toplevel
  fig, axes = _subplots(rows, cols, figsize=(2.6 * cols + 1.2, 1.7 * rows + 0.9), squeeze=False,
                           sharex="row", sharey="row")
  for r in range(rows):
    for k in range(cols):
      ax = axes[r, k]
      tot = c[r, k].sum()
      frac = c[r, k] / tot if tot > 0 else c[r, k]
      # One filled step patch per panel (not one rectangle per bin): a 6 x 10 grid draws ~50x faster.
      ax.stairs(frac, e[r], fill=True, color=f"C{r % 10}", lw=0)
      if logx:
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(mticker.LogLocator(base=10, numticks=4))
      # Few ticks, no minor ones: tick layout dominates the drawing time of a 60-panel grid.
      ax.xaxis.set_minor_locator(mticker.NullLocator())
      ax.yaxis.set_major_locator(mticker.MaxNLocator(3))
      ax.tick_params(labelsize=8)
      if extra is not None:
        ax.text(0.97, 0.93, f"{extra_label}{extra[r, k]:.2f}", transform=ax.transAxes, ha="right", va="top",
                fontsize=8)
      if r == 0:
        ax.set_title(col_labels[k], fontsize=9)
      if k == 0:
        ax.set_ylabel(f"{row_labels[r]}\nfraction", fontsize=8)
      if r == rows - 1:
        ax.set_xlabel(xlabel, fontsize=8)
  fig.suptitle(title)
  fig.subplots_adjust(hspace=0.45, wspace=0.12, top=1 - 0.55 / fig.get_figheight())
  return _save(fig, path, tight=False)


def std_vs_depth(path, measured: Mapping[str, np.ndarray], predicted: Mapping[str, np.ndarray] | None = None,
                 *, title: str, ylabel: str = "activation std", xlabel: str = "layer (depth)",
                 logy: bool = True, note: str = "", categories: Sequence[str] | None = None) -> str:
  """Per-layer std: measured as solid lines with markers, predicted (same key, same colour) dashed.
  `categories`: one name per layer (named kernels): a categorical x axis with those tick labels."""
  if not measured:
    raise ValueError("std_vs_depth: measured is empty")
  fig, ax = _subplots(figsize=(6.4, 4.4))
  marks = "osD^vP*X"
  for i, (label, s) in enumerate(measured.items()):
    s = np.asarray(s, np.float64)
    depth = np.arange(1, len(s) + 1)
    # Distinct markers and open faces so schemes with equal curves (e.g. He and geometric on square
    # layers) stay visible on top of each other.
    ax.plot(depth, s, "-", marker=marks[i % len(marks)], ms=4 + (i % 3), mfc="none", lw=1.2, alpha=0.85,
            color=f"C{i}", label=f"{label} measured")
    if predicted is not None and label in predicted:
      ax.plot(depth, np.asarray(predicted[label], np.float64), "--", color=f"C{i}", label=f"{label} predicted")
  if logy:
    ax.set_yscale("log")
  if categories is not None:
    ax.set_xticks(np.arange(1, len(categories) + 1), list(categories))
  ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
  ax.grid(alpha=0.3, which="both")
  ax.legend(fontsize=7, ncol=2)
  if note:
    fig.text(0.01, -0.02, note, fontsize=7, ha="left", va="top", wrap=True)
  return _save(fig, path)


def scheme_bars(path, schemes: Sequence[str], measured, *, ylabel: str, title: str, errors=None,
                reference: Mapping[str, float] | None = None, reference_label: str = "source",
                measured_label: str = "measured") -> str:
  """Grouped bars per init scheme: measured (with optional error bars: half-widths, or (2, schemes) lower
  and upper lengths for an interval cut at a metric's range) beside a source's value for the same scheme;
  each bar is labelled with its value. `measured_label` should say what was averaged and its n."""
  m = np.asarray(measured, np.float64)
  if m.shape != (len(schemes),):
    raise ValueError(f"scheme_bars: measured must have one value per scheme ({len(schemes)}), got {m.shape}")
  x = np.arange(len(schemes))
  w = 0.38 if reference else 0.6
  fig, ax = _subplots(figsize=(1.4 * len(schemes) + 2.5, 4.0))
  bars = ax.bar(x - (w / 2 if reference else 0), m, w, yerr=errors, capsize=3, label=measured_label)
  ax.bar_label(bars, fmt="%.3f", fontsize=7, padding=2)
  if reference:
    ref = np.array([reference.get(s, np.nan) for s in schemes], np.float64)
    rbars = ax.bar(x + w / 2, ref, w, color="0.6", label=reference_label)
    ax.bar_label(rbars, fmt="%.2f", fontsize=7, padding=2)
  ax.set_xticks(x, schemes)
  ax.set(ylabel=ylabel, title=title)
  ax.grid(alpha=0.3, axis="y")
  ax.legend(fontsize=8)
  return _save(fig, path)

"""The activations experiment's report section: per-layer histograms and std vs depth, measured and predicted."""
from __future__ import annotations

import os

import numpy as np

from jscale import initializers
from jscale.report import plots, stats
from jscale.report.document import Figure, Headline, Section, Table
from jscale.report.format import fmt, fmt_list
from jscale.sweeps import Results


def _same_curves_note(r: Results) -> str:
  """Name the schemes whose weights have the same E[W^2] here (their curves coincide)."""
  specs, w = r.recorded("schemes") or {}, r.recorded("width")
  if not specs or not w:
    return ""
  groups: dict = {}
  for label, spec in specs.items():
    groups.setdefault(round(initializers.get(spec).second_moment((w, w)), 12), []).append(label)
  same = [" = ".join(g) for g in groups.values() if len(g) > 1]
  return f"Same E[W^2] on {w}x{w} layers (curves coincide): {'; '.join(same)}." if same else ""


def _ratio_ci(std_RxSxL, pred_SxL):
  """Last layer's measured / predicted std per scheme: geometric mean over replicates and its 95% interval
  (a t-interval on the log ratio, back-transformed: a ratio's interval stays positive)."""
  logs = np.log(std_RxSxL[:, :, -1] / pred_SxL[None, :, -1])
  ci = stats.mean_ci95(logs, axis=0)
  return np.exp(ci.mean), np.exp(ci.lo), np.exp(ci.hi), ci.n


def _ratio_text(g, lo, hi, k):
  return fmt(g[k], 3) if not np.isfinite(lo[k]) else f"{fmt(g[k], 3)} [{fmt(lo[k], 3)}, {fmt(hi[k], 3)}]"


def build(r: Results) -> Section:
  """The explainers. Written by `run.experiment` beside this file (axes replicate, activation, scheme, layer,
  bin)."""
  acts, schemes = r.axis("activation"), r.axis("scheme")
  std = r.metric("std", "replicate", "activation", "scheme", "layer")
  pred = r.metric("predicted_std", "activation", "scheme", "layer")
  lin = r.metric("linear_std", "activation", "scheme", "layer")
  sat = r.metric("saturation_frac", "replicate", "activation", "scheme", "layer")
  counts = r.metric("counts", "activation", "scheme", "layer", "bin")
  edges = r.metric("bin_edges", "activation", "bin_edge") if r.has("bin_edges") else None
  reps = std.shape[0]
  s = Section("activations: per-layer activations at initialisation (the explainers)",
              [f"{r.recorded('depth')} layers of {r.recorded('width')} units, {r.recorded('n_samples')} "
               f"unit-Gaussian inputs, zero biases, {reps} independent nets per (activation, scheme) (seed "
               f"{fmt_list(r.recorded('seeds'))}); schemes {r.recorded('schemes')}. Predicted std: the calculus "
               "(ReLU: its closed form sqrt(E[y^2] (1/2 - 1/(2 pi))); tanh: the moment maps of any activation by "
               "quadrature, `jscale.calculus.activation_maps`, which follow saturation). The identity rules' "
               "linear regime, the calculus's older tanh rule, is shown beside it: it fails once units saturate. "
               + _same_curves_note(r) + " Replicate i of every scheme shares one random draw (common random "
               "numbers); ReLU is positively homogeneous, so its measured/predicted ratio is the same for every "
               "scheme: that ratio is the draws' finite-width fluctuation, and its interval is over the "
               "replicates."])
  layers = r.axis("layer")
  for a_i, a in enumerate(acts):
    if edges is not None:
      # Three layers (first, middle, last) say what every layer's panel said; the std-vs-depth plot below has
      # every layer.
      cols = sorted({0, (len(layers) - 1) // 2, len(layers) - 1})
      p = plots.histogram_grid(os.path.join(r.path, f"hist_{a}.png"), edges[a_i], counts[a_i][:, cols],
                               row_labels=schemes, col_labels=[f"layer {layers[c]}" for c in cols],
                               logx=(a == "relu"), extra=sat[0, a_i][:, cols],
                               extra_label="sat " if a == "tanh" else "zero ",
                               xlabel=f"{a} output" + (" (> 0, log)" if a == "relu" else ""),
                               title=f"{a}: activation histograms at init (replicate 0)")
      s.parts.append(Figure(p, f"{a}: histograms of the first, middle and last layers of replicate 0 (rows: "
                               "schemes; every layer's std is in the next figure)."))
    geo = np.exp(np.log(std[:, a_i]).mean(0))
    p = plots.std_vs_depth(os.path.join(r.path, f"std_{a}.png"), dict(zip(schemes, geo)),
                           dict(zip(schemes, pred[a_i])), title=f"{a}: activation std vs depth "
                           "(dashed: calculus" + (", quadrature)" if a == "tanh" else ")"),
                           note=_same_curves_note(r))
    s.parts.append(Figure(p, f"{a}: per-layer std, measured (solid, geometric mean over {reps} nets) and "
                             "predicted (dashed)."))
    g, lo, hi, _ = _ratio_ci(std[:, a_i], pred[a_i])
    head = ["scheme", "std layer 1", f"std layer {layers[-1]}", f"predicted layer {layers[-1]}",
            "measured / predicted [95%]"]
    if a == "tanh":
      gl, _, _, _ = _ratio_ci(std[:, a_i], lin[a_i])
      head.append("measured / linear regime")
    rows = []
    for k, sch in enumerate(schemes):
      row = [sch, fmt(geo[k, 0]), fmt(geo[k, -1]), fmt(pred[a_i, k, -1]), _ratio_text(g, lo, hi, k)]
      if a == "tanh":
        row.append(fmt(gl[k], 3))
      rows.append(row + [fmt(sat[:, a_i, k, -1].mean(), 3)])
    s.parts.append(Table(head + ["saturated" if a == "tanh" else "zero fraction"], rows, a))
  ratios = [_ratio_ci(std[:, a_i], pred[a_i]) for a_i in range(len(acts))]
  numbers = {}
  for a_i, a in enumerate(acts):
    g, lo, hi, _ = ratios[a_i]
    for k, sch in enumerate(schemes):
      numbers[f"{a}.{sch}.last_std_over_pred"] = float(g[k])
      if np.isfinite(lo[k]):
        numbers[f"{a}.{sch}.last_std_over_pred_lo"] = float(lo[k])
        numbers[f"{a}.{sch}.last_std_over_pred_hi"] = float(hi[k])
  s.headline = Headline(
      what=(f"per-layer activations at init, {r.recorded('depth')} x {r.recorded('width')} nets, {reps} nets "
            "per scheme, forward only"),
      measured="; ".join(f"{a} layer {layers[-1]} std measured / predicted (geometric mean [95% CI] over nets) "
                         + ", ".join(f"{sch} {_ratio_text(*ratios[a_i][:3], k)}" for k, sch in enumerate(schemes))
                         for a_i, a in enumerate(acts)),
      source="the explainers' histograms (vanishing / saturating activations; no numbers)",
      numbers=numbers)
  return s

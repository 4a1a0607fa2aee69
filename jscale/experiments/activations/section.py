"""The activations experiment's report section: per-layer histograms and std vs depth, measured and predicted."""
from __future__ import annotations

import os

from jscale import initializers
from jscale.report import plots
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


def build(r: Results) -> Section:
  """The explainers. Written by `run.experiment` beside this file (axes activation, scheme, layer, bin)."""
  acts, schemes = r.axis("activation"), r.axis("scheme")
  std = r.metric("std", "activation", "scheme", "layer")
  pred = r.metric("predicted_std", "activation", "scheme", "layer")
  sat = r.metric("saturation_frac", "activation", "scheme", "layer")
  counts = r.metric("counts", "activation", "scheme", "layer", "bin")
  edges = r.metric("bin_edges", "activation", "bin_edge") if r.has("bin_edges") else None
  s = Section("activations: per-layer activations at initialisation (the explainers)",
              [f"{r.recorded('depth')} layers of {r.recorded('width')} units, {r.recorded('n_samples')} "
               f"unit-Gaussian inputs, zero biases, seed {fmt_list(r.recorded('seeds'))}; schemes "
               f"{r.recorded('schemes')}. Predicted std: the calculus (ReLU: sqrt(E[y^2] (1/2 - 1/(2 pi))); "
               "tanh: its linear regime, which fails once units saturate). " + _same_curves_note(r) +
               " All schemes share one random draw (common random numbers); ReLU is positively homogeneous, "
               "so its measured/predicted ratio is the same for every scheme: that ratio is this draw's "
               "finite-width fluctuation."])
  layers = r.axis("layer")
  for a_i, a in enumerate(acts):
    if edges is not None:
      # Three layers (first, middle, last) say what every layer's panel said; the std-vs-depth plot below has
      # every layer.
      cols = sorted({0, (len(layers) - 1) // 2, len(layers) - 1})
      p = plots.histogram_grid(os.path.join(r.path, f"hist_{a}.png"), edges[a_i], counts[a_i][:, cols],
                               row_labels=schemes, col_labels=[f"layer {layers[c]}" for c in cols],
                               logx=(a == "relu"), extra=sat[a_i][:, cols],
                               extra_label="sat " if a == "tanh" else "zero ",
                               xlabel=f"{a} output" + (" (> 0, log)" if a == "relu" else ""),
                               title=f"{a}: activation histograms at init")
      s.parts.append(Figure(p, f"{a}: histograms of the first, middle and last layers (rows: schemes; every "
                               "layer's std is in the next figure)."))
    p = plots.std_vs_depth(os.path.join(r.path, f"std_{a}.png"), dict(zip(schemes, std[a_i])),
                           dict(zip(schemes, pred[a_i])), title=f"{a}: activation std vs depth "
                           "(dashed: calculus" + (", linear regime)" if a == "tanh" else ")"),
                           note=_same_curves_note(r))
    s.parts.append(Figure(p, f"{a}: per-layer std, measured (solid) and predicted (dashed)."))
    rows = [[sch, fmt(std[a_i, k, 0]), fmt(std[a_i, k, -1]), fmt(pred[a_i, k, -1]),
             fmt(std[a_i, k, -1] / pred[a_i, k, -1], 3), fmt(sat[a_i, k, -1], 3)] for k, sch in enumerate(schemes)]
    s.parts.append(Table(["scheme", "std layer 1", f"std layer {layers[-1]}", f"predicted layer {layers[-1]}",
                          "measured / predicted", "saturated" if a == "tanh" else "zero fraction"], rows, a))
  ratio = std[:, :, -1] / pred[:, :, -1]
  s.headline = Headline(
      what=f"per-layer activations at init, {r.recorded('depth')} x {r.recorded('width')} nets, forward only",
      measured="; ".join(f"{a} layer {layers[-1]} std measured / predicted " + ", ".join(
          f"{sch} {fmt(ratio[a_i, k], 3)}" for k, sch in enumerate(schemes)) for a_i, a in enumerate(acts)),
      source="the explainers' histograms (vanishing / saturating activations; no numbers)",
      numbers={f"{a}.{sch}.last_std_over_pred": float(ratio[a_i, k]) for a_i, a in enumerate(acts)
               for k, sch in enumerate(schemes)})
  return s

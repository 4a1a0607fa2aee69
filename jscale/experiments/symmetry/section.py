"""The symmetry experiment's report section: accuracy and hidden-unit spread per init."""
from __future__ import annotations

import os

import numpy as np

from jscale.report import describe, plots
from jscale.report.document import Figure, Headline, Section, Table
from jscale.report.format import fmt
from jscale.report.stats import BOUNDED_CI_METHOD, UNIT, fmt_ci, mean_ci95
from jscale.sweeps import Results


def build(r: Results) -> Section:
  """Zeros / constant init. Written by `run.experiment` beside this file (axes init, seed, step, layer)."""
  inits = r.axis("init")
  acc = r.metric("test_acc", "init", "seed")
  fin = r.metric("final_spread", "init", "seed", "layer").max(-1)
  ci = mean_ci95(acc, 1, UNIT)
  chance, lin = r.recorded("chance_acc"), r.recorded("linear_acc")
  s = Section("symmetry: zeros and constant init never break hidden-unit symmetry",
              [describe.grid_text(r, skip=("step", "layer"))])
  rows = [[i, fmt_ci(ci, k), fmt(fin[k].max(), 6), "yes" if fin[k].max() == 0 else "no"] for k, i in enumerate(inits)]
  s.parts.append(Table(["init", f"test accuracy (mean [95% CI], {ci.n} seeds)", "max unit spread after training",
                        "units identical"], rows, f"Chance (majority class) = {fmt(chance)}; logistic "
                                                  f"regression (a linear classifier) = {fmt(lin)}; intervals: "
                                                  f"{BOUNDED_CI_METHOD} ([0, 1])"))
  s.parts.append("The sources claim this without numbers, so there is no verdicts.json; the claim is checked "
                 "against chance below.")
  lines = []
  for k, i in enumerate(inits):
    same = fin[k].max() == 0
    if chance is None or not same:
      continue
    lo, hi = (ci.lo[k], ci.hi[k]) if ci.n > 1 else (ci.mean[k], ci.mean[k])
    at_chance = lo <= chance <= hi or (ci.n > 1 and np.all(acc[k] == chance))
    lines.append(f"- {i}: hidden units stayed identical; accuracy " + (
        f"stays at chance ({fmt_ci(ci, k)} vs chance {fmt(chance)})." if at_chance else
        f"does **not** stay at chance: {fmt_ci(ci, k)} vs chance {fmt(chance)} (identical units make a "
        f"width-1 net, which can still learn one projection of the input; linear classifier: {fmt(lin)})."))
  if lines:
    s.parts.append("\n".join(lines))
  if r.has("spread"):
    sp = r.metric("spread", "init", "seed", "step", "layer").max(-1)
    p = plots.curves(os.path.join(r.path, "spread.png"), {i: sp[k] for k, i in enumerate(inits)},
                     ylabel="max difference between hidden units' incoming weights", xlabel="SGD step",
                     epochs=r.axis("step"), title="Hidden-unit spread during training")
    same = [i for k, i in enumerate(inits) if np.all(sp[k] == 0)]
    s.parts.append(Figure(p, "Max pairwise difference between hidden units (0 = all units identical); mean over "
                             "seeds (legend: n), each init its own line style and marker" +
                             (f"; {' and '.join(same)} lie exactly on 0 together (markers staggered)."
                              if len(same) > 1 else ".")))
  p = plots.scheme_bars(os.path.join(r.path, "symmetry_acc.png"), inits, ci.mean,
                        errors=None if ci.n < 2 else np.stack([ci.mean - ci.lo, ci.hi - ci.mean]),
                        ylabel="test accuracy", title="Test accuracy per init", reference={i: chance for i in inits},
                        reference_label="chance (majority class)",
                        measured_label=f"measured, mean over n={ci.n} seeds (95% CI)")
  s.parts.append(Figure(p, "Test accuracy per init beside chance."))
  s.headline = Headline(
      what=f"the explainers' claim on two moons, MLP 2-64-64-2, {ci.n} seeds",
      measured="test accuracy " + ", ".join(
          f"{i} {fmt(ci.mean[k], 3)} ({'units identical' if fin[k].max() == 0 else 'units differ'})"
          for k, i in enumerate(inits)) + f"; chance {fmt(chance)}",
      source="the explainers: zeros and constant init never break symmetry (no numbers)",
      numbers={**{f"{i}.test_acc": float(ci.mean[k]) for k, i in enumerate(inits)},
               **{f"{i}.max_spread": float(fin[k].max()) for k, i in enumerate(inits)}})
  return s

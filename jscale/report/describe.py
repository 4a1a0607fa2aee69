"""What a section says about any experiment's results: the grid, the fixed settings, the data, the run."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from jscale.report.format import fmt, fmt_list, label
from jscale.sweeps.experiment import AXIS_ALIASES
from jscale.sweeps.store import Results

FIXED = ("data", "activation", "kernel_init", "optimizer", "lr", "weight_decay", "epochs", "batch_size",
         "input_layernorm", "output_std")


def sweep_text(r: Results) -> list[str]:
  varied = {AXIS_ALIASES.get(a, a) for a in r.grid_axes}
  c0 = r.settings(0)
  fixed = [f"{k} {label(c0[k], k)}" for k in FIXED if k in c0 and k not in varied]
  widths = sorted({tuple(g.widths) for g in r.groups})
  div = int(np.any(r.arrays["diverged"], axis=-1).sum()) if "diverged" in r.arrays else 0
  out = [f"Widths {', '.join(str(list(w)) for w in widths)}; {', '.join(fixed)}; base seed "
         f"{r.recorded('base_seed', 0)}. {r.n_configs} configurations, {div} diverged (NaN/inf: flagged from the update "
         f"that broke them; their metrics are NaN from that epoch), {fmt(r.seconds, 1)} s of compute on "
         f"{r.recorded('backend', '?')}."]
  out.append("Data: " + "; ".join(r.data_sources) + f". {data_seed_text(r)}.")
  return out


def data_seed_text(r: Results) -> str:
  """Whether the data draw (a synthetic sample, a train/test split) follows each seed or is pinned.

  A sweep records `data_seed_follows_seed` and every configuration's `data_seed`; a custom experiment
  records `data_seeds` (one per seed) and the flag. Older runs without the flag: inferred."""
  if r.is_sweep:
    pairs = [(c.get("seed"), c.get("data_seed")) for c in map(r.settings, range(r.n_configs))]
  else:
    pairs = list(zip(r.recorded("seeds") or [], r.recorded("data_seeds") or []))
  data_seeds = sorted({d for _, d in pairs if d is not None})
  if not data_seeds:
    return "The data seed was not recorded"
  follows = r.recorded("data_seed_follows_seed")
  if follows is None:
    follows = len(data_seeds) > 1 and all(s == d for s, d in pairs)
  if follows:
    return (f"Each seed draws its own data: data_seed follows the seed ({len(data_seeds)} draws, data seeds "
            f"{fmt_list(data_seeds)}; the source above names the first), so the spread over seeds includes "
            f"the data draw")
  if len(data_seeds) == 1:
    return (f"The data is pinned to data seed {data_seeds[0]}: every configuration trains on the same draw, "
            f"so the spread over seeds leaves out the data draw")
  return f"Data seeds {fmt_list(data_seeds)}, set by the grid"


# What a custom experiment's run may record, named in its grid line.
RECORDED = ("data", "data_source", "widths", "lr", "optimizer", "batch_size", "epochs", "steps", "wall_time_s")


def grid_text(r: Results, skip=()) -> str:
  seeds = r.recorded("seeds", r.axes.get("seed"))
  skip = ("seed", "layer") + tuple(skip)
  parts = [f"{k} = {fmt_list([label(x, k) if k == 'batch_size' else x for x in v])}" for k, v in r.axes.items()
           if k not in skip]
  grid = r.recorded("grid_name", r.recorded("grid"))
  head = (f"Grid `{grid}`: " if isinstance(grid, str) else "Grid: ") + f"{'; '.join(parts)}. Seeds: {fmt_list(seeds)}."
  if r.is_sweep:
    return " ".join([head] + sweep_text(r))
  extra = [f"{k}: {r.recorded(k)}" for k in RECORDED if k in r.recorded_names]
  seeds_line = f" {data_seed_text(r)}." if "data_seeds" in r.recorded_names else ""
  return head + (f" {'; '.join(extra)}." if extra else "") + seeds_line


def panel_axis(r: Results, metric: str, known: Sequence[str]) -> str | None:
  """The one extra grid axis of a metric beyond `known` (e.g. batch_size in sigma's grid), or None."""
  extra = [a for a in r.metric_axes[metric] if a not in known]
  if len(extra) > 1:
    raise ValueError(f"{r.name}: metric {metric!r} has axes {extra} beyond {list(known)}; the section "
                     "draws one extra axis as panels")
  return extra[0] if extra else None


def with_panels(r: Results, metric: str, order: Sequence[str], panel: str | None) -> np.ndarray:
  a = r.metric(metric, *(([panel] if panel else []) + list(order)))
  return a if panel else a[None]

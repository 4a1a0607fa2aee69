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
  cfg = r.config
  varied = {AXIS_ALIASES.get(a, a) for a in cfg["grid"]["axes"]}
  c0 = cfg["configs"][0]
  fixed = [f"{k} {label(c0[k], k)}" for k in FIXED if k in c0 and k not in varied]
  widths = sorted({tuple(g["spec"]["widths"]) for g in cfg["groups"]})
  sources = list(dict.fromkeys(g.get("data_source", "?") for g in cfg["groups"]))
  div = int(np.any(r.arrays["diverged"], axis=-1).sum()) if "diverged" in r.arrays else 0
  secs = r.seconds
  out = [f"Widths {', '.join(str(list(w)) for w in widths)}; {', '.join(fixed)}; base seed {cfg.get('base_seed', 0)}. "
         f"{len(cfg['points'])} configurations, {div} diverged (NaN/inf: the engine freezes them and their "
         f"metrics are NaN from that epoch), {fmt(secs, 1)} s of compute on {cfg.get('backend', '?')}."]
  out.append("Data: " + "; ".join(sources) + ".")
  return out


def grid_text(r: Results, skip=()) -> str:
  seeds = r.config.get("seeds", r.axes.get("seed"))
  skip = ("seed", "layer") + tuple(skip)
  parts = [f"{k} = {fmt_list([label(x, k) if k == 'batch_size' else x for x in v])}" for k, v in r.axes.items()
           if k not in skip]
  grid = r.config.get("grid_name", r.config.get("grid"))
  head = (f"Grid `{grid}`: " if isinstance(grid, str) else "Grid: ") + f"{'; '.join(parts)}. Seeds: {fmt_list(seeds)}."
  if r.is_sweep:
    return " ".join([head] + sweep_text(r))
  extra = [f"{k}: {r.config[k]}" for k in ("data", "data_source", "widths", "lr", "optimizer",
                                            "batch_size", "epochs", "steps", "wall_time_s") if k in r.config]
  return head + (f" {'; '.join(extra)}." if extra else "")


def first_metric(r: Results, *names: str) -> str | None:
  return next((n for n in names if r.has(n)), None)


def widths(r: Results):
  if r.config.get("widths"):
    return list(r.config["widths"])
  if r.is_sweep:
    return list(r.config["groups"][0]["spec"]["widths"])
  return None


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

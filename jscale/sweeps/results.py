"""The one `Results` type: an experiment's config.json and its metric arrays, each shaped by its named axes, with
a sweep's flat per-configuration views. It holds what `jscale.sweeps.store` read (store.load) or assembled and
does no file I/O itself."""
from __future__ import annotations

import math
import os
from typing import Any, Sequence

import numpy as np

from jscale.sweeps import summary as summary_lib
from jscale.train import Metrics

# A sweep's metrics and their axes: one row per configuration, one column per epoch (and per layer).
METRIC_DIMS = {name: ("config", "epoch") for name in Metrics._fields}
METRIC_DIMS["g_ratio"] = ("config", "epoch", "layer")


def first_true(mask_CxE: np.ndarray) -> np.ndarray:
  """Index of the first True along the last axis, -1 where there is none."""
  any_ = mask_CxE.any(-1)
  return np.where(any_, mask_CxE.argmax(-1), -1)


class Results:
  """An experiment's results: config.json and its metrics, each array shaped by its named axes."""

  def __init__(self, path: str, config: dict, arrays: dict):
    self.path = path
    self.config = config
    self.arrays = arrays   # metric name -> np.ndarray shaped by config["metrics"][name]

  def __repr__(self):
    return f"Results({self.path!r}, metrics={list(self.arrays)})"

  @property
  def name(self) -> str:
    return os.path.basename(os.path.normpath(self.path))

  @property
  def run_dir(self) -> str:
    return self.path

  @property
  def axes(self) -> dict:
    return self.config.get("axes", {})

  @property
  def metric_axes(self) -> dict:
    return {k: tuple(v) for k, v in self.config.get("metrics", {}).items()}

  def axis(self, name: str) -> list:
    if name not in self.axes:
      raise KeyError(f"{self.name}: no axis {name!r}; axes: {list(self.axes)}")
    return self.axes[name]

  def has(self, metric: str) -> bool:
    return metric in self.arrays

  def metric(self, name: str, *order: str) -> np.ndarray:
    """The metric's array; with `order` (all its axis names), transposed to that order."""
    if name not in self.arrays:
      raise KeyError(f"{self.name}: no metric {name!r}; metrics: {list(self.arrays)}")
    a, axes = self.arrays[name], self.metric_axes[name]
    if not order:
      return a
    if sorted(order) != sorted(axes):
      raise ValueError(f"{self.name}: metric {name!r} has axes {axes}, asked for order {order}")
    return np.transpose(a, [axes.index(o) for o in order])

  # A sweep's per-configuration views (config.json has "grid" and "points").

  @property
  def is_sweep(self) -> bool:
    return "groups" in self.config and "points" in self.config

  @property
  def seconds(self) -> float:
    """Compute seconds summed over chunks (a sweep), or the run's wall time."""
    return float(self.config.get("compute_seconds", self.config.get("wall_time_s", math.nan)))

  @property
  def points(self) -> list[dict]:
    return self.config["points"]

  @property
  def n_configs(self) -> int:
    return len(self.points)

  @property
  def dims(self) -> dict[str, tuple]:
    return METRIC_DIMS

  @property
  def metrics(self) -> dict[str, np.ndarray]:
    """name -> (n_configs, epochs[, layers]): the grid dims flattened, config first."""
    nd = len(self.config["grid"]["shape"])
    return {k: a.reshape((self.n_configs,) + a.shape[nd:]) for k, a in self.arrays.items() if k in METRIC_DIMS}

  @property
  def diverged(self) -> np.ndarray:
    """(n_configs,) True where the configuration diverged (NaN/inf) at some epoch."""
    return self.metrics["diverged"].any(-1)

  @property
  def diverged_epoch(self) -> np.ndarray:
    """(n_configs,) first diverged epoch (0-based), -1 if never."""
    return first_true(self.metrics["diverged"])

  def final(self, name: str) -> np.ndarray:
    """The last epoch's value of a metric, per configuration (NaN if diverged)."""
    return self.metrics[name][:, -1]

  def grid(self, name: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """A metric with the config axis reshaped into the grid's dims: (array, dims)."""
    return self.arrays[name], self.metric_axes[name]

  def axis_values(self, axis: str) -> list:
    return [p[axis] for p in self.points]

  def summary(self, by: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Rows grouping configurations by grid axes (`jscale.sweeps.summary`)."""
    return summary_lib.summary(self, by)

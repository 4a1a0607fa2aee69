"""The one `Results` type: an experiment's config.json and its metric arrays, each shaped by its named axes, with
a sweep's flat per-configuration views. It holds what `jscale.sweeps.store` read (store.load) or assembled and
does no file I/O itself.

Readers (the report's sections) ask it, never config.json's layout: `settings(i)`, `groups`, `widths`,
`data_sources`, `x0_sq`, `model()`, `grid_axes`, and `recorded(name)` for what a custom experiment's run wrote.
"""
from __future__ import annotations

import math
import os
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np

from jscale.models.catalog import model_of
from jscale.sweeps import summary as summary_lib
from jscale.train import Metrics

# A sweep's metrics and their axes: one row per configuration, one column per epoch (and per layer).
METRIC_DIMS = {name: ("config", "epoch") for name in Metrics._fields}
METRIC_DIMS["g_ratio"] = ("config", "epoch", "layer")


def first_true(mask_CxE: np.ndarray) -> np.ndarray:
  """Index of the first True along the last axis, -1 where there is none."""
  any_ = mask_CxE.any(-1)
  return np.where(any_, mask_CxE.argmax(-1), -1)


class SweepGroup(NamedTuple):
  """One group of a sweep (the configurations sharing one compiled program), as config.json records it."""
  indices: list         # its configurations' indices
  widths: list          # the TrainSpec's widths (the MLP's; a model's: input features, then outputs)
  input_layernorm: bool
  epochs: int
  n_layers: int         # weight layers: g_ratio's layer axis
  data_name: str        # the data set's name as planned (e.g. "iris", "libsvm:PATH")
  data_source: str      # what the loader says the first draw is
  x0_sq: float          # E[x_0^2] of the training inputs, the mean over the group's draws


def sweep_groups(config: Mapping) -> list[SweepGroup]:
  """A sweep config's groups, in order (empty for a custom experiment's config)."""
  return [SweepGroup(indices=g["indices"], widths=g["spec"]["widths"],
                     input_layernorm=bool(g["spec"].get("input_layernorm")), epochs=g["epochs"],
                     n_layers=g["n_layers"], data_name=g["data"][0], data_source=g.get("data_source", "?"),
                     x0_sq=g["x0_sq"])
          for g in config.get("groups") or ()]


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

  def recorded(self, name: str, default=None):
    """A value the run recorded at the top of its config.json (a custom experiment's settings, e.g. "width";
    a sweep's "base_seed", "backend"), or `default`."""
    return self.config.get(name, default)

  @property
  def recorded_names(self) -> tuple:
    return tuple(self.config)

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

  def settings(self, i: int = 0) -> dict:
    """Configuration i's full settings (the experiment's defaults with its grid point applied)."""
    return self.config["configs"][i]

  @property
  def grid_axes(self) -> list[str]:
    """The grid's axis names, in grid order (a zipped block's axes one by one)."""
    return list(self.config["grid"]["axes"])

  @property
  def groups(self) -> list[SweepGroup]:
    return sweep_groups(self.config)

  @property
  def widths(self) -> list | None:
    """The network's widths: those a custom run recorded, else the first group's, else None."""
    if self.config.get("widths"):
      return list(self.config["widths"])
    if self.is_sweep:
      return list(self.groups[0].widths)
    return None

  @property
  def data_sources(self) -> list[str]:
    """The groups' data sources, each once, in group order."""
    return list(dict.fromkeys(g.data_source for g in self.groups))

  @property
  def x0_sq(self) -> float:
    """E[x_0^2] of the first group's training inputs."""
    return float(self.groups[0].x0_sq)

  def model(self):
    """The first configuration's `jscale.models.Model`, rebuilt from its settings and the data's classes (the
    last width); None for the MLP of `hidden`."""
    return model_of(self.settings(0), int(self.widths[-1]))

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

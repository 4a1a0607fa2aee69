"""Experiments and grids: what a sweep trains, as plain frozen dataclasses.

An `Experiment` holds one value for every setting (data, model, optimizer, schedule, hyperparameters);
a `Grid` names the settings that vary and their values. Any `Experiment` field is a valid axis name,
plus the aliases in `AXIS_ALIASES` and per-layer `layer_scale.<l>`. Axes on `TRACED` settings become
traced arguments of one compiled `train` (a configuration is then just one row of arrays); axes on the
other (static) settings split the grid into groups, one compiled program each.
"""
from __future__ import annotations

import dataclasses
import inspect
import itertools
import json
import math
import numbers
import os
import time
from typing import Any, Callable, Mapping, Sequence

from jscale import initializers, train as train_lib

# Settings that are traced arguments of `train` (vary freely inside one compiled program).
TRACED = ("seed", "init_scale", "layer_scale", "input_scale", "output_scale", "lr", "weight_decay", "kernel_init")
AXIS_ALIASES = {"sigma": "init_scale", "init": "kernel_init", "dataset": "data", "feature_scale": "input_scale"}


def _tupled(v):
  return tuple(_tupled(x) for x in v) if isinstance(v, (list, tuple)) else v


@dataclasses.dataclass(frozen=True)
class Grid:
  """Axes and their values: a product of blocks, each block one axis or several axes zipped together.

  product(sigma=(0.01, 0.1), seed=range(4))           8 configurations, dims ("sigma", "seed")
  zipped(input_scale=(1/255, 1), layer_scale.0=...)   one dim named "input_scale+layer_scale.0"
  g1 * g2                                             the product of two grids (dims concatenated)
  Configurations are ordered C-style: the first dim varies slowest.
  """
  blocks: tuple  # tuple of tuples of (axis_name, values_tuple); axes in a block have equal lengths

  @property
  def dims(self) -> tuple[str, ...]:
    return tuple("+".join(name for name, _ in block) for block in self.blocks)

  @property
  def shape(self) -> tuple[int, ...]:
    return tuple(len(block[0][1]) for block in self.blocks)

  @property
  def axes(self) -> dict[str, tuple]:
    return {name: values for block in self.blocks for name, values in block}

  @property
  def size(self) -> int:
    return math.prod(self.shape)

  def __mul__(self, other: "Grid") -> "Grid":
    return Grid(self.blocks + other.blocks)

  def points(self) -> list[dict[str, Any]]:
    """Every configuration's axis values, in order."""
    per_block = [[{name: values[i] for name, values in block} for i in range(len(block[0][1]))]
                 for block in self.blocks]
    return [dict(kv for d in combo for kv in d.items()) for combo in itertools.product(*per_block)]

  def to_json(self) -> dict:
    return {"dims": list(self.dims), "shape": list(self.shape),
            "blocks": [[[name, list(values)] for name, values in block] for block in self.blocks]}


def product(**axes) -> Grid:
  return Grid(tuple(((name, _values(name, v)),) for name, v in axes.items()))


def zipped(**axes) -> Grid:
  block = tuple((name, _values(name, v)) for name, v in axes.items())
  lengths = {len(v) for _, v in block}
  if len(lengths) > 1:
    raise ValueError(f"zipped axes need equal lengths, got {({n: len(v) for n, v in block})}")
  return Grid((block,))


def _values(name, values) -> tuple:
  if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, range)) and not hasattr(values, "tolist"):
    raise ValueError(f"axis {name!r}: values must be a sequence, got {values!r}")
  values = values.tolist() if hasattr(values, "tolist") else list(values)
  if not values:
    raise ValueError(f"axis {name!r} has no values")
  return tuple(_tupled(v) for v in values)


def log_spaced(lo: float, hi: float, n: int) -> tuple[float, ...]:
  """n values from lo to hi, evenly spaced in log, rounded to 4 significant digits (stable labels)."""
  return tuple(float(f"{lo * (hi / lo) ** (i / (n - 1)):.4g}") for i in range(n))


@dataclasses.dataclass(frozen=True)
class Experiment:
  """One experiment: a default value for every setting, and named grids over some of them.

  Data: `data` (a `jscale.datasets` name), `data_options`, `data_seed` (split/sampling seed).
  Model: `hidden` widths (input and output widths come from the data), `activation`,
    `input_layernorm`, `output_std` (calibrate logits' std at init), `kernel_init`, `bias_init`.
  Optimizer: `optimizer` (sgd | momentum | adam | adamw), `momentum`, `lr`, `weight_decay`.
  Schedule: `epochs`, `batch_size` (None = full batch).
  Scales (traced): `init_scale` (sigma), `layer_scale` (per layer; None = ones), `input_scale`,
    `output_scale`. `seed`: configuration seed (an axis, usually); `base_seed` mixes into every key.
  `summary_by`: axes the printed summary table groups by (default: every axis but `seed`).
  """
  name: str
  doc: str = ""
  grids: Mapping[str, Grid] = dataclasses.field(default_factory=dict)
  data: str = "two_moons"
  data_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  data_seed: int = 0
  hidden: tuple = (64, 64)
  activation: str = "relu"
  input_layernorm: bool = False
  output_std: float | None = None
  kernel_init: Any = "normal:1"
  bias_init: str = "zeros"
  optimizer: str = "adam"
  momentum: float = 0.9
  lr: float = 1e-3
  weight_decay: float = 0.0
  epochs: int = 200
  batch_size: int | None = None
  init_scale: float = 1.0
  layer_scale: tuple | None = None
  input_scale: float = 1.0
  output_scale: float = 1.0
  seed: int = 0
  base_seed: int = 0
  saturation_threshold: float = 1e-3
  summary_by: tuple | None = None

  def grid(self, name: str) -> Grid:
    if name not in self.grids:
      raise ValueError(f"experiment {self.name!r} has no grid {name!r}; it has: {', '.join(self.grids)}")
    return self.grids[name]


SETTINGS = tuple(f.name for f in dataclasses.fields(Experiment) if f.name not in ("name", "doc", "grids",
                                                                                  "summary_by", "base_seed"))


def canonical_axis(name: str, n_layers: int | None = None) -> str:
  """The setting an axis name refers to; ValueError for an unknown name."""
  name = AXIS_ALIASES.get(name, name)
  if name.startswith("layer_scale."):
    idx = name.partition(".")[2]
    if not idx.isdigit() or (n_layers is not None and int(idx) >= n_layers):
      raise ValueError(f"axis {name!r}: expected layer_scale.<l> with 0 <= l < {n_layers}")
    return name
  if name not in SETTINGS:
    valid = sorted(set(SETTINGS) | set(AXIS_ALIASES)) + ["layer_scale.<l>"]
    raise ValueError(f"unknown axis {name!r}; valid axes: {', '.join(valid)}")
  return name


def is_traced(axis: str) -> bool:
  return axis in TRACED or axis.startswith("layer_scale.")


def resolve(exp: Experiment, point: Mapping[str, Any]) -> dict[str, Any]:
  """The full settings of one configuration: the experiment's defaults overridden by the grid point."""
  settings = {name: getattr(exp, name) for name in SETTINGS}
  per_layer = {}
  for axis, value in point.items():
    canon = canonical_axis(axis)
    if canon.startswith("layer_scale."):
      per_layer[int(canon.partition(".")[2])] = value
    else:
      settings[canon] = value
  n_layers = len(settings["hidden"]) + 1
  if settings["layer_scale"] is None:
    settings["layer_scale"] = (1.0,) * n_layers
  if per_layer:
    ls = list(settings["layer_scale"])
    for l, v in per_layer.items():
      if l >= n_layers:
        raise ValueError(f"axis layer_scale.{l}: the model has {n_layers} weight layers")
      ls[l] = v
    settings["layer_scale"] = tuple(ls)
  return settings


def validate(exp: Experiment, grid: Grid) -> list[dict[str, Any]]:
  """Check every axis, value and setting of `grid` before any compute; return the resolved configs."""
  for axis in grid.axes:
    canonical_axis(axis)
  if len(set(canonical_axis(a) for a in grid.axes)) != len(grid.axes):
    raise ValueError(f"grid names the same setting twice: {list(grid.axes)}")
  configs = [resolve(exp, p) for p in grid.points()]
  for s in configs:
    for name in ("init_scale", "input_scale", "output_scale", "lr", "weight_decay"):
      v = s[name]
      if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise ValueError(f"{name} must be a number, got {v!r}")
    if isinstance(s["seed"], bool) or not isinstance(s["seed"], numbers.Integral) or s["seed"] < 0:
      raise ValueError(f"seed must be an int >= 0, got {s['seed']!r}")
    if len(s["layer_scale"]) != len(s["hidden"]) + 1:
      raise ValueError(f"layer_scale {s['layer_scale']!r} needs {len(s['hidden']) + 1} entries")
    for k in (s["kernel_init"] if isinstance(s["kernel_init"], tuple) else (s["kernel_init"],)):
      initializers.get(k)  # unknown initializer -> ValueError naming the valid ones
  return configs


def static_key(settings: Mapping[str, Any]) -> tuple:
  """The settings that change the compiled program (everything not traced)."""
  return tuple((k, _hashable(settings[k])) for k in SETTINGS if k not in TRACED)


def _hashable(v):
  if isinstance(v, Mapping):
    return tuple(sorted((k, _hashable(x)) for k, x in v.items()))
  return _tupled(v)


def train_spec(settings: Mapping[str, Any], widths: tuple, kernel_inits: tuple) -> train_lib.TrainSpec:
  return train_lib.TrainSpec(
      widths=widths, activation=settings["activation"], input_layernorm=settings["input_layernorm"],
      kernel_inits=kernel_inits, bias_init=settings["bias_init"], optimizer=settings["optimizer"],
      momentum=settings["momentum"], epochs=settings["epochs"], batch_size=settings["batch_size"],
      output_std=settings["output_std"], saturation_threshold=settings["saturation_threshold"])


# ---------------------------------------------------------------------------------------------------
# Experiments that are not training sweeps of the engine's shape.


@dataclasses.dataclass(frozen=True)
class CustomExperiment:
  """An experiment with its own run function (forward-only statistics, a bespoke training loop).

  `run(exp_dir, **grids[grid_name])` computes everything and writes the `jscale.report` results protocol
  (config.json + metrics.npz with named axes) into `exp_dir`; `grids` maps a grid name ("quick", "full")
  to those keyword settings, checked against `run`'s signature at registration. `execute` is what
  scripts/sweep.py calls: it skips a finished directory (resume) and records the grid and wall time.
  """
  name: str
  run: Callable[..., Any]
  grids: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
  doc: str = ""

  def grid(self, name: str) -> Mapping[str, Any]:
    if name not in self.grids:
      raise ValueError(f"experiment {self.name!r} has no grid {name!r}; it has: {', '.join(self.grids)}")
    return self.grids[name]

  def execute(self, grid_name: str, exp_dir: str, **overrides) -> str:
    """Run grid `grid_name` (its settings updated by `overrides`) into `exp_dir`, unless it is done."""
    settings = {**self.grid(grid_name), **overrides}
    _bind(self, settings)
    cfg_path = os.path.join(exp_dir, "config.json")
    if os.path.exists(cfg_path):
      with open(cfg_path) as f:
        done = json.load(f).get("grid_name")  # set below, last: present only once the run finished
      if done == grid_name:
        return exp_dir
      if done is not None:
        raise ValueError(f"{exp_dir} already holds results of grid {done!r}; pick a new --out")
    t0 = time.perf_counter()
    self.run(exp_dir, **settings)
    with open(cfg_path) as f:
      config = json.load(f)
    config.update(experiment=self.name, grid_name=grid_name, grid=grid_name, settings=settings,
                  wall_time_s=round(time.perf_counter() - t0, 2))
    tmp = cfg_path + ".tmp"
    with open(tmp, "w") as f:
      json.dump(config, f, indent=1, default=str)
    os.replace(tmp, cfg_path)
    return exp_dir


def _bind(exp: CustomExperiment, settings: Mapping[str, Any]):
  try:
    inspect.signature(exp.run).bind("exp_dir", **settings)
  except TypeError as e:
    raise ValueError(f"experiment {exp.name!r}: bad settings {dict(settings)!r} for "
                     f"{exp.run.__name__}{inspect.signature(exp.run)}: {e}") from None


# ---------------------------------------------------------------------------------------------------
# Registry.

_REGISTRY: dict[str, Experiment | CustomExperiment] = {}


def register(exp: Experiment | CustomExperiment) -> Experiment | CustomExperiment:
  if isinstance(exp, CustomExperiment):
    if not callable(exp.run):
      raise ValueError(f"experiment {exp.name!r}: run must be callable, got {exp.run!r}")
    for settings in exp.grids.values():
      _bind(exp, settings)  # a broken experiment fails at import, not mid-sweep
    _REGISTRY[exp.name] = exp
    return exp
  if not isinstance(exp, Experiment):
    raise ValueError(f"register expects an Experiment or CustomExperiment, got {type(exp).__name__}")
  for gname, grid in exp.grids.items():
    validate(exp, grid)  # a broken experiment fails at import, not mid-sweep
  _REGISTRY[exp.name] = exp
  return exp


def names() -> list[str]:
  from jscale.sweeps import experiments  # noqa: F401  (registers the built-in experiments)
  return sorted(_REGISTRY)


def get(name: str | Experiment | CustomExperiment) -> Experiment | CustomExperiment:
  if isinstance(name, (Experiment, CustomExperiment)):
    return name
  valid = names()
  if name not in _REGISTRY:
    raise ValueError(f"unknown experiment {name!r}; registered: {', '.join(valid)}")
  return _REGISTRY[name]

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
import time
from typing import Any, Callable, Mapping

from jscale import checks, initializers, train as train_lib
from jscale.models.catalog import model_of
from jscale.sweeps import store
from jscale.sweeps.grid import Grid, tupled

# Settings that are traced arguments of `train` (vary freely inside one compiled program). `data_seed` is
# traced too: the runner stacks the data sets of a group's data seeds (equal shapes) on a leading axis and
# gives each configuration its row.
TRACED = ("seed", "data_seed", "init_scale", "layer_scale", "input_scale", "output_scale", "lr", "weight_decay",
          "kernel_init")
AXIS_ALIASES = {"sigma": "init_scale", "init": "kernel_init", "dataset": "data", "feature_scale": "input_scale"}


@dataclasses.dataclass(frozen=True)
class Experiment:
  """One experiment: a default value for every setting, and named grids over some of them.

  Data: `data` (a `jscale.datasets` name), `data_options`, `data_seed`: the loader's seed (its sample of
    a synthetic set, its train/test split). None (the default) follows each configuration's `seed`, so
    every seed trains on its own draw of the data (the minibatch order always follows the seed); an int
    pins one draw for every configuration. `resolve` fills it in: every configuration's settings carry it.
  Model: `hidden` widths (input and output widths come from the data), `activation`,
    `input_layernorm`, `output_std` (calibrate logits' std at init), `kernel_init`, `bias_init`. Or a named
    model: `model` (a `jscale.models.get_model` name such as "lenet") with `model_options` (e.g. its `image`
    shape); its classes come from the data, which must have prod(image) features per row. Then `hidden`,
    `activation` and `bias_init` are unused (the last two must keep their defaults), `layer_scale` and a
    per-layer `kernel_init` have one entry per kernel of the model.
  Optimizer: `optimizer` (sgd | momentum | adam | adamw), `momentum`, `lr`, `weight_decay`.
  Schedule: `epochs`, `batch_size` (None = full batch).
  Scales (traced): `init_scale` (sigma), `layer_scale` (per layer; None = ones), `input_scale`,
    `output_scale`. `seed`: configuration seed (an axis, usually); `base_seed` mixes into every key.
  Metrics: `saturation_threshold` (|activation| counted as saturated), `train_pass` (measure
    `train_pass_loss`, a pass over the training split after every epoch; off: NaN, not measured),
    `metric_every` and `g_ratio_steps` (which steps of an epoch the step metrics and G are measured on:
    `jscale.train_spec.TrainSpec`).
  `summary_by`: axes the printed summary table groups by (default: every axis but `seed`).
  """
  name: str
  doc: str = ""
  grids: Mapping[str, Grid] = dataclasses.field(default_factory=dict)
  data: str = "two_moons"
  data_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  data_seed: int | None = None
  hidden: tuple = (64, 64)
  model: str | None = None
  model_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
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
  train_pass: bool = False
  metric_every: int = 1
  g_ratio_steps: str = "last"
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


def n_weight_layers(settings: Mapping[str, Any]) -> int:
  """Weight layers a configuration's layer_scale indexes: the MLP's, or the model's kernels."""
  if settings["model"] is None:
    return len(settings["hidden"]) + 1
  return model_of(settings).n_layers


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
  n_layers = n_weight_layers(settings)
  if settings["layer_scale"] is None:
    settings["layer_scale"] = (1.0,) * n_layers
  if per_layer:
    ls = list(settings["layer_scale"])
    for l, v in per_layer.items():
      if l >= n_layers:
        raise ValueError(f"axis layer_scale.{l}: the model has {n_layers} weight layers")
      ls[l] = v
    settings["layer_scale"] = tuple(ls)
  if settings["data_seed"] is None:  # follow the seed: each seed draws its own data
    settings["data_seed"] = settings["seed"]
  return settings


SEED_LIMIT = 2**32   # keys fold in seeds as uint32; scikit-learn's random_state takes [0, 2**32)

# Each hyperparameter's allowed values: (test, what is allowed). Checked per configuration before compute.
def _check_seed(name: str, v, where: str):
  if name == "data_seed" and not (checks.is_int(v) and 0 <= v < SEED_LIMIT):
    raise ValueError(f"data_seed must be None (follow the seed) or an int in [0, 2**32){where}, got {v!r}")
  checks.int_in_range(v, name, 0, SEED_LIMIT, hi_text="2**32", context=where)


def validate_settings(s: Mapping[str, Any], where: str = "") -> None:
  """One configuration's settings: every hyperparameter names its value and what is allowed (the training
  settings' rules are `jscale.train.SETTING_CHECKS`, the ones `TrainSpec` applies too)."""
  for name in train_lib.SETTING_CHECKS:
    train_lib.check_setting(name, s[name], where)
  _check_seed("seed", s["seed"], where)
  _check_seed("data_seed", s["data_seed"], where)
  ls = s["layer_scale"]
  if isinstance(ls, (str, bytes)) or not isinstance(ls, (tuple, list)):
    raise ValueError(f"layer_scale must be a tuple of numbers, one per weight layer{where}, got {ls!r}")
  n_layers = n_weight_layers(s)
  if len(ls) != n_layers:
    what = (f"one per kernel of model {s['model']!r}: {', '.join(model_of(s).kernel_names)}" if s["model"] else
            "one per weight layer")
    raise ValueError(f"layer_scale {ls!r} needs {n_layers} entries ({what}){where}")
  for l, v in enumerate(ls):
    checks.finite_real(v, f"layer_scale[{l}]", minimum=0, context=where)
  for k in (s["kernel_init"] if isinstance(s["kernel_init"], tuple) else (s["kernel_init"],)):
    initializers.get(k)  # unknown initializer -> ValueError naming the valid ones
  if isinstance(s["kernel_init"], tuple) and len(s["kernel_init"]) != n_layers:
    raise ValueError(f"kernel_init {s['kernel_init']!r} has {len(s['kernel_init'])} per-layer specs for "
                     f"{n_layers} weight layers{where}")
  if s["model"] is not None:
    for name, default in (("activation", "relu"), ("bias_init", "zeros")):
      if s[name] != default:
        raise ValueError(f"{name} {s[name]!r} is the MLP's setting; model {s['model']!r} brings its own (leave "
                         f"{name} at {default!r}){where}")


def validate(exp: Experiment, grid: Grid) -> list[dict[str, Any]]:
  """Check every axis, value and setting of `grid` before any compute; return the resolved configs."""
  for axis in grid.axes:
    canonical_axis(axis)
  if len(set(canonical_axis(a) for a in grid.axes)) != len(grid.axes):
    raise ValueError(f"grid names the same setting twice: {list(grid.axes)}")
  _check_seed("base_seed", exp.base_seed, f" (experiment {exp.name!r})")
  configs = [resolve(exp, p) for p in grid.points()]
  for p, s in zip(grid.points(), configs):
    where = f" (experiment {exp.name!r}, configuration {p})" if p else f" (experiment {exp.name!r})"
    validate_settings(s, where)
  return configs


def follows_seed(exp: Experiment, grid: Grid) -> bool:
  """Whether each configuration's data_seed is its seed (the default) rather than pinned or a grid axis."""
  return exp.data_seed is None and "data_seed" not in {canonical_axis(a) for a in grid.axes}


def static_key(settings: Mapping[str, Any]) -> tuple:
  """The settings that change the compiled program (everything not traced)."""
  return tuple((k, hashable(settings[k])) for k in SETTINGS if k not in TRACED)


def hashable(v):
  if isinstance(v, Mapping):
    return tuple(sorted((k, hashable(x)) for k, x in v.items()))
  return tupled(v)


def train_spec(settings: Mapping[str, Any], widths: tuple, kernel_inits: tuple) -> train_lib.TrainSpec:
  """A group's `TrainSpec`; `widths` = (the data's features, hidden..., its classes). A named model is built
  for the data's classes and must take its features (checked here, before any compute)."""
  model = model_of(settings, widths[-1])
  if model is not None:
    model.check_features(widths[0], f"data {settings['data']!r}")
    widths = (widths[0], widths[-1])
  return train_lib.TrainSpec(
      widths=widths, model=model, activation=settings["activation"], input_layernorm=settings["input_layernorm"],
      kernel_inits=kernel_inits, bias_init=settings["bias_init"], optimizer=settings["optimizer"],
      momentum=settings["momentum"], epochs=settings["epochs"], batch_size=settings["batch_size"],
      output_std=settings["output_std"], saturation_threshold=settings["saturation_threshold"],
      train_pass=settings["train_pass"], metric_every=settings.get("metric_every", 1),
      g_ratio_steps=settings.get("g_ratio_steps", "last"))


# ---------------------------------------------------------------------------------------------------
# Experiments that are not training sweeps of the engine's shape.


@dataclasses.dataclass(frozen=True)
class CustomExperiment:
  """An experiment with its own run function (forward-only statistics, a bespoke training loop).

  `run(exp_dir, **grids[grid_name])` computes everything and writes its results with
  `jscale.sweeps.store.write_results` (config.json + metrics.npz with named axes) into `exp_dir`; `grids`
  maps a grid name ("quick", "full") to those keyword settings, checked against `run`'s signature at
  registration. `execute` is what scripts/sweep.py calls: it skips a finished directory (resume) and
  records the grid and wall time.
  """
  name: str
  run: Callable[..., Any]
  grids: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
  doc: str = ""

  def grid(self, name: str) -> Mapping[str, Any]:
    if name not in self.grids:
      raise ValueError(f"experiment {self.name!r} has no grid {name!r}; it has: {', '.join(self.grids)}")
    return self.grids[name]

  def execute(self, grid_name: str, exp_dir: str, *, options: Mapping[str, Any] | None = None,
              progress: bool = True, **overrides) -> str:
    """Run grid `grid_name` (its settings updated by `overrides`) into `exp_dir`, unless it is done.
    `options` (those the experiment was built with) are recorded so that a resume rebuilds it. `progress`
    reaches a `run` that takes a `progress` keyword (how it shows its work, not a setting: not recorded)."""
    settings = {**self.grid(grid_name), **overrides}
    bind_settings(self, settings)
    done = store.finished_grid(exp_dir)
    if done == grid_name:
      return exp_dir
    if done is not None:
      raise ValueError(f"{exp_dir} already holds results of grid {done!r}; pick a new --out")
    with store.writer_lock(exp_dir):   # a second live writer is refused with the holder's pid
      t0 = time.perf_counter()
      shows = "progress" in inspect.signature(self.run).parameters
      self.run(exp_dir, **settings, **({"progress": progress} if shows else {}))
      store.finish(exp_dir, experiment=self.name, grid_name=grid_name, grid=grid_name, settings=settings,
                   options=dict(options or {}), wall_time_s=round(time.perf_counter() - t0, 2))
    return exp_dir


def bind_settings(exp: CustomExperiment, settings: Mapping[str, Any]):
  try:
    inspect.signature(exp.run).bind("exp_dir", **settings)
  except TypeError as e:
    raise ValueError(f"experiment {exp.name!r}: bad settings {dict(settings)!r} for "
                     f"{exp.run.__name__}{inspect.signature(exp.run)}: {e}") from None

"""A sweep's plan: validate the experiment and grid, load the data, group the configurations by compiled program
and cut each group into chunks that fit in memory (jscale.sweeps.runner's steps 1 and 2). No training."""
from __future__ import annotations

import dataclasses
import datetime
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jscale import checks, datasets, precision as precision_lib, train as train_lib
from jscale.memory import available_bytes
from jscale.sweeps import cost, experiment as exp_lib, registry
from jscale.sweeps.devices import default_group_size, select_devices
from jscale.sweeps.grid import Grid

MEMORY_FRACTION = 0.5


@dataclasses.dataclass(frozen=True)
class Group:
  """Configurations sharing one compiled program."""
  settings: dict            # a representative configuration's settings (its static ones are the group's)
  spec: train_lib.TrainSpec
  data_id: tuple            # (data name, hashable data_options)
  data_seeds: list          # the distinct data seeds of the group's configurations, sorted
  fingerprints: list        # datasets.fingerprint of each data seed's draw (aligned with data_seeds)
  rows: list                # the data seeds whose draws form the stacked data (one per distinct draw)
  row_of: dict              # data seed -> row of the stacked data
  indices: list             # configuration indices, in grid order
  bytes_per_config: int
  flops_per_config: float

  def data_keys(self) -> list:
    """Plan.datasets keys of the stacked rows."""
    return [self.data_id + (seed,) for seed in self.rows]


@dataclasses.dataclass(frozen=True)
class Plan:
  """What a sweep will compute, decided before any training; frozen: the runner derives changed copies
  (`dataclasses.replace`), e.g. the chunk plan a resume or another shard recorded."""
  experiment: exp_lib.Experiment
  grid_name: str
  grid: Grid
  points: list              # axis values per configuration
  configs: list             # full settings per configuration
  groups: list
  chunks: list              # (group id, [config indices])
  devices: list
  group_size: int | None
  datasets: dict            # (data name, data_options, data_seed) -> jscale.datasets.Dataset
  budget_bytes: int
  options: dict = dataclasses.field(default_factory=dict)  # what the experiment was built with
  precision: str = "highest"   # the float32 matmul policy the run computes under (jscale.precision)

  @property
  def n_configs(self) -> int:
    return len(self.points)

  def to_json(self) -> dict:
    exp = self.experiment
    return {
        "experiment": exp.name, "grid_name": self.grid_name, "options": self.options,
        "grid": {**self.grid.to_json(), "axes": list(self.grid.axes)},
        "summary_by": list(exp.summary_by) if exp.summary_by else None,
        "base_seed": exp.base_seed,
        "data_seed_follows_seed": exp_lib.follows_seed(exp, self.grid),
        "points": self.points,
        "configs": [{k: v for k, v in c.items()} for c in self.configs],
        "groups": [self._group_json(g) for g in self.groups],
        "chunks": [{"group": gid, "indices": idx} for gid, idx in self.chunks],
        "devices": [str(d) for d in self.devices], "group_size": self.group_size,
        "precision": self.precision, "process_count": jax.process_count(),
        "jax_version": jax.__version__, "backend": jax.default_backend(),
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
    }


  def _group_json(self, g: Group) -> dict:
    sets = [self.datasets[g.data_id + (seed,)] for seed in g.data_seeds]
    x0_sq = [float(np.mean(np.square(d.x_train, dtype=np.float64))) for d in sets]
    return {"indices": g.indices, "spec": dataclasses.asdict(g.spec), "epochs": g.spec.epochs,
            "n_layers": g.spec.n_layers, "bytes_per_config": g.bytes_per_config,
            "flops_per_config": g.flops_per_config, "data": list(map(str, g.data_id)),
            "data_seeds": list(g.data_seeds), "data_fingerprints": list(g.fingerprints),
            "data_source": sets[0].source, "data_sources": [d.source for d in sets],
            # E[x0^2] of the training inputs: the mean over the group's draws (and per draw).
            "x0_sq": float(np.mean(x0_sq)), "x0_sq_per_data_seed": x0_sq}


def _gb(b):
  return f"{b / 2**30:.3g} GiB"


def make_plan(experiment, grid: str | Grid = "quick", *, devices: int | Sequence | None = None,
              chunk_size: int | None = None, max_bytes: int | None = None, group_size: int | None = None,
              max_chunk: int = 256, options: dict | None = None, precision: str | None = None) -> Plan:
  """Validate the experiment and grid, load the data, group and chunk the configurations. No training.

  chunk_size: configurations per chunk (rounded up to a multiple of the device count); default: as many
    as fit in memory, at most `max_chunk` per device, balanced across the group's chunks.
  max_bytes: the per-device memory budget (default: half of `available_bytes`).
  group_size: configurations each device vmaps at once inside a chunk (`lax.map` over groups);
    None: `default_group_size` (1 on CPU, the device's whole slice on accelerators). A group_size at
    least the slice size vmaps the whole slice on CPU too.
  options: with a registered name, what to build it with; with an experiment object (built already),
    recorded in config.json only, so that a resume rebuilds the same experiment.
  precision: the float32 matmul policy `run` computes under ("highest" or "default"); None: the one in force
    (`jscale.precision.get_precision`).
  """
  options = dict(options or {})
  # An experiment object was built already (options, if given, are only recorded for a resume).
  exp = experiment if isinstance(experiment, (exp_lib.Experiment, exp_lib.CustomExperiment)) else \
      registry.get(experiment, **options)
  if isinstance(exp, exp_lib.CustomExperiment):
    raise ValueError(f"experiment {exp.name!r} has its own run function, not a training grid: run it with "
                     f"`get({exp.name!r}).execute(grid_name, exp_dir)` or scripts/sweep.py")
  if isinstance(grid, str):
    grid_name, grid = grid, exp.grid(grid)
  else:
    grid_name = "custom"
  points = grid.points()
  configs = exp_lib.validate(exp, grid)
  devs = list(devices) if isinstance(devices, (list, tuple)) else select_devices(devices)
  n_dev = len(devs)
  for name, v in (("chunk_size", chunk_size), ("group_size", group_size)):
    checks.optional(checks.positive_int)(v, name)
  policy = precision_lib.get_precision() if precision is None else precision
  checks.one_of(policy, "precision", precision_lib.POLICIES)
  if group_size is None:
    group_size = default_group_size(devs)

  # Group by static settings, keeping grid order inside each group.
  by_key: dict[tuple, list[int]] = {}
  for i, s in enumerate(configs):
    by_key.setdefault(exp_lib.static_key(s), []).append(i)

  loaded, fingerprints, groups = {}, {}, []
  for key, idx in by_key.items():
    s = configs[idx[0]]
    data_id = (s["data"], exp_lib.hashable(s["data_options"]))
    data_seeds = sorted({configs[i]["data_seed"] for i in idx})
    for seed in data_seeds:
      if data_id + (seed,) not in loaded:
        ds = datasets.get(s["data"], seed=seed, **dict(s["data_options"]))
        check_labels(s["data"], seed, ds)
        loaded[data_id + (seed,)], fingerprints[data_id + (seed,)] = ds, datasets.fingerprint(ds)
    sets = [loaded[data_id + (seed,)] for seed in data_seeds]
    check_stackable(s["data"], data_seeds, sets)
    fps = [fingerprints[data_id + (seed,)] for seed in data_seeds]
    first_seed_of = {}  # fingerprint -> the first data seed with that draw (a loader may ignore its seed)
    for seed, fp in zip(data_seeds, fps):
      first_seed_of.setdefault(fp, seed)
    rows = list(first_seed_of.values())
    row_of = {seed: rows.index(first_seed_of[fp]) for seed, fp in zip(data_seeds, fps)}
    ds = sets[0]
    widths = (ds.x_train.shape[1],) + tuple(s["hidden"]) + (ds.num_classes,)
    kernel_inits = tuple(dict.fromkeys(configs[i]["kernel_init"] for i in idx))
    spec = exp_lib.train_spec(s, widths, kernel_inits)
    n_train, n_test = len(ds.y_train), len(ds.y_test)
    spec.steps_per_epoch(n_train)  # batch larger than the data -> ValueError now
    per_config = cost.bytes_per_config(spec, n_train, n_test)
    if len(rows) > 1:  # vmap gathers each configuration's own copy of its draw
      per_config += data_nbytes(ds)
    groups.append(Group(s, spec, data_id, data_seeds, fps, rows, row_of, idx, per_config,
                        cost.flops_per_config(spec, n_train, n_test)))

  budget = int(max_bytes) if max_bytes is not None else int(
      MEMORY_FRACTION * available_bytes(devs[0]) / (n_dev if devs[0].platform == "cpu" else 1))
  chunks = []
  for gid, g in enumerate(groups):
    data_bytes = sum(data_nbytes(loaded[k]) for k in g.data_keys())  # the stack, on every device
    fit = (budget - data_bytes) // g.bytes_per_config
    if fit < 1:
      raise ValueError(
          f"experiment {exp.name!r}: one configuration of group {gid} needs about {_gb(g.bytes_per_config)} "
          f"(+ {_gb(data_bytes)} of data) but the per-device budget is {_gb(budget)}; use a smaller batch_size "
          f"or model, or more memory (max_bytes)")
    per_dev = min(fit, max_chunk)
    if chunk_size is not None:
      want = math.ceil(chunk_size / n_dev)
      if want > fit:
        raise ValueError(f"chunk_size {chunk_size} needs {_gb(want * g.bytes_per_config)} per device, over the "
                         f"budget of {_gb(budget)}; at most {fit * n_dev} configurations fit")
      per_dev = want
    n = len(g.indices)
    n_chunks = math.ceil(n / (per_dev * n_dev))
    size = math.ceil(n / n_chunks)  # balanced
    for c in range(n_chunks):
      chunks.append((gid, g.indices[c * size:(c + 1) * size]))
  return Plan(exp, grid_name, grid, points, configs, groups, chunks, devs, group_size, loaded, budget, options,
              policy)


def data_nbytes(ds: datasets.Dataset) -> int:
  return sum(a.nbytes for a in (ds.x_train, ds.y_train, ds.x_test, ds.y_test))


def check_labels(name: str, seed: int, ds: datasets.Dataset) -> None:
  """The network has one output per class: labels must be ints in [0, num_classes), and 2 classes at least."""
  k = ds.num_classes
  if not checks.is_int(k) or k < 2:
    raise ValueError(f"data set {name!r} (data seed {seed}) has num_classes {k!r}; a classifier needs at least 2 "
                     "classes (one logit per class)")
  for split, y in (("training", ds.y_train), ("held-out", ds.y_test)):
    y = np.asarray(y)
    if y.size and (not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= k):
      raise ValueError(f"data set {name!r} (data seed {seed}): {split} labels must be ints in [0, {k}) (the "
                       f"network has {k} outputs), got {y.dtype} labels from {y.min()} to {y.max()}")


def check_stackable(name: str, data_seeds: Sequence[int], sets: Sequence[datasets.Dataset]):
  """Draws of one data set for several data seeds must share shapes and classes (one program)."""
  want = [(a.shape, a.dtype) for a in sets[0][:4]] + [sets[0].num_classes]
  for seed, ds in zip(data_seeds, sets):
    got = [(a.shape, a.dtype) for a in ds[:4]] + [ds.num_classes]
    if got != want:
      raise ValueError(f"data set {name!r}: data seed {seed} gives arrays {got}, data seed {data_seeds[0]} "
                       f"gives {want}; one compiled program needs equal shapes (pin data_seed instead)")


def stack_data(sets: Sequence[datasets.Dataset]) -> datasets.Data:
  """The draws stacked on a leading axis: `Data` whose arrays are (n_draws, ...). Stacked on the host: an
  eager `jnp.stack` compiled one program per draw count, shape and field (41 in the main job's training
  experiments), for a copy."""
  return datasets.Data(*(jnp.asarray(np.stack([np.asarray(getattr(d, f), dtype=np.float32 if f.startswith("x")
                                                          else np.int32) for d in sets]))
                         for f in datasets.Data._fields))

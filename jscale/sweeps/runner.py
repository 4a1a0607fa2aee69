"""The sweep runner: plan a grid into chunks, train each chunk sharded over every device, write, resume.

  plan = make_plan("sigma", "quick")                  # validates everything, loads data, no training
  res = run(plan, "runs/sigma")                       # -> Results; writes RUN_DIR as in results.py
  res = resume("runs/sigma")                          # finishes an interrupted run, skipping done chunks

How a grid becomes compute:
1. Configurations are grouped by their static settings (batch size, optimizer, data, widths, ...): one
   compiled `train` per group. Within a group every traced setting (seed, sigma, scales, lr, weight
   decay, initializer choice, data seed) is a row of arrays. Data seeds: the group's data set is loaded
   once per distinct data seed (equal shapes), the distinct draws are stacked on a leading axis
   (replicated on every device) and each configuration carries its row index; a group with one draw
   passes it unstacked, so a pinned data seed costs nothing extra.
2. Each group is split into chunks that fit in memory: `jscale.train.bytes_per_config` times the chunk
   must fit in half the device's memory (CPU: half of the available host RAM, shared by the host
   devices), beside the stacked data; with several draws each configuration also counts a copy of one
   draw (vmap gathers its row). A grid whose single configuration cannot fit is refused before any compute.
3. A chunk's rows are sharded over a 1-D `jax.sharding.Mesh` of the devices (axis "config") with
   `jax.shard_map`: each device trains its slice with `vmap` (or `lax.map(..., batch_size=group_size)`
   to process it in cache-sized groups); no communication. Chunks are padded (repeating the last
   configuration) to a multiple of the device count and to one shape per group, so each group compiles
   once.
4. Every finished chunk is written atomically to RUN_DIR/chunks with its sha256; `resume` re-plans from
   config.json, checks that the experiment, every data draw's fingerprint and the matmul precision are
   unchanged, and runs only the missing chunks and the damaged ones (naming them).
5. `shard=(I, N)` (scripts/sweep.py --shard I/N) computes chunks c with c % N == I: independent jobs (a
   Slurm job array, Ray tasks) fill one run directory with no coordinator; the first writes config.json
   (atomically), the others check it is the same run and adopt its chunk plan; the last to land a chunk
   assembles. Locks: one writer per shard (RUN_DIR/.lock.shard-I-of-N), the whole run's RUN_DIR/.lock
   excludes all others.

Determinism: configuration i's key is `fold_in(key(base_seed), seed_i)`, a function of its own seed only.
At a fixed device count a configuration's numbers are bit-identical whatever the chunking, shard or
process count (tests/test_shard.py, tests/test_distributed.py). Across device counts on the CPU they
agree to float32 reassociation only (XLA:CPU threads the per-configuration program differently; the
tests bound it).

Several processes (`jax.distributed`): call `jax.distributed.initialize(...)` in every process before
anything else (on Cloud TPU VMs and under Slurm it needs no arguments; on CPU set
`jax_cpu_collectives_implementation` to "gloo"), then run the same sweep in every process.
`select_devices` then spans every process's devices, each process builds the global arrays from its
identical host copy (`put_global`), process 0 decides the chunk plan and what is left to do (`_agree`),
results are gathered with `jax.experimental.multihost_utils.process_allgather`, and only process 0
writes the run directory (which must be on a filesystem every process sees for a resume).
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import math
import os
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jscale import datasets, precision, train as train_lib
from jscale.sweeps import experiment as exp_lib, registry, store
from jscale.sweeps.grid import Grid, _tupled

MEMORY_FRACTION = 0.5


@dataclasses.dataclass
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


@dataclasses.dataclass
class Plan:
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
        "precision": precision.get_precision(), "process_count": jax.process_count(),
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


def available_bytes(device) -> int:
  """Free memory of `device`: the allocator's limit on GPU/TPU, available host RAM on CPU."""
  stats = None
  try:
    stats = device.memory_stats()
  except Exception:  # some backends do not implement it
    pass
  if stats and "bytes_limit" in stats:
    return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))


def use_cpu_cores(n: int | None = None) -> int | None:
  """Expose `n` host CPU devices (default: one per core) so the CPU engine shards configurations over cores.

  XLA:CPU runs a vmapped grid as batched ops whose intermediates (configs x examples x width) overflow
  the cores' caches, and splits each small op across threads; one device per core, each training its
  configurations one at a time (`default_group_size`), keeps a configuration's activations in its
  core's L2 and the cores busy (scripts/bench.py measures both layouts). Only the CPU platform reads
  this setting: on GPU/TPU it changes nothing. A no-op, returning None, when XLA_FLAGS already sets a
  device count or JAX's backends are already initialised; else returns the count it set.
  """
  if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
    return None
  n = (os.cpu_count() or 1) if n is None else n
  try:
    jax.config.update("jax_num_cpu_devices", int(n))
  except RuntimeError:  # backends already up (a notebook, a test): keep what is there
    return None
  return int(n)


def default_group_size(devices: Sequence) -> int | None:
  """CPU: 1 (each device trains its configurations one after another, cache-resident); else None (vmap all)."""
  return 1 if devices and devices[0].platform == "cpu" else None


def select_devices(n: int | None = None) -> list:
  """The devices a sweep shards over: every local device, or the first `n`. With several processes
  (`jax.distributed`), every process's devices (the first `n` of each: `n` counts per process)."""
  if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
    raise ValueError(f"devices must be an int >= 1, got {n!r}")
  if jax.process_count() > 1:
    by_process: dict[int, list] = {}
    for d in jax.devices():
      by_process.setdefault(d.process_index, []).append(d)
    fewest = min(len(v) for v in by_process.values())
    if n is not None and n > fewest:
      raise ValueError(f"asked for {n} devices per process but a process has only {fewest}")
    return [d for p in sorted(by_process) for d in by_process[p][:n]]
  devs = jax.local_devices()
  if n is None:
    return list(devs)
  if n > len(devs):
    hint = (" On CPU, start Python with XLA_FLAGS=--xla_force_host_platform_device_count=N "
            "(scripts/sweep.py --devices N does this for you)." if devs[0].platform == "cpu" else "")
    raise ValueError(f"asked for {n} devices but only {len(devs)} are visible: {devs}.{hint}")
  return list(devs[:n])


def accelerator_plugin_installed() -> bool:
  """Whether JAX may start on a GPU/TPU here (a plugin is installed, or JAX_PLATFORMS names one); tells,
  without starting JAX, whether `--devices N` will count accelerators or CPU cores."""
  platforms = os.environ.get("JAX_PLATFORMS", "").lower()
  if platforms:
    return any(p.strip() not in ("", "cpu") for p in platforms.split(","))
  import importlib.metadata
  names = {(d.metadata["Name"] or "").lower().replace("_", "-") for d in importlib.metadata.distributions()}
  return any(n.startswith(("jax-cuda", "jax-rocm", "libtpu", "jax-tpu")) for n in names)


def check_device_request(n, *, platform: str | None = None) -> None:
  """`--devices N` before JAX starts (platform None) or once it has (platform known): an int >= 1, and on CPU
  at most one device per core -- host devices beyond the cores only time-slice them (N x the compute)."""
  if n is None:
    return
  if isinstance(n, bool) or not isinstance(n, int) or n < 1:
    raise ValueError(f"--devices must be an int >= 1, got {n!r}")
  cores = os.cpu_count() or 1
  on_cpu = platform == "cpu" if platform is not None else not accelerator_plugin_installed()
  if on_cpu and n > cores:
    raise ValueError(f"--devices {n}: this machine has {cores} CPU core(s) and JAX runs on its CPU, where each "
                     f"device is one core: at most {cores} (more would only time-slice the same cores)")


def _gb(b):
  return f"{b / 2**30:.3g} GiB"


def make_plan(experiment, grid: str | Grid = "quick", *, devices: int | Sequence | None = None,
              chunk_size: int | None = None, max_bytes: int | None = None, group_size: int | None = None,
              max_chunk: int = 256, options: dict | None = None) -> Plan:
  """Validate the experiment and grid, load the data, group and chunk the configurations. No training.

  chunk_size: configurations per chunk (rounded up to a multiple of the device count); default: as many
    as fit in memory, at most `max_chunk` per device, balanced across the group's chunks.
  max_bytes: the per-device memory budget (default: half of `available_bytes`).
  group_size: configurations each device vmaps at once inside a chunk (`lax.map` over groups);
    None: `default_group_size` (1 on CPU, the device's whole slice on accelerators). A group_size at
    least the slice size vmaps the whole slice on CPU too.
  options: with a registered name, what to build it with; with an experiment object (built already),
    recorded in config.json only, so that a resume rebuilds the same experiment.
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
    if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
      raise ValueError(f"{name} must be None or an int >= 1, got {v!r}")
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
    per_config = train_lib.bytes_per_config(spec, n_train, n_test)
    if len(rows) > 1:  # vmap gathers each configuration's own copy of its draw
      per_config += data_nbytes(ds)
    groups.append(Group(s, spec, data_id, data_seeds, fps, rows, row_of, idx, per_config,
                        train_lib.flops_per_config(spec, n_train, n_test)))

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
  return Plan(exp, grid_name, grid, points, configs, groups, chunks, devs, group_size, loaded, budget, options)


def data_nbytes(ds: datasets.Dataset) -> int:
  return sum(a.nbytes for a in (ds.x_train, ds.y_train, ds.x_test, ds.y_test))


def check_labels(name: str, seed: int, ds: datasets.Dataset) -> None:
  """The network has one output per class: labels must be ints in [0, num_classes), and 2 classes at least."""
  k = ds.num_classes
  if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 2:
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
  """The draws stacked on a leading axis: `Data` whose arrays are (n_draws, ...)."""
  return datasets.Data(*(jnp.stack([jnp.asarray(getattr(d, f), dtype=jnp.float32 if f.startswith("x")
                                                else jnp.int32) for d in sets])
                         for f in datasets.Data._fields))


# ---------------------------------------------------------------------------------------------------
# Execution.


def config_keys(base_seed: int, seeds: Sequence[int]) -> jax.Array:
  """Per-configuration keys: fold_in(key(base_seed), seed), independent of the chunk a config lands in."""
  base = jax.random.key(base_seed)
  return jax.vmap(lambda s: jax.random.fold_in(base, s))(jnp.asarray(seeds, jnp.uint32))


def stacked_hparams(spec: train_lib.TrainSpec, settings: Sequence[dict]) -> train_lib.HParams:
  f32 = lambda name: np.asarray([s[name] for s in settings], np.float32)
  return train_lib.HParams(
      init_scale=f32("init_scale"), layer_scale=np.asarray([s["layer_scale"] for s in settings], np.float32),
      input_scale=f32("input_scale"), output_scale=f32("output_scale"), lr=f32("lr"),
      weight_decay=f32("weight_decay"),
      init_index=np.asarray([spec.init_index(s["kernel_init"]) for s in settings], np.int32))


_EXECUTORS: dict = {}


def executor_for(spec: train_lib.TrainSpec, devices: Sequence, group_size: int | None):
  """`make_executor(make_train(spec), ...)`, memoized on (spec, devices, group_size): re-running or
  resuming a sweep in the same process (a notebook, the tests) reuses the compiled programs."""
  key = (spec, tuple(d.id for d in devices), group_size)
  if key not in _EXECUTORS:
    _EXECUTORS[key] = make_executor(train_lib.make_train(spec), Mesh(np.array(devices), ("config",)), group_size)
  return _EXECUTORS[key]


def make_executor(train, mesh: Mesh, group_size: int | None):
  """jit(shard_map(per-device vmap)) of `train` over the mesh's "config" axis.

  The executor is `f(keys, hparams, data_rows, stacked)`: `stacked` is `stack_data` of the group's
  draws (replicated), `data_rows` (int32, one per configuration, sharded with it) picks each
  configuration's draw. With a single draw (known from its shape at trace time) it is shared unstacked,
  as before; with several, each configuration indexes its own (a gather under vmap, a slice under
  `lax.map` one at a time).
  """
  def local(keys, hp, rows, stacked):
    if stacked.x_train.shape[0] == 1:
      shared = jax.tree.map(lambda a: a[0], stacked)
      one = lambda k, h, r: train(k, h, shared)
    else:
      one = lambda k, h, r: train(k, h, jax.tree.map(lambda a: a[r], stacked))
    if group_size is None:
      return jax.vmap(one)(keys, hp, rows)
    if group_size == 1:   # a plain loop: vmap of size 1 makes every matmul a batched dot, 4x slower on XLA:CPU
      return jax.lax.map(lambda khr: one(*khr), (keys, hp, rows))
    return jax.lax.map(lambda khr: one(*khr), (keys, hp, rows), batch_size=group_size)

  sharded = jax.shard_map(local, mesh=mesh, in_specs=(P("config"), P("config"), P("config"), P()),
                          out_specs=P("config"), check_vma=False)
  return jax.jit(sharded)


def put_global(tree, sharding: NamedSharding):
  """`jax.device_put(tree, sharding)`; with several processes (a mesh this process cannot address whole)
  each process builds the global arrays from its identical host copy, placing its own devices' slices."""
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)

  def put(a):
    if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
      return jax.random.wrap_key_data(put(jax.random.key_data(a)), impl=jax.random.key_impl(a))
    host = np.asarray(a)
    return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])

  return jax.tree.map(put, tree)


def _gather(tree):
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    return jax.tree.map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))
  return jax.tree.map(np.asarray, tree)


class _Progress:
  def __init__(self, total, initial, epochs_per_config, desc, enabled):
    self.bar = None
    self.epochs = epochs_per_config
    if enabled:
      from tqdm.auto import tqdm
      self.bar = tqdm(total=total, initial=initial, desc=desc, unit="config", dynamic_ncols=True)
      self._post(initial)

  def _post(self, done):
    if self.bar is not None:
      self.bar.set_postfix_str(f"{done * self.epochs} config-epochs")

  def update(self, n):
    if self.bar is not None:
      self.bar.update(n)
      self._post(self.bar.n)

  def close(self):
    if self.bar is not None:
      self.bar.close()


def parse_shard(shard) -> tuple[int, int] | None:
  """None, "I/N" or (I, N) with 0 <= I < N -> (I, N); shard 0 of 1 is the whole run (None)."""
  if shard is None:
    return None
  if isinstance(shard, str):
    i, sep, n = shard.partition("/")
    if not sep or not i.strip().isdigit() or not n.strip().isdigit():
      raise ValueError(f"shard must be I/N with integers 0 <= I < N (e.g. 0/4), got {shard!r}")
    shard = (int(i), int(n))
  if (not isinstance(shard, (tuple, list)) or len(shard) != 2
      or not all(isinstance(v, int) and not isinstance(v, bool) for v in shard)):
    raise ValueError(f"shard must be I/N or (I, N) with integers 0 <= I < N, got {shard!r}")
  i, n = shard
  if not (n >= 1 and 0 <= i < n):
    raise ValueError(f"shard must be I/N with 0 <= I < N and N >= 1, got {i}/{n}")
  return None if n == 1 else (i, n)


def shard_chunks(n_chunks: int, shard: tuple[int, int] | None) -> list[int]:
  """The chunks shard I of N computes: c % N == I (the chunk plan is fixed once config.json exists)."""
  return list(range(n_chunks)) if shard is None else [c for c in range(n_chunks) if c % shard[1] == shard[0]]


def check_same_run(old: dict, new: dict, run_dir: str) -> None:
  """Refuse to continue `run_dir` (resume, or a shard joining it) when what it computes changed: the
  configurations, any data draw, or the matmul precision (devices may differ: a configuration's numbers do
  not depend on them)."""
  for field in ("points", "configs"):
    if json.loads(json.dumps(new[field])) != old[field]:
      raise ValueError(f"cannot continue {run_dir}: the experiment's {field} changed since the run started "
                       "(another grid, option or code version); start a new run directory")
  draws = lambda cfg: [(g.get("data_seeds"), g.get("data_fingerprints", g.get("data_fingerprint")))
                       for g in cfg["groups"]]
  if draws(new) != draws(old):
    raise ValueError(f"cannot continue {run_dir}: its data changed since the run started (data seeds and "
                     f"fingerprints per group: now {draws(new)}, recorded {draws(old)})")
  was, now = old.get("precision", "highest"), new.get("precision", "highest")
  if was != now:
    raise ValueError(f"cannot continue {run_dir}: it was computed at matmul precision {was!r}, now {now!r} is in "
                     f"force; set it back (jscale.precision.set_precision({was!r}) or --precision {was})")


def _agree(obj):
  """Process 0's `obj` on every process (JSON-able): the processes must run the same chunks, in order."""
  if jax.process_count() == 1:
    return obj
  from jax.experimental import multihost_utils
  raw = np.frombuffer(json.dumps(obj).encode(), np.uint8) if jax.process_index() == 0 else np.zeros(0, np.uint8)
  n = int(multihost_utils.broadcast_one_to_all(np.int64(raw.size)))
  buf = np.zeros(n, np.uint8)
  buf[:raw.size] = raw[:n]
  return json.loads(bytes(np.asarray(multihost_utils.broadcast_one_to_all(buf))).decode())


def _say(msg: str) -> None:
  if jax.process_index() == 0:
    print(msg, flush=True)


def run(plan: Plan, run_dir: str, *, progress: bool = True, max_chunks: int | None = None, shard=None,
        _resuming: bool = False) -> store.Results | None:
  """Train every chunk of `plan` (of shard I of N: chunks c with c % N == I) not yet done in `run_dir`.

  Returns the assembled Results once every chunk of the run is on disk, else None (this shard is done
  but others are not, or `max_chunks`, which exists to simulate an interruption, stopped it). Shards
  of one run may run at once, in separate processes or on separate machines sharing the directory: the
  first to start writes config.json, the others check it is the same run and adopt its chunk plan, and
  whichever finishes the last chunk assembles. A second writer of the same shard (or of the whole run
  beside a shard) is refused with the holder's pid.
  """
  shard = parse_shard(shard)
  with contextlib.ExitStack() as stack:
    setup, error = None, None
    if jax.process_index() == 0:
      try:
        stack.enter_context(store.writer_lock(run_dir, shard))
        setup = _setup(plan, run_dir, shard, _resuming)
      except ValueError as e:   # refused: every process must stop, not wait for process 0 in a collective
        setup, error = {"error": str(e)}, e
    setup = _agree(setup)
    if "error" in setup:
      raise error if error is not None else ValueError(setup["error"])
    return _run_chunks(plan, run_dir, progress, max_chunks, shard, _resuming, setup)


def _setup(plan, run_dir, shard, resuming) -> dict:
  """Process 0: start or join the run; the chunk plan and the state of this shard's chunks."""
  config = plan.to_json()
  chunks = plan.chunks
  if not resuming:
    if shard is None:
      store.start_sweep(run_dir, config)
    else:
      old = store.join_sweep(run_dir, config)
      if old is not None:   # another shard started the run: same run, and its chunk plan wins
        check_same_run(old, config, run_dir)
        chunks = [(c["group"], list(c["indices"])) for c in old["chunks"]]
  mine = shard_chunks(len(chunks), shard)
  return {"chunks": [[g, list(i)] for g, i in chunks], "states": [store.chunk_state(run_dir, c) for c in mine]}


def _run_chunks(plan, run_dir, progress, max_chunks, shard, resuming, setup):
  is_writer = jax.process_index() == 0
  plan.chunks = [(g, list(i)) for g, i in setup["chunks"]]
  mine = shard_chunks(len(plan.chunks), shard)
  states = dict(zip(mine, setup["states"]))
  todo = [c for c in mine if states[c] != "done"]
  damaged = [c for c in mine if states[c] == "damaged"]
  part = "" if shard is None else f" (shard {shard[0]} of {shard[1]})"
  if damaged:
    _say(f"{run_dir}: chunk(s) {_ids(damaged)} damaged (checksum mismatch, truncated or unchecked): recomputing")
  if resuming or shard is not None:
    missing = [c for c in todo if states[c] == "missing"]
    _say(f"{run_dir}{part}: {len(mine) - len(todo)} of {len(mine)} chunk(s) done"
         + (f"; computing missing chunk(s) {_ids(missing)}" if missing else ""))
  done_configs = plan.n_configs - sum(len(plan.chunks[c][1]) for c in todo)
  mesh = Mesh(np.array(plan.devices), ("config",))
  n_dev = len(plan.devices)
  bar = _Progress(plan.n_configs, done_configs, max(g.spec.epochs for g in plan.groups),
                  f"{plan.experiment.name}/{plan.grid_name}{part}", progress and is_writer)
  executors, device_data, sizes = {}, {}, {}
  info = {"devices": [str(d) for d in plan.devices], "shard": list(shard) if shard else None,
          "process_count": jax.process_count(), "precision": precision.get_precision()}
  ran = 0
  try:
    for cid in todo:
      if max_chunks is not None and ran >= max_chunks:
        return None
      gid, idx = plan.chunks[cid]
      g = plan.groups[gid]
      if gid not in executors:
        executors[gid] = executor_for(g.spec, plan.devices, plan.group_size)
        stacked = stack_data([plan.datasets[k] for k in g.data_keys()])
        device_data[gid] = put_global(stacked, NamedSharding(mesh, P()))
        biggest = max(len(i) for gg, i in plan.chunks if gg == gid)
        sizes[gid] = math.ceil(biggest / n_dev) * n_dev  # one padded shape per group: one compile
      pad = sizes[gid] - len(idx)
      rows = list(idx) + [idx[-1]] * pad
      settings = [plan.configs[i] for i in rows]
      t0 = time.perf_counter()
      keys = config_keys(plan.experiment.base_seed, [s["seed"] for s in settings])
      hp = stacked_hparams(g.spec, settings)
      data_rows = np.asarray([g.row_of[s["data_seed"]] for s in settings], np.int32)
      sharding = NamedSharding(mesh, P("config"))
      keys, hp, data_rows = put_global((keys, hp, data_rows), sharding)
      out = executors[gid](keys, hp, data_rows, device_data[gid])
      out = _gather(out)
      out = jax.tree.map(lambda a: a[:len(idx)], out)
      seconds = time.perf_counter() - t0
      if is_writer:
        store.write_chunk(run_dir, cid, idx, out, seconds, info)
      ran += 1
      bar.update(len(idx))
  finally:
    bar.close()
  if not is_writer:
    return None
  left = [c for c in range(len(plan.chunks)) if not store.chunk_done(run_dir, c)]
  if left:   # other shards' chunks
    _say(f"{run_dir}{part}: this shard is done; {len(left)} chunk(s) of other shards are not yet on disk "
         f"({_ids(left)}); the last shard to finish assembles the results")
    return None
  return store.assemble(run_dir)


def _ids(chunks: Sequence[int], most: int = 20) -> str:
  text = ", ".join(str(c) for c in chunks[:most])
  return text + (f", ... ({len(chunks)} in all)" if len(chunks) > most else "")


def resume(run_dir: str, *, experiment=None, devices: int | Sequence | None = None, progress: bool = True,
           max_chunks: int | None = None, shard=None) -> store.Results | None:
  """Finish the run in `run_dir`: same experiment, grid and chunk plan; only missing chunks (and damaged
  ones, which it names) are trained. With `shard`, only that shard's chunks.

  The experiment is looked up by the name in config.json (pass `experiment=` for an unregistered one).
  Raises ValueError if the experiment's configurations, any data draw or the matmul precision changed
  since the run started. The devices may change (a configuration's numbers do not depend on them).
  """
  if not os.path.isdir(run_dir):
    raise ValueError(f"cannot resume {run_dir}: no such directory")
  if not os.path.isfile(os.path.join(run_dir, store.CONFIG_JSON)):
    raise ValueError(f"cannot resume {run_dir}: no {store.CONFIG_JSON} there (not a sweep's run directory)")
  old = store.read_config(run_dir)
  for field in ("experiment", "grid_name", "points", "configs", "groups", "chunks"):
    if field not in old:
      raise ValueError(f"cannot resume {run_dir}: its {store.CONFIG_JSON} lacks {field!r} (not a sweep's, or damaged)")
  options = old.get("options") or {}
  exp = registry.get(experiment) if experiment is not None else registry.get(old["experiment"], **options)
  grid = exp.grid(old["grid_name"]) if old["grid_name"] != "custom" else _grid_from_json(old["grid"])
  plan = make_plan(exp, grid, devices=devices, group_size=old["group_size"])
  plan.options = options
  plan.grid_name = old["grid_name"]
  check_same_run(old, plan.to_json(), run_dir)
  # The recorded chunk plan wins, so finished chunk files stay valid whatever the devices now.
  plan.chunks = [(c["group"], list(c["indices"])) for c in old["chunks"]]
  return run(plan, run_dir, progress=progress, max_chunks=max_chunks, shard=shard, _resuming=True)


def _grid_from_json(g: dict) -> Grid:
  return Grid(tuple(tuple((name, tuple(_tupled(v) for v in values)) for name, values in block)
                            for block in g["blocks"]))

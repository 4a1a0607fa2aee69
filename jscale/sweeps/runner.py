"""The sweep runner: plan a grid into chunks, train each chunk sharded over every device, write, resume.

  plan = make_plan("sigma", "quick")                  # validates everything, loads data, no training
  res = run(plan, "runs/sigma")                       # -> Results; writes RUN_DIR as in store.py
  res = resume("runs/sigma")                          # finishes an interrupted run, skipping done chunks

How a grid becomes compute:
1. Configurations are grouped by their static settings (batch size, optimizer, data, widths, ...): one
   compiled `train` per group. Within a group every traced setting (seed, sigma, scales, lr, weight
   decay, initializer choice, data seed) is a row of arrays. Data seeds: the group's data set is loaded
   once per distinct data seed (equal shapes), the distinct draws are stacked on a leading axis
   (replicated on every device) and each configuration carries its row index; a group with one draw
   passes it unstacked, so a pinned data seed costs nothing extra.
2. Each group is split into chunks that fit in memory: `jscale.sweeps.cost.bytes_per_config` times the chunk
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

Where each step lives: `plan.py` (steps 1-2, `make_plan`), `executor.py` (step 3: the mesh program, keys,
hyperparameter rows), `store.py` (step 4: every file of the run directory), `shards.py` (step 5's shard
arithmetic and the same-run check), `lock.py` (the writers' locks), `devices.py` (which devices); this
module runs a plan's chunks and resumes a run.

Determinism: configuration i's key is `fold_in(key(base_seed), seed_i)`, a function of its own seed only.
At a fixed device count a configuration's numbers are bit-identical whatever the chunking, shard or
process count (tests/sweeps/test_shard.py, tests/sweeps/test_distributed.py). Across device counts on the CPU they
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
import json
import math
import os
import time
from typing import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jscale import precision
from jscale.sweeps import registry, store
# Also re-exported for their callers (scripts/sweep.py, scripts/bench.py, jscale/experiments/symmetry).
from jscale.sweeps.devices import check_device_request, default_group_size, select_devices, use_cpu_cores  # noqa: F401
from jscale.sweeps.executor import (config_keys, executor_for, gather, make_executor, put_global,  # noqa: F401
                                    stacked_hparams)
from jscale.sweeps.grid import Grid, tupled
from jscale.sweeps.plan import Plan, check_stackable, make_plan, stack_data  # noqa: F401
from jscale.sweeps.shards import check_same_run, parse_shard, shard_chunks


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
    stack.enter_context(precision.scoped(plan.precision))
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
  return {"chunks": [[g, list(i)] for g, i in chunks], "states": [store.chunk_state(run_dir, c, chunks[c][1]) for c in mine]}


def _run_chunks(plan, run_dir, progress, max_chunks, shard, resuming, setup):
  is_writer = jax.process_index() == 0
  plan = dataclasses.replace(plan, chunks=[(g, list(i)) for g, i in setup["chunks"]])
  mine = shard_chunks(len(plan.chunks), shard)
  states = dict(zip(mine, setup["states"]))
  todo = [c for c in mine if states[c] != "done"]
  damaged = [c for c in mine if states[c] == "damaged"]
  foreign = [c for c in mine if states[c] == "foreign"]
  part = "" if shard is None else f" (shard {shard[0]} of {shard[1]})"
  if damaged:
    _say(f"{run_dir}: chunk(s) {_ids(damaged)} damaged (checksum mismatch, truncated or unchecked): recomputing")
  if foreign:
    _say(f"{run_dir}: chunk(s) {_ids(foreign)} hold other configurations than the plan's (copied from another "
         "run?): recomputing")
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
      out = gather(out)
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
  left = [c for c in range(len(plan.chunks)) if not store.chunk_done(run_dir, c, plan.chunks[c][1])]
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
  plan = make_plan(exp, grid, devices=devices, group_size=old["group_size"])   # the precision in force: checked
  plan = dataclasses.replace(plan, options=options, grid_name=old["grid_name"])
  check_same_run(old, plan.to_json(), run_dir)
  # The recorded chunk plan wins, so finished chunk files stay valid whatever the devices now.
  plan = dataclasses.replace(plan, chunks=[(c["group"], list(c["indices"])) for c in old["chunks"]])
  return run(plan, run_dir, progress=progress, max_chunks=max_chunks, shard=shard, _resuming=True)


def _grid_from_json(g: dict) -> Grid:
  return Grid(tuple(tuple((name, tuple(tupled(v) for v in values)) for name, values in block)
                            for block in g["blocks"]))

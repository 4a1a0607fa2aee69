"""The results store: the only reader and writer of a run directory's files, and of OUT/run.json.

A run directory (one per experiment, `OUT/<experiment>/`) holds:

  config.json            what was run: experiment, grid, options, settings. A sweep also records every
                         configuration's axis values and settings, the static groups (widths, data source,
                         data fingerprint, E[x0^2] of the training inputs), the chunk plan and the devices.
                         Once the results are complete it gains "axes" (every named axis's values) and
                         "metrics" (each metric's axis names, in the order of its array), and a sweep
                         "compute_seconds".
  metrics.npz            one array per metric, shaped by its named axes (sigma's quick grid: test_acc of
                         shape (2, 4, 4, 200) over ("batch_size", "sigma", "seed", "epoch")).
  chunks/chunk_NNNNN.npz a sweep's finished chunks (flat, one row per configuration), written atomically
                         as they finish so that an interrupted sweep resumes; only this module reads them.
  summary.csv            a sweep's one row per configuration: axis values, final metrics, divergence.
  *.png, *.json          figures and records an experiment writes beside its results.

OUT/run.json lists every invocation of the main job (command, grid, wall time, devices; since issue 23 also
`compile` and per experiment `experiment_times`: programs compiled, compile and other seconds, from
`jscale.sweeps.compile_clock`).

`write_results(exp_dir, axes, metrics, **config)` writes a custom experiment's results; `load(exp_dir)`
reads either kind into the one `Results` type (results.py), whose `metric(name, *axes)` returns an array
transposed to the asked axis order. For sweeps `Results` also offers the flat per-configuration views
(`metrics`, `points`, `diverged`, `final`, `summary`).

One writer at a time: `writer_lock` (lock.py's lock files, refusing a second live writer with its pid) also
removes the temporary files (`<file>.<pid>-<hex>-<host tag>.tmp`, files.py) that a writer killed mid-write left.
"""
from __future__ import annotations

import contextlib
import csv
import json
import os
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from jscale.sweeps import lock as lock_lib
# The atomic file primitives, as store.NAME for the run directory's other readers and writers.
from jscale.sweeps.files import (atomic_savez, json_default, jsonable, read_json, remove_dead_temps,  # noqa: F401
                                 sha256, temp_name, write_json, write_text)
from jscale.sweeps.lock import LOCK, shard_lock_name  # noqa: F401 - the lock files' names, as store.NAME
from jscale.sweeps.results import METRIC_DIMS, Results, sweep_groups
from jscale.train import Metrics

CONFIG_JSON, CHUNK_DIR, METRICS_NPZ, SUMMARY_CSV, RUN_JSON = (
    "config.json", "chunks", "metrics.npz", "summary.csv", "run.json")
# Short-lived locks that wait rather than refuse: one update of run.json, one assembly of a sweep.
RUN_JSON_LOCK, ASSEMBLY_LOCK = ".lock-run-json", ".lock-assembly"


class ResultsMissing(FileNotFoundError):
  """The directory holds no finished results (not run, or interrupted)."""


# ---------------------------------------------------------------------------------------------------
# Writing.


# Writing.

@contextlib.contextmanager
def writer_lock(run_dir: str, shard: tuple[int, int] | None = None, *, name: str | None = None,
                wait_s: float = 0.0) -> Iterator[None]:
  """`jscale.sweeps.lock.lock_file` (one writer per run directory, the holder's pid in a refusal), and once it
  is held, the temporary files of dead writers removed (`files.remove_dead_temps`, here and in chunks/)."""
  with lock_lib.lock_file(run_dir, shard, name=name, wait_s=wait_s):
    remove_dead_temps(run_dir, (CHUNK_DIR,))
    yield


def write_results(exp_dir: str, axes: Mapping[str, Sequence], metrics: Mapping[str, tuple], **config) -> str:
  """Write a custom experiment's `config.json` + `metrics.npz`. `metrics[name] = (axis_names, array)`;
  extra keyword arguments go into config.json as they are (seeds, widths, ...). Returns exp_dir."""
  axes = {k: list(jsonable(v)) for k, v in axes.items()}
  arrays, metric_axes = {}, {}
  for name, (names, arr) in metrics.items():
    arr = np.asarray(arr)
    names = tuple(names)
    want = tuple(len(axes[a]) if a in axes else None for a in names)
    if None in want:
      raise ValueError(f"metric {name!r} uses axes {names}, but only {list(axes)} are defined")
    if arr.shape != want:
      raise ValueError(f"metric {name!r} has shape {arr.shape}, its axes {names} need {want}")
    arrays[name], metric_axes[name] = arr, list(names)
  os.makedirs(exp_dir, exist_ok=True)
  digest = atomic_savez(os.path.join(exp_dir, METRICS_NPZ), **arrays)
  write_json(os.path.join(exp_dir, CONFIG_JSON), {**jsonable(config), "axes": axes, "metrics": metric_axes,
                                                  "metrics_sha256": digest})
  return exp_dir


def finished_grid(exp_dir: str) -> str | None:
  """The grid a custom experiment finished in `exp_dir` (`finish` records it last), else None."""
  path = os.path.join(exp_dir, CONFIG_JSON)
  return read_json(path).get("grid_name") if os.path.isfile(path) else None


def finish(exp_dir: str, **info) -> None:
  """Mark a custom experiment's results complete, recording `info` (grid_name, settings, wall time)."""
  path = os.path.join(exp_dir, CONFIG_JSON)
  write_json(path, {**read_json(path), **jsonable(info)})


def write_run_info(run_dir: str, **info) -> str:
  """Append one invocation's facts (command, grid, wall time, devices) to OUT/run.json."""
  os.makedirs(run_dir, exist_ok=True)
  path = os.path.join(run_dir, RUN_JSON)
  with writer_lock(run_dir, name=RUN_JSON_LOCK, wait_s=60):
    old = read_json(path) if os.path.isfile(path) else {}
    write_json(path, {**old, "invocations": old.get("invocations", []) + [jsonable(info)]})
  return path


def run_info(run_dir: str) -> list[dict]:
  path = os.path.join(run_dir, RUN_JSON)
  return read_json(path).get("invocations", []) if os.path.isfile(path) else []


def main_plan(run_dir: str) -> dict | None:
  """The main job's plan recorded in OUT/run.json (experiments in order, each with its grid and options;
  the settings every invocation shares), or None for a directory written before plans were recorded."""
  path = os.path.join(run_dir, RUN_JSON)
  if not os.path.isfile(path):
    return None
  plan = read_json(path).get("plan")
  if plan is not None and not (isinstance(plan, dict) and isinstance(plan.get("experiments"), list)):
    raise ValueError(f"{path}: its \"plan\" is damaged (no list of experiments)")
  return plan


def record_main_plan(run_dir: str, experiments: Sequence[dict], settings: Mapping[str, Any], *,
                     join: bool = False) -> dict:
  """Record, BEFORE any training, which experiments the main job runs (`experiments`: dicts with "name",
  "grid", "options") and its shared settings, so that `--resume OUT` can finish every one of them.

  A later invocation into the same OUT appends experiments not planned yet and refuses one planned
  already (resume it instead) -- unless `join` (a shard of the same command): then the recorded plan must
  equal this one. Returns the plan now recorded."""
  os.makedirs(run_dir, exist_ok=True)
  path = os.path.join(run_dir, RUN_JSON)
  experiments, settings = jsonable(list(experiments)), jsonable(dict(settings))
  with writer_lock(run_dir, name=RUN_JSON_LOCK, wait_s=60):
    old = read_json(path) if os.path.isfile(path) else {}
    plan = old.get("plan")
    if plan is None:
      plan = {"experiments": experiments, "settings": settings}
    elif join:
      mine = {"experiments": experiments, "settings": settings}
      if plan != mine:
        raise ValueError(f"{run_dir} holds another main job (recorded plan {plan}, this command's {mine}); "
                         "every shard must run the same command, or pick a new --out")
    else:
      planned = {e["name"] for e in plan["experiments"]}
      again = [e["name"] for e in experiments if e["name"] in planned]
      if again:
        raise ValueError(f"{run_dir} already holds {', '.join(again)}; finish it with --resume {run_dir}, or "
                         "pick a new --out")
      if plan.get("settings") != settings:
        raise ValueError(f"{run_dir} was started with settings {plan.get('settings')}, this command asks for "
                         f"{settings}; pick a new --out")
      plan = {**plan, "experiments": plan["experiments"] + experiments}
    write_json(path, {**old, "plan": plan})
  return plan


# ---------------------------------------------------------------------------------------------------
# A sweep's chunks.


def chunk_path(run_dir: str, chunk_id: int) -> str:
  return os.path.join(run_dir, CHUNK_DIR, f"chunk_{chunk_id:05d}.npz")


def start_sweep(run_dir: str, config: dict) -> None:
  """Create a sweep's run directory with its config.json; refuse one that holds a run already."""
  path = os.path.join(run_dir, CONFIG_JSON)
  if os.path.exists(path):
    raise ValueError(f"{run_dir} already holds a run; resume it with --resume {run_dir} or pick a new --out")
  os.makedirs(os.path.join(run_dir, CHUNK_DIR), exist_ok=True)
  write_json(path, config)


def join_sweep(run_dir: str, config: dict) -> dict | None:
  """Create config.json atomically if no writer did yet (None: this process started the run); else return
  the one recorded (a shard that joins a run another shard started, or a restarted shard)."""
  os.makedirs(os.path.join(run_dir, CHUNK_DIR), exist_ok=True)
  path = os.path.join(run_dir, CONFIG_JSON)
  tmp = temp_name(path)
  with open(tmp, "w") as f:
    json.dump(config, f, indent=1, default=json_default)
  try:
    os.link(tmp, path)   # fails if the file exists: exactly one writer creates it, complete
  except FileExistsError:
    return read_config(run_dir)
  finally:
    os.remove(tmp)
  return None


def read_config(run_dir: str) -> dict:
  path = os.path.join(run_dir, CONFIG_JSON)
  if not os.path.isfile(path):
    raise ValueError(f"{run_dir} is not a run directory (no {CONFIG_JSON})")
  return read_json(path)


def write_chunk(run_dir: str, chunk_id: int, indices: Sequence[int], metrics: Metrics, seconds: float,
                info: Mapping[str, Any] | None = None):
  """The chunk's arrays, then its checksum file: a chunk counts as done only when both agree. `info`
  (the devices and shard that computed it) is stored beside the arrays as JSON."""
  arrays = {name: np.asarray(getattr(metrics, name)) for name in Metrics._fields}
  path = chunk_path(run_dir, chunk_id)
  digest = atomic_savez(path, config_index=np.asarray(indices, np.int64), seconds=np.float64(seconds),
                         dims=json.dumps(METRIC_DIMS), info=json.dumps(jsonable(dict(info or {}))), **arrays)
  tmp = temp_name(path + ".sha256")
  with open(tmp, "w") as f:
    f.write(digest + "\n")
  os.replace(tmp, path + ".sha256")


def chunk_state(run_dir: str, chunk_id: int, indices: Sequence[int] | None = None) -> str:
  """"done", "missing", "damaged" (truncated, emptied, bit-flipped, or written without its checksum) or, given
  the plan's configuration `indices` for the chunk, "foreign": intact, but holding other configurations (a
  chunk copied from another run together with its checksum)."""
  path = chunk_path(run_dir, chunk_id)
  if not os.path.exists(path):
    return "missing"
  try:
    with open(path + ".sha256") as f:
      want = f.read().strip()
  except OSError:
    return "damaged"
  if sha256(path) != want:
    return "damaged"
  if indices is not None and chunk_indices(run_dir, chunk_id) != [int(i) for i in indices]:
    return "foreign"
  return "done"


def chunk_indices(run_dir: str, chunk_id: int) -> list[int] | None:
  """The configuration indices a chunk file holds (None if it cannot be read)."""
  try:
    with np.load(chunk_path(run_dir, chunk_id)) as z:
      return [int(i) for i in z["config_index"]]
  except (OSError, KeyError, ValueError):
    return None


def chunk_done(run_dir: str, chunk_id: int, indices: Sequence[int] | None = None) -> bool:
  return chunk_state(run_dir, chunk_id, indices) == "done"


def damaged_chunks(run_dir: str, n_chunks: int) -> list[int]:
  """Chunks on disk whose checksum does not match: a resume recomputes them."""
  return [c for c in range(n_chunks) if chunk_state(run_dir, c) == "damaged"]


def assemble(run_dir: str, config: dict | None = None) -> Results:
  """Read every chunk of a finished sweep; write metrics.npz, the named axes and summary.csv.

  Under RUN_DIR/.lock-assembly: shards that finish together assemble one after the other (the same bytes
  of numbers twice, harmless); a kill mid-assembly leaves files that `load` and `resume` assemble again."""
  with writer_lock(run_dir, name=ASSEMBLY_LOCK, wait_s=300):
    return _assemble(run_dir, read_config(run_dir) if config is None else config)


def _assemble(run_dir: str, config: dict) -> Results:
  n = len(config["points"])
  groups = sweep_groups(config)
  E = max(g.epochs for g in groups)
  L = max(g.n_layers for g in groups)
  shapes = {name: (n, E, L) if len(d) == 3 else (n, E) for name, d in METRIC_DIMS.items()}
  flat = {name: np.full(s, False if name == "diverged" else np.nan, bool if name == "diverged" else np.float32)
          for name, s in shapes.items()}
  seen = np.zeros(n, bool)
  seconds = 0.0
  for cid in range(len(config["chunks"])):
    path = chunk_path(run_dir, cid)
    state = chunk_state(run_dir, cid, config["chunks"][cid]["indices"])
    if state != "done":
      what = f"holds configurations {chunk_indices(run_dir, cid)} where the plan has {config['chunks'][cid]['indices']} " \
          "(copied from another run?)" if state == "foreign" else f"is {state}"
      raise ResultsMissing(f"run {run_dir} is incomplete: chunk {cid} {what} (resume it with --resume "
                           f"{run_dir}, which recomputes it)")
    with np.load(path) as z:
      idx = z["config_index"]
      seconds += float(z["seconds"])
      for name in METRIC_DIMS:
        a = z[name]
        sl = (idx, slice(0, a.shape[1])) + ((slice(0, a.shape[2]),) if a.ndim == 3 else ())
        flat[name][sl] = a
      seen[idx] = True
  if not seen.all():
    raise ValueError(f"run {run_dir}: configurations {np.flatnonzero(~seen)[:10].tolist()}... have no results")
  config = dict(config, **_named_axes(config, E, L), compute_seconds=round(seconds, 3))
  shape = tuple(config["grid"]["shape"])
  arrays = {name: m.reshape(shape + m.shape[1:]) for name, m in flat.items()}
  res = Results(run_dir, config, arrays)
  # metrics.npz first, then config.json naming its checksum: a kill between the two leaves a config without
  # "metrics", which `load` treats as not yet assembled (and assembles again from the chunks).
  config["metrics_sha256"] = atomic_savez(os.path.join(run_dir, METRICS_NPZ), **arrays)
  write_json(os.path.join(run_dir, CONFIG_JSON), config)
  _write_summary_csv(res)
  return res


def _named_axes(config: dict, epochs: int, layers: int) -> dict:
  """"axes" (every grid dim's values, then epoch 1..E and layer 0..L-1) and "metrics" (each metric's dims)."""
  axes = {}
  for dim, block in zip(config["grid"]["dims"], config["grid"]["blocks"]):
    axes[dim] = block[0][1] if len(block) == 1 else [list(v) for v in zip(*(values for _, values in block))]
  axes["epoch"] = list(range(1, epochs + 1))
  axes["layer"] = list(range(layers))
  dims = list(config["grid"]["dims"])
  return {"axes": axes, "metrics": {name: dims + list(d[1:]) for name, d in METRIC_DIMS.items()}}


def _write_summary_csv(res: Results):
  axes = list(res.config["grid"]["axes"])
  path = os.path.join(res.path, SUMMARY_CSV)
  finals = {name: res.final(name) for name in ("train_loss", "train_acc", "test_loss", "test_acc", "grad_norm",
                                               "saturation", "zero_fraction")}
  test_acc = res.metrics["test_acc"]
  best = np.nanmax(np.where(np.isnan(test_acc), -np.inf, test_acc), axis=-1)
  div, div_e = res.diverged, res.diverged_epoch
  tmp = temp_name(path)
  with open(tmp, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["config"] + axes + [f"final_{k}" for k in finals] + ["best_test_acc", "diverged", "diverged_epoch"])
    for i, p in enumerate(res.points):
      w.writerow([i] + [_csv(p[a]) for a in axes] + [f"{finals[k][i]:.6g}" for k in finals]
                 + [f"{best[i]:.6g}" if np.isfinite(best[i]) else "nan", int(div[i]), int(div_e[i])])
  os.replace(tmp, path)


def _csv(v):
  if v is None:
    return "full"
  if isinstance(v, (list, tuple)):
    return " ".join(str(x) for x in v)
  return v


# ---------------------------------------------------------------------------------------------------
# Reading.


def load(exp_dir: str) -> Results:
  """The finished results in `exp_dir` (a sweep whose chunks are all on disk is assembled first).
  Raises `ResultsMissing` when there are none yet, ValueError when the directory is damaged."""
  cfg_path, npz = os.path.join(exp_dir, CONFIG_JSON), os.path.join(exp_dir, METRICS_NPZ)
  if not os.path.isfile(cfg_path):
    raise ResultsMissing(f"no results in {exp_dir}: missing {CONFIG_JSON}")
  config = read_json(cfg_path)
  sweep = "chunks" in config
  if sweep and (not os.path.isfile(npz) or "metrics" not in config):
    return assemble(exp_dir, config)
  if not os.path.isfile(npz):
    raise ResultsMissing(f"no results in {exp_dir}: missing {METRICS_NPZ}")
  axes, metric_axes = config.get("axes", {}), config.get("metrics", {})
  if not metric_axes:
    raise ResultsMissing(f"no results in {exp_dir}: config.json names no metrics (the run did not finish)")
  want = config.get("metrics_sha256")
  if want is not None and sha256(npz) != want:
    if sweep:   # the chunks still hold every number: assemble again
      return assemble(exp_dir, config)
    raise ValueError(f"{npz} is damaged (its checksum does not match the one config.json recorded); "
                     "rerun this experiment into a new directory")
  arrays = {}
  with np.load(npz, allow_pickle=False) as z:
    for name, names in metric_axes.items():
      if name not in z:
        raise ValueError(f"{exp_dir}: config.json lists metric {name!r} but metrics.npz lacks it")
      a = z[name]
      want = tuple(len(axes.get(n, ())) for n in names)
      if a.shape != want:
        raise ValueError(f"{exp_dir}: metric {name!r} has shape {a.shape}, axes {names} need {want}")
      arrays[name] = a
  return Results(exp_dir, config, arrays)

"""The main job's jobs: which experiments a `scripts/sweep.py` call runs, how each starts or finishes, and which
process or shard runs which. The command line (`jscale.cli.sweep`) parses flags and prints; this module decides.

  new_jobs(names, grid, options, ...)   every selected experiment validated and planned before any trains
  resume_jobs(root, ...)                what `--resume ROOT` finishes: a main job's planned experiments, or one
                                        experiment's run directory
  assigned(jobs, shard)                 the jobs this process and shard run
  complete(job)                         whether a job's results are all on disk
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Mapping, Sequence

import jax

from jscale.sweeps import registry, store
from jscale.sweeps.experiment import CustomExperiment
from jscale.sweeps.runner import make_plan, resume, run


@dataclasses.dataclass(frozen=True)
class Job:
  """One experiment of the main job: its directory, whether it is a custom experiment, how to run (or finish)
  it, and a one-line note on what that means."""
  name: str
  dir: str
  custom: bool
  go: Callable[[], Any]
  note: str = ""


@dataclasses.dataclass(frozen=True)
class RunSettings:
  """How the sweeps of a main job run (shared by every experiment; devices and progress may change on resume)."""
  devices: int | None = None
  chunk_size: int | None = None
  group_size: int | None = None
  progress: bool = True
  shard: tuple[int, int] | None = None


def options_for(name: str, options: Mapping[str, Any]) -> dict:
  """The subset of `options` that experiment `name` takes."""
  known = registry.entry(name).options()
  return {k: v for k, v in options.items() if k in known}


def _sweep_job(name: str, d: str, plan, how: RunSettings, note: str) -> Job:
  return Job(name, d, False, lambda: run(plan, d, progress=how.progress, shard=how.shard), note)


def _custom_job(name: str, d: str, exp: CustomExperiment, grid: str, opts: dict, note: str, progress: bool) -> Job:
  return Job(name, d, True, lambda: exp.execute(grid, d, options=opts, progress=progress), note)


def _plan(exp, grid: str, how: RunSettings, opts: dict):
  return make_plan(exp, grid, devices=how.devices, chunk_size=how.chunk_size, group_size=how.group_size,
                   options=opts)


def new_jobs(names: Sequence[str], grid: str, options: Mapping[str, Any], out: str,
             how: RunSettings) -> tuple[list[Job], list[dict]]:
  """Validate and plan every selected experiment (before any of them trains); returns the jobs and the plan
  entries `store.record_main_plan` records. Every option must be taken by some selected experiment."""
  if len(set(names)) != len(names):
    raise ValueError(f"--experiment names an experiment twice: {list(names)}")
  jobs, planned, used = [], [], set()
  for name in names:
    opts = options_for(name, options)
    used |= set(opts)
    exp = registry.get(name, **opts)
    d = os.path.join(out, name)
    if isinstance(exp, CustomExperiment):
      jobs.append(_custom_job(name, d, exp, grid, opts, f"{dict(exp.grid(grid))}", how.progress))
    else:
      plan = _plan(exp, grid, how, opts)
      jobs.append(_sweep_job(name, d, plan, how, f"{plan.n_configs} configurations in {len(plan.chunks)} chunks "
                                                 f"over {len(plan.devices)} device(s)"))
    planned.append({"name": name, "grid": grid, "options": opts})
  unused = sorted(set(options) - used)
  if unused:
    raise ValueError(f"no selected experiment takes the option(s) {', '.join(unused)}")
  return jobs, planned


def _recorded_entries(root: str) -> tuple[list[dict], str, dict, dict]:
  """(plan entries, the main job's directory, its recorded settings, experiment name -> directory) of ROOT."""
  if os.path.isfile(os.path.join(root, store.CONFIG_JSON)):   # one experiment's run directory
    cfg = store.read_config(root)
    entries = [{"name": cfg.get("experiment"), "grid": cfg.get("grid_name"), "options": cfg.get("options") or {}}]
    out, settings = os.path.dirname(os.path.abspath(root)), {"precision": cfg.get("precision", "highest")}
    return entries, out, settings, {entries[0]["name"]: root}
  plan = store.main_plan(root)
  if plan is not None:
    entries, settings = plan["experiments"], dict(plan.get("settings") or {})
  else:   # written before plans were recorded: the experiments found on disk
    found = sorted(d for d in os.listdir(root) if os.path.isfile(os.path.join(root, d, store.CONFIG_JSON)))
    if not found:
      raise ValueError(f"--resume {root}: holds no main job (no plan in {store.RUN_JSON}) and no run directory "
                       f"(no {store.CONFIG_JSON})")
    print(f"{root}: no plan in {store.RUN_JSON} (an older run directory): resuming the experiments found: "
          f"{', '.join(found)}", flush=True)
    entries, settings = [], {}
    for d in found:
      cfg = store.read_config(os.path.join(root, d))
      entries.append({"name": cfg.get("experiment", d), "grid": cfg.get("grid_name"),
                      "options": cfg.get("options") or {}})
      settings.setdefault("precision", cfg.get("precision", "highest"))
  return entries, root, settings, {e["name"]: os.path.join(root, e["name"]) for e in entries}


def resume_jobs(root: str, how: RunSettings) -> tuple[list[Job], str, dict]:
  """What `--resume ROOT` finishes: every planned experiment of a main job (missing ones started), or the
  one experiment directory ROOT. Returns the jobs, the main job's directory and its recorded settings (the
  recorded chunking replaces `how`'s for experiments not started yet)."""
  root = os.path.normpath(root)
  entries, out, settings, dirs = _recorded_entries(root)
  how = dataclasses.replace(how, chunk_size=settings.get("chunk_size"), group_size=settings.get("group_size"))
  jobs = []
  for e in entries:
    name, grid, opts, d = e["name"], e["grid"], e.get("options") or {}, dirs[e["name"]]
    if not isinstance(name, str) or not isinstance(grid, str):
      raise ValueError(f"--resume {root}: the record of {d} names no experiment or grid (damaged)")
    try:
      exp = registry.get(name, **opts)
    except ValueError as err:
      raise ValueError(f"{d}: {err}") from None
    started = os.path.isfile(os.path.join(d, store.CONFIG_JSON))
    if isinstance(exp, CustomExperiment):
      done = started and store.finished_grid(d) == grid
      jobs.append(_custom_job(name, d, exp, grid, opts, "complete" if done else "not finished: running it",
                              how.progress))
    elif started:
      jobs.append(Job(name, d, False, lambda d=d: resume(d, devices=how.devices, progress=how.progress,
                                                         shard=how.shard), "started: resuming"))
    else:
      plan = _plan(exp, grid, how, opts)
      jobs.append(_sweep_job(name, d, plan, how, f"not started: running its {plan.n_configs} configurations"))
  return jobs, out, settings


def assigned(jobs: Sequence[Job], shard: tuple[int, int] | None) -> list[Job]:
  """Sweeps are split chunk by chunk (every shard and process takes part); a custom experiment runs whole,
  in one writer: custom experiment k goes to writer k mod (shards x processes)."""
  n_shards, shard_i = (shard[1], shard[0]) if shard else (1, 0)
  writers, me = n_shards * jax.process_count(), shard_i * jax.process_count() + jax.process_index()
  customs = [j for j in jobs if j.custom]
  mine = {id(j) for k, j in enumerate(customs) if k % writers == me}
  # With several processes every sweep's collectives must come first, in the same order on every process.
  sweeps_first = [j for j in jobs if not j.custom] + customs if jax.process_count() > 1 else list(jobs)
  return [j for j in sweeps_first if not j.custom or id(j) in mine]


def complete(job: Job) -> bool:
  """Whether the job's results are all on disk (a sweep assembled, a custom experiment finished)."""
  cfg = os.path.join(job.dir, store.CONFIG_JSON)
  if not os.path.isfile(cfg):
    return False
  c = store.read_json(cfg)
  return "metrics" in c if "chunks" in c else c.get("grid_name") is not None and "metrics" in c


def all_complete(jobs: Sequence[Job]) -> bool:
  """Whether every job's results are on disk and load (a sweep's metrics.npz matching its checksum: `load`
  assembles a damaged one again from the chunks, the one repair a resume of a finished run makes)."""
  if not all(complete(j) for j in jobs):
    return False
  for j in jobs:
    try:
      store.load(j.dir)
    except (ValueError, OSError, store.ResultsMissing):
      return False
  return True

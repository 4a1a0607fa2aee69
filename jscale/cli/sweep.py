"""`jscale sweep` (scripts/sweep.py): run registered experiments; print a summary table per sweep; end by writing OUT/report.md.

  python scripts/sweep.py --grid quick                          # every experiment's quick grid + report.md
  python scripts/sweep.py --grid full --out runs/full           # the whole reproduction (see report.md)
  python scripts/sweep.py --experiment sigma --grid full --out runs/sigma_full
  python scripts/sweep.py --resume runs/full                    # finish an interrupted main job
  python scripts/sweep.py --grid quick --devices 2              # on CPU: 2 host devices, configs sharded
  python scripts/sweep.py --experiment init_schemes --libsvm dna.scale --libsvm usps   # + LIBSVM data sets
  python scripts/sweep.py --grid full --out runs/full --shard 3/8                      # part 3 of 8 (job arrays)
  python scripts/sweep.py --grid full --out runs/full --num-processes 2 --process-id 0 --coordinator host:1234

Every experiment writes OUT/<experiment>/ (config.json, metrics.npz, figures); the report
(`jscale.report.build_report`, rebuilt any time by `python scripts/report.py OUT`) has one section per
experiment. Experiments take options (`--option NAME=VALUE`, given to every selected experiment that
has an option NAME; `--libsvm PATH` is short for `--option libsvm=PATH`, adding a LIBSVM file to
init_schemes' data sets); config.json records them, so `--resume` rebuilds the same experiment.

OUT/run.json records the main job's plan (the experiments, each with its grid and options, and the shared
settings) before anything trains: `--resume OUT` runs every planned experiment that is missing or
incomplete (and recomputes damaged chunks, naming them). With --resume, the flags that choose what runs
(--grid, --experiment, --option, --libsvm, --out, --chunk-size, --group-size) are refused: the recorded
plan decides. --devices may change (results do not depend on the device count); --precision must match.

By default every device is used; on CPU that means one host device per core, each training its share of
the configurations one at a time (`jscale.sweeps.runner.use_cpu_cores`). `--devices N` uses the first N
local devices (on CPU: N host devices, at most one per core). Past one machine (README "Past one
machine"): `--shard I/N` computes the I-th of N disjoint parts of every sweep into the same OUT (no
coordinator: a Slurm job array, Ray tasks); `--num-processes/--process-id/--coordinator` start
`jax.distributed` (one mesh over every process's devices; process 0 writes).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time

from jscale.cli.parser import Parser

# Flags that choose what runs: a resume takes them from the recorded plan and refuses them on the command line.
NOT_WITH_RESUME = ("grid", "experiment", "option", "libsvm", "out", "chunk_size", "group_size")


def parse_args(argv=None):
  p = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--grid", default=None, help="grid name: quick | full (default quick)")
  p.add_argument("--experiment", action="append", default=None,
                 help="experiment name (repeatable, or comma-separated); default: all registered")
  p.add_argument("--out", default=None, help="output directory (default runs/<timestamp>); one run dir per "
                 "experiment inside it")
  p.add_argument("--resume", default=None, help="a main job's OUT directory (finishes every planned experiment), "
                 "or one experiment's run directory")
  p.add_argument("--devices", type=int, default=None, help="number of devices to shard over (default: all; "
                 "per process with --num-processes)")
  p.add_argument("--chunk-size", type=int, default=None, help="configurations per chunk (default: by memory)")
  p.add_argument("--group-size", type=int, default=None,
                 help="configurations each device vmaps at once inside a chunk (default: 1 on CPU, "
                 "all of its slice on GPU/TPU)")
  p.add_argument("--no-progress", action="store_true", help="no progress bar")
  p.add_argument("--libsvm", action="append", default=None, metavar="PATH",
                 help="a LIBSVM-format file to add to init_schemes' data sets (repeatable)")
  p.add_argument("--option", action="append", default=None, metavar="NAME=VALUE",
                 help="an experiment option (repeatable), e.g. data=digits_raw for feature_weight; VALUE is "
                 "read as JSON when it parses, else as a string")
  p.add_argument("--no-report", action="store_true", help="do not write OUT/report.md at the end")
  p.add_argument("--precision", choices=("highest", "default"), default=None,
                 help="float32 matmul precision (default highest: CPU, GPU and TPU agree to float32 rounding; "
                 "default: JAX's choice per backend, TF32 on NVIDIA GPUs; see jscale/precision.py); a resume "
                 "uses the recorded one")
  p.add_argument("--shard", default=None, metavar="I/N",
                 help="compute only the I-th of N disjoint parts (0 <= I < N) of every sweep into OUT; run all N "
                 "(at once or not) with the same command to fill one run directory")
  p.add_argument("--num-processes", type=int, default=None, help="jax.distributed: number of processes")
  p.add_argument("--process-id", type=int, default=None, help="jax.distributed: this process's index")
  p.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                 help="jax.distributed: process 0's address (on Slurm and Cloud TPU, JAX finds all three itself: "
                 "pass --num-processes 0 to call jax.distributed.initialize() with no arguments)")
  return p.parse_args(argv)


def check_args(args) -> None:
  """Every flag combination, before JAX starts (a refusal is one `error:` line, exit status 2)."""
  from jscale import checks
  from jscale.sweeps import runner   # imports jax but starts no backend
  if args.resume is not None:
    given = [f"--{f.replace('_', '-')}" for f in NOT_WITH_RESUME if getattr(args, f) is not None]
    if given:
      raise ValueError(f"{', '.join(given)} cannot be used with --resume: a resume runs what the run directory "
                       "recorded (its experiments, grids, options and chunking); start a new --out to change them")
    if not os.path.isdir(args.resume):
      raise ValueError(f"--resume {args.resume}: " + ("not a directory (give the run's --out directory)"
                                                      if os.path.exists(args.resume) else "no such directory"))
  if args.experiment is not None and args.resume is None:
    check_experiment_names(args.experiment)
  if args.out is not None and not args.out.strip():   # `--out "$DIR"` with DIR unset: not the default folder
    raise ValueError("--out '' names no directory (leave --out out for runs/<timestamp>)")
  runner.check_device_request(args.devices)
  for name in ("chunk_size", "group_size"):
    checks.optional(checks.positive_int)(getattr(args, name), f"--{name.replace('_', '-')}")
  args.shard = runner.parse_shard(args.shard)
  dist = (args.num_processes, args.process_id, args.coordinator)
  if any(v is not None for v in dist):
    if args.num_processes == 0:
      if args.process_id is not None or args.coordinator is not None:
        raise ValueError("--num-processes 0 (let jax.distributed find the cluster) takes no --process-id or "
                         "--coordinator")
    elif None in dist:
      raise ValueError("jax.distributed needs --num-processes, --process-id and --coordinator together "
                       "(or --num-processes 0 on Slurm / Cloud TPU)")
    elif args.num_processes < 1 or not 0 <= args.process_id < args.num_processes:
      raise ValueError(f"--process-id must be in [0, --num-processes) and --num-processes >= 1, got "
                       f"{args.process_id} and {args.num_processes}")
    elif args.coordinator.rpartition(":")[2].isdigit() is False:
      raise ValueError(f"--coordinator must be HOST:PORT, got {args.coordinator!r}")


def experiment_names(values) -> list[str]:
  """--experiment's names (its values: repeatable, each comma-separated), in order."""
  return [n.strip() for e in (values or []) for n in e.split(",") if n.strip()]


def check_experiment_names(values) -> None:
  """--experiment's values name registered experiments, at least one, before JAX starts."""
  from jscale.sweeps import registry
  if not experiment_names(values):   # `--experiment "$EXP"` with EXP unset would otherwise run the whole main job
    raise ValueError(f"--experiment {' '.join(map(repr, values))} names no experiment; registered: "
                     f"{', '.join(registry.names())} (leave --experiment out to run them all)")
  for n in experiment_names(values):
    registry.entry(n)   # an unknown name


def start_distributed(args) -> None:
  """jax.distributed.initialize before any other JAX call; on CPU, collectives through gloo."""
  import jax
  if args.num_processes is None:
    return
  if "jax_cpu_collectives_implementation" in jax.config.values:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if args.num_processes == 0:
    jax.distributed.initialize()
  else:
    jax.distributed.initialize(coordinator_address=args.coordinator, num_processes=args.num_processes,
                               process_id=args.process_id)


def parse_options(args) -> dict:
  """--option NAME=VALUE and --libsvm PATH as one dict of experiment options."""
  options = {}
  for item in args.option or []:
    name, sep, value = item.partition("=")
    if not sep or not name.strip():
      raise ValueError(f"--option expects NAME=VALUE, got {item!r}")
    try:
      options[name.strip()] = json.loads(value)
    except json.JSONDecodeError:
      options[name.strip()] = value
  if args.libsvm:
    options["libsvm"] = tuple(os.path.abspath(os.path.expanduser(p)) for p in args.libsvm)
  return options


def main(argv=None, prog: str = "python scripts/sweep.py") -> int:
  """The main job; `prog` is how the command is recorded in run.json (and the report)."""
  args = parse_args(argv)
  check_args(args)
  options = parse_options(args)
  start_distributed(args)
  import jax
  from jscale.sweeps import runner
  # Before any JAX operation: on CPU, one host device per core (or --devices N); GPUs/TPUs unaffected.
  runner.use_cpu_cores(args.devices)
  from jscale import experiments, host, precision, report, sweeps
  from jscale.sweeps import jobs as jobs_lib, store
  from jscale.cli import paths
  from jscale.sweeps.compile_clock import CompileClock, share_text
  runner.check_device_request(args.devices, platform=jax.default_backend())
  t_start = time.perf_counter()
  whole = CompileClock().__enter__()   # closed before run.json is written; the report's time is not in it
  timings = {}
  writer = jax.process_index() == 0

  if writer:
    print(f"devices: {jax.devices()}", flush=True)
  how = jobs_lib.RunSettings(devices=args.devices, chunk_size=args.chunk_size, group_size=args.group_size,
                             progress=not args.no_progress, shard=args.shard)
  if args.resume:
    jobs, out, recorded = jobs_lib.resume_jobs(args.resume, how)
    prec = recorded.get("precision", "highest")
    if args.precision is not None and args.precision != prec:
      raise ValueError(f"--precision {args.precision}: {args.resume} was computed at precision {prec!r}; a resume "
                       "must use the same (leave --precision out)")
    if args.shard is None and jobs_lib.all_complete(jobs):   # nothing to do: change nothing (every process)
      if writer:
        print(f"{args.resume}: every experiment is complete ({', '.join(j.name for j in jobs)}); nothing to resume"
              + ("" if args.no_report or os.path.isfile(os.path.join(out, "report.md")) else
                 f"; report.md is missing: write it with `python scripts/report.py {out}`"), flush=True)
      return 0
    precision.set_precision(prec)
    grid_name = "resumed"
  else:
    prec = precision.set_precision(args.precision or "highest")
    settings = {"chunk_size": args.chunk_size, "group_size": args.group_size, "precision": prec}
    grid_name = args.grid or "quick"
    names = experiment_names(args.experiment) or sweeps.names()
    out = paths.out_dir(args.out or os.path.join("runs", datetime.datetime.now().strftime("%Y%m%d-%H%M%S")), "--out")
    jobs, planned = jobs_lib.new_jobs(names, grid_name, options, out, how)
    if writer:   # before anything trains, so that --resume OUT can finish every planned experiment
      store.record_main_plan(out, planned, settings, join=args.shard is not None)
  part = f" (shard {args.shard[0]} of {args.shard[1]})" if args.shard else ""
  mine = jobs_lib.assigned(jobs, args.shard)
  if writer:
    for j in jobs:
      elsewhere = "" if j in mine else "; run by another shard or process"
      print(f"{j.name}/{grid_name}{part}: {j.note}{elsewhere} -> {j.dir}", flush=True)

  for j in mine:
    t0 = time.perf_counter()
    with CompileClock() as clock:
      try:
        res = j.go()
      except KeyboardInterrupt:
        from jscale import cli
        raise cli.Interrupted(f"the finished chunks are kept in {out}; finish the run with `{prog} --resume "
                              f"{out}`") from None
    timings[j.name] = clock.summary()
    if not writer:
      continue
    print(f"{j.name}: {share_text(timings[j.name])}", flush=True)
    if res is None or isinstance(res, str):
      print(f"\n== {j.name}: done{part} in {time.perf_counter() - t0:.1f} s -> {os.path.abspath(j.dir)} ==",
            flush=True)
      continue
    print(f"\n== {res.config['experiment']} / {res.config['grid_name']}: {res.n_configs} configurations, "
          f"{int(res.diverged.sum())} diverged, {res.seconds:.1f} s of compute ==")
    print(sweeps.format_table(res.summary()))
    print(f"results: {os.path.abspath(j.dir)}  (summary.csv, metrics.npz, config.json)", flush=True)

  if jax.process_count() > 1:   # process 0 reports once every process has written its experiments
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices("jscale main job done")
  if not writer:
    return 0
  wall = time.perf_counter() - t_start
  whole.__exit__(None, None, None)
  total = whole.summary()
  print(f"main job: {share_text(total)}", flush=True)
  store.write_run_info(out, command=f"{prog} " + " ".join(sys.argv[1:] if argv is None else argv),
                       grid=grid_name, wall_time_s=round(wall, 1), devices=[str(d) for d in jax.devices()],
                       precision=prec, shard=list(args.shard) if args.shard else None,
                       process_count=jax.process_count(), compile=total, experiment_times=timings,
                       host=host.describe())
  if args.no_report:
    return 0
  left = [j.name for j in jobs if not jobs_lib.complete(j)]
  if left:
    print(f"\n{', '.join(left)} not complete yet (other shards or processes are computing them): report.md is "
          f"written by the last to finish, or any time by `python scripts/report.py {out}`", flush=True)
    return 0
  print()
  plan = store.main_plan(out)
  planned = [e["name"] for e in plan["experiments"]] if plan else [j.name for j in jobs]
  sections = {n: f for n, f in experiments.sections().items() if n in planned}
  if not sections:
    print(f"no report: none of {', '.join(planned)} has a report section", flush=True)
    return 0
  return report.build_report(out, sections).print_summary(f" ({wall:.0f} s in all)")


if __name__ == "__main__":
  from jscale import cli
  cli.run(main)

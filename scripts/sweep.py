"""Run registered experiments; print a summary table per sweep; end by writing OUT/report.md.

  python scripts/sweep.py --grid quick                          # every experiment's quick grid + report.md
  python scripts/sweep.py --grid full --out runs/full           # the whole reproduction (see report.md)
  python scripts/sweep.py --experiment sigma --grid full --out runs/sigma_full
  python scripts/sweep.py --resume runs/full                    # finish an interrupted run (or a --out parent)
  python scripts/sweep.py --grid quick --devices 2              # on CPU: 2 host devices, configs sharded
  python scripts/sweep.py --experiment init_schemes --libsvm dna.scale --libsvm usps   # + LIBSVM data sets

Every experiment writes OUT/<experiment>/ (config.json, metrics.npz, figures); the report
(`jscale.report.build_report`, rebuilt any time by `python scripts/report.py OUT`) has one section per
experiment. Experiments take options (`--option NAME=VALUE`, given to every selected experiment that
has an option NAME; `--libsvm PATH` is short for `--option libsvm=PATH`, adding a LIBSVM file to
init_schemes' data sets); config.json records them, so `--resume` rebuilds the same experiment.

By default every device is used; on CPU that means one host device per core, each training its share of
the configurations one at a time (`jscale.sweeps.runner.use_cpu_cores`). `--devices N` uses the first N
local devices (on CPU: N host devices).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--grid", default="quick", help="grid name: quick | full (default quick)")
  p.add_argument("--experiment", action="append", default=None,
                 help="experiment name (repeatable, or comma-separated); default: all registered")
  p.add_argument("--out", default=None, help="output directory (default runs/<timestamp>); one run dir per "
                 "experiment inside it")
  p.add_argument("--resume", default=None, help="a run directory, or an --out directory holding several")
  p.add_argument("--devices", type=int, default=None, help="number of devices to shard over (default: all)")
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
  p.add_argument("--precision", choices=("highest", "default"), default="highest",
                 help="float32 matmul precision (default highest: CPU, GPU and TPU agree to float32 rounding; "
                 "default: JAX's choice per backend, TF32 on NVIDIA GPUs; see jscale/precision.py)")
  return p.parse_args(argv)


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


def options_for(entry, options: dict) -> dict:
  """The subset of `options` that this experiment takes."""
  known = entry.options()
  return {k: v for k, v in options.items() if k in known}


def main(argv=None) -> int:
  args = parse_args(argv)
  options = parse_options(args)
  import jax
  from jscale.sweeps import runner
  # Before any JAX operation: on CPU, one host device per core (or --devices N); GPUs/TPUs unaffected.
  runner.use_cpu_cores(args.devices)
  from jscale import experiments, precision, report, sweeps
  precision.set_precision(args.precision)
  t_start = time.perf_counter()

  print(f"devices: {jax.devices()}", flush=True)
  runs = []
  if args.resume:
    root = args.resume
    if os.path.exists(os.path.join(root, "config.json")):
      dirs = [root]
    else:
      dirs = sorted(os.path.join(root, d) for d in os.listdir(root)
                    if os.path.exists(os.path.join(root, d, "config.json")))
      if not dirs:
        raise ValueError(f"--resume {root}: holds no run directory (no config.json)")
    for d in dirs:
      with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
      try:
        exp = sweeps.get(cfg["experiment"], **(cfg.get("options") or {}))
      except ValueError as e:
        raise ValueError(f"{d}: {e}") from None
      if isinstance(exp, sweeps.CustomExperiment):
        runs.append((d, lambda exp=exp, d=d, cfg=cfg: exp.execute(cfg["grid_name"], d, options=cfg.get("options"))))
      else:
        runs.append((d, lambda d=d: sweeps.resume(d, devices=args.devices, progress=not args.no_progress)))
    out = root if not os.path.exists(os.path.join(root, "config.json")) else os.path.dirname(os.path.abspath(root))
    grid_name = "resumed"
  else:
    names = [n for e in (args.experiment or []) for n in e.split(",") if n] or sweeps.names()
    out = args.out or os.path.join("runs", datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
    grid_name = args.grid
    plans = []
    used = set()
    # Every experiment is validated (and its memory checked) before any of them trains.
    for name in names:
      opts = options_for(sweeps.entry(name), options)
      used |= set(opts)
      exp = sweeps.get(name, **opts)
      if isinstance(exp, sweeps.CustomExperiment):
        exp.grid(args.grid)
        plans.append((exp, opts))
      else:
        plans.append((sweeps.make_plan(exp, args.grid, devices=args.devices, chunk_size=args.chunk_size,
                                       group_size=args.group_size, options=opts), opts))
    unused = sorted(set(options) - used)
    if unused:
      raise ValueError(f"no selected experiment takes the option(s) {', '.join(unused)}")
    for plan, opts in plans:
      if isinstance(plan, sweeps.CustomExperiment):
        d = os.path.join(out, plan.name)
        print(f"{plan.name}/{args.grid}: {dict(plan.grid(args.grid))} -> {d}", flush=True)
        runs.append((d, lambda plan=plan, d=d, opts=opts: plan.execute(args.grid, d, options=opts)))
        continue
      d = os.path.join(out, plan.experiment.name)
      print(f"{plan.experiment.name}/{args.grid}: {plan.n_configs} configurations in {len(plan.chunks)} chunks "
            f"over {len(plan.devices)} device(s) -> {d}", flush=True)
      runs.append((d, lambda plan=plan, d=d: sweeps.run(plan, d, progress=not args.no_progress)))

  for d, go in runs:
    t0 = time.perf_counter()
    res = go()
    if res is None or isinstance(res, str):
      print(f"\n== {os.path.basename(d)}: done in {time.perf_counter() - t0:.1f} s -> {os.path.abspath(d)} ==",
            flush=True)
      continue
    print(f"\n== {res.config['experiment']} / {res.config['grid_name']}: {res.n_configs} configurations, "
          f"{int(res.diverged.sum())} diverged, {res.seconds:.1f} s of compute ==")
    print(sweeps.format_table(res.summary()))
    print(f"results: {os.path.abspath(d)}  (summary.csv, metrics.npz, config.json)", flush=True)

  if args.no_report:
    return 0
  wall = time.perf_counter() - t_start
  sweeps.store.write_run_info(out, command="python scripts/sweep.py " + " ".join(sys.argv[1:] if argv is None else argv),
                        grid=grid_name, wall_time_s=round(wall, 1), devices=[str(d) for d in jax.devices()],
                              precision=args.precision)
  print()
  return report.build_report(out, experiments.sections()).print_summary(f" ({wall:.0f} s in all)")


if __name__ == "__main__":
  from jscale import cli
  cli.run(main)

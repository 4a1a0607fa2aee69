"""Run registered sweep experiments; print a summary table and where the results are.

  python scripts/sweep.py --grid quick                          # every experiment's quick grid
  python scripts/sweep.py --experiment sigma --grid full --out runs/sigma_full
  python scripts/sweep.py --resume runs/sigma_full              # finish an interrupted run (or a --out parent)
  python scripts/sweep.py --grid quick --devices 2              # on CPU: 2 host devices, configs sharded

`--devices N` uses the first N local devices; on CPU it also asks XLA for N host devices (the flag must be
set before JAX starts, which is why this script parses its arguments before importing JAX).
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys


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
                 help="configurations each device vmaps at once inside a chunk (default: all of its slice)")
  p.add_argument("--no-progress", action="store_true", help="no progress bar")
  return p.parse_args(argv)


def main(argv=None) -> int:
  args = parse_args(argv)
  if args.devices is not None and args.devices > 1 and "xla_force_host_platform_device_count" not in \
      os.environ.get("XLA_FLAGS", ""):
    # Only the CPU platform reads this flag; GPUs and TPUs ignore it.
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={args.devices}").strip()
  import jax  # noqa: E402  (after XLA_FLAGS)
  from jscale import sweeps

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
        raise SystemExit(f"error: {root} holds no run directory (no config.json)")
    for d in dirs:
      runs.append((d, lambda d=d: sweeps.resume(d, devices=args.devices, progress=not args.no_progress)))
  else:
    names = [n for e in (args.experiment or []) for n in e.split(",") if n] or sweeps.names()
    out = args.out or os.path.join("runs", datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
    plans = []
    try:  # every experiment is validated (and its memory checked) before any of them trains
      for name in names:
        plans.append(sweeps.make_plan(name, args.grid, devices=args.devices, chunk_size=args.chunk_size,
                                      group_size=args.group_size))
    except ValueError as e:
      raise SystemExit(f"error: {e}")
    for plan in plans:
      d = os.path.join(out, plan.experiment.name)
      print(f"{plan.experiment.name}/{args.grid}: {plan.n_configs} configurations in {len(plan.chunks)} chunks "
            f"over {len(plan.devices)} device(s) -> {d}", flush=True)
      runs.append((d, lambda plan=plan, d=d: sweeps.run(plan, d, progress=not args.no_progress)))

  for d, go in runs:
    res = go()
    if res is None:
      continue
    print(f"\n== {res.config['experiment']} / {res.config['grid_name']}: {res.n_configs} configurations, "
          f"{int(res.diverged.sum())} diverged, {res.seconds:.1f} s of compute ==")
    print(sweeps.format_table(res.summary()))
    print(f"results: {os.path.abspath(d)}  (summary.csv, metrics.npz, config.json)")
  return 0


if __name__ == "__main__":
  sys.exit(main())

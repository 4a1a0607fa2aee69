"""A measured roofline of the training step on this machine (issue 11's CPU-efficiency question).

  python scripts/roofline.py                                   # a table: both bench networks, 64 and 256 configs
  python scripts/roofline.py --json > results/bench/roofline-cpu-2core.json
  python scripts/roofline.py --network moons --sizes 256 --repeats 5

The networks are `jscale bench`'s (jscale.cli.bench, imported, not copied): moons 2-64-64-2 full-batch Adam, and
784-300-100-10 minibatch-32 SGD on Fashion-MNIST-shaped synthetic data. For each network and number of
configurations C, in one process, each timing the minimum of --repeats: the 2048^2 float32 matmul peak
(bench's `peak_gflops`, probed between the timings of every quantity, which is compared with the peak of its
own window: the load of a shared machine changes within minutes), a memory-bandwidth probe,
every matmul of an epoch alone (both layouts), the optimizer update alone, the bare step, the engine and the
per-config loop. Then, per network and C, --ratio-rounds rounds that time the engine and every shape (in its
best layout) once each in one window, with no peak rescaling: `roofline_ratio`, the engine's fraction of its
matmul roofline in CPU and in wall seconds (docs/performance.md, round 8, says how the two differ). See jscale/sweeps/roofline.py for what each is and how the fractions are computed;
docs/performance.md for the results and what they mean.

Times are per epoch: every epoch runs the same compiled step, so --epochs (default 10, fewer than the
sweeps' 200 to keep a run to minutes on two shared cores) changes the per-epoch times only by the one-off
initialisation, which is under 1% here.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import types

from jscale.cli import bench
from jscale.cli.bench import NETWORKS   # the same two networks, built by bench
from jscale.cli.parser import Parser


def parse_args(argv=None):
  p = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--json", action="store_true", help="print one JSON object (else a table)")
  p.add_argument("--network", default="moons,mlp784", help="comma-separated: moons, mlp784 (default both)")
  p.add_argument("--sizes", default="64,256", help="comma-separated numbers of configurations (default 64,256)")
  p.add_argument("--epochs", type=int, default=10, help="moons: epochs timed (default 10; times are per epoch)")
  p.add_argument("--mlp-epochs", type=int, default=1, help="mlp784: epochs timed (default 1)")
  p.add_argument("--mlp-train", type=int, default=256,
                 help="mlp784: synthetic training rows, 32 per step (default 256: 8 steps per epoch)")
  p.add_argument("--repeats", type=int, default=3, help="timings per quantity; the minimum is kept")
  p.add_argument("--ratio-rounds", type=int, default=7,
                 help="rounds of the engine-vs-attainable phase (engine and every shape's best layout timed once "
                      "each per round, in one window; minima kept; default 7)")
  p.add_argument("--loop-configs", type=int, default=16,
                 help="configurations the per-config loop is timed on (scaled to C: its calls are independent)")
  p.add_argument("--devices", type=int, default=None, help="devices for the engine (CPU: host devices)")
  args = p.parse_args(argv)
  args.networks = [n.strip() for n in args.network.split(",") if n.strip()]
  bad = [n for n in args.networks if n not in NETWORKS]
  if bad or not args.networks:
    raise ValueError(f"--network must name some of {', '.join(NETWORKS)}, got {args.network!r}")
  given = args.sizes
  try:
    args.sizes = [int(s) for s in given.split(",") if s.strip()]
  except ValueError:
    args.sizes = []
  if not args.sizes or min(args.sizes) < 1:
    raise ValueError(f"--sizes must be comma-separated ints >= 1, got {given!r}")
  for flag in ("epochs", "mlp_epochs", "repeats", "loop_configs", "ratio_rounds"):
    if getattr(args, flag) < 1:
      raise ValueError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
  if args.mlp_train < 64:
    raise ValueError(f"--mlp-train must be >= 64 (two minibatches of 32), got {args.mlp_train}")
  bench.check_devices(args)
  return args


def cpu_model() -> str:
  try:
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
  except (OSError, subprocess.CalledProcessError, StopIteration):
    return platform.processor() or "unknown"


def format_report(r: dict) -> str:
  t = r["t_epoch_s"]
  lines = [f"{r['network']}  C={r['configs']}  {r['gflop_per_epoch']:.3f} GFLOP/epoch  peak {r['peak_gflops']:.1f} "
           f"GFLOP/s  L3 {r['bandwidth_gbps']['l3']:.1f} GB/s  DRAM {r['bandwidth_gbps']['dram']:.1f} GB/s  "
           f"dispatch {1e3 * r['dispatch_s']:.2f} ms",
           f"  {'shape':9} {'rows':>5} {'in':>4} {'out':>4} {'calls':>5} {'batched ms':>10} {'mapped ms':>9} "
           f"{'resid. ms':>9} "
           f"{'GFLOP/s':>8} {'local pk':>8} {'of peak':>7} {'flop/B':>6} {'roofline':>8}"]
  for s in r["shapes"]:
    lines.append(f"  {s['name']:9} {s['rows']:5d} {s['n_in']:4d} {s['n_out']:4d} {s['calls_per_epoch']:5d} "
                 f"{1e3 * s['t_batched_s']:10.2f} {1e3 * s['t_mapped_s']:9.2f} "
                 f"{1e3 * s.get('t_resident_s', float('nan')):9.2f} {s['gflops_best']:8.1f} "
                 f"{s['peak_gflops']:8.1f} "
                 f"{s['fraction_of_peak']:7.3f} {s['intensity']:6.1f} {s['roofline_fraction']:8.3f}")
  lines.append(f"  per epoch (s, rescaled to the reference peak; the programs' local peak "
               f"{r['runs_peak_gflops']:.1f}): " + ", ".join(f"{k} {v:.4f}" for k, v in t.items()))
  lines.append(f"  of peak: attainable {r['attainable_fraction']:.3f} "
               f"(roofline model: L3 {r['roofline_model_fraction']:.3f}, "
               f"DRAM {r['roofline_dram_fraction']:.3f}), "
               f"engine {r['engine_fraction']:.3f}, bare step {r['bare_fraction']:.3f}, matmuls in the engine's "
               f"layout {r['matmul_engine_layout_fraction']:.3f}")
  lines.append(f"  engine/bare {r['metrics_overhead']:.2f}x; vs loop {r['speedup_vs_loop']:.2f}x "
               f"(ceiling at attainable {r['loop_ratio_ceiling']:.2f}x); engine time: " +
               ", ".join(f"{k} {v:.0%}" for k, v in r["engine_time_split"].items()))
  q = r.get("roofline_ratio")
  if q:
    lines.append(f"  engine / its roofline, one window, {q['rounds']} rounds (attainable time over engine time, minima): "
                 + "; ".join(f"{k} seconds {q[k]['fraction_of_roofline']:.3f} (per round median "
                             f"{q[k]['per_round']['median']:.3f}, {q[k]['per_round']['min']:.3f}-"
                             f"{q[k]['per_round']['max']:.3f})" for k in ("cpu", "wall")))
  if any(s["fraction_of_peak"] > 1 for s in r["shapes"]):
    lines.append("  (a shape's 'of peak' above 1: its best timing and its window's best peak probe fell in moments of "
                 "different load; single shapes read +-0.2, the epoch's sums above average it out)")
  if r.get("overlap_s"):
    lines.append("  (timed apart, parts overlapped by " + ", ".join(f"{k} {v:.4f} s" for k, v in r["overlap_s"].items())
                 + ": shown as 0%, see docs/performance.md)")
  return "\n".join(lines)


def main(argv=None):
  args = parse_args(argv)
  import jax
  import numpy as np
  from jax.sharding import Mesh
  from jscale.sweeps import runner
  runner.use_cpu_cores(args.devices)  # before any JAX operation, as bench does
  from jscale import precision
  from jscale.sweeps import cost, roofline as R
  load0 = round(os.getloadavg()[0], 2)   # other work on the machine, at the start and at the end
  devices = runner.select_devices(args.devices)
  mesh = Mesh(np.array(devices), ("config",))
  group_size = runner.default_group_size(devices)
  bench_args = types.SimpleNamespace(epochs=args.epochs, mlp_epochs=args.mlp_epochs, mlp_train=args.mlp_train)
  probes = []   # every peak probe of the run: the best is the reference the times are rescaled to

  def peak_fn():
    probes.append(bench.peak_gflops(reps=1))
    return probes[-1]

  t_start, n_parts = time.perf_counter(), len(args.networks) * len(args.sizes)

  def say(what):   # progress on stderr (stdout stays the report): the whole run takes minutes to a quarter hour
    print(f"roofline: {what} ({time.perf_counter() - t_start:.0f} s)", file=sys.stderr, flush=True)

  say("memory bandwidth and dispatch probes")
  bandwidth = R.bandwidth_gbps(mesh, args.repeats, peak_fn)
  dispatch = R.dispatch_s(mesh)
  raw = []
  for name in args.networks:
    spec, ds, hparams_of, text = bench.network(name, bench_args)
    n_train, n_test = len(ds.y_train), len(ds.y_test)
    shapes = R.step_shapes(spec, n_train, n_test)
    progs = R.make_programs(spec, n_train, mesh, group_size)
    for C in args.sizes:
      part = f"{len(raw) + 1}/{n_parts} {name} C={C}"
      say(f"{part}: every matmul shape alone")
      shape_times = R.time_shapes(shapes, C, mesh, args.repeats, peak_fn)
      say(f"{part}: the step, the engine and the per-config loop")
      run_times = R.time_programs(progs, hparams_of, ds, C, mesh, args.repeats, args.loop_configs, peak_fn)
      say(f"{part}: {args.ratio_rounds} rounds of the engine against its roofline")
      ratio = R.time_roofline_ratio(shapes, shape_times, R.engine_call(progs, hparams_of, ds, C, mesh), C, mesh,
                                    spec.epochs, args.ratio_rounds)
      raw.append((name, spec, n_train, n_test, C, shapes, shape_times, run_times, text, ratio))
      say(f"measured {name} C={C}")
  peak = max(probes)
  results = [dict(R.shares_of_peak(name, spec, n_train=n_train, n_test=n_test, C=C, shapes=shapes, shape_times=st,
                                    run_times=rt, peak_gflops=peak, bandwidth=bandwidth, dispatch=dispatch),
                  protocol=text, roofline_ratio=ratio)
             for name, spec, n_train, n_test, C, shapes, st, rt, text, ratio in raw]
  check_flops = {r["network"]: cost.flops_per_config(spec, n_train, n_test) / spec.epochs
                 for r, (_, spec, n_train, n_test, *_) in zip(results, raw)}
  for r in results:   # the shape list must account for exactly the FLOPs bench counts
    assert abs(r["gflop_per_epoch"] * 1e9 / r["configs"] - check_flops[r["network"]]) < 1e-6 * check_flops[r["network"]]
  out = {"device": str(devices[0].device_kind), "platform": devices[0].platform, "cpu_model": cpu_model(),
         "cpu_count": os.cpu_count(), "n_devices": len(devices), "group_size": group_size,
         "jax_version": jax.__version__, "precision": precision.get_precision(),
         "loadavg_1m": [load0, round(os.getloadavg()[0], 2)], "repeats": args.repeats, "peak_gflops": peak,
         "peak_probes": {"n": len(probes), "min": min(probes), "median": float(np.median(probes)), "max": peak},
         "bandwidth_gbps": results[0]["bandwidth_gbps"], "bandwidth_peak_gflops": bandwidth["peak_gflops"],
         "dispatch_s": dispatch, "results": results}
  if args.json:
    print(json.dumps(out, indent=1))
  else:
    print(f"{out['cpu_model']}, {out['cpu_count']} CPUs, {len(devices)} x {devices[0].platform} devices, group size "
          f"{group_size}, jax {jax.__version__}, load {out['loadavg_1m']}, peak probes {out['peak_probes']}")
    for r in results:
      print(format_report(r))
  return out


if __name__ == "__main__":
  from jscale import cli
  cli.run(lambda: (main(), 0)[1])

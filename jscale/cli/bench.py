"""Benchmark the sweep engine against a per-configuration loop and the machine's matmul peak.

  python scripts/bench.py                                 # a table: both networks at 64 and 256 configurations
  python scripts/bench.py --json > results/bench/cpu-2core.json
  python scripts/bench.py --network moons --sizes 256 --epochs 200 --precision highest
  python scripts/bench.py --devices 1 --group-size 256    # the vmap layout on one device
  python scripts/bench.py --sizes 256,1024,4096 --mlp-sizes 256,1024,4096 --skip-loop-above 64   # a GPU

The defaults take 41-47 s on 2 idle CPU cores (README, measured 2026-12-06; 5 minutes at load average 11), one
precision there (XLA:CPU computes float32 the same way at both; --precision auto measures both on GPUs and
TPUs), with a progress line on stderr (--no-progress turns it off).

Two networks, each trained by C configurations at once (C = each of --sizes / --mlp-sizes):
  moons   2-64-64-2 ReLU MLP on two moons (1400 train / 600 test), Adam lr 1e-3, full batch, the `sigma`
          experiment's protocol; configurations vary sigma x seed.
  mlp784  784-300-100-10 ReLU MLP (the feature/weight question's network), Glorot normal, SGD lr 0.1,
          minibatch 32; configurations vary the seed. Data: SYNTHETIC, of Fashion-MNIST's shape (784 raw
          pixel values in 0..255, 10 classes, labels from a random linear teacher; --mlp-train rows train,
          a quarter as many test) -- the speed depends on the shapes only, and the offline stand-in
          (digits_raw) has 64 inputs, not 784.
For each network, precision and C, in one process on the same machine:
  (a) engine: the sweep runner's executor, jit(shard_map(...)) over the local devices with the runner's
              defaults (CPU: one host device per core, each training its configurations one at a time);
  (b) loop:   jit(train) called once per configuration, C calls (compiled once, compile time excluded);
  (b') naive: jit(vmap(train)) of all C configurations on one device;
  (c) peak:   a 2048 x 2048 float32 matmul at the precision in use, best of several.
Also this process's CPU seconds for the grid (cpu_engine_s, cpu_loop_s), cpu_fraction_of_peak (the engine's
FLOPs per CPU second over the peak probe's: fraction_of_peak as it would read with every core the engine's, the
figure to read on a shared machine) and, on a CPU, loop_ratio_ceiling = devices * cpu_loop_s / cpu_engine_s: the
speedup over a loop that keeps one core busy that the engine's CPU work would give spread perfectly over its
devices (the loop runs the same `train`; its XLA threads keep more than one core busy at times, so this bounds
speedup_vs_loop from above, loosely: ~1.6 cores on the quiet 2-core machine). engine_cores_busy and
loop_cores_busy (CPU seconds per wall second of each one's fastest repeat) say how many cores each kept busy, and
speedup_bound = devices * t_loop_s / cpu_engine_s is the speedup over the loop as timed with every device of the
engine busy throughout: speedup_vs_loop = speedup_bound * engine_cores_busy / devices (up to the two minima
coming from different repeats). On the quiet 2 cores the engine keeps 1.95-1.99 cores busy (docs/performance.md,
round 6): what is left between speedup_vs_loop and speedup_bound is idle time, the rest is CPU work.
Reported: speedup_vs_loop = t_loop / t_engine, speedup_vs_naive_vmap, useful_gflops = C * model FLOPs /
t_engine (FLOPs counted analytically by `jscale.sweeps.cost.flops_per_config`: the matmuls of forward, backward
and the test pass), and fraction_of_peak = useful_gflops / matmul_peak_gflops. Each timing is the minimum
over --repeats interleaved runs (robust to other processes stealing the cores). --precision both (the
default on accelerators) measures "highest" (float32 everywhere, jscale's default) and "default" (JAX's
per-backend choice: TF32 on NVIDIA GPUs, bfloat16 passes on TPUs; XLA:CPU computes float32 either way, so
--precision auto, the default, measures "highest" alone on a CPU).
--metric-every K trains with `TrainSpec(metric_every=K)` (the step metrics on every K-th step; the sweeps'
default is 1, every step).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from jscale.cli.parser import Parser

NETWORKS = ("moons", "mlp784")


def parse_args(argv=None):
  p = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--json", action="store_true", help="print one JSON object (else a table)")
  p.add_argument("--network", default="moons,mlp784", help="comma-separated: moons, mlp784 (default both)")
  p.add_argument("--sizes", default="64,256", help="moons: comma-separated grid sizes (configurations)")
  p.add_argument("--epochs", type=int, default=20, help="moons: epochs (default 20)")
  p.add_argument("--mlp-sizes", default="64,256", help="mlp784: comma-separated grid sizes")
  p.add_argument("--mlp-epochs", type=int, default=1, help="mlp784: epochs (default 1)")
  p.add_argument("--mlp-train", type=int, default=512,
                 help="mlp784: synthetic training rows (default 512: 16 steps of 32 per epoch)")
  p.add_argument("--precision", choices=("auto", "both", "highest", "default"), default="auto",
                 help="float32 matmul precision(s) to measure (default auto: both on accelerators, highest on CPU)")
  p.add_argument("--metric-every", type=int, default=1,
                 help="measure the step metrics on every K-th step (TrainSpec.metric_every; default 1)")
  p.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
  p.add_argument("--devices", type=int, default=None, help="devices for the engine (CPU: host devices)")
  p.add_argument("--group-size", type=int, default=None, help="configs each device vmaps at once")
  p.add_argument("--repeats", type=int, default=2)
  p.add_argument("--skip-loop-above", type=int, default=64,
                 help="time the per-config loop on this many configurations and scale it to larger sizes (its "
                      "calls are independent; default 64)")
  p.add_argument("--no-naive", action="store_true", help="skip the naive jit(vmap) layout")
  p.add_argument("--naive-up-to", type=int, default=64,
                 help="time the naive layout up to this many configurations (default 64; on a CPU it is the "
                      "slowest layout by far: one device, every matmul a batched dot)")
  args = p.parse_args(argv)
  args.networks = [n.strip() for n in args.network.split(",") if n.strip()]
  bad = [n for n in args.networks if n not in NETWORKS]
  if bad or not args.networks:
    raise ValueError(f"--network must name some of {', '.join(NETWORKS)}, got {args.network!r}")
  for flag in ("sizes", "mlp_sizes"):
    try:
      sizes = [int(s) for s in getattr(args, flag).split(",") if s.strip()]
    except ValueError:
      sizes = []
    if not sizes or min(sizes) < 1:
      raise ValueError(f"--{flag.replace('_', '-')} must be comma-separated ints >= 1, got {getattr(args, flag)!r}")
    setattr(args, flag, sizes)
  for flag in ("epochs", "mlp_epochs", "repeats", "metric_every", "skip_loop_above", "naive_up_to"):
    if getattr(args, flag) < 1:
      raise ValueError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
  if args.mlp_train < 64:
    raise ValueError(f"--mlp-train must be >= 64 (two minibatches of 32), got {args.mlp_train}")
  check_devices(args)
  return args


def check_devices(args) -> None:
  """--devices (and --group-size, where the tool has it) as the sweep checks them, before JAX starts: 0 or a
  negative group size used to reach the executor's reshape after the compile, and 99 host devices on 2 cores
  to time-slice them."""
  from jscale import checks
  from jscale.sweeps.devices import check_device_request
  check_device_request(args.devices)
  checks.optional(checks.positive_int)(getattr(args, "group_size", None), "--group-size")


def synthetic_784(n_train: int, seed: int = 0):
  """Fashion-MNIST-shaped synthetic data: 784 raw pixel values in 0..255, 10 classes from a linear teacher."""
  import numpy as np
  from jscale import datasets
  rng = np.random.default_rng(seed)
  n_test = max(n_train // 4, 10)
  x = np.round(rng.random((n_train + n_test, 784)) * 255).astype(np.float32)
  teacher = rng.standard_normal((784, 10)).astype(np.float32)
  y = np.argmax((x - 127.5) @ teacher, axis=1).astype(np.int32)
  return datasets.Dataset(x[:n_train], y[:n_train], x[n_train:], y[n_train:], 10, "synthetic_784",
                          f"synthetic: uniform pixels 0..255, 784 inputs, 10 classes (linear teacher), seed {seed}")


def network(name: str, args):
  """(spec, dataset, hparams_fn(C) -> HParams with C rows, protocol text)."""
  import numpy as np
  from jscale import datasets, train as T
  from jscale.sweeps import log_spaced
  if name == "moons":
    ds = datasets.get("two_moons", seed=0)
    widths = (ds.x_train.shape[1], 64, 64, ds.num_classes)
    spec = T.TrainSpec(widths=widths, kernel_inits=("normal:1",), optimizer="adam", epochs=args.epochs,
                       metric_every=getattr(args, "metric_every", 1))
    sig = np.asarray(log_spaced(1e-3, 3.0, 16), np.float32)
    hp = lambda C: _hparams(spec, C, init_scale=sig[np.arange(C) % 16], lr=1e-3)
    text = f"2-64-64-2, two moons {len(ds.y_train)}/{len(ds.y_test)}, Adam, full batch, {args.epochs} epochs"
  else:
    ds = synthetic_784(args.mlp_train)
    spec = T.TrainSpec(widths=(784, 300, 100, 10), kernel_inits=("glorot_normal",), optimizer="sgd",
                       epochs=args.mlp_epochs, batch_size=32, metric_every=getattr(args, "metric_every", 1))
    hp = lambda C: _hparams(spec, C, init_scale=np.ones(C, np.float32), lr=0.1, input_scale=1 / 255)
    text = (f"784-300-100-10, synthetic Fashion-MNIST-shaped data {len(ds.y_train)}/{len(ds.y_test)}, SGD, "
            f"minibatch 32, {args.mlp_epochs} epoch(s)")
  return spec, ds, hp, text


def _hparams(spec, C, *, init_scale, lr, input_scale=1.0):
  import numpy as np
  from jscale import train as T
  f32 = lambda v: np.full(C, v, np.float32)
  return T.HParams(init_scale=np.asarray(init_scale, np.float32), layer_scale=np.ones((C, spec.n_layers), np.float32),
                   input_scale=f32(input_scale), output_scale=f32(1.0), lr=f32(lr), weight_decay=f32(0.0),
                   init_index=np.zeros(C, np.int32))


def peak_gflops(n: int = 2048, reps: int = 12, cpu_time: bool = False):
  """Best-of-`reps` n x n float32 matmul, at the matmul precision in force when called; with `cpu_time`, also
  GFLOP per second of this process's CPU time (its best repetition: the machine's matmul rate per busy core-second,
  which other processes on the machine disturb far less than the wall-clock rate)."""
  import jax
  import jax.numpy as jnp
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
  mm = jax.jit(lambda x, y: x @ y)
  mm(a, b).block_until_ready()
  best = best_cpu = float("inf")
  for _ in range(reps):
    t, c = time.perf_counter(), time.process_time()
    mm(a, b).block_until_ready()
    best, best_cpu = min(best, time.perf_counter() - t), min(best_cpu, time.process_time() - c)
  flop = 2 * n ** 3 / 1e9
  return (flop / best, flop / best_cpu) if cpu_time else flop / best


def bench_network(name, args, devices, group_size, peak, precision, progress=lambda C: None):
  import jax
  import numpy as np
  from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
  from jscale import datasets, train as T
  from jscale.sweeps import cost, runner
  spec, ds, hparams_of, text = network(name, args)
  train = T.make_train(spec)
  flops = cost.flops_per_config(spec, len(ds.y_train), len(ds.y_test))
  mesh = Mesh(np.array(devices), ("config",))
  engine = runner.make_executor(train, mesh, group_size)
  naive = jax.jit(jax.vmap(train, in_axes=(0, 0, None)))   # what a newcomer writes first
  loop_fn = jax.jit(train)
  data = datasets.to_device(ds)
  stacked = jax.device_put(runner.stack_data([ds]), NamedSharding(mesh, P()))
  rows = []
  for C in (args.sizes if name == "moons" else args.mlp_sizes):
    progress(C)
    Cp = -(-C // len(devices)) * len(devices)
    hp = hparams_of(Cp)
    keys = runner.config_keys(0, np.arange(Cp))
    sharded = jax.device_put((keys, hp, np.zeros(Cp, np.int32)), NamedSharding(mesh, P("config")))
    jax.block_until_ready(engine(*sharded, stacked))  # compile
    singles = [(keys[i], jax.tree.map(lambda a: a[i], hp)) for i in range(C)]
    jax.block_until_ready(loop_fn(*singles[0], data))  # compile
    keys1, hp1 = jax.device_put((keys[:C], jax.tree.map(lambda a: a[:C], hp)), devices[0])
    time_naive = not args.no_naive and C <= args.naive_up_to
    if time_naive:
      jax.block_until_ready(naive(keys1, hp1, data))  # compile
    n_loop = C if args.skip_loop_above is None or C <= args.skip_loop_above else args.skip_loop_above
    t_engine = t_loop = t_naive = cpu_engine = cpu_loop = float("inf")
    busy_engine = busy_loop = None   # CPU seconds per wall second of each one's fastest repeat
    for _ in range(args.repeats):  # interleaved, min of each: robust to bursts of load
      t, c = time.perf_counter(), time.process_time()
      jax.block_until_ready(engine(*sharded, stacked))
      wall, cpu = time.perf_counter() - t, time.process_time() - c
      busy_engine = cpu / wall if wall < t_engine else busy_engine
      t_engine, cpu_engine = min(t_engine, wall), min(cpu_engine, cpu)
      t, c = time.perf_counter(), time.process_time()
      for k, h in singles[:n_loop]:
        out = loop_fn(k, h, data)
      jax.block_until_ready(out)
      wall, cpu = (time.perf_counter() - t) * C / n_loop, (time.process_time() - c) * C / n_loop
      busy_loop = cpu / wall if wall < t_loop else busy_loop
      t_loop, cpu_loop = min(t_loop, wall), min(cpu_loop, cpu)
      if time_naive:
        t = time.perf_counter()
        jax.block_until_ready(naive(keys1, hp1, data))
        t_naive = min(t_naive, time.perf_counter() - t)
    useful = C * flops / t_engine / 1e9
    rows.append({"network": name, "precision": precision, "configs": C, "t_engine_s": round(t_engine, 4),
                 "t_loop_s": round(t_loop, 4), "loop_timed_configs": n_loop,
                 "t_naive_vmap_s": round(t_naive, 4) if time_naive else None,
                 "speedup_vs_loop": round(t_loop / t_engine, 3),
                 "speedup_vs_naive_vmap": round(t_naive / t_engine, 3) if time_naive else None,
                 "useful_gflops": round(useful, 2), "loop_gflops": round(C * flops / t_loop / 1e9, 2),
                 "matmul_peak_gflops": round(peak, 2), "fraction_of_peak": round(useful / peak, 3),
                 # This process's CPU seconds (all its threads) for the grid, engine and loop: the loop runs the same
                 # `train`, so the engine can beat it only by doing less CPU work or keeping more cores busy. Its
                 # CPU work spread perfectly over its devices, against a loop that keeps one core busy, gives the
                 # ceiling (an upper bound: the loop's XLA threads keep more than one core busy at times).
                 "cpu_engine_s": round(cpu_engine, 4), "cpu_loop_s": round(cpu_loop, 4),
                 "useful_gflops_per_cpu_second": round(C * flops / cpu_engine / 1e9, 2),
                 "loop_ratio_ceiling": round(len(devices) * cpu_loop / cpu_engine, 3) if devices[0].platform == "cpu"
                 else None,
                 # How many cores each kept busy (CPU seconds per wall second), and the speedup over the loop as
                 # timed that the engine's CPU work would give with every device (core) busy all the time: the
                 # engine reaches speedup_bound * engine_cores_busy / devices. On a quiet CPU the loop's XLA
                 # threads keep ~1.6 cores busy, so this bound sits well below loop_ratio_ceiling.
                 "engine_cores_busy": round(busy_engine, 3), "loop_cores_busy": round(busy_loop, 3),
                 "speedup_bound": round(len(devices) * t_loop / cpu_engine, 3) if devices[0].platform == "cpu"
                 else None,
                 "loadavg_1m": round(os.getloadavg()[0], 2)})   # other work on the machine beside this figure
    if not args.json:   # fraction_of_peak against the peak so far (the final JSON uses the best of the run)
      print(format_row(rows[-1]), flush=True)
  info = {"protocol": text, "widths": list(spec.widths), "epochs": spec.epochs, "batch_size": spec.batch_size,
          "n_train": len(ds.y_train), "n_test": len(ds.y_test), "data": ds.source,
          "model_gflop_per_config": round(flops / 1e9, 5)}
  return info, rows


COLUMNS = (("network", 7, "{}"), ("precision", 9, "{}"), ("configs", 7, "{}"), ("t_engine_s", 9, "{:.3f}"),
           ("t_loop_s", 9, "{:.3f}"), ("t_naive_vmap_s", 9, "{:.3f}"), ("speedup_vs_loop", 8, "{:.2f}x"),
           ("speedup_vs_naive_vmap", 8, "{:.2f}x"), ("useful_gflops", 8, "{:.1f}"),
           ("matmul_peak_gflops", 8, "{:.1f}"), ("fraction_of_peak", 7, "{:.3f}"))
HEADERS = ("network", "precision", "configs", "engine s", "loop s", "vmap s", "vs loop", "vs vmap", "GFLOP/s",
           "peak", "of peak")


def format_header() -> str:
  return "  ".join(h.rjust(w) for h, (_, w, _) in zip(HEADERS, COLUMNS))


def format_row(r: dict) -> str:
  return "  ".join(("-" if r[k] is None else f.format(r[k])).rjust(w) for k, w, f in COLUMNS)


def main(argv=None):
  args = parse_args(argv)
  import jax
  from jscale.sweeps import runner
  runner.use_cpu_cores(args.devices)  # before any JAX operation: one host device per core on CPU
  from jscale import host, precision as precision_lib
  devices = runner.select_devices(args.devices)
  group_size = args.group_size if args.group_size is not None else runner.default_group_size(devices)
  if args.precision == "auto":
    args.precision = "highest" if devices[0].platform == "cpu" else "both"
  precisions = ("highest", "default") if args.precision == "both" else (args.precision,)
  todo = [(p, n, C) for p in precisions for n in args.networks for C in (args.sizes if n == "moons" else args.mlp_sizes)]
  t_start = time.perf_counter()

  def progress(prec, name):
    def say(C):
      if not args.no_progress:
        k = todo.index((prec, name, C)) + 1
        print(f"bench: {k}/{len(todo)} {name} {prec} {C} configurations ({time.perf_counter() - t_start:.0f} s)",
              file=sys.stderr, flush=True)
    return say
  if not args.json:
    print(f"{len(devices)} x {devices[0].device_kind} ({devices[0].platform}), group size {group_size}; "
          "times are seconds per whole grid")
    print(format_header(), flush=True)
  peaks, cpu_peaks, networks, results = {}, {}, {}, []
  for prec in precisions:
    precision_lib.set_precision(prec)
    # The peak is measured before and after each network and the best kept: on a shared machine one
    # measurement can land in a burst of other load and understate it (overstating fraction_of_peak).
    peaks[prec], cpu_peaks[prec] = peak_gflops(cpu_time=True)
    for name in args.networks:
      info, rows = bench_network(name, args, devices, group_size, peaks[prec], prec, progress(prec, name))
      wall, cpu = peak_gflops(cpu_time=True)
      peaks[prec], cpu_peaks[prec] = max(peaks[prec], wall), max(cpu_peaks[prec], cpu)
      networks[name] = info
      results.extend(rows)
  for r in results:
    r["matmul_peak_gflops"] = round(peaks[r["precision"]], 2)
    r["fraction_of_peak"] = round(r["useful_gflops"] / peaks[r["precision"]], 3)
    # The same fraction in CPU time: the engine's FLOPs per second of its process's CPU time against the peak
    # probe's. Equal to fraction_of_peak when the engine keeps every core busy; under other load it is the
    # figure that still means something (the wall-clock one then measures the share of the cores it got).
    r["cpu_fraction_of_peak"] = round(r["useful_gflops_per_cpu_second"] / cpu_peaks[r["precision"]], 3)
  out = {"device": str(devices[0].device_kind), "platform": devices[0].platform, "n_devices": len(devices),
         "group_size": group_size, "jax_version": jax.__version__, "cpu_count": os.cpu_count(), "host": host.describe(),
         "loadavg_1m": round(os.getloadavg()[0], 2), "precisions": list(precisions),
         "metric_every": args.metric_every, "seconds": round(time.perf_counter() - t_start, 1),
         "matmul_peak_gflops": {p: round(v, 2) for p, v in peaks.items()},
         "matmul_peak_gflops_per_cpu_second": {p: round(v, 2) for p, v in cpu_peaks.items()}, "networks": networks,
         "results": results}
  if args.json:
    print(json.dumps(out, indent=1))
  else:
    for name, info in networks.items():
      print(f"{name}: {info['protocol']}; {info['model_gflop_per_config']} GFLOP per configuration")
    print("peak: 2048x2048 float32 matmul, " + ", ".join(f"{p} {v:.1f} GFLOP/s" for p, v in peaks.items()))
  return out


if __name__ == "__main__":
  from jscale import cli
  cli.run(main)

"""Benchmark the sweep engine against a per-configuration loop and the machine's matmul peak.

  python scripts/bench.py --json                         # sizes 16, 64, 256; the sigma protocol, full batch
  python scripts/bench.py --json --sizes 256 --epochs 50 --devices 1 --group-size 256   # the vmap layout

In one process, on the same machine, for each grid size C (the `sigma` experiment's model and data,
2-64-64-2 MLP on two moons, Adam, full batch, C configurations of sigma x seed):
  (a) engine: the runner's executor, jit(shard_map(...)) over the local devices with the runner's defaults
              (CPU: one host device per core, each training its configurations one at a time);
  (b) loop:   jit(train) called once per configuration, C calls (compiled once, compile time excluded);
  (b') naive: jit(vmap(train)) of all C configurations on one device (speedup_vs_naive_vmap);
  (c) peak:   a 2048 x 2048 float32 matmul, best of several.
Prints speedup_vs_loop = t_loop / t_engine, useful_gflops = C * model FLOPs / t_engine (FLOPs counted
analytically by `jscale.train.flops_per_config`: matmuls of forward, backward and the test pass),
matmul_peak_gflops and fraction_of_peak = useful_gflops / matmul_peak_gflops. Each timing is the
minimum over `--repeats` interleaved runs (robust to other processes stealing the cores).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--json", action="store_true", help="print one JSON object (else a table)")
  p.add_argument("--sizes", default="16,64,256", help="comma-separated grid sizes (configurations)")
  p.add_argument("--epochs", type=int, default=200)
  p.add_argument("--batch-size", type=int, default=None, help="default: full batch")
  p.add_argument("--devices", type=int, default=None, help="devices for the engine (CPU: host devices)")
  p.add_argument("--group-size", type=int, default=None, help="configs each device vmaps at once")
  p.add_argument("--repeats", type=int, default=2)
  p.add_argument("--skip-loop-above", type=int, default=None,
                 help="estimate the loop from a subset for sizes above this (default: time every config)")
  return p.parse_args(argv)


def main(argv=None):
  args = parse_args(argv)
  import jax
  from jscale.sweeps import runner
  runner.use_cpu_cores(args.devices)  # before any JAX operation: one host device per core on CPU
  import jax.numpy as jnp
  import numpy as np
  from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

  from jscale import data as data_lib, train as T
  from jscale.sweeps import experiment as E

  exp = E.get("sigma")
  ds = data_lib.load(exp.data, seed=exp.data_seed, **exp.data_options)
  data = data_lib.to_device(ds)
  widths = (ds.x_train.shape[1],) + tuple(exp.hidden) + (ds.num_classes,)
  spec = T.TrainSpec(widths=widths, kernel_inits=(exp.kernel_init,), optimizer=exp.optimizer,
                     epochs=args.epochs, batch_size=args.batch_size)
  train = T.make_train(spec)
  flops = T.flops_per_config(spec, len(ds.y_train), len(ds.y_test))
  devices = runner.select_devices(args.devices)
  mesh = Mesh(np.array(devices), ("config",))
  group_size = args.group_size if args.group_size is not None else runner.default_group_size(devices)
  engine = runner.make_executor(train, mesh, group_size)
  # The layout a newcomer writes first: one device, every configuration vmapped at once.
  naive = jax.jit(jax.vmap(train, in_axes=(0, 0, None)))
  loop_fn = jax.jit(train)
  ddata = jax.device_put(data, NamedSharding(mesh, P()))

  def peak_gflops(n=2048, reps=8):
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    mm = jax.jit(jnp.matmul)
    mm(a, b).block_until_ready()
    best = float("inf")
    for _ in range(reps):
      t = time.perf_counter()
      mm(a, b).block_until_ready()
      best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9

  peak = peak_gflops()
  results = []
  for C in (int(s) for s in args.sizes.split(",")):
    Cp = -(-C // len(devices)) * len(devices)
    sig = np.asarray(E.log_spaced(1e-3, 3.0, 16), np.float32)[np.arange(Cp) % 16]
    hp = T.HParams(init_scale=jnp.asarray(sig), layer_scale=jnp.ones((Cp, spec.n_layers)),
                   input_scale=jnp.ones(Cp), output_scale=jnp.ones(Cp), lr=jnp.full(Cp, exp.lr),
                   weight_decay=jnp.zeros(Cp), init_index=jnp.zeros(Cp, jnp.int32))
    keys = runner.config_keys(0, np.arange(Cp) // 16)
    skeys, shp = jax.device_put((keys, hp), NamedSharding(mesh, P("config")))
    jax.block_until_ready(engine(skeys, shp, ddata))  # compile
    one = lambda i: jax.tree.map(lambda a: a[i], hp)
    singles = [(keys[i], one(i)) for i in range(C)]
    jax.block_until_ready(loop_fn(*singles[0], data))  # compile
    keys1, hp1 = jax.device_put((keys[:C], jax.tree.map(lambda a: a[:C], hp)), devices[0])
    jax.block_until_ready(naive(keys1, hp1, data))  # compile
    n_loop = C if args.skip_loop_above is None or C <= args.skip_loop_above else args.skip_loop_above
    t_engine = t_loop = t_naive = float("inf")
    for _ in range(args.repeats):  # interleaved, min of each: robust to bursts of load
      t = time.perf_counter()
      jax.block_until_ready(engine(skeys, shp, ddata))
      t_engine = min(t_engine, time.perf_counter() - t)
      t = time.perf_counter()
      for k, h in singles[:n_loop]:
        out = loop_fn(k, h, data)
      jax.block_until_ready(out)
      t_loop = min(t_loop, (time.perf_counter() - t) * C / n_loop)
      t = time.perf_counter()
      jax.block_until_ready(naive(keys1, hp1, data))
      t_naive = min(t_naive, time.perf_counter() - t)
    useful = C * flops / t_engine / 1e9
    results.append({"configs": C, "epochs": args.epochs, "t_engine_s": round(t_engine, 4),
                    "t_loop_s": round(t_loop, 4), "loop_timed_configs": n_loop,
                    "t_naive_vmap_s": round(t_naive, 4), "speedup_vs_loop": round(t_loop / t_engine, 3),
                    "speedup_vs_naive_vmap": round(t_naive / t_engine, 3), "useful_gflops": round(useful, 2),
                    "loop_gflops": round(C * flops / t_loop / 1e9, 2),
                    "fraction_of_peak": round(useful / peak, 3)})
    if not args.json:
      print(results[-1], flush=True)
  out = {"device": str(devices[0].device_kind), "platform": devices[0].platform, "n_devices": len(devices),
         "group_size": group_size, "batch_size": args.batch_size, "cpu_count": os.cpu_count(),
         "loadavg_1m": round(os.getloadavg()[0], 2), "model_gflop_per_config": round(flops / 1e9, 4),
         "matmul_peak_gflops": round(peak, 2), "results": results}
  print(json.dumps(out, indent=1) if args.json else f"matmul peak {peak:.1f} GFLOP/s")
  return out


if __name__ == "__main__":
  main()
  sys.exit(0)

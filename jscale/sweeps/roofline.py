"""A measured roofline of the training step: where a sweep's time goes, and how fast it could go here.

`scripts/roofline.py` drives it. For a `TrainSpec` trained by C configurations at once it measures, on
this machine and each as the minimum of several timings (other processes only ever add time):

  peak       a 2048 x 2048 float32 matmul (the caller passes bench's `peak_gflops`), probed between the
             timings of every quantity below: each is compared with the peak of its own window;
  bandwidth  x <- 2x + 1 streamed in place by every device at once (GB/s), over 64 MiB per device (DRAM) and
             8 MiB per device (the shared L3: a configuration's step fits there in the engine's layout);
  dispatch   the fixed cost of calling a jit(shard_map) program, contained in every per-shape time;
  shapes     every matmul of one epoch (`step_shapes`: forward, weight gradient dW = x^T g, input gradient
             dX = g W^T, the test forward pass) ALONE, as C per-configuration products, in three layouts:
             "batched" (one batched dot per device over its configurations), "mapped" (each device loops
             over its configurations, one plain 2-D dot each, operands streamed from memory) and "resident"
             (the same loop on one configuration's operands kept in cache, as the engine's CPU layout has a
             step's activations). The fastest is the shape's attainable ceiling on this machine; "resident"
             is the engine's matmul time;
  optimizer  the optimizer update alone, every step of an epoch, in the engine's layout;
  bare       forward, backward and update for every step, plus the per-epoch test forward pass (the model
             FLOPs the engine counts): no metrics, no divergence guard, in the engine's layout;
  engine     the sweep runner's executor running `jscale.train` (metrics and guards included);
  loop       jit(train) once per configuration (bench's per-config loop).

`shares_of_peak` turns these into fractions of the peak: the attainable fraction (the epoch's matmul FLOPs over
the sum of its shapes' best times: what a step could reach with free elementwise work), the engine's and
the bare step's, the classic roofline bound min(peak, intensity x bandwidth), and a split of the engine's
time into matmuls, optimizer, other elementwise work (ReLU masks, bias adds, softmax) and metrics.
"""
from __future__ import annotations

import functools
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jscale import mlp, train as train_lib
from jscale.sweeps import runner

# Fields of `shares_of_peak`'s result that docs/performance.md cites (tests/sweeps/test_roofline.py checks them).
SUMMARY_FIELDS = ("network", "configs", "epochs", "steps_per_epoch", "gflop_per_epoch", "peak_gflops",
                  "bandwidth_gbps", "dispatch_s", "t_epoch_s", "attainable_fraction", "roofline_model_fraction",
                  "roofline_dram_fraction", "engine_fraction",
                  "bare_fraction", "matmul_engine_layout_fraction", "metrics_overhead", "speedup_vs_loop",
                  "loop_ratio_ceiling", "engine_time_split", "shapes")
LAYOUTS = ("batched", "mapped", "resident")
TIME_FIELDS = ("engine", "bare", "optimizer", "matmul_engine_layout", "matmul_best", "loop")
SPLIT_FIELDS = ("matmul", "optimizer", "elementwise", "metrics_and_guards")
SHAPE_FIELDS = ("name", "rows", "n_in", "n_out", "calls_per_epoch", "gflop_per_call", "t_batched_s", "t_mapped_s",
                "t_resident_s", "peak_gflops", "best_layout", "gflops_best", "fraction_of_peak", "intensity",
                "roofline_fraction")


class Shape(NamedTuple):
  """One matmul of the step: C x ([rows, n_in] @ [n_in, n_out]) per call, `calls` times per epoch.

  kind "fwd" is x @ W, "dW" is x^T @ g (contracts over the rows), "dX" is g @ W^T (n_in is the layer's
  output width there: the product maps a gradient back to the layer's input)."""
  name: str
  kind: str
  rows: int
  n_in: int
  n_out: int
  calls: int

  def flops(self) -> float:
    """Per configuration per call: 2 per multiply-add."""
    return 2.0 * self.rows * self.n_in * self.n_out

  def min_bytes(self) -> float:
    """Per configuration per call: each float32 operand read and the product written once."""
    if self.kind == "dW":
      return 4.0 * (self.rows * self.n_in + self.rows * self.n_out + self.n_in * self.n_out)
    return 4.0 * (self.rows * self.n_in + self.n_in * self.n_out + self.rows * self.n_out)


def step_shapes(spec: train_lib.TrainSpec, n_train: int, n_test: int) -> list[Shape]:
  """Every matmul of one epoch of `jscale.train` for one configuration: per step forward and dW for each
  layer and dX for every layer but the first (the input needs no gradient), and the test forward pass."""
  if spec.train_pass or spec.output_std is not None:
    raise ValueError("step_shapes covers train_pass=False and output_std=None (the bench networks) only")
  w, L = spec.widths, spec.n_layers
  steps, rows = spec.steps_per_epoch(n_train), spec.batch_size or n_train
  shapes = [Shape(f"fwd{l}", "fwd", rows, w[l], w[l + 1], steps) for l in range(L)]
  shapes += [Shape(f"dW{l}", "dW", rows, w[l], w[l + 1], steps) for l in range(L)]
  shapes += [Shape(f"dX{l}", "dX", rows, w[l + 1], w[l], steps) for l in range(1, L)]
  if n_test:
    shapes += [Shape(f"test_fwd{l}", "fwd", n_test, w[l], w[l + 1], 1) for l in range(L)]
  return shapes


def epoch_flops(shapes) -> float:
  """Matmul FLOPs of one epoch of one configuration (equals `sweeps.cost.flops_per_config / epochs`)."""
  return sum(s.calls * s.flops() for s in shapes)


def _product(kind: str) -> Callable:
  """The per-configuration product of a `Shape` kind on (a, b) as `operands` lays them out."""
  if kind == "dW":
    return lambda x, g: jnp.einsum("...ri,...ro->...io", x, g)
  if kind == "dX":   # g @ W^T with W as the layer stores it (n_out x n_in here), as the backward pass reads it
    return lambda g, w: jnp.einsum("...ri,...oi->...ro", g, w)
  return lambda x, w: jnp.einsum("...ri,...io->...ro", x, w)


def operands(shape: Shape, C: int, key=None):
  """(a, b) for C configurations of `shape`: a (C, rows, n_in); b the weight (C, n_in, n_out) for fwd,
  (C, n_out, n_in) for dX (the layer's own W), the output gradient (C, rows, n_out) for dW."""
  ka, kb = jax.random.split(jax.random.key(0) if key is None else key)
  a = jax.random.normal(ka, (C, shape.rows, shape.n_in), jnp.float32)
  b_shape = {"fwd": (C, shape.n_in, shape.n_out), "dX": (C, shape.n_out, shape.n_in),
             "dW": (C, shape.rows, shape.n_out)}[shape.kind]
  return a, jax.random.normal(kb, b_shape, jnp.float32)


def shape_fn(kind: str, mesh: Mesh, layout: str) -> Callable:
  """jit(shard_map) over the mesh's "config" axis of C products: "batched" (one batched dot per device) or
  "mapped" (lax.map of a plain 2-D dot over the device's configurations, the engine's CPU layout)."""
  prod = _product(kind)
  if layout == "batched":
    local = prod
  elif layout == "mapped":
    local = lambda a, b: jax.lax.map(lambda ab: prod(*ab), (a, b))
  else:
    raise ValueError(f"layout must be 'batched' or 'mapped', got {layout!r}")
  return jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(P("config"), P("config")), out_specs=P("config"),
                               check_vma=False))


def resident_fn(kind: str, mesh: Mesh, iters: int) -> Callable:
  """jit(shard_map) where every device computes ONE configuration's product `iters` times, its operands
  resident in cache as a step's own activations are in the engine's layout (C = iters x devices products).
  One entry of the smaller operand is rescaled in place between products (by a traced 1.0) so that XLA
  cannot hoist the loop-invariant product; the rescale costs a copy of that operand (at most 358 KB here)."""
  prod = _product(kind)

  def local(a, b, s):
    a, b = a[0], b[0]
    touch = lambda v: jax.lax.dynamic_update_slice(v, v[:1, :1] * s, (0, 0))

    def body(_, carry):
      a, b, _ = carry
      out = prod(a, b)
      return (touch(a), b, out) if a.size <= b.size else (a, touch(b), out)

    out = jnp.zeros(jax.eval_shape(prod, a, b).shape, jnp.float32)
    return jax.lax.fori_loop(0, iters, body, (a, b, out))[2][None]

  sharded = jax.shard_map(local, mesh=mesh, in_specs=(P("config"), P("config"), P()), out_specs=P("config"),
                          check_vma=False)
  return jax.jit(sharded)


def best_time(fn: Callable, *args, repeats: int) -> float:
  """Compile, then the minimum wall time of `repeats` calls (blocking on the result)."""
  jax.block_until_ready(fn(*args))
  best = float("inf")
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    best = min(best, time.perf_counter() - t)
  return best


def stream_fn(mesh: Mesh, mib_per_device: int, passes: int = 8) -> tuple[Callable, float]:
  """(fn, bytes): every device streams x <- 2x + 1 `passes` times over its own array (bytes read + written;
  looped in place so that a timing holds no allocation or page faults). bytes / seconds is the bandwidth."""
  n = len(mesh.devices.flat)
  per = mib_per_device * 2 ** 20 // 4
  x = jax.device_put(jnp.ones((n * per,), jnp.float32), NamedSharding(mesh, P("config")))
  body = lambda v: jax.lax.fori_loop(0, passes, lambda _, u: 2 * u + 1, v)
  fn = jax.jit(jax.shard_map(body, mesh=mesh, in_specs=P("config"), out_specs=P("config")))
  return functools.partial(fn, x), float(passes * 2 * 4 * n * per)


def bandwidth_gbps(mesh: Mesh, repeats: int, peak_fn: Callable[[], float]) -> dict:
  """{"l3", "dram": GB/s, "peak_gflops": the local peak}: 8 MiB per device fits the shared L3 (where one
  configuration's step lives in the engine's layout), 64 MiB per device does not."""
  probes = {"l3": stream_fn(mesh, 8), "dram": stream_fn(mesh, 64)}
  times, peak = interleaved({k: fn for k, (fn, _) in probes.items()}, peak_fn, repeats)
  return {**{k: probes[k][1] / times[k] / 1e9 for k in probes}, "peak_gflops": peak}


def dispatch_s(mesh: Mesh, repeats: int = 20) -> float:
  """The fixed cost of one call of a jit(shard_map) program (tiny operands): included in every per-shape
  time, reported so that it can be seen to be small beside them."""
  n = len(mesh.devices.flat)
  x = jax.device_put(jnp.ones((n, 8), jnp.float32), NamedSharding(mesh, P("config")))
  fn = jax.jit(jax.shard_map(lambda v: v + 1, mesh=mesh, in_specs=P("config"), out_specs=P("config")))
  return best_time(fn, x, repeats=repeats)


def interleaved(fns: dict, peak_fn: Callable[[], float], repeats: int) -> tuple[dict, float]:
  """({name: min seconds of fns[name]()}, local peak GFLOP/s): each round times every fn once after a probe
  of the peak, and the peak is probed once more at the end; all minima and the best probe come from the same
  window. On a machine shared with other work the load changes within minutes, so a ratio to a peak measured
  at another time means little; ratios to the local peak do (`shares_of_peak` uses them)."""
  for fn in fns.values():
    jax.block_until_ready(fn())   # compile
  best = {k: float("inf") for k in fns}
  peak = 0.0
  for _ in range(repeats):
    peak = max(peak, peak_fn())
    for k, fn in fns.items():
      t = time.perf_counter()
      jax.block_until_ready(fn())
      best[k] = min(best[k], time.perf_counter() - t)
  return best, max(peak, peak_fn())


def time_shapes(shapes, C: int, mesh: Mesh, repeats: int, peak_fn: Callable[[], float]) -> list[dict]:
  """Each shape's C products alone in three layouts, interleaved with peak probes: {"t_batched_s", "t_mapped_s",
  "t_resident_s" (seconds for C products), "peak_gflops" (the local peak)}."""
  out = []
  for s in shapes:
    fns, scale = shape_callables(s, C, mesh, LAYOUTS)
    times, peak = interleaved(fns, peak_fn, repeats)
    out.append({**{f"t_{k}_s": times[k] * scale[k] for k in LAYOUTS}, "peak_gflops": peak})
    del fns
  return out


def shape_callables(s: Shape, C: int, mesh: Mesh, layouts) -> tuple[dict, dict]:
  """({layout: fn() running C products of `s` in that layout}, {layout: factor turning fn's time into C products'
  time}): every layout computes C padded to the devices (`padded_configs`: the engine's count), as the
  configuration axis is split evenly over them."""
  sharding = NamedSharding(mesh, P("config"))
  n_dev = len(mesh.devices.flat)
  Cp = padded_configs(C, mesh)
  fns = {}
  for layout in layouts:
    if layout == "resident":
      a1, b1 = jax.device_put(operands(s, n_dev), sharding)
      fns[layout] = functools.partial(resident_fn(s.kind, mesh, Cp // n_dev), a1, b1, jnp.float32(1.0))
    else:
      a, b = jax.device_put(operands(s, Cp), sharding)
      fns[layout] = functools.partial(shape_fn(s.kind, mesh, layout), a, b)
  return fns, {layout: C / Cp for layout in layouts}


# ---------------------------------------------------------------------------------------------------
# Reduced programs, run through the engine's own executor (`runner.make_executor`) so their layout matches.


def _init(spec: train_lib.TrainSpec):
  init = lambda key, hp: tuple(mlp.Dense(p.w * hp.init_scale * hp.layer_scale[l], p.b) for l, p in enumerate(
      mlp.init_mlp(key, spec.widths, kernel_init=spec.kernel_inits[0], bias_init=spec.bias_init)))
  return init


def make_bare_train(spec: train_lib.TrainSpec) -> Callable:
  """`train(key, hp, data) -> (epochs,) test losses`: `jscale.train`'s steps (forward, backward, optimizer
  update, the same minibatch permutation) and its per-epoch test forward pass, without any metric or
  divergence guard. The test losses are returned so that nothing is dead code."""
  act, init = mlp.get_activation(spec.activation), _init(spec)
  opt_factory = train_lib.make_optimizer(spec)

  def train(key, hp, data):
    n_train = data.x_train.shape[0]
    steps = spec.steps_per_epoch(n_train)
    k_init, k_data = jax.random.split(key)
    params = init(k_init, hp)
    opt = opt_factory(learning_rate=hp.lr, weight_decay=hp.weight_decay)
    fwd = lambda p, x: mlp.apply_mlp(p, x, act, input_scale=hp.input_scale, output_scale=hp.output_scale)
    loss = lambda p, x, y: train_lib.cross_entropy(fwd(p, x), y)

    def step(carry, batch):
      params, state = carry
      grads = jax.grad(loss)(params, *batch)
      updates, state = opt.update(grads, state, params)
      return (optax.apply_updates(params, updates), state), None

    def epoch(carry, ekey):
      if spec.batch_size is None:
        carry, _ = step(carry, (data.x_train, data.y_train))
      else:
        idx = jax.random.permutation(ekey, n_train)[:steps * spec.batch_size].reshape(steps, spec.batch_size)
        carry, _ = jax.lax.scan(step, carry, (data.x_train[idx], data.y_train[idx]))
      return carry, loss(carry[0], data.x_test, data.y_test)

    _, test_loss = jax.lax.scan(epoch, (params, opt.init(params)), jax.random.split(k_data, spec.epochs))
    return test_loss

  return train


def make_optimizer_only(spec: train_lib.TrainSpec, n_train: int) -> Callable:
  """`train(key, hp, data) -> params`: only the optimizer update, once per step of every epoch, on a
  gradient standing in for the real one (1e-3 x the parameters: carried, so XLA cannot hoist it)."""
  init, opt_factory = _init(spec), train_lib.make_optimizer(spec)
  n_updates = spec.epochs * spec.steps_per_epoch(n_train)

  def train(key, hp, data):
    del data
    params = init(key, hp)
    opt = opt_factory(learning_rate=hp.lr, weight_decay=hp.weight_decay)

    def update(carry, _):
      params, state = carry
      updates, state = opt.update(jax.tree.map(lambda p: 1e-3 * p, params), state, params)
      return (optax.apply_updates(params, updates), state), None

    (params, _), _ = jax.lax.scan(update, (params, opt.init(params)), None, length=n_updates)
    return params

  return train


class Programs(NamedTuple):
  engine: Callable
  bare: Callable
  optimizer: Callable
  loop: Callable


def make_programs(spec: train_lib.TrainSpec, n_train: int, mesh: Mesh, group_size) -> Programs:
  """The engine, the bare step and the optimizer alone in the engine's executor; the per-config loop."""
  train = train_lib.make_train(spec)
  ex = lambda f: runner.make_executor(f, mesh, group_size)
  return Programs(ex(train), ex(make_bare_train(spec)), ex(make_optimizer_only(spec, n_train)), jax.jit(train))


def time_programs(progs: Programs, hparams_of: Callable, ds, C: int, mesh: Mesh, repeats: int,
                  loop_configs: int, peak_fn: Callable[[], float]) -> dict:
  """Whole-run times (seconds) of the engine, bare and optimizer programs for C configurations and of the
  per-config loop, extrapolated from its first `loop_configs` configurations (each call is independent),
  interleaved with peak probes; "peak_gflops" is their local peak."""
  from jscale import datasets
  Cp = padded_configs(C, mesh)
  keys, hp, sharded, stacked = _engine_inputs(hparams_of, ds, C, mesh)
  data = datasets.to_device(ds)
  n = min(C, loop_configs)
  singles = [(keys[i], jax.tree.map(lambda a: a[i], hp)) for i in range(n)]

  def loop():
    for k, h in singles:
      r = progs.loop(k, h, data)
    return r

  fns = {name: functools.partial(getattr(progs, name), *sharded, stacked) for name in ("engine", "bare", "optimizer")}
  times, peak = interleaved({**fns, "loop": loop}, peak_fn, repeats)
  scale = {"engine": C / Cp, "bare": C / Cp, "optimizer": C / Cp, "loop": C / n}
  return {**{k: times[k] * scale[k] for k in times}, "loop_timed_configs": n, "peak_gflops": peak}


def padded_configs(C: int, mesh: Mesh) -> int:
  """C rounded up to a multiple of the devices: what the engine computes for C configurations."""
  n_dev = len(mesh.devices.flat)
  return -(-C // n_dev) * n_dev


def _engine_inputs(hparams_of: Callable, ds, C: int, mesh: Mesh) -> tuple:
  """(keys, hparams, the engine's sharded per-config arguments, its replicated data) for C configurations padded
  to the devices."""
  Cp = padded_configs(C, mesh)
  hp = hparams_of(Cp)
  keys = runner.config_keys(0, np.arange(Cp))
  sharded = jax.device_put((keys, hp, np.zeros(Cp, np.int32)), NamedSharding(mesh, P("config")))
  stacked = jax.device_put(runner.stack_data([ds]), NamedSharding(mesh, P()))
  return keys, hp, sharded, stacked


def engine_call(progs: Programs, hparams_of: Callable, ds, C: int, mesh: Mesh) -> Callable:
  """fn() running the engine once on C configurations (padded to the devices), as `time_programs` times it."""
  _, _, sharded, stacked = _engine_inputs(hparams_of, ds, C, mesh)
  return functools.partial(progs.engine, *sharded, stacked)


def time_roofline_ratio(shapes, shape_times, engine: Callable, C: int, mesh: Mesh, epochs: int, rounds: int) -> dict:
  """The engine against its attainable matmul time in ONE window: each of `rounds` rounds times the engine once
  and every shape once in its best layout (from `shape_times`), in wall and in this process's CPU seconds.

  `shares_of_peak`'s fractions compare timings from different windows, each rescaled by the best peak probe of
  its own window, so the probes' scatter (a fifth between windows on the quiet host) enters the ratio of the
  engine to its roofline twice. Here nothing is rescaled: the ratio is attainable time over engine time per
  epoch, from the minima over the rounds (other processes only add time), in CPU seconds (what other work on
  the machine disturbs least: both devices' threads are counted) and wall seconds; the per-round ratios give
  its spread. `engine` computes C configurations padded to the devices (`engine_call`); its time is scaled to C."""
  configs_run = padded_configs(C, mesh)
  best = []
  for s, t in zip(shapes, shape_times):
    layout = min(LAYOUTS, key=lambda k: t.get(f"t_{k}_s", float("inf")))
    fns, scale = shape_callables(s, C, mesh, (layout,))
    best.append((s, layout, fns[layout], scale[layout]))
  jax.block_until_ready(engine())
  for _, _, fn, _ in best:
    jax.block_until_ready(fn())
  wall = {"engine": [], "attainable": []}
  cpu = {"engine": [], "attainable": []}
  per_shape = {s.name: (float("inf"), float("inf")) for s, *_ in best}
  for _ in range(rounds):
    w, c = time.perf_counter(), time.process_time()
    jax.block_until_ready(engine())
    wall["engine"].append((time.perf_counter() - w) * C / configs_run / epochs)
    cpu["engine"].append((time.process_time() - c) * C / configs_run / epochs)
    tw = tc = 0.0
    for s, _, fn, scale in best:
      w, c = time.perf_counter(), time.process_time()
      jax.block_until_ready(fn())
      dw, dc = s.calls * (time.perf_counter() - w) * scale, s.calls * (time.process_time() - c) * scale
      tw, tc = tw + dw, tc + dc
      per_shape[s.name] = (min(per_shape[s.name][0], dc), min(per_shape[s.name][1], dw))
    wall["attainable"].append(tw)
    cpu["attainable"].append(tc)
  return {"rounds": rounds, "layouts": {s.name: layout for s, layout, _, _ in best},
          "cpu": ratio_summary(cpu["engine"], cpu["attainable"]), "wall": ratio_summary(wall["engine"], wall["attainable"]),
          # each shape's minimum per epoch over the rounds (cpu, wall seconds): where two runs' attainable differ
          "shape_min_s": {k: {"cpu": v[0], "wall": v[1]} for k, v in per_shape.items()}}


def ratio_summary(engine_s, attainable_s) -> dict:
  """The engine's fraction of its roofline from per-round times (seconds per epoch): attainable over engine of
  the minima (other processes only add time), and the per-round ratios' median, range and standard error."""
  per_round = np.asarray(attainable_s, float) / np.asarray(engine_s, float)
  n = len(per_round)
  return {"fraction_of_roofline": float(min(attainable_s) / min(engine_s)), "engine_s": float(min(engine_s)),
          "attainable_s": float(min(attainable_s)),
          "per_round": {"median": float(np.median(per_round)), "min": float(per_round.min()),
                        "max": float(per_round.max()),
                        "se": float(per_round.std(ddof=1) / np.sqrt(n)) if n > 1 else None}}


# ---------------------------------------------------------------------------------------------------
# Arithmetic.


def shares_of_peak(network: str, spec: train_lib.TrainSpec, *, n_train: int, n_test: int, C: int, shapes,
                   shape_times, run_times: dict, peak_gflops: float, bandwidth: dict, dispatch: float) -> dict:
  """Fractions of the peak and the engine's time split, from the measured times (see the module doc).

  Every measurement carries the peak probed beside it ("peak_gflops" in each of `shape_times`, `run_times`
  and `bandwidth`; `peak_gflops` when absent). Its fractions are taken against that local peak, and its times
  are reported rescaled to the reference `peak_gflops` (t x local / reference: the time it would take on
  the machine as loaded when the reference was measured), so times measured under different loads add up.
  Per epoch of all C configurations: flops = C * epoch_flops(shapes); a shape's time is `calls` x its per-call
  time; run times are divided by `spec.epochs`. The roofline model bounds each shape by min(peak, intensity
  x bandwidth), with the L3's bandwidth (the per-shape "roofline_fraction", "roofline_model_fraction") and
  DRAM's ("roofline_dram_fraction")."""
  E, P_ref = spec.epochs, peak_gflops
  at_ref = lambda seconds, local: seconds * local / P_ref
  flops = C * epoch_flops(shapes)
  bw = {k: bandwidth[k] * P_ref / bandwidth.get("peak_gflops", P_ref) for k in ("l3", "dram")}   # at the reference
  rows, mapped, best = [], 0.0, 0.0
  for s, t in zip(shapes, shape_times):
    local = t.get("peak_gflops", P_ref)
    layouts = {k: t[f"t_{k}_s"] for k in LAYOUTS if f"t_{k}_s" in t}
    best_layout = min(layouts, key=layouts.get)
    t_best = layouts[best_layout]
    gflop, intensity = C * s.flops() / 1e9, s.flops() / s.min_bytes()
    rows.append({"name": s.name, "rows": s.rows, "n_in": s.n_in, "n_out": s.n_out, "calls_per_epoch": s.calls,
                 "gflop_per_call": gflop, **{f"t_{k}_s": v for k, v in layouts.items()},
                 "peak_gflops": local, "best_layout": best_layout,
                 # Against the best probe of its own window: above 1 when that probe met a busier moment than
                 # the shape's best timing (a per-shape figure reads +-0.2; the epoch's sums average it out).
                 "gflops_best": gflop / t_best, "fraction_of_peak": gflop / t_best / local,
                 "intensity": intensity, "roofline_fraction": min(1.0, intensity * bw["l3"] / P_ref)})
    mapped += s.calls * at_ref(layouts.get("resident", layouts["mapped"]), local)
    best += s.calls * at_ref(t_best, local)
  runs_local = run_times.get("peak_gflops", P_ref)
  t = {**{k: at_ref(run_times[k], runs_local) / E for k in ("engine", "bare", "optimizer")},
       "matmul_engine_layout": mapped, "matmul_best": best, "loop": at_ref(run_times["loop"], runs_local) / E}
  model_time = lambda gbps: sum(s.calls * C * max(s.flops() / (P_ref * 1e9), s.min_bytes() / (gbps * 1e9))
                                for s in shapes)
  frac = lambda seconds: flops / seconds / 1e9 / P_ref
  raw_split = {"matmul": t["matmul_engine_layout"], "optimizer": t["optimizer"],
               "elementwise": t["bare"] - t["matmul_engine_layout"] - t["optimizer"],
               "metrics_and_guards": t["engine"] - t["bare"]}
  # The parts are timed apart: the matmuls and the optimizer alone can sum to more than the bare step (XLA
  # overlaps and fuses them there, e.g. the update into the weight gradient's output loop), and the engine can
  # time below the bare step (within the noise, or where its metrics cost less than the timing's spread). A
  # difference below 0 is not a negative cost: it is shown as 0 and the excess reported as "overlap_s".
  split = {k: max(v, 0.0) for k, v in raw_split.items()}
  overlap = {k: -v for k, v in raw_split.items() if v < 0}
  return {"network": network, "configs": C, "epochs": E, "steps_per_epoch": spec.steps_per_epoch(n_train),
          "widths": list(spec.widths), "batch_size": spec.batch_size, "optimizer": spec.optimizer,
          "n_train": n_train, "n_test": n_test, "gflop_per_epoch": flops / 1e9, "peak_gflops": P_ref,
          "runs_peak_gflops": runs_local, "bandwidth_gbps": bw, "dispatch_s": dispatch, "t_epoch_s": t,
          "loop_timed_configs": run_times.get("loop_timed_configs"),
          "attainable_fraction": frac(t["matmul_best"]), "roofline_model_fraction": frac(model_time(bw["l3"])),
          "roofline_dram_fraction": frac(model_time(bw["dram"])),
          "engine_fraction": frac(t["engine"]), "bare_fraction": frac(t["bare"]),
          "matmul_engine_layout_fraction": frac(t["matmul_engine_layout"]),
          "metrics_overhead": t["engine"] / t["bare"], "speedup_vs_loop": t["loop"] / t["engine"],
          "loop_ratio_ceiling": t["loop"] / t["matmul_best"],
          "engine_time_split": {k: v / t["engine"] for k, v in split.items()}, "overlap_s": overlap, "shapes": rows}

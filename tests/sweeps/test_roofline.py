"""The roofline's arithmetic where it could be wrong: the FLOPs it assigns to a step and to each shape (against
XLA's own cost analysis), the fractions `shares_of_peak` derives from timings, and the recorded JSON and
docs/performance.md agreeing with each other. Speed itself is measured by scripts/roofline.py, never here."""
import json
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jscale import mlp, train as T
from jscale.sweeps import cost
from jscale.sweeps import roofline as R

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # tests/
RECORD = os.path.join(HERE, "..", "results", "bench", "roofline-cpu-2core.json")
DOC = os.path.join(HERE, "..", "docs", "performance.md")

MOONS = T.TrainSpec(widths=(2, 64, 64, 2), optimizer="adam", epochs=200)
MLP784 = T.TrainSpec(widths=(784, 300, 100, 10), kernel_inits=("glorot_normal",), optimizer="sgd", epochs=1,
                     batch_size=32)


def xla_flops(fn, *args) -> float:
  cost = jax.jit(fn).lower(*args).compile().cost_analysis()
  return float((cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"])


@pytest.mark.parametrize("spec,n_train,n_test", [(MOONS, 1400, 600), (MLP784, 256, 64)])
def test_shapes_account_for_the_bench_flop_count(spec, n_train, n_test):
  # Two independent counts: per-shape (this module) and per-network (jscale.train, which bench reports).
  shapes = R.step_shapes(spec, n_train, n_test)
  assert spec.epochs * R.epoch_flops(shapes) == cost.flops_per_config(spec, n_train, n_test)
  assert {s.name for s in shapes} >= {"fwd0", "dW0", "dX1", "test_fwd0"} and "dX0" not in {s.name for s in shapes}


def test_step_flops_match_xla_cost_analysis():
  # Widths much larger than the rows make the elementwise work (ReLU, bias, softmax: O(rows x width)) under
  # 1% of the matmuls (O(rows x width^2); measured 0.6%), so XLA's count must lie in [ours, 1.03 x ours]. The
  # smallest product here is 5.9% of the step: one missing, or the first layer's input gradient counted, falls
  # outside.
  spec, rows = T.TrainSpec(widths=(64, 256, 256, 64), batch_size=8, epochs=1), 8
  shapes = R.step_shapes(spec, rows, 0)
  params = jax.eval_shape(lambda: mlp.init_mlp(jax.random.key(0), spec.widths))   # shapes suffice to count
  x, y = jax.ShapeDtypeStruct((rows, 64), jnp.float32), jax.ShapeDtypeStruct((rows,), jnp.int32)
  grad = jax.grad(lambda p, x, y: T.cross_entropy(mlp.apply_mlp(p, x, "relu"), y))
  ours = R.epoch_flops(shapes)
  theirs = xla_flops(grad, params, x, y)
  assert ours <= theirs <= 1.03 * ours, (ours, theirs)


@pytest.mark.parametrize("kind", ["fwd", "dW", "dX"])
def test_each_shape_product_is_the_flops_it_claims(kind):
  # The timed product must do exactly the work it is credited with (XLA counts 2 per multiply-add), in the
  # orientation the step uses: dW contracts over the rows, dX over the layer's output width.
  shape = R.Shape("s", kind, rows=24, n_in=16, n_out=8, calls=1)
  a, b = jax.eval_shape(lambda: R.operands(shape, 3))   # shapes only: nothing to compute for XLA's count
  out = jax.eval_shape(R._product(kind), a, b)
  assert out.shape == {"fwd": (3, 24, 8), "dX": (3, 24, 8), "dW": (3, 16, 8)}[kind]
  assert xla_flops(R._product(kind), a, b) == 3 * shape.flops()


def _timings(shapes, C, peak, slowdown):
  """Per-call times that run each shape at peak / slowdown (GFLOP/s), whatever its calls per epoch."""
  at = lambda s, k: k * slowdown * C * s.flops() / (peak * 1e9)
  return [{"t_batched_s": at(s, 1), "t_mapped_s": at(s, 3), "t_resident_s": at(s, 2)} for s in shapes]


def test_ratio_summary_takes_minima_and_per_round_spread():
  # Round 2 is the quiet one for the engine, round 3 for the matmuls: the fraction pairs the two minima (3/4),
  # while the per-round ratios (3.3/5, 3.6/4, 3.0/6) say how far one window's reading can fall from it.
  q = R.ratio_summary([5.0, 4.0, 6.0], [3.3, 3.6, 3.0])
  assert q["fraction_of_roofline"] == pytest.approx(0.75) and q["engine_s"] == 4.0 and q["attainable_s"] == 3.0
  assert q["per_round"]["median"] == pytest.approx(0.66) and q["per_round"]["min"] == pytest.approx(0.5)
  assert q["per_round"]["max"] == pytest.approx(0.9)
  assert q["per_round"]["se"] == pytest.approx(np.std([0.66, 0.9, 0.5], ddof=1) / np.sqrt(3))
  assert R.ratio_summary([2.0], [1.0])["per_round"]["se"] is None


def test_bad_flags_are_refused_before_any_compute():
  import importlib.util
  spec = importlib.util.spec_from_file_location("roofline_cli", os.path.join(HERE, "..", "scripts", "roofline.py"))
  cli = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(cli)
  for flags, says in ((["--sizes", "0"], "--sizes must be .* got '0'"), (["--network", "resnet"], "--network must"),
                      (["--mlp-train", "10"], "--mlp-train must"), (["--ratio-rounds", "0"], "--ratio-rounds must")):
    with pytest.raises(ValueError, match=says):
      cli.parse_args(flags)


def test_shares_of_peak_fractions_from_known_times():
  spec = T.TrainSpec(widths=(784, 300, 100, 10), optimizer="sgd", epochs=3, batch_size=32)
  n_train, n_test, C, peak = 256, 64, 4, 100.0
  shapes = R.step_shapes(spec, n_train, n_test)   # 8 calls per epoch for the step's shapes, 1 for the test pass
  mm_best = 4 * C * R.epoch_flops(shapes) / (peak * 1e9)   # every shape at a quarter of the peak
  runs = {"engine": 3 * 2 * mm_best, "bare": 3 * 1.5 * mm_best, "optimizer": 3 * 0.1 * mm_best,
          "loop": 3 * 4 * mm_best}
  r = R.shares_of_peak("mlp784", spec, n_train=n_train, n_test=n_test, C=C, shapes=shapes,
                       shape_times=_timings(shapes, C, peak, 4), run_times=runs, peak_gflops=peak,
                       bandwidth={"l3": 1e9, "dram": 1e9}, dispatch=1e-5)
  assert set(R.SUMMARY_FIELDS) <= set(r) and all(set(R.SHAPE_FIELDS) <= set(s) for s in r["shapes"])
  assert r["attainable_fraction"] == pytest.approx(0.25)
  assert r["matmul_engine_layout_fraction"] == pytest.approx(0.125)   # the engine's (resident) layout: 2x slower
  assert r["engine_fraction"] == pytest.approx(0.125) and r["bare_fraction"] == pytest.approx(0.25 / 1.5)
  assert r["metrics_overhead"] == pytest.approx(2 / 1.5) and r["speedup_vs_loop"] == pytest.approx(2.0)
  assert r["loop_ratio_ceiling"] == pytest.approx(4.0)
  assert r["roofline_model_fraction"] == pytest.approx(1.0)   # unbounded bandwidth: the peak bounds every shape
  split = r["engine_time_split"]
  assert split["matmul"] == pytest.approx(1.0) and split["optimizer"] == pytest.approx(0.05)
  # The isolated matmuls and optimizer exceed the bare step: not a negative cost, shown as 0 beside the overlap.
  assert split["elementwise"] == 0 and r["overlap_s"] == {"elementwise": pytest.approx(0.3 * r["t_epoch_s"]["engine"])}
  assert all(v >= 0 for v in split.values())
  assert all(s["best_layout"] == "batched" and s["fraction_of_peak"] == pytest.approx(0.25) for s in r["shapes"])


def test_times_under_a_heavier_load_are_judged_against_their_own_peak():
  # A shape timed while other work halved the machine's speed (its probed local peak is half the reference)
  # takes twice as long; against its own peak it is as efficient, and its time counts at the reference speed.
  spec, n_train, n_test, C, peak = MOONS, 1400, 600, 8, 100.0
  shapes = R.step_shapes(spec, n_train, n_test)
  times = _timings(shapes, C, peak, 4)
  loaded = [dict({k: 2 * v for k, v in times[0].items()}, peak_gflops=peak / 2)] + times[1:]
  mm = 200 * 4 * C * R.epoch_flops(shapes) / (peak * 1e9)
  runs = {"engine": 2 * mm, "bare": 2 * mm, "optimizer": 0.0, "loop": 2 * mm, "peak_gflops": peak / 2}
  r = R.shares_of_peak("moons", spec, n_train=n_train, n_test=n_test, C=C, shapes=shapes, shape_times=loaded,
                       run_times=runs, peak_gflops=peak, bandwidth={"l3": 1e9, "dram": 1e9}, dispatch=0.0)
  assert r["attainable_fraction"] == pytest.approx(0.25)
  assert r["shapes"][0]["fraction_of_peak"] == pytest.approx(0.25)
  assert r["shapes"][0]["gflops_best"] == pytest.approx(12.5)
  assert r["engine_fraction"] == pytest.approx(0.25)   # twice the matmul time at half the speed


def test_record_and_doc_agree():
  with open(RECORD) as f:
    rec = json.load(f)
  with open(DOC) as f:
    doc = f.read()
  assert rec["platform"] == "cpu" and rec["cpu_model"] in doc
  got = {(r["network"], r["configs"]) for r in rec["results"]}
  assert got == {("moons", 64), ("moons", 256), ("mlp784", 64), ("mlp784", 256)}
  for r in rec["results"]:
    assert set(R.SUMMARY_FIELDS) <= set(r) and all(set(R.SHAPE_FIELDS) <= set(s) for s in r["shapes"])
    assert set(r["t_epoch_s"]) == set(R.TIME_FIELDS) and set(r["engine_time_split"]) == set(R.SPLIT_FIELDS)
    shapes = r["shapes"]   # the recorded fraction follows from the recorded per-shape times
    best = sum(s["calls_per_epoch"] * min(s[f"t_{k}_s"] for k in R.LAYOUTS) * s["peak_gflops"] / r["peak_gflops"]
               for s in shapes)
    gflop = sum(s["calls_per_epoch"] * s["gflop_per_call"] for s in shapes)
    assert r["attainable_fraction"] == pytest.approx(gflop / best / r["peak_gflops"], rel=1e-6)
    assert gflop == pytest.approx(r["gflop_per_epoch"], rel=1e-9)
  # Every fraction the doc's summary table cites is the record's, to the digits printed.
  table = doc[doc.index("## Results"):doc.index("Fractions are of the matmul peak")]
  rows = re.findall(r"^\| (moons|mlp784) \| (\d+) \|(.*)$", table, flags=re.M)
  assert {(n, int(c)) for n, c, _ in rows} == got
  for name, configs, rest in rows:
    r = next(r for r in rec["results"] if r["network"] == name and r["configs"] == int(configs))
    cells = [c.strip() for c in rest.split("|") if c.strip()]
    want = [f"{r[k]:.2f}" for k in ("attainable_fraction", "engine_fraction", "bare_fraction")]
    want += [f"{r['metrics_overhead']:.2f}x", f"{r['speedup_vs_loop']:.2f}x", f"{r['loop_ratio_ceiling']:.2f}x"]
    assert cells[:len(want)] == want, (name, configs, cells)


def test_shape_timings_take_a_size_the_devices_do_not_divide():
  # Every layout splits the configuration axis evenly over the devices: with C = 3 on two devices each computes
  # the engine's padded 4 and scales its time by 3 / 4 (before, the batched layout's operands of 3 could not be
  # sharded and `roofline.py --sizes 3` crashed). Two host devices need their own process.
  import subprocess
  import sys
  code = """
import jax, numpy as np
from jax.sharding import Mesh
from jscale import train as T
from jscale.sweeps import roofline as R
mesh = Mesh(np.array(jax.devices()[:2]), ("config",))
assert len(mesh.devices.flat) == 2
s = R.step_shapes(T.TrainSpec(widths=(2, 8, 2), optimizer="adam", epochs=1), 16, 8)[0]
fns, scale = R.shape_callables(s, 3, mesh, R.LAYOUTS)
for k in R.LAYOUTS:
  out = jax.block_until_ready(fns[k]())
  assert scale[k] == 0.75, (k, scale[k])
  assert k == "resident" or out.shape[0] == 4, (k, out.shape)
print("ok")
"""
  # added to the suite's XLA_FLAGS, not in their place: replacing them dropped tests/conftest.py's
  # --xla_backend_optimization_level=0, and the process compiled at XLA's full level (the test reads shapes only)
  flags = os.environ.get("XLA_FLAGS", "")
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": f"{flags} --xla_force_host_platform_device_count=2".strip()}
  r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
  assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stdout + r.stderr

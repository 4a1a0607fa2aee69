"""jscale.sweeps: grids, validation before compute, chunked runs, resume, divergence, sharding."""
import csv
import json
import os
import subprocess
import sys
import textwrap

import chex
import jax
import numpy as np
import pytest

from jscale import experiments, sweeps, train as T  # noqa: F401  (experiments: registers the built-ins)
from jscale import sweeps as E
from jscale.sweeps import devices as devices_lib, executor

# A tiny experiment: 2 static groups (full batch, batch 16) x 2 sigmas (1e25 is absurd, to diverge) x 3 seeds.
TINY = E.Experiment(
    name="_tiny_test", data="two_moons", data_options={"n": 120}, hidden=(8,), epochs=3, optimizer="sgd",
    lr=0.1,
    grids={"quick": E.product(batch_size=(None, 16), sigma=(0.5, 1e25), seed=range(3)),
           "full": E.product(sigma=(0.5,), seed=range(2))})
E.register(TINY)


def _run(tmp_path, name, **kw):
  plan = sweeps.make_plan(TINY, "quick", chunk_size=kw.pop("chunk_size", 4), **kw)
  return plan, sweeps.run(plan, str(tmp_path / name), progress=False)


class GridTest(chex.TestCase):

  def test_product_and_zip_order(self):
    g = E.product(a=(1, 2), b=("x", "y", "z")) * E.zipped(c=(0.1, 0.2), d=(3, 4))
    self.assertEqual(g.dims, ("a", "b", "c+d"))
    self.assertEqual(g.shape, (2, 3, 2))
    pts = g.points()
    self.assertLen(pts, 12)
    self.assertEqual(pts[0], {"a": 1, "b": "x", "c": 0.1, "d": 3})
    self.assertEqual(pts[1], {"a": 1, "b": "x", "c": 0.2, "d": 4})  # last dim fastest (C order)
    self.assertEqual(pts[-1], {"a": 2, "b": "z", "c": 0.2, "d": 4})
    with self.assertRaisesRegex(ValueError, "equal lengths"):
      E.zipped(c=(1, 2), d=(1,))

  def test_log_spaced(self):
    v = E.log_spaced(1e-3, 3.0, 16)
    self.assertLen(v, 16)
    self.assertEqual((v[0], v[-1]), (1e-3, 3.0))
    ratios = np.diff(np.log(v))
    # Labels are rounded to 4 significant digits: each log moves by <= 5e-4, a difference by <= 1e-3.
    np.testing.assert_allclose(ratios, np.log(3.0 / 1e-3) / 15, atol=1e-3)

  def test_sigma_grids_as_specified(self):
    exp = sweeps.get("sigma")
    q, f = exp.grid("quick"), exp.grid("full")
    self.assertEqual(q.axes["sigma"], (0.01, 0.1, 0.5, 1.0))
    self.assertLen(q.axes["seed"], 4)
    sig = sorted(f.axes["sigma"])
    self.assertEqual((sig[0], sig[-1]), (1e-3, 3.0))
    self.assertTrue({0.01, 0.1, 0.5, 1.0} <= set(sig))   # Table 1's cells are in the curve
    self.assertLessEqual(max(np.array(sig[1:]) / sig[:-1]), 10 / 3 + 1e-9)   # half decades: 1, 3, 10, ...
    self.assertGreaterEqual(len(f.axes["seed"]), 24)   # the verdicts' intervals (config: why 24)
    self.assertEqual(set(f.axes["batch_size"]), {None, 32})


class ValidationTest(chex.TestCase):
  """Bad input fails in make_plan, which trains nothing (so: before any compute)."""

  def test_unknown_experiment(self):
    with self.assertRaisesRegex(ValueError, "unknown experiment 'nope'.*sigma"):
      sweeps.make_plan("nope")

  def test_unknown_grid(self):
    with self.assertRaisesRegex(ValueError, "no grid 'huge'"):
      sweeps.make_plan("sigma", "huge")

  def test_unknown_axis(self):
    with self.assertRaisesRegex(ValueError, "unknown axis 'sigmaa'"):
      sweeps.make_plan(TINY, E.product(sigmaa=(1.0,)))
    with self.assertRaisesRegex(ValueError, "layer_scale"):
      sweeps.make_plan(TINY, E.product(**{"layer_scale.7": (1.0,)}))

  def test_unknown_initializer(self):
    with self.assertRaisesRegex(ValueError, "unknown initializer 'he_nrmal'"):
      sweeps.make_plan(TINY, E.product(init=("he_normal", "he_nrmal")))

  def test_bad_values(self):
    with self.assertRaisesRegex(ValueError, "unknown optimizer"):
      sweeps.make_plan(TINY, E.product(optimizer=("sgd", "lbfgs")))
    with self.assertRaisesRegex(ValueError, "seed must be"):
      sweeps.make_plan(TINY, E.product(seed=(-1,)))
    with self.assertRaisesRegex(ValueError, "larger than the training set"):
      sweeps.make_plan(TINY, E.product(batch_size=(1000,)))

  def test_grid_too_big_for_memory(self):
    with self.assertRaisesRegex(ValueError, "one configuration .* needs about"):
      sweeps.make_plan(TINY, "quick", max_bytes=10_000)
    per = sweeps.make_plan(TINY, "quick").groups[0].bytes_per_config
    with self.assertRaisesRegex(ValueError, "chunk_size 12 needs"):
      sweeps.make_plan(TINY, "quick", chunk_size=12, max_bytes=3 * per + 20_000)


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _load_cli():
  import importlib.util
  spec = importlib.util.spec_from_file_location(
      "sweep_cli", os.path.join(REPO, "scripts", "sweep.py"))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


class CliTest(chex.TestCase):

  def test_unknown_experiment_exits_with_message(self):
    with self.assertRaisesRegex(ValueError, "unknown experiment 'nope'"):
      _load_cli().main(["--experiment", "nope", "--out", "/nonexistent/never_written", "--no-progress"])
    self.assertFalse(os.path.exists("/nonexistent/never_written"))

  # Slow: the same refusal as a command (exit status 2, `error: unknown experiment 'nope'`) is
  # tests/cli/test_install.py::test_python_m_jscale_from_another_directory's, and scripts/sweep.py's one error
  # line in a fresh process is tests/sweeps/test_distributed.py's and tests/test_bad_inputs.py's.
  @pytest.mark.slow
  def test_unknown_experiment_as_a_command(self):
    # As a command: one line on stderr, exit status 2, no traceback.
    out = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "sweep.py"), "--experiment", "nope",
                          "--out", "/nonexistent/never_written"], capture_output=True, text=True)
    self.assertEqual(out.returncode, 2)
    self.assertTrue(out.stderr.strip().splitlines()[-1].startswith("error: unknown experiment 'nope';"), out.stderr)
    self.assertNotIn("Traceback", out.stderr)


def test_run_writes_everything_and_masks_divergence(tmp_path):
  plan, res = _run(tmp_path, "a")
  n = plan.n_configs
  assert n == 12 and len(plan.groups) == 2
  d = tmp_path / "a"
  cfg = json.loads((d / "config.json").read_text())
  assert cfg["experiment"] == "_tiny_test" and cfg["grid"]["dims"] == ["batch_size", "sigma", "seed"]
  assert cfg["metrics"]["g_ratio"] == ["batch_size", "sigma", "seed", "epoch", "layer"]
  assert cfg["axes"]["sigma"] == [0.5, 1e25] and cfg["axes"]["epoch"] == [1, 2, 3]
  with np.load(d / "metrics.npz") as z:  # grid-shaped, named by config.json["metrics"]
    assert z["test_acc"].shape == (2, 2, 3, 3) and z["g_ratio"].shape == (2, 2, 3, 3, 2)
    np.testing.assert_array_equal(z["train_loss"].reshape(n, 3), res.metrics["train_loss"])
  a, dims = res.grid("test_acc")
  assert a.shape == (2, 2, 3, 3) and dims == ("batch_size", "sigma", "seed", "epoch")
  # sigma=1e25, 2 layers: logits ~ 1e50 overflow float32 in the first forward pass:
  # diverged at epoch 0, NaN metrics, reported.
  huge = np.array([p["sigma"] == 1e25 for p in res.points])
  assert res.diverged[huge].all() and not res.diverged[~huge].any()
  assert (res.diverged_epoch[huge] == 0).all()
  assert np.isfinite(res.metrics["train_loss"][~huge]).all()
  rows = list(csv.DictReader(open(d / "summary.csv")))
  assert len(rows) == n
  assert [r["diverged"] == "1" for r in rows] == huge.tolist()
  table = sweeps.format_table(res.summary())
  assert "diverged" in table and table.count("\n") == 2 + 4  # legend, header, rule, 4 (batch_size, sigma) rows
  assert "+- sd" in table and " ± " not in table
  rows = [dict(r, n=1, diverged=0) for r in res.summary()[:1]]
  assert "(n=1)" in sweeps.format_table(rows) and "+- 0 " not in sweeps.format_table(rows)
  many = res.summary() * 10
  short = sweeps.format_table(many, max_rows=8)
  assert short.count("\n") == 3 + 4 and f"{len(many) - 4} more rows" in short and "report.md" in short
  again = sweeps.load(str(d))
  chex.assert_trees_all_equal(again.metrics, res.metrics)


def test_resume_after_interruption_is_identical(tmp_path):
  _, full = _run(tmp_path, "full")
  plan = sweeps.make_plan(TINY, "quick", chunk_size=4)
  assert len(plan.chunks) >= 3
  assert sweeps.run(plan, str(tmp_path / "cut"), progress=False, max_chunks=2) is None  # "interrupted"
  done = sorted(f for f in os.listdir(tmp_path / "cut" / "chunks") if f.endswith(".npz"))
  assert len(done) == 2
  # Per-seed data by default: the group stacks three draws (seeds 0-2), so resume checks all of them.
  assert [len(g["data_fingerprints"]) for g in json.loads((tmp_path / "cut" / "config.json").read_text())
          ["groups"]] == [3, 3]
  mtimes = {f: os.path.getmtime(tmp_path / "cut" / "chunks" / f) for f in done}
  res = sweeps.resume(str(tmp_path / "cut"), progress=False)
  for f in done:  # finished chunks were not redone
    assert os.path.getmtime(tmp_path / "cut" / "chunks" / f) == mtimes[f]
  # Same programs on the same inputs: bit-identical.
  chex.assert_trees_all_equal(res.metrics, full.metrics)
  with pytest.raises(ValueError, match="already holds a run"):
    sweeps.run(plan, str(tmp_path / "cut"), progress=False)


def test_resume_refuses_changed_data(tmp_path):
  plan = sweeps.make_plan(TINY, "full")
  sweeps.run(plan, str(tmp_path / "r"), progress=False, max_chunks=0)
  path = tmp_path / "r" / "config.json"
  cfg = json.loads(path.read_text())
  cfg["groups"][0]["data_fingerprints"][1] = "0" * 16  # as if data seed 1's draw had changed
  path.write_text(json.dumps(cfg))
  with pytest.raises(ValueError, match="data changed"):
    sweeps.resume(str(tmp_path / "r"), progress=False)


def test_resume_refuses_changed_experiment(tmp_path):
  plan = sweeps.make_plan(TINY, "full")
  sweeps.run(plan, str(tmp_path / "r"), progress=False, max_chunks=0)
  changed = E.Experiment(**{**{f: getattr(TINY, f) for f in TINY.__dataclass_fields__}, "lr": 0.2})
  with pytest.raises(ValueError, match="changed"):
    sweeps.resume(str(tmp_path / "r"), experiment=changed, progress=False)


PINNED = E.Experiment(**{**{f: getattr(TINY, f) for f in TINY.__dataclass_fields__}, "name": "_tiny_pinned",
                          "data_seed": 5})


def test_data_seed_follows_the_seed_unless_pinned():
  grid = E.product(seed=(0, 1, 2))
  follow = sweeps.make_plan(TINY, grid)
  assert [c["data_seed"] for c in follow.configs] == [0, 1, 2]
  assert follow.to_json()["data_seed_follows_seed"] is True
  (g,) = follow.groups  # data_seed is traced: one group, one program, three draws
  assert len(set(g.fingerprints)) == 3 and g.row_of == {0: 0, 1: 1, 2: 2}
  x = [follow.datasets[k].x_train for k in g.data_keys()]
  assert not np.array_equal(x[0], x[1])  # another make_moons sample and split
  pinned = sweeps.make_plan(PINNED, grid)
  assert [c["data_seed"] for c in pinned.configs] == [5, 5, 5]
  assert pinned.to_json()["data_seed_follows_seed"] is False
  (p,) = pinned.groups
  assert p.data_seeds == [5] and p.row_of == {5: 0}
  np.testing.assert_array_equal(pinned.datasets[p.data_keys()[0]].x_train,
                                sweeps.make_plan(PINNED, E.product(seed=(7,))).datasets[p.data_keys()[0]].x_train)
  # A grid axis on data_seed wins over both.
  axis = sweeps.make_plan(TINY, E.product(seed=(0, 1), data_seed=(3,)))
  assert [c["data_seed"] for c in axis.configs] == [3, 3] and not axis.to_json()["data_seed_follows_seed"]
  with pytest.raises(ValueError, match="data_seed must be"):
    sweeps.make_plan(TINY, E.product(data_seed=(-1,)))


def test_describe_says_whether_the_data_follows_the_seed():
  from jscale.report import describe

  def text(config):   # what a section says of results with this config.json
    return describe.data_seed_text(sweeps.Results("", config, {}))

  assert "follows the seed" in text(sweeps.make_plan(TINY, E.product(seed=(0, 1))).to_json())
  assert "pinned to data seed 5" in text(sweeps.make_plan(PINNED, E.product(seed=(0, 1))).to_json())
  assert "pinned to data seed 0" in text({"seeds": [0, 1], "data_seeds": [0, 0]})


@pytest.mark.parametrize("batch_size", [None, 16])
def test_per_seed_data_equals_per_config_runs(tmp_path, monkeypatch, batch_size):
  """One compiled program over three data seeds equals, configuration by configuration, a plain
  jit(train) on the data set loaded with that configuration's own seed."""
  from jscale import datasets
  monkeypatch.setattr(executor, "_EXECUTORS", {})  # count this sweep's compiles only
  grid = E.product(batch_size=(batch_size,), sigma=(0.5, 2.0), seed=(0, 1, 2))
  plan = sweeps.make_plan(TINY, grid)
  assert len(plan.groups) == 1
  res = sweeps.run(plan, str(tmp_path / "r"), progress=False)
  g = plan.groups[0]
  assert executor.executor_for(g.spec, plan.devices, plan.group_size)._cache_size() == 1  # one compile
  train = jax.jit(T.make_train(g.spec))
  keys = executor.config_keys(TINY.base_seed, [c["seed"] for c in plan.configs])
  hps = executor.stacked_hparams(g.spec, plan.configs)
  for i, c in enumerate(plan.configs):
    data = datasets.to_device(datasets.get("two_moons", n=120, seed=c["seed"]))
    one = train(keys[i], jax.tree.map(lambda a: a[i], hps), data)
    for name in T.Metrics._fields:
      # The runner's lax.map / shard_map program vs a direct jit: float32 reassociation only (~1e-7).
      np.testing.assert_allclose(res.metrics[name][i], np.asarray(getattr(one, name)), rtol=1e-5, atol=1e-6,
                                 err_msg=f"{name} config {i}")


SHARD_SCRIPT = textwrap.dedent("""
  import os, sys, numpy as np, jax
  assert len(jax.devices()) == 8, jax.devices()
  sys.path.insert(0, os.path.dirname(sys.argv[1]))
  from test_sweeps import TINY
  from jscale import sweeps
  out = sys.argv[2]
  from jscale import sweeps as E
  grid = E.product(batch_size=(16,), sigma=(0.5, 1e25), seed=range(4))  # one program; per-config shuffles
  r8 = sweeps.run(sweeps.make_plan(TINY, grid, devices=8), out + "/d8", progress=False)
  r1 = sweeps.run(sweeps.make_plan(TINY, grid, devices=1), out + "/d1", progress=False)
  assert r8.diverged.sum() == 4 and len(r8.config["chunks"]) == 1
  for name in r1.metrics:
    # Each device runs a 1-config slice vs one device vmapping 8: float32 reassociation only (~1e-7).
    np.testing.assert_allclose(r8.metrics[name], r1.metrics[name], rtol=1e-5, atol=1e-6, err_msg=name)
  print("SHARDED_OK", len(r8.config["devices"]))
""")


@pytest.mark.slow
def test_eight_fake_devices_equal_one(tmp_path):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", SHARD_SCRIPT, os.path.abspath(__file__), str(tmp_path)],
                        env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "SHARDED_OK 8" in proc.stdout


def test_cpu_default_layout_equals_vmap_layout(tmp_path):
  """On CPU the runner trains one configuration at a time per device (lax.map); vmapping the whole
  chunk must give the same numbers, so the layout is a speed choice only."""
  devices = devices_lib.select_devices()
  assert devices_lib.default_group_size(devices) == (1 if devices[0].platform == "cpu" else None)
  _, one_at_a_time = _run(tmp_path, "map", group_size=None)
  _, vmapped = _run(tmp_path, "vmap", group_size=64)
  # Same program maths, differently batched matmuls: float32 reassociation only (observed ~1e-7).
  finite = ~one_at_a_time.diverged
  for name in ("train_loss", "test_acc", "g_ratio"):
    np.testing.assert_allclose(one_at_a_time.metrics[name][finite], vmapped.metrics[name][finite],
                               rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(one_at_a_time.diverged, vmapped.diverged)


def test_make_plan_refuses_a_custom_experiment_clearly():
  with pytest.raises(ValueError, match="own run function"):
    sweeps.make_plan("symmetry", "quick")


def _with(**changes):
  return E.Experiment(**{**{f: getattr(TINY, f) for f in TINY.__dataclass_fields__}, "name": "_tiny_bad", **changes})


# Each bad hyperparameter (as an experiment setting or a grid value) is refused by make_plan -- before any
# data is loaded or anything compiled -- with a message naming the parameter, the value and what is allowed.
BAD_SETTINGS = [
    ("init_scale", -0.5, "init_scale must be a finite number >= 0"),
    ("init_scale", float("nan"), "init_scale must be a finite number >= 0"),
    ("lr", -1e-3, "lr must be a finite number >= 0"),
    ("lr", float("inf"), "lr must be a finite number >= 0"),
    ("lr", float("nan"), "lr must be a finite number >= 0"),
    ("lr", "fast", "lr must be a finite number >= 0"),
    ("weight_decay", -1e-4, "weight_decay must be a finite number >= 0"),
    ("momentum", -0.1, r"momentum must be a number in \[0, 1\)"),
    ("momentum", float("nan"), r"momentum must be a number in \[0, 1\)"),
    ("saturation_threshold", -1e-3, "saturation_threshold must be a finite number >= 0"),
    ("input_scale", 0.0, "input_scale must be a finite number > 0"),
    ("output_scale", float("inf"), "output_scale must be a finite number > 0"),
    ("seed", 2**32, r"seed must be an int in \[0, 2\*\*32\)"),
    ("seed", 1.5, r"seed must be an int in \[0, 2\*\*32\)"),
    ("data_seed", 2**40, r"data_seed must be None \(follow the seed\) or an int in \[0, 2\*\*32\)"),
    ("layer_scale", (1.0, "x"), r"layer_scale\[1\] must be a finite number >= 0"),
    ("layer_scale", (1.0, -2.0), r"layer_scale\[1\] must be a finite number >= 0"),
    ("layer_scale", "big", "layer_scale must be a tuple of numbers"),
    ("train_pass", "yes", "train_pass must be True or False"),
    ("metric_every", 0, "metric_every must be an int >= 1"),
    ("g_ratio_steps", "first", "g_ratio_steps must be one of last, all"),
    ("base_seed", -1, r"base_seed must be an int in \[0, 2\*\*32\)"),
]


@pytest.mark.parametrize("name,value,says", BAD_SETTINGS)
def test_bad_hyperparameters_refused_before_compute(name, value, says, monkeypatch):
  from jscale import datasets
  monkeypatch.setattr(datasets, "get", lambda *a, **k: pytest.fail("data loaded before validation"))
  with pytest.raises(ValueError, match=says) as err:
    sweeps.make_plan(_with(**{name: value}), E.product(sigma=(0.5,)) if name == "seed" else E.product(seed=(0,)))
  got = value[-1] if isinstance(value, tuple) else value
  assert f"got {got!r}" in str(err.value) and "_tiny_bad" in str(err.value)   # names the value and where
  if name not in ("base_seed", "layer_scale", "train_pass"):   # the same check for a grid axis's value
    with pytest.raises(ValueError, match=says):
      sweeps.make_plan(TINY, E.product(**{name: (value,)}))


def test_labels_outside_the_network_classes_refused(monkeypatch):
  from jscale import datasets
  real = datasets.get

  def shifted(*a, **k):
    ds = real(*a, **k)
    return ds._replace(y_test=ds.y_test + 1)   # class 2 in a 2-logit net

  monkeypatch.setattr(datasets, "get", shifted)
  with pytest.raises(ValueError, match=r"held-out labels must be ints in \[0, 2\).*from 1 to 2"):
    sweeps.make_plan(TINY, E.product(seed=(0,)))
  monkeypatch.setattr(datasets, "get", lambda *a, **k: real(*a, **k)._replace(num_classes=1))
  with pytest.raises(ValueError, match="at least 2 classes"):
    sweeps.make_plan(TINY, E.product(seed=(0,)))


def test_config_json_records_the_precision(tmp_path):
  from jscale import precision
  plan = sweeps.make_plan(TINY, "full")
  assert plan.to_json()["precision"] == precision.get_precision() == "highest"
  sweeps.run(plan, str(tmp_path / "r"), progress=False, max_chunks=0)
  cfg = json.loads((tmp_path / "r" / "config.json").read_text())
  assert cfg["precision"] == "highest"
  cfg["precision"] = "default"
  (tmp_path / "r" / "config.json").write_text(json.dumps(cfg))
  with pytest.raises(ValueError, match="precision 'default'"):
    sweeps.resume(str(tmp_path / "r"), progress=False)

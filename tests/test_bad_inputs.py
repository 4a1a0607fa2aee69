"""A battery of bad inputs (issue 12), as a new user and as a hostile one would try them.

Every case must be refused by jscale's own validation before any compute: through the Python API a ValueError
(TypeError for a wrong type) whose message names the parameter and the value; through the scripts one line
`error: ...` on stderr, exit status 2, no traceback, and no run directory written. Cases are grouped by the
issue's classes: SILENT (used to be accepted silently), LATE (used to pass planning and crash after config.json
was written), RAW (used to surface as an error from JAX, numpy, scikit-learn or the OS), SCRIPT (a script's
own error under a traceback) and NEWUSER (traps a new user falls into). Script cases run `main()` in-process
through `jscale.cli.run`, exactly what each script's `__main__` does; a few real subprocesses check the
format end to end (and the device flags, which only a fresh process can exercise).
"""
from __future__ import annotations

import importlib.util
import inspect
import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jscale import calculus, cli, datasets, experiments, initializers, mlp, sweeps  # noqa: F401 (registers)
from jscale import train as train_lib
from jscale.sweeps import registry

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(REPO, "scripts")
NAN, INF = float("nan"), float("inf")


# ---------------------------------------------------------------------------------------------------
# A tiny experiment whose options reach every setting, so `scripts/sweep.py --option NAME=VALUE` can send
# any bad value. Registered for this module only.

def make_bad(sigma=1.0, lr=0.1, weight_decay=0.0, momentum=0.9, optimizer="sgd", saturation_threshold=1e-3,
             input_scale=1.0, output_scale=1.0, layer_scale=None, seeds=(0, 1), data_seed=None,
             kernel_init="normal:1", epochs=1, batch_size=None, hidden=(4,), data="two_moons", n=60,
             activation="relu"):
  return sweeps.Experiment(
      name="_bad", data=data, data_options={"n": n} if data == "two_moons" else {}, data_seed=data_seed,
      hidden=tuple(hidden) if isinstance(hidden, list) else hidden, activation=activation, optimizer=optimizer,
      momentum=momentum, lr=lr, weight_decay=weight_decay, epochs=epochs, batch_size=batch_size,
      init_scale=sigma, input_scale=input_scale, output_scale=output_scale,
      layer_scale=tuple(layer_scale) if isinstance(layer_scale, list) else layer_scale, kernel_init=kernel_init,
      saturation_threshold=saturation_threshold, grids={"quick": sweeps.product(seed=seeds)})


@pytest.fixture(scope="module", autouse=True)
def _registered():
  registry.register(sweeps.Entry("_bad", make_bad))
  yield
  registry.unregister("_bad")


def refused(fn, exc, *needles):
  """`fn()` raises `exc` whose message holds every needle (a tuple: any one of its strings)."""
  with pytest.raises(exc) as e:
    fn()
  msg = str(e.value)
  for n in needles:
    alts = n if isinstance(n, tuple) else (n,)
    assert any(a in msg for a in alts), f"{alts} not in the message: {msg}"
  return msg


def plan(**options):
  """Plan the tiny experiment built with `options` (validation, data loading; no training)."""
  return sweeps.make_plan(sweeps.get("_bad", **options), "quick")


# ---------------------------------------------------------------------------------------------------
# Hyperparameters of a sweep: SILENT and LATE before (the engine's `validate`).

HPARAM_CASES = [
    # (class, options, needles)
    ("SILENT", dict(sigma=-1.0), (("init_scale", "sigma"), "-1.0")),
    ("SILENT", dict(sigma=NAN), (("init_scale", "sigma"), "nan")),
    ("SILENT", dict(lr=-0.1), ("lr", "-0.1")),
    ("SILENT", dict(lr=INF), ("lr", "inf")),
    ("SILENT", dict(lr=NAN), ("lr", "nan")),
    ("SILENT", dict(weight_decay=-1e-4), ("weight_decay", "-0.0001")),
    ("SILENT", dict(momentum=-0.5), ("momentum", "-0.5")),
    ("SILENT", dict(momentum=NAN), ("momentum", "nan")),
    ("SILENT", dict(saturation_threshold=-1.0), ("saturation_threshold", "-1.0")),
    ("SILENT", dict(input_scale=0.0), ("input_scale", "0.0")),
    ("SILENT", dict(layer_scale=(-1.0, 1.0)), ("layer_scale", "-1.0")),
    ("SILENT", dict(kernel_init="geometric:c=0"), ("c", "0")),
    ("SILENT", dict(kernel_init="constant:nan"), ("constant", "nan")),
    ("SILENT", dict(kernel_init="constant:inf"), ("constant", "inf")),
    ("LATE", dict(seeds=(2**32,)), ("seed", str(2**32))),
    ("LATE", dict(data_seed=2**32), ("data_seed", str(2**32))),
    ("LATE", dict(layer_scale=("a", 1.0)), ("layer_scale", "'a'")),
    ("SILENT", dict(epochs=0), ("epochs", "0")),
    ("SILENT", dict(batch_size=0), ("batch_size", "0")),
    ("RAW", dict(optimizer="sgdd"), ("optimizer", "sgdd")),
    ("RAW", dict(activation="relux"), ("activation", "relux")),
    ("RAW", dict(data="nope"), ("data set", "nope")),
    ("RAW", dict(hidden=(0,)), ("widths", "0")),
]


@pytest.mark.parametrize("cls,options,needles", HPARAM_CASES,
                         ids=[f"{c}-{'-'.join(f'{k}={v}' for k, v in o.items())}" for c, o, _ in HPARAM_CASES])
def test_sweep_setting_refused_before_planning_ends(cls, options, needles, tmp_path):
  refused(lambda: plan(**options), (ValueError, TypeError), *needles)


def test_sweep_setting_refused_through_the_grid_axis():
  exp = make_bad()
  for axis, values, needles in (("sigma", (1.0, -0.5), (("init_scale", "sigma"), "-0.5")),
                                ("lr", (0.1, -1.0), ("lr", "-1.0")),
                                ("layer_scale.0", (1.0, "x"), ("layer_scale", "'x'")),
                                ("seed", (0, -1), ("seed", "-1"))):
    refused(lambda: sweeps.make_plan(exp, sweeps.product(**{axis: values})), (ValueError, TypeError), *needles)


def test_labels_outside_the_networks_classes_refused():
  # A user's own data: 2 output logits but a label 5 (cross-entropy would silently read past the logits).
  spec = train_lib.TrainSpec(widths=(2, 4, 2), epochs=1, optimizer="sgd")
  train = train_lib.make_train(spec)
  x = jnp.ones((4, 2))
  data = datasets.Data(x, jnp.asarray([0, 1, 5, 0], jnp.int32), x, jnp.asarray([0, 1, 1, 0], jnp.int32))
  refused(lambda: train(jax.random.PRNGKey(0), train_lib.hparams(spec), data), ValueError, ("label", "class"), "5")


# ---------------------------------------------------------------------------------------------------
# Initializers, MLP, keys, measurement (SILENT / RAW before).

KEY = jax.random.PRNGKey(0)
PARAMS = mlp.init_mlp(KEY, (3, 4, 2))
X = jnp.ones((5, 3))
UNCHAINED = (mlp.Dense(jnp.ones((3, 4)), jnp.zeros(4)), mlp.Dense(jnp.ones((5, 2)), jnp.zeros(2)))

API_CASES = [
    # (class, id, thunk, exception, needles)
    ("SILENT", "geometric_c0", lambda: initializers.get("geometric:c=0"), ValueError, ("c", "0")),
    ("SILENT", "constant_nan", lambda: initializers.get("constant:nan"), ValueError, ("value", "nan")),
    ("SILENT", "constant_inf", lambda: initializers.get("constant:inf"), ValueError, ("value", "inf")),
    ("SILENT", "normal_negative", lambda: initializers.get("normal:-1"), ValueError, ("sigma", "-1.0")),
    ("SILENT", "scaled_str_factor", lambda: initializers.scaled(initializers.lecun(), "a"), ValueError,
     ("factor", "'a'")),
    ("RAW", "scaled_spec_not_initializer_object", lambda: initializers.scaled(42, 2.0), ValueError,
     ("initializer", "42")),
    ("NEWUSER", "flax_style_callable_as_kernel_init",
     lambda: mlp.init_mlp(KEY, (3, 4, 2), kernel_init=jax.nn.initializers.normal()), ValueError,
     ("kernel_init", "Initializer")),
    ("RAW", "init_mlp_int_dtype", lambda: mlp.init_mlp(KEY, (3, 4, 2), dtype=jnp.int32), ValueError,
     ("dtype", "int32")),
    ("RAW", "init_mlp_float_width", lambda: mlp.init_mlp(KEY, (3, 4.5, 2)), ValueError, ("widths", "4.5")),
    ("RAW", "apply_scalar", lambda: mlp.apply_mlp(PARAMS, 1.0), ValueError, ("x", "scalar")),
    ("RAW", "apply_list_wrong_width", lambda: mlp.apply_mlp(PARAMS, [1.0, 2.0]), ValueError, ("features", "2")),
    ("RAW", "apply_none", lambda: mlp.apply_mlp(PARAMS, None), ValueError, ("x", "NoneType")),
    ("RAW", "apply_unchained", lambda: mlp.apply_mlp(UNCHAINED, X), ValueError, ("chain", "5")),
    ("RAW", "apply_input_scale_str", lambda: mlp.apply_mlp(PARAMS, X, input_scale="2"), TypeError,
     ("input_scale", "'2'")),
    ("RAW", "init_mlp_int_key", lambda: mlp.init_mlp(0, (3, 4, 2)), TypeError, ("key", "int 0")),
    ("RAW", "init_mlp_none_key", lambda: mlp.init_mlp(None, (3, 4, 2)), TypeError, ("key", "None")),
    ("RAW", "init_mlp_float_key", lambda: mlp.init_mlp(jnp.ones(2), (3, 4, 2)), TypeError, ("key", "float32")),
    ("RAW", "init_mlp_batch_of_keys", lambda: mlp.init_mlp(jax.random.split(KEY, 3), (3, 4, 2)), TypeError,
     ("key", "(3, 2)")),
    ("RAW", "initializer_int_key", lambda: initializers.get("he_normal")(1, (3, 4)), TypeError, ("key", "int 1")),
    ("RAW", "measure_int_key", lambda: calculus.measure_mlp(PARAMS, X, 7), TypeError, ("key", "int 7")),
    ("RAW", "measure_str_key", lambda: calculus.measure_mlp(PARAMS, X, "k"), TypeError, ("key", "'k'")),
    ("RAW", "inspect_int_key", lambda: calculus.inspect(mlp.apply_mlp, PARAMS, X, key=3), TypeError,
     ("key", "int 3")),
    ("RAW", "measure_wrong_features", lambda: calculus.measure_mlp(PARAMS, jnp.ones((5, 4)), KEY), ValueError,
     ("x", "(5, 4)")),
    ("RAW", "measure_1d_batch", lambda: calculus.measure_mlp(PARAMS, jnp.ones(3), KEY), ValueError, ("x", "(3,)")),
    ("SILENT", "measure_negative_projection_variance",
     lambda: calculus.measure_mlp(PARAMS, X, KEY, dy_out_sq=-1.0), ValueError, ("dy_out_sq", "-1.0")),
    ("RAW", "two_moons_infinite_noise", lambda: datasets.two_moons(n=60, noise=INF), ValueError, ("noise", "inf")),
    ("RAW", "two_moons_seed_2_40", lambda: datasets.two_moons(n=60, seed=2**40), ValueError,
     ("seed", str(2**40))),
    ("SILENT", "iris_standardize_str", lambda: datasets.iris(standardize="no"), ValueError,
     ("standardize", "'no'")),
    ("SILENT", "split_mismatched_lengths", lambda: datasets.split(np.ones((4, 2)), np.array([0, 1, 0]), 0.5, 0),
     ValueError, ("4 rows", "3 labels")),
    ("RAW", "split_float_labels",
     lambda: datasets.split(np.ones((4, 2)), np.array([0.5, 1.5, 0.5, 1.5]), 0.5, 0), ValueError, ("y", "float64")),
    ("RAW", "split_leaves_nothing_to_train_on", lambda: datasets.iris(test_fraction=0.999), ValueError,
     ("test_fraction", "0.999")),
    ("RAW", "to_device_not_a_dataset", lambda: datasets.to_device((1, 2)), TypeError, ("to_device", "tuple")),
    ("RAW", "fingerprint_not_a_dataset", lambda: datasets.fingerprint("x"), TypeError, ("fingerprint", "str")),
    ("RAW", "unknown_dataset", lambda: datasets.get("mnist_typo"), ValueError, ("data set", "mnist_typo")),
    ("SILENT", "experiment_name_dotdot", lambda: registry.register(sweeps.Experiment(name="..")), ValueError,
     ("name", "'..'")),
    ("SILENT", "experiment_name_space", lambda: registry.register(sweeps.Experiment(name="a b")), ValueError,
     ("name", "'a b'")),
    ("SILENT", "entry_make_not_callable", lambda: registry.register(sweeps.Entry("_bad_make", 5)), ValueError,
     ("make", "5")),
    ("SILENT", "entry_section_not_callable",
     lambda: registry.register(sweeps.Entry("_bad_sec", make_bad, section="x")), ValueError, ("section", "'x'")),
    ("RAW", "grids_not_a_mapping", lambda: registry.register(sweeps.Experiment(name="_bad_g", grids=[1])),
     ValueError, ("grids", "[1]")),
    ("RAW", "grid_not_a_grid",
     lambda: registry.register(sweeps.Experiment(name="_bad_g", grids={"quick": {"sigma": 1}})), ValueError,
     ("grid 'quick'", "dict")),
    ("RAW", "option_of_the_wrong_type", lambda: sweeps.get("init_schemes", quick_seeds="a"), TypeError,
     ("init_schemes", "quick_seeds='a'")),
    ("SILENT", "unknown_option", lambda: sweeps.get("_bad", learning_rate=0.1), ValueError,
     ("learning_rate", "options")),
    ("RAW", "unknown_experiment", lambda: sweeps.get("sigmaa"), ValueError, ("sigmaa", "registered")),
]


@pytest.mark.parametrize("cls,case_id,thunk,exc,needles", API_CASES, ids=[f"{c[0]}-{c[1]}" for c in API_CASES])
def test_api_input_refused_clearly(cls, case_id, thunk, exc, needles):
  try:
    refused(thunk, exc, *needles)
  finally:
    for name in ("..", "a b", "_bad_make", "_bad_sec", "_bad_g"):
      registry.unregister(name)


def test_hutchinson_leaf_index_out_of_range_refused():
  from jscale.theory import hutchinson
  loss = lambda p, x: jnp.sum(mlp.apply_mlp(p, x) ** 2)
  refused(lambda: hutchinson.block_hvp(loss, PARAMS, (X,), 99), ValueError, "99", "leaves")


def test_libsvm_malformed_and_one_class_files_named(tmp_path):
  bad = tmp_path / "bad.svm"
  bad.write_text("1 1:0.5\nnot a line at all\n")
  refused(lambda: datasets.libsvm(str(bad)), ValueError, str(bad))
  one = tmp_path / "one.svm"
  one.write_text("".join(f"1 1:{i}\n" for i in range(10)))
  refused(lambda: datasets.libsvm(str(one)), ValueError, str(one), "class")


def test_resume_of_a_missing_or_corrupt_run_refused(tmp_path):
  refused(lambda: sweeps.resume(str(tmp_path / "nope")), ValueError, str(tmp_path / "nope"))
  d = tmp_path / "corrupt"
  d.mkdir()
  (d / "config.json").write_text('{"experiment": "_bad", "grid_na')
  refused(lambda: sweeps.resume(str(d)), ValueError, "config.json", "damaged")


# ---------------------------------------------------------------------------------------------------
# New-user traps (NEWUSER).

def test_measure_mlp_without_a_key_works_and_is_reproducible():
  # The key used to default to None and then be required; None is PRNGKey(0), as in `calculus.inspect`.
  a = calculus.measure_mlp(PARAMS, X)
  b = calculus.measure_mlp(PARAMS, X, jax.random.PRNGKey(0))
  c = calculus.measure_mlp(PARAMS, X, jax.random.PRNGKey(1))
  np.testing.assert_array_equal(a.moments.dy_sq, b.moments.dy_sq)
  assert not np.array_equal(a.moments.dy_sq, c.moments.dy_sq)   # the key does draw the projection


def test_typed_and_legacy_keys_both_accepted():
  for key in (jax.random.key(3), jax.random.PRNGKey(3)):
    p = mlp.init_mlp(key, (3, 4, 2))
    assert calculus.measure_mlp(p, X, key).moments.nu.shape == (2,)


def test_initializer_as_flax_bias_init_takes_1d_shapes():
  for spec in ("he_normal", "geometric:c=2", "normal:0.1"):
    b = initializers.get(spec)(KEY, (7,))
    assert b.shape == (7,)
    assert initializers.get(spec).variance((7,)) > 0


# ---------------------------------------------------------------------------------------------------
# Scripts, in-process: `cli.run(main)` as each script's __main__ does.

_MODULES = {}


def _script(name):
  if name not in _MODULES:
    spec = importlib.util.spec_from_file_location(f"_script_{name}", os.path.join(SCRIPTS, f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with open(os.path.join(SCRIPTS, f"{name}.py")) as f:
      mod._uses_cli = "cli.run(main)" in f.read()
    _MODULES[name] = mod
  return _MODULES[name]


def run_script(capsys, name, argv):
  """Exit status and stderr of `scripts/<name>.py argv`, run as its __main__ runs it (exceptions that its
  __main__ would print as a traceback propagate and fail the test)."""
  mod = _script(name)
  capsys.readouterr()
  with pytest.raises(SystemExit) as e:
    if mod._uses_cli:
      cli.run(lambda: mod.main(argv))
    else:
      sys.exit(mod.main(argv))
  return e.value.code, capsys.readouterr().err


def assert_one_error_line(code, err, *needles):
  lines = [l for l in err.splitlines() if l.strip()]
  assert code == 2, (code, err)
  assert "Traceback" not in err, err
  assert len(lines) == 1 and lines[0].startswith("error: "), err
  for n in needles:
    alts = n if isinstance(n, tuple) else (n,)
    assert any(a in lines[0] for a in alts), f"{alts} not in: {lines[0]}"


SWEEP_CASES = [
    ("SCRIPT", ["--experiment", "sigmaa"], ("sigmaa",)),
    ("SCRIPT", ["--experiment", "_bad", "--grid", "huge"], ("huge",)),
    ("SILENT", ["--experiment", "_bad", "--option", "lr=-1"], ("lr", "-1")),
    ("SILENT", ["--experiment", "_bad", "--option", "sigma=NaN"], (("init_scale", "sigma"), "nan")),
    ("SILENT", ["--experiment", "_bad", "--option", "weight_decay=-0.1"], ("weight_decay", "-0.1")),
    ("LATE", ["--experiment", "_bad", "--option", "seeds=[4294967296]"], ("seed", "4294967296")),
    ("LATE", ["--experiment", "_bad", "--option", 'layer_scale=["a", 1]'], ("layer_scale", "'a'")),
    ("SCRIPT", ["--experiment", "_bad", "--option", "learning_rate=0.1"], ("learning_rate",)),
    ("SCRIPT", ["--experiment", "_bad", "--option", "lr"], ("--option", "'lr'")),
    ("SCRIPT", ["--experiment", "_bad", "--chunk-size", "0"], ("chunk", "0")),
    ("SCRIPT", ["--experiment", "_bad", "--group-size", "-1"], ("group", "-1")),
    # More devices than this machine's cores: the check test_subprocess_devices_refused shows comes before JAX
    ("SILENT", ["--experiment", "_bad", "--devices", str(os.cpu_count() + 97)],
     ("--devices", str(os.cpu_count() + 97), f"this machine has {os.cpu_count()} CPU core(s)")),
]


@pytest.mark.parametrize("cls,argv,needles", SWEEP_CASES, ids=[f"{c}-{' '.join(a[2:]) or a[1]}"
                                                               for c, a, _ in SWEEP_CASES])
def test_sweep_script_refuses_before_writing(cls, argv, needles, capsys, tmp_path):
  out = tmp_path / "out"
  code, err = run_script(capsys, "sweep", argv + ["--out", str(out), "--no-progress"])
  assert_one_error_line(code, err, *needles)
  assert not out.exists(), os.listdir(out)   # no run directory, no config.json


def test_sweep_script_resume_of_a_missing_path(capsys, tmp_path):
  code, err = run_script(capsys, "sweep", ["--resume", str(tmp_path / "nope")])
  assert_one_error_line(code, err, str(tmp_path / "nope"))


def test_sweep_script_resume_of_a_corrupt_config(capsys, tmp_path):
  d = tmp_path / "runs" / "_bad"
  d.mkdir(parents=True)
  (d / "config.json").write_text("{not json")
  code, err = run_script(capsys, "sweep", ["--resume", str(d)])
  assert_one_error_line(code, err, "config.json")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  """One finished run of the tiny experiment: OUT/_bad/ (a few seconds: 2 configurations, 1 epoch)."""
  out = tmp_path_factory.mktemp("finished")
  p = sweeps.make_plan(sweeps.get("_bad"), "quick")
  sweeps.run(p, str(out / "_bad"), progress=False)
  return out


@pytest.mark.parametrize("flags,needle", [(["--grid", "full"], "--grid"),
                                          (["--experiment", "sigma"], "--experiment"),
                                          (["--option", "lr=0.5"], "--option"),
                                          (["--chunk-size", "1"], "--chunk-size")])
def test_sweep_script_resume_refuses_flags_it_would_ignore(flags, needle, capsys, finished_run):
  before = sorted(os.listdir(finished_run / "_bad"))
  code, err = run_script(capsys, "sweep", ["--resume", str(finished_run / "_bad"), "--no-report"] + flags)
  assert_one_error_line(code, err, needle)
  assert sorted(os.listdir(finished_run / "_bad")) == before


def test_report_script_refuses_one_experiments_folder_with_a_hint(capsys, finished_run):
  exp_dir = finished_run / "_bad"
  code, err = run_script(capsys, "report", [str(exp_dir)])
  assert_one_error_line(code, err, "one experiment's folder", f"--experiments _bad")
  assert not (exp_dir / "report.md").exists()
  code, err = run_script(capsys, "report", [str(finished_run / "missing")])
  assert_one_error_line(code, err, "does not exist")
  empty = finished_run / "empty"
  empty.mkdir(exist_ok=True)
  code, err = run_script(capsys, "report", [str(empty)])
  assert_one_error_line(code, err, "holds no experiment")
  assert not (empty / "report.md").exists()
  code, err = run_script(capsys, "report", [str(finished_run), "--experiments", "nope"])
  assert_one_error_line(code, err, "nope")


def test_report_script_on_the_parent_run_lists_the_results(capsys, finished_run):
  # Pointed at the run directory instead, the report names _bad's results (it has no section of its own).
  mod = _script("report")
  assert mod.main([str(finished_run), "--experiments", "sigma"]) == 0
  with open(finished_run / "report.md") as f:
    assert "_bad" in f.read()


CALCULUS_CASES = [
    ("SCRIPT", ["--widths", "3,0,2"], ("--widths", "0")),
    ("SCRIPT", ["--init", "geometric:c=0"], ("c", "0")),
    ("SCRIPT", ["--batch", "0"], ("--batch",)),
    ("SCRIPT", ["--feature-scale", "nan"], ("--feature-scale", "nan")),
    ("RAW", ["--widths", "100000000,100000000,10"], ("memory", "TiB", "can spare")),  # the need is TiB; the limit is free memory, MiB to GiB
]


@pytest.mark.parametrize("cls,argv,needles", CALCULUS_CASES, ids=[f"{c}-{' '.join(a)}" for c, a, _ in CALCULUS_CASES])
def test_calculus_script_refuses(cls, argv, needles, capsys):
  code, err = run_script(capsys, "calculus", argv)
  assert_one_error_line(code, err, *needles)


@pytest.mark.parametrize("argv,needle", [(["--setups", "0"], "--setups"), (["--family", "cnn"], "--family"),
                                         (["--seed", "-1"], "--seed"), (["--family", "lenet", "--batch", "1"], "--batch")])
def test_hessian_check_script_refuses(argv, needle, capsys):
  code, err = run_script(capsys, "hessian_check", argv)
  assert_one_error_line(code, err, needle)


# ---------------------------------------------------------------------------------------------------
# Real subprocesses: the format end to end, and --devices (only a fresh process can set the device count).

# The driver defines make_bad from its source: importing this module would start JAX's backends, and
# --devices must reach a process whose backends are not up yet.
DRIVER = """
import sys
sys.path.insert(0, {scripts!r})
import sweep
from jscale import cli, sweeps
{make_bad}
sweeps.register(sweeps.Entry("_bad", make_bad))
sys.argv = ["sweep.py"] + sys.argv[1:]
cli.run(sweep.main)
"""


def sweep_subprocess(tmp_path, *argv):
  driver = tmp_path / "driver.py"
  driver.write_text(DRIVER.format(scripts=SCRIPTS, make_bad=inspect.getsource(make_bad)))
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("JSCALE_TRACEBACK", None)
  return subprocess.run([sys.executable, str(driver), *argv], capture_output=True, text=True, env=env, timeout=120)


def test_subprocess_error_format(tmp_path):
  out = tmp_path / "out"
  r = sweep_subprocess(tmp_path, "--experiment", "_bad", "--option", "lr=-1", "--out", str(out))
  assert_one_error_line(r.returncode, r.stderr, "lr", "-1")
  assert not out.exists()


def test_subprocess_devices_refused(tmp_path):
  # RAW. One fresh process: the --devices check (one call, `devices.check_device_request`) comes before JAX
  # starts; its other refusal (more devices than cores, SILENT) runs in-process in SWEEP_CASES.
  out = tmp_path / "out"
  r = sweep_subprocess(tmp_path, "--experiment", "_bad", "--devices", "0", "--out", str(out), "--no-progress")
  assert_one_error_line(r.returncode, r.stderr, "--devices must be an int >= 1, got 0")
  assert not out.exists()
  assert "devices: [" not in r.stdout   # refused before JAX listed (started) its devices

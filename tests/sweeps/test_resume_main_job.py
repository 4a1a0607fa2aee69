"""`--resume OUT` finishes the main job: the plan recorded in OUT/run.json before training names every
experiment, so the ones never started run too; damaged chunks are named and recomputed; flags a resume
would ignore are refused; one live writer per run directory; a kill during assembly is recovered."""
import contextlib
import dataclasses
import json
import multiprocessing
import os
import subprocess
import sys

import chex
import numpy as np
import pytest

from jscale import sweeps
from jscale.sweeps import jobs as jobs_lib, store

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, TESTS)
import sweep_driver  # noqa: E402

sweep_driver._register()
SWEEP = sweep_driver._load_sweep()
JOB = ["--experiment", "_tiny_a,_tiny_custom,_tiny_b", "--no-progress", "--devices", "1"]


class Interrupted(Exception):
  pass


def _interrupt_after(monkeypatch, name):
  """Make the main job stop (as a kill would) right after experiment `name` finished."""
  real = jobs_lib.run   # what the main job's sweep jobs call

  def run(plan, *a, **kw):
    res = real(plan, *a, **kw)
    if plan.experiment.name == name:
      raise Interrupted(name)
    return res

  monkeypatch.setattr(jobs_lib, "run", run)


def test_resume_runs_the_experiments_never_started(tmp_path, monkeypatch, capsys):
  out = str(tmp_path / "out")
  _interrupt_after(monkeypatch, "_tiny_a")
  with pytest.raises(Interrupted):
    SWEEP.main(JOB + ["--out", out])
  monkeypatch.undo()
  plan = store.main_plan(out)   # recorded before anything trained
  assert [e["name"] for e in plan["experiments"]] == ["_tiny_a", "_tiny_custom", "_tiny_b"]
  assert plan["settings"]["precision"] == "highest"
  assert not os.path.exists(os.path.join(out, "_tiny_b")) and not os.path.exists(os.path.join(out, "_tiny_custom"))
  capsys.readouterr()
  assert SWEEP.main(["--resume", out, "--no-progress"]) == 0
  said = capsys.readouterr().out
  assert "_tiny_custom/resumed: not finished: running it" in said
  assert "_tiny_b/resumed: not started: running its 8 configurations" in said
  b = sweeps.load(os.path.join(out, "_tiny_b"))
  direct = sweeps.run(sweeps.make_plan("_tiny_b", "quick"), str(tmp_path / "direct"), progress=False)
  chex.assert_trees_all_equal(b.metrics, direct.metrics)
  np.testing.assert_array_equal(sweeps.load(os.path.join(out, "_tiny_custom")).metric("square"), [0, 1, 4])
  assert [i["grid"] for i in store.run_info(out)] == ["resumed"]
  # Same experiment again into the same OUT: refused before compute, pointing at --resume.
  with pytest.raises(ValueError, match="already holds _tiny_a; finish it with --resume"):
    SWEEP.main(["--experiment", "_tiny_a", "--out", out, "--no-progress"])


def test_resume_recomputes_damaged_chunks_and_says_which(tmp_path, capsys):
  d = str(tmp_path / "r")
  full = sweeps.run(sweeps.make_plan("_tiny_b", "quick", chunk_size=4), d, progress=False)
  path = store.chunk_path(d, 1)
  data = open(path, "rb").read()
  open(path, "wb").write(data[:len(data) // 2])
  capsys.readouterr()
  again = sweeps.resume(d, progress=False)
  said = capsys.readouterr().out
  assert "chunk(s) 1 damaged" in said and "recomputing" in said and "1 of 2 chunk(s) done" in said
  chex.assert_trees_all_equal(again.metrics, full.metrics)
  assert store.chunk_done(d, 1)


def _hold(run_dirs, ready, release):
  with contextlib.ExitStack() as locks:
    for d in run_dirs:
      locks.enter_context(store.writer_lock(d))
    ready.set()   # after every lock is taken
    release.wait(60)


def test_second_live_writer_refused_on_run_and_resume(tmp_path):
  d = str(tmp_path / "r")
  plan = sweeps.make_plan("_tiny_b", "quick")
  sweeps.run(plan, d, progress=False, max_chunks=0)
  ctx = multiprocessing.get_context("spawn")
  ready, release = ctx.Event(), ctx.Event()
  custom = str(tmp_path / "c")
  # One live writer holding both directories: a spawned process imports this module (jscale, the sweep script),
  # ~3.5 CPU s each; a second holder would test the same lock again.
  holder = ctx.Process(target=_hold, args=((d, custom), ready, release))
  holder.start()
  try:
    assert ready.wait(60)
    with pytest.raises(ValueError, match=f"pid {holder.pid}"):
      sweeps.resume(d, progress=False)
    with pytest.raises(ValueError, match=f"pid {holder.pid}"):
      sweeps.get("_tiny_custom").execute("quick", custom)
  finally:
    release.set()
    holder.join(30)
  assert not os.path.exists(store.chunk_path(d, 0))   # nothing was computed beside the live writer
  assert store.finished_grid(custom) is None
  for x in (d, custom):   # released: free again, and the lock file gone
    assert not os.path.exists(os.path.join(x, store.LOCK))
    with store.writer_lock(x):
      pass
    assert not os.path.exists(os.path.join(x, store.LOCK))


@pytest.mark.parametrize("moment", ["before_config", "before_summary", "stale_assembly_lock"])
def test_kill_during_assembly_is_recovered(tmp_path, moment):
  d = str(tmp_path / "r")
  done = sweeps.run(sweeps.make_plan("_tiny_b", "quick"), d, progress=False)
  cfg_path = os.path.join(d, store.CONFIG_JSON)
  if moment == "before_config":     # metrics.npz written, config.json not yet naming it
    cfg = json.load(open(cfg_path))
    for k in ("metrics", "axes", "metrics_sha256", "compute_seconds"):
      cfg.pop(k)
    json.dump(cfg, open(cfg_path, "w"))
    open(os.path.join(d, store.METRICS_NPZ), "ab").write(b"half")
  elif moment == "before_summary":
    os.remove(os.path.join(d, store.SUMMARY_CSV))
  else:   # the killed assembler's lock is left behind
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    json.dump({"pid": dead.pid, "host": os.uname().nodename, "shard": None},
              open(os.path.join(d, store.ASSEMBLY_LOCK), "w"))
  chex.assert_trees_all_equal(sweeps.load(d).metrics, done.metrics)
  chex.assert_trees_all_equal(sweeps.resume(d, progress=False).metrics, done.metrics)
  assert os.path.isfile(os.path.join(d, store.SUMMARY_CSV))
  assert not os.path.exists(os.path.join(d, store.ASSEMBLY_LOCK))


def test_resume_refuses_flags_it_would_ignore_and_bad_paths(tmp_path):
  out = str(tmp_path / "out")
  SWEEP.main(["--experiment", "_tiny_custom", "--out", out, "--no-progress"])
  for flags in (["--grid", "full"], ["--experiment", "sigma"], ["--option", "a=1"], ["--libsvm", "x"],
                ["--out", "o"], ["--chunk-size", "4"], ["--group-size", "2"]):
    with pytest.raises(ValueError, match=f"{flags[0]} cannot be used with --resume"):
      SWEEP.main(["--resume", out] + flags)
  with pytest.raises(ValueError, match="no such directory"):
    SWEEP.main(["--resume", str(tmp_path / "nope")])
  with pytest.raises(ValueError, match="must use the same"):
    SWEEP.main(["--resume", out, "--precision", "default"])
  with open(os.path.join(out, "_tiny_custom", store.CONFIG_JSON), "w") as f:
    f.write("{broken")
  with pytest.raises(ValueError, match="not valid JSON"):
    SWEEP.main(["--resume", os.path.join(out, "_tiny_custom")])
  with open(os.path.join(out, store.RUN_JSON), "w") as f:
    f.write("[")
  with pytest.raises(ValueError, match="not valid JSON"):
    SWEEP.main(["--resume", out])
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(ValueError, match="holds no main job"):
    SWEEP.main(["--resume", str(empty)])


# Slow: tests/test_bad_inputs.py::test_subprocess_devices_refused runs the first refusal through the same
# `cli.run(sweep.main)` in a fresh process (the same message, the one error line, no device listing), and its
# SWEEP_CASES the second (the same message) in-process.
@pytest.mark.slow
def test_devices_refused_before_jax_starts():
  script = os.path.join(TESTS, "..", "scripts", "sweep.py")
  env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
  cores = os.cpu_count()
  for n, says in (("0", "--devices must be an int >= 1, got 0"),
                  (str(cores + 97), f"this machine has {cores} CPU core(s)")):
    out = subprocess.run([sys.executable, script, "--devices", n, "--out", "/nonexistent/x"], capture_output=True,
                         text=True, timeout=120, env=env)
    assert out.returncode == 2 and says in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert "devices: [" not in out.stdout   # refused before JAX listed (started) its devices


@pytest.mark.slow
def test_interrupted_quick_main_job_finishes_by_resume(tmp_path, monkeypatch):
  """The real experiments on reduced quick grids: killed after the first one, `--resume OUT` runs the rest
  and the report has every planned section built."""
  from jscale.experiments.feature_weight import config as feature_weight
  from jscale.sweeps import registry
  names = ("sigma", "feature_weight", "activations")
  full = {n: sweeps.get(n) for n in names}
  small = {
      "sigma": dataclasses.replace(full["sigma"], epochs=4, data_options={"n": 200, "noise": 0.2}, grids={
          "quick": sweeps.product(batch_size=(None, 32), sigma=(0.1, 1.0), seed=range(3))}),
      "feature_weight": dataclasses.replace(full["feature_weight"], data="digits_raw", data_options={},
                                            hidden=(32, 16), grids={"quick": feature_weight.scale_grid(
                                                (1.0, 255.0), range(2))}),
      "activations": dataclasses.replace(full["activations"], grids={
          "quick": {"seed": 0, "depth": 3, "width": 32, "n_samples": 64}}),
  }
  out = str(tmp_path / "out")
  _interrupt_after(monkeypatch, "sigma")
  with registry.replaced(small):
    with pytest.raises(Interrupted):
      SWEEP.main(["--grid", "quick", "--experiment", ",".join(names), "--out", out, "--no-progress", "--devices",
                  "1"])
    monkeypatch.setattr(jobs_lib, "run", sweeps.runner.run)
    assert SWEEP.main(["--resume", out, "--no-progress"]) == 0
  md = open(os.path.join(out, "report.md")).read()
  for n in names:
    assert f"| {n} | built |" in md, md[:2000]

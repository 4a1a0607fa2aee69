"""The engine's reliability fixes of issue 24: a chunk holding another run's configurations is named and
recomputed; `--resume` of a complete run changes nothing; `--no-progress` reaches a custom experiment's run
(the hessian experiment's bars); `sweeps.names()` lists the built-ins without importing jscale.experiments."""
import hashlib
import os
import shutil
import subprocess
import sys

import chex
import pytest

from jscale import host, sweeps
from jscale.experiments.hessian import run as hessian_run
from jscale.sweeps import store

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, TESTS)
import sweep_driver  # noqa: E402

sweep_driver._register()
SWEEP = sweep_driver._load_sweep()


def _copy_chunk(d, src, dst):
  for ext in ("", ".sha256"):
    shutil.copyfile(store.chunk_path(d, src) + ext, store.chunk_path(d, dst) + ext)


def test_a_foreign_chunk_with_its_checksum_is_named_and_recomputed(tmp_path, capsys):
  full = sweeps.run(sweeps.make_plan("_tiny_b", "quick", chunk_size=4), str(tmp_path / "full"), progress=False)
  d = str(tmp_path / "r")
  sweeps.run(sweeps.make_plan("_tiny_b", "quick", chunk_size=4), d, progress=False, max_chunks=1)
  _copy_chunk(d, 0, 1)   # chunk 0's file and checksum copied in as chunk 1: intact, but configurations 0-3
  cfg = store.read_config(d)
  assert store.chunk_state(d, 1) == "done"                     # the checksum alone cannot tell
  assert store.chunk_state(d, 1, cfg["chunks"][1]["indices"]) == "foreign"
  with pytest.raises(store.ResultsMissing, match=r"chunk 1 holds configurations \[0, 1, 2, 3\] where the plan "
                                                 r"has \[4, 5, 6, 7\]"):
    store.assemble(d)
  capsys.readouterr()
  again = sweeps.resume(d, progress=False)
  said = capsys.readouterr().out
  assert "chunk(s) 1 hold other configurations than the plan's" in said and "recomputing" in said
  chex.assert_trees_all_equal(again.metrics, full.metrics)   # bit-identical to the uninterrupted run
  assert store.chunk_state(d, 1, cfg["chunks"][1]["indices"]) == "done"


def _snapshot(root):
  out = {}
  for dirpath, _, files in os.walk(root):
    for f in files:
      p = os.path.join(dirpath, f)
      with open(p, "rb") as fh:
        out[os.path.relpath(p, root)] = (hashlib.sha256(fh.read()).hexdigest(), os.stat(p).st_mtime_ns)
  return out


def test_resume_of_a_complete_run_says_so_and_changes_nothing(tmp_path, capsys):
  out = str(tmp_path / "out")
  assert SWEEP.main(["--experiment", "_tiny_b,_tiny_custom", "--out", out, "--no-progress", "--devices", "1"]) == 0
  before = _snapshot(out)
  for target in (out, os.path.join(out, "_tiny_b")):
    capsys.readouterr()
    assert SWEEP.main(["--resume", target, "--no-progress"]) == 0
    said = capsys.readouterr().out
    assert "every experiment is complete" in said and "nothing to resume" in said, said
    assert "started: resuming" not in said and "configurations," not in said   # no table printed again
    assert _snapshot(out) == before   # no file written, not even with the same bytes
  assert [i["grid"] for i in store.run_info(out)] == ["quick"]   # no "(grid resumed)" entry
  # the run says which machine computed it (float32 results' low digits follow the CPU), and a report says so
  assert store.run_info(out)[0]["host"] == host.describe()
  from jscale.report import document
  assert f"wall time on cpu:0 ({host.summary(host.describe())})" in document._run_info_text(out)


def test_no_progress_reaches_a_custom_experiments_run(tmp_path):
  seen = []

  def run(exp_dir, n=1, *, progress=True):
    seen.append(progress)
    store.write_results(exp_dir, axes={"i": list(range(n))}, metrics={"v": (("i",), list(range(n)))})

  sweeps.register(sweeps.CustomExperiment(name="_shows", run=run, grids={"quick": {"n": 2}}))
  try:
    SWEEP.main(["--experiment", "_shows", "--out", str(tmp_path / "a"), "--no-progress", "--no-report"])
    SWEEP.main(["--experiment", "_shows", "--out", str(tmp_path / "b"), "--no-report"])
    assert seen == [False, True]
    assert "progress" not in store.read_config(str(tmp_path / "a" / "_shows"))["settings"]   # not a setting
  finally:
    sweeps.unregister("_shows")


def test_the_hessian_run_passes_progress_to_its_bars(tmp_path, monkeypatch):
  class Seen(Exception):
    pass

  def figure1(family, fig1, *, progress, **kw):
    raise Seen(progress)

  monkeypatch.setattr(hessian_run.rounds, "figure1", figure1)
  tiny = dict(setups=1, batch=4, draws=4, seed=0, fig2_draws=0, fig2_minibatch=8, examples=3, target_rel_se=None,
              max_draws=4)
  for progress in (False, True):
    with pytest.raises(Seen) as e:
      hessian_run.run(str(tmp_path / str(progress)), progress=progress, **tiny)
    assert e.value.args == (progress,)


def test_names_lists_the_builtins_without_importing_experiments():
  # The same fresh process then imports every experiment: matplotlib and scipy.stats load at first use, not with
  # the sections (each costs a command line's every start, a refusal of bad input included: ~1.2 CPU s of 3.4).
  code = ("from jscale import sweeps; import sys; assert 'jscale.experiments' not in sys.modules; "
          "print(','.join(sweeps.names())); import jscale.experiments; "
          "print(sorted({'matplotlib', 'scipy.stats'} & set(sys.modules)))")
  r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                     env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert r.returncode == 0, r.stderr
  names, heavy = r.stdout.strip().splitlines()
  assert names.split(",")[:2] == ["sigma", "feature_weight"], r.stdout
  assert heavy == "[]", heavy

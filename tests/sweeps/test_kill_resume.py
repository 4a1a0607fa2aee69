"""kill -9 a sweep at several moments, resume it, and get the uninterrupted run's numbers bit for bit (issue 12).

scripts/sweep.py runs as a real subprocess (through a small driver that registers a tiny experiment, `_kr`:
12 configurations in 6 chunks of 2 on one device). The test polls the run directory and sends SIGKILL when a
given file appears (a chunk has just landed, metrics.npz is being or has been assembled), or a moment after
the run started (mid-chunk); then `--resume` finishes it. A damaged (truncated) chunk is recomputed on resume,
and a second `--resume` beside a live writer is refused with the holder's pid.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from jscale import sweeps
from jscale.sweeps import registry, store

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPTS = os.path.join(REPO, "scripts")

REGISTER = """
from jscale import sweeps
sweeps.register(sweeps.Experiment(
    name="_kr", data="two_moons", data_options={{"n": 400}}, hidden=(32, 32), epochs={epochs}, optimizer="sgd",
    lr=0.05, batch_size=16, grids={{"quick": sweeps.product(sigma=(0.5, 1.0), seed=range(6))}}))
"""
DRIVER = """
import sys
sys.path.insert(0, {scripts!r})
import sweep
from jscale import cli
""" + REGISTER + """
sys.argv = ["sweep.py"] + sys.argv[1:]
cli.run(sweep.main)
"""
N_CHUNKS = 6


def _env():
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("JSCALE_TRACEBACK", None)
  return env


def _driver(tmp_path, epochs):
  path = tmp_path / f"driver_{epochs}.py"
  path.write_text(DRIVER.format(scripts=SCRIPTS, epochs=epochs))
  return str(path)


def _start(driver, *argv):
  return subprocess.Popen([sys.executable, driver, "--no-progress", "--no-report", *argv],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())


def _new(driver, out):
  return _start(driver, "--experiment", "_kr", "--devices", "1", "--chunk-size", "2", "--out", out)


def _resume(driver, run_dir):
  return _start(driver, "--resume", run_dir)


def _finish(proc, timeout=180):
  out, err = proc.communicate(timeout=timeout)
  assert proc.returncode == 0, (proc.returncode, out, err)
  return out, err


def _kill_when(proc, ready, timeout=120):
  """SIGKILL `proc` as soon as `ready()` holds (polled every 2 ms); True if it was killed while running."""
  t0 = time.time()
  while not ready():
    if proc.poll() is not None:
      proc.communicate()
      return False
    assert time.time() - t0 < timeout, "the moment to kill never came"
    time.sleep(0.002)
  proc.send_signal(signal.SIGKILL)
  proc.communicate()
  return proc.returncode == -signal.SIGKILL


def _arrays(run_dir):
  res = store.load(run_dir)
  return {k: np.asarray(v) for k, v in res.metrics.items()}


def _assert_identical(a, b):
  assert set(a) == set(b)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)  # bit-identical (NaN where NaN), no tolerance


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """The uninterrupted run, computed in this process from the driver's own experiment and the plan its flags
  make (`--devices 1 --chunk-size 2`): the killed and resumed runs are real processes; a third interpreter for
  the reference cost ~3 CPU s of imports."""
  tmp = tmp_path_factory.mktemp("kr_ref")
  driver = _driver(tmp, epochs=6)
  exec(REGISTER.format(epochs=6), {})   # the driver's own registration (not its sys.path and command line)
  try:
    sweeps.run(sweeps.make_plan("_kr", "quick", devices=1, chunk_size=2), str(tmp / "out" / "_kr"), progress=False)
  finally:
    registry.unregister("_kr")
  return driver, _arrays(str(tmp / "out" / "_kr"))


def _chunk_landed(run_dir, c):
  return lambda: os.path.exists(store.chunk_path(run_dir, c) + ".sha256")


def _resume_to_the_end(driver, run_dir, want):
  last = _resume(driver, run_dir)
  _finish(last)
  assert all(store.chunk_state(run_dir, c) == "done" for c in range(N_CHUNKS))
  # A killed writer may leave its temporary file behind (never read): the resume, on taking the lock, removes it,
  # and the finishing writer leaves none of its own.
  leftovers = os.listdir(run_dir) + os.listdir(os.path.join(run_dir, "chunks"))
  assert not [f for f in leftovers if ".tmp" in f], leftovers
  _assert_identical(_arrays(run_dir), want)


def test_kill_after_a_chunk_lands_and_a_damaged_chunk_then_resume_is_bit_identical(reference, tmp_path):
  driver, want = reference
  run_dir = str(tmp_path / "out" / "_kr")
  assert _kill_when(_new(driver, str(tmp_path / "out")), _chunk_landed(run_dir, 2))
  # A damaged chunk (truncated to half) is never trusted: the resume recomputes it.
  path = store.chunk_path(run_dir, 0)
  with open(path, "rb") as f:
    data = f.read()
  with open(path, "wb") as f:
    f.write(data[:len(data) // 2])
  assert store.chunk_state(run_dir, 0) == "damaged"
  _resume_to_the_end(driver, run_dir, want)
  # A finished run with a damaged chunk still loads: metrics.npz is intact and checksummed.
  with open(store.chunk_path(run_dir, 3), "r+b") as f:
    f.truncate(10)
  _assert_identical(_arrays(run_dir), want)


@pytest.mark.slow
def test_kill_mid_chunk_and_during_assembly_then_resume_is_bit_identical(reference, tmp_path):
  driver, want = reference
  run_dir = str(tmp_path / "out" / "_kr")
  # Mid-chunk: config.json written, the first chunk still compiling or training.
  assert _kill_when(_new(driver, str(tmp_path / "out")), lambda: os.path.exists(os.path.join(run_dir, "config.json")))
  # During (or just after) the final assembly: metrics.npz appears.
  _kill_when(_resume(driver, run_dir), lambda: os.path.exists(os.path.join(run_dir, "metrics.npz")))
  _resume_to_the_end(driver, run_dir, want)


@pytest.mark.slow
def test_concurrent_resume_refused_with_the_holders_pid(tmp_path):
  # Long enough to still be running when the second resume is refused (killed at the end, so the length costs
  # nothing): 60 epochs ended first on a warm compilation cache.
  driver = _driver(tmp_path, epochs=2000)
  run_dir = str(tmp_path / "out" / "_kr")
  live = _new(driver, str(tmp_path / "out"))
  try:
    t0 = time.time()
    while not os.path.exists(os.path.join(run_dir, "config.json")):
      assert live.poll() is None and time.time() - t0 < 120
      time.sleep(0.01)
    second = _resume(driver, run_dir)
    out, err = second.communicate(timeout=180)
    assert live.poll() is None, "the live run ended before the second resume was refused: lengthen it"
    assert second.returncode == 2, (second.returncode, err)
    assert f"pid {live.pid}" in err, err
  finally:
    live.send_signal(signal.SIGKILL)
    live.communicate()

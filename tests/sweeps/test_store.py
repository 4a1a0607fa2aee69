"""The results store keeps a run directory intact: checksummed chunks, a writer lock, unique temporary names,
and damaged files detected (never trusted)."""
import json
import multiprocessing
import os
import subprocess
import sys

import numpy as np
import pytest

from jscale.sweeps import files, store
from jscale.train import Metrics


def _metrics(n=3, e=2, l=2, value=0.5):
  fields = {name: np.full((n, e), value, np.float32) for name in Metrics._fields}
  fields["diverged"] = np.zeros((n, e), bool)
  fields["g_ratio"] = np.full((n, e, l), value, np.float32)
  return Metrics(**fields)


def _write(run_dir, cid=0):
  os.makedirs(os.path.join(run_dir, store.CHUNK_DIR), exist_ok=True)
  store.write_chunk(run_dir, cid, [0, 1, 2], _metrics(), seconds=1.0)
  return store.chunk_path(run_dir, cid)


@pytest.mark.parametrize("damage", ["truncate", "empty", "flip", "no_checksum"])
def test_damaged_chunk_is_not_trusted(tmp_path, damage):
  path = _write(str(tmp_path))
  assert store.chunk_state(str(tmp_path), 0) == "done"
  data = open(path, "rb").read()
  if damage == "truncate":
    open(path, "wb").write(data[: len(data) // 2])
  elif damage == "empty":
    open(path, "wb").write(b"")
  elif damage == "flip":
    i = len(data) // 2
    open(path, "wb").write(data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1:])
  else:
    os.remove(path + ".sha256")
  assert store.chunk_state(str(tmp_path), 0) == "damaged"
  assert not store.chunk_done(str(tmp_path), 0)
  assert store.damaged_chunks(str(tmp_path), 2) == [0]    # chunk 1 is missing, not damaged


def test_no_temporary_files_left_and_names_are_unique(tmp_path):
  _write(str(tmp_path))
  store.write_json(str(tmp_path / "x.json"), {"a": 1})
  leftovers = [f for f in os.listdir(tmp_path / store.CHUNK_DIR) + os.listdir(tmp_path) if "tmp" in f]
  assert leftovers == []
  assert files.temp_name("p") != files.temp_name("p")


def test_custom_results_checksum(tmp_path):
  d = str(tmp_path / "e")
  store.write_results(d, axes={"a": [1, 2]}, metrics={"m": (("a",), np.array([1.0, 2.0]))})
  np.testing.assert_array_equal(store.load(d).metric("m"), [1.0, 2.0])
  npz = os.path.join(d, store.METRICS_NPZ)
  data = open(npz, "rb").read()
  open(npz, "wb").write(data[:-10])
  with pytest.raises(ValueError, match="damaged"):
    store.load(d)


def test_corrupt_config_json_is_a_clear_error(tmp_path):
  d = tmp_path / "e"
  d.mkdir()
  (d / store.CONFIG_JSON).write_text('{"axes": {')
  with pytest.raises(ValueError, match="not valid JSON"):
    store.load(str(d))


def _hold_lock(run_dir, ready, release):
  with store.writer_lock(run_dir):
    ready.set()
    release.wait(30)


# Slow: tests/sweeps/test_resume_main_job.py::test_second_live_writer_refused_on_run_and_resume holds the same
# `store.writer_lock` in a spawned process and checks the refusal naming its pid (through a resume and a custom
# experiment, which take this lock), the lock free again after the release and its file gone.
@pytest.mark.slow
def test_second_live_writer_refused_with_the_holders_pid(tmp_path):
  ctx = multiprocessing.get_context("spawn")
  ready, release = ctx.Event(), ctx.Event()
  p = ctx.Process(target=_hold_lock, args=(str(tmp_path), ready, release))
  p.start()
  try:
    assert ready.wait(60)
    with pytest.raises(ValueError, match=f"pid {p.pid}"):
      with store.writer_lock(str(tmp_path)):
        pass
  finally:
    release.set()
    p.join(30)
  with store.writer_lock(str(tmp_path)):   # released: free again
    pass
  assert not os.path.exists(tmp_path / store.LOCK)


def test_stale_lock_of_a_killed_writer_is_taken_over(tmp_path):
  proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
  (tmp_path / store.LOCK).write_text(json.dumps({"pid": proc.pid, "host": os.uname().nodename}))
  proc.kill()
  proc.wait()
  with store.writer_lock(str(tmp_path)):
    assert json.loads((tmp_path / store.LOCK).read_text())["pid"] == os.getpid()


def _named_by(pid, path, suffix=".tmp"):
  """The temporary name writer `pid` (on this host) gives `path`, as `files.temp_name` makes it."""
  name = files.temp_name(path, suffix)
  return path + name[len(path):].replace(f".{os.getpid()}-", f".{pid}-", 1)


def test_taking_the_lock_removes_only_dead_writers_temporary_files(tmp_path):
  """kill -9 mid-write leaves `config.json.<pid>-<hex>-<host>.tmp` and the like; the next writer to take the
  lock removes them, but never a live writer's (a live process's, this one's) nor another host's."""
  run_dir = str(tmp_path)
  os.makedirs(tmp_path / store.CHUNK_DIR)
  dead = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
  dead.kill()
  dead.wait()
  live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
  try:
    cfg, chunk = os.path.join(run_dir, store.CONFIG_JSON), store.chunk_path(run_dir, 0)
    stale = [_named_by(dead.pid, cfg), _named_by(dead.pid, chunk, ".tmp.npz"),
             _named_by(dead.pid, chunk + ".sha256"), _named_by(dead.pid, os.path.join(run_dir, store.METRICS_NPZ),
                                                               ".tmp.npz")]
    other_tag = "0" * 8 if files.HOST_TAG != "0" * 8 else "1" * 8
    keep = [_named_by(live.pid, cfg), _named_by(os.getpid(), cfg), _named_by(dead.pid, chunk).replace(
        files.HOST_TAG, other_tag), os.path.join(run_dir, "notes.tmp"), cfg]
    for p in stale + keep:
      open(p, "w").close()
    with store.writer_lock(run_dir):
      assert [p for p in stale if os.path.exists(p)] == []
      assert [p for p in keep if not os.path.exists(p)] == []
  finally:
    live.kill()
    live.wait()


def test_a_report_writer_killed_mid_write_leaves_the_old_report_and_no_temp_after_the_next_lock(tmp_path):
  """report.md goes through store.write_text: a writer dying between writing and renaming leaves the old
  report intact and a temp file named after it, which the next writer lock on the run directory removes."""
  report = tmp_path / "report.md"
  report.write_text("old report\n")
  code = ("import os, sys; from jscale.sweeps import store; "
          "os.replace = lambda *a: os._exit(9); store.write_text(sys.argv[1], 'half of a new one')")
  out = subprocess.run([sys.executable, "-c", code, str(report)], capture_output=True, text=True)
  assert out.returncode == 9, out.stderr
  assert report.read_text() == "old report\n"
  assert [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]   # the dead writer's temp is there...
  with store.writer_lock(str(tmp_path)):
    assert [f for f in os.listdir(tmp_path) if f.endswith(".tmp")] == []   # ...until the next lock

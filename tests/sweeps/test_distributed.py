"""The multi-process path (`jax.distributed`, one mesh over every process's devices, process 0 writes):
`scripts/sweep.py --num-processes 2 --process-id I --coordinator 127.0.0.1:PORT` started twice on this
machine gives the numbers of one process."""
import os
import socket
import subprocess
import sys

import chex
import jax
import numpy as np
import pytest

from jscale import sweeps
from jscale.sweeps import store

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, TESTS)
import sweep_driver  # noqa: E402

sweep_driver._register()


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_equal_one(tmp_path):
  out = str(tmp_path / "out")
  port = _free_port()
  cmd = [sys.executable, os.path.join(TESTS, "sweep_driver.py"), "--experiment", "_tiny_a,_tiny_custom", "--out", out,
         "--no-progress", "--devices", "1", "--num-processes", "2", "--coordinator", f"127.0.0.1:{port}"]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  procs = [subprocess.Popen(cmd + ["--process-id", str(i)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True) for i in range(2)]
  try:
    logs = [p.communicate(timeout=400)[0] for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  if any("gloo" in log.lower() and "not" in log.lower() and "available" in log.lower() for log in logs):
    pytest.skip(f"jax.distributed CPU collectives unavailable in this jax: {logs[0][-500:]}")
  assert [p.returncode for p in procs] == [0, 0], "\n=====\n".join(log[-3000:] for log in logs)
  res = sweeps.load(os.path.join(out, "_tiny_a"))
  assert res.config["process_count"] == 2 and len(res.config["devices"]) == 2   # one mesh over both processes
  one = sweeps.run(sweeps.make_plan("_tiny_a", "quick"), str(tmp_path / "one"), progress=False)
  chex.assert_trees_all_equal(res.metrics, one.metrics)
  np.testing.assert_array_equal(sweeps.load(os.path.join(out, "_tiny_custom")).metric("square"), [0, 1, 4])
  assert "devices: " in logs[0] and "devices: " not in logs[1]   # process 0 speaks and writes
  assert [i["process_count"] for i in store.run_info(out)] == [2]


FLAG_CASES = ((["--num-processes", "2"], "together"),
              (["--num-processes", "2", "--process-id", "2", "--coordinator", "h:1"], "process-id must be"),
              (["--num-processes", "2", "--process-id", "0", "--coordinator", "nohostport"], "HOST:PORT"),
              (["--num-processes", "0", "--process-id", "0"], "takes no"))


def test_distributed_flags_are_checked_before_jax_starts():
  # One real process: the check comes before jax.distributed (which would wait for the coordinator); the other
  # cases run the same check in-process (below), not three more interpreters' imports (~1.7 CPU s each).
  script = os.path.join(TESTS, "..", "scripts", "sweep.py")
  flags, says = FLAG_CASES[0]
  out = subprocess.run([sys.executable, script, *flags, "--out", "/nonexistent/x"], capture_output=True, text=True,
                       timeout=120)
  assert out.returncode == 2 and out.stderr.startswith("error: ") and says in out.stderr, (flags, out.stderr)
  assert "Traceback" not in out.stderr


@pytest.mark.parametrize("flags,says", FLAG_CASES, ids=[s for _, s in FLAG_CASES])
def test_distributed_flags_refused_in_process(flags, says, capsys, monkeypatch):
  from jscale import cli
  from jscale.cli import sweep as sweep_cli
  jax.devices()   # backends up: a flag check moved after jax.distributed.initialize would raise a RuntimeError here
  monkeypatch.delenv("JSCALE_TRACEBACK", raising=False)
  capsys.readouterr()
  with pytest.raises(SystemExit) as e:
    cli.run(lambda: sweep_cli.main([*flags, "--out", "/nonexistent/x"]))
  err = capsys.readouterr().err
  assert e.value.code == 2 and err.startswith("error: ") and says in err, (flags, err)
  assert "Traceback" not in err

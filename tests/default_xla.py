"""Run one test under XLA's default CPU compile options, in a child process.

conftest.py compiles the suite's programs cheaply (no LLVM passes, the older fusion emitters). That changes
how fast they run, not what they compute, except in the last bit where two programs compile the same arithmetic
differently: a test whose claim is bit-for-bit equality between two programs as users run them (e.g. an init
drawn in one program equals the same keys drawn in another) checks it under XLA's defaults here. XLA reads its
flags once per process, hence the child.
"""
import functools
import os
import subprocess
import sys


def in_default_xla(test):
  """Decorate a plain pytest function: the body runs in a child pytest with JSCALE_TEST_XLA_OPT=1 and the user's
  own XLA_FLAGS; its failure (output included) is this test's failure."""
  @functools.wraps(test)
  def run(*args, **kwargs):
    if os.environ.get("JSCALE_TEST_XLA_OPT"):
      return test(*args, **kwargs)
    node = os.environ["PYTEST_CURRENT_TEST"].rsplit(" ", 1)[0]
    env = dict(os.environ, JSCALE_TEST_XLA_OPT="1", XLA_FLAGS=os.environ.get("JSCALE_TEST_USER_XLA_FLAGS", ""))
    env.pop("PYTEST_XDIST_WORKER", None)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # node ids are relative to it
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", node],
                       env=env, cwd=root, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{node} under XLA's default options:\n{r.stdout[-6000:]}\n{r.stderr[-3000:]}"
  return run

"""Test-session setup that must run before jax is imported.

A persistent XLA compilation cache shared by the pytest workers and by the scripts the tests start as
subprocesses: many tests compile the same programs (the sigma quick grid in half a dozen script runs, the
same Hessian programs on both xdist workers), and on the 2-core CI machine compiling is most of the suite's
time. The cache changes no number: a hit returns the executable XLA would have built. A user's own
JAX_COMPILATION_CACHE_DIR wins; JSCALE_TEST_NO_CACHE=1 turns it off.
"""
import getpass
import os
import tempfile

if not os.environ.get("JSCALE_TEST_NO_CACHE"):
  os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                        os.path.join(tempfile.gettempdir(), f"jscale-test-xla-cache-{getpass.getuser()}"))
  # JAX caches only programs that took >= 1 s to compile by default; most test programs take less.
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.1")
  # No size limit: JAX's eviction needs the `filelock` package, and without it JAX turns the cache off.

"""Test-session setup that must run before jax is imported.

A persistent XLA compilation cache shared by the pytest workers and by the scripts the tests start as
subprocesses: many tests compile the same programs (the sigma quick grid in half a dozen script runs, the
same Hessian programs on both xdist workers), and on the 2-core CI machine compiling is most of the suite's
time. The cache changes no number: a hit returns the executable XLA would have built. A user's own
JAX_COMPILATION_CACHE_DIR wins; JSCALE_TEST_NO_CACHE=1 turns it off.

For the same reason XLA:CPU compiles the tests' programs without its LLVM optimisation passes and with its
older elemental fusion emitters instead of the MLIR fusion emitters: the test programs are small and run
briefly, so optimising them costs more than it saves (the passes: tests/test_train.py 113 s -> 59 s; the
emitters, on top: tests/test_train_metrics.py, test_attention_model.py and test_lenet_make_train.py 60-75 ->
34-39 CPU s; the whole suite, fresh cache, 704 -> 499 CPU s). Neither is fast-math; both change how the code runs, and
can move a last bit between two programs that compile the same arithmetic differently: the few tests that
check such bits against XLA's defaults run in a child process with them (`default_xla.py`).
JSCALE_TEST_XLA_OPT=1 keeps XLA's default options throughout, e.g. to check a failure does not depend on them.
"""
import getpass
import os
import tempfile

if not os.environ.get("JSCALE_TEST_NO_CACHE"):
  os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                        os.path.join(tempfile.gettempdir(), f"jscale-test-xla-cache-{getpass.getuser()}"))
  # JAX caches only programs that took >= 1 s to compile by default; most test programs take less. Every
  # program, however small: the eager ops (inspect's rules run op by op, each compiled for ~20 ms) recur across
  # the workers and the scripts the tests start (the README's blocks, second run on a cache kept at 0: 24.4 s ->
  # 9.9 s; the first run costs the same as at 0.1). Default suite on 2 cores, fresh cache: 299 -> 292 s wall,
  # 556 -> 547 CPU s; the cache grows 20 -> 37 MB.
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  # No size limit: JAX's eviction needs the `filelock` package, and without it JAX turns the cache off.

# What the user's own XLA_FLAGS were, for the tests that must run under XLA's defaults (default_xla.py).
os.environ.setdefault("JSCALE_TEST_USER_XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))
if not os.environ.get("JSCALE_TEST_XLA_OPT"):
  flags = os.environ.get("XLA_FLAGS", "")
  if "xla_backend_optimization_level" not in flags:
    flags += " --xla_backend_optimization_level=0"
  if "xla_cpu_use_fusion_emitters" not in flags:
    flags += " --xla_cpu_use_fusion_emitters=false"
  os.environ["XLA_FLAGS"] = flags.strip()

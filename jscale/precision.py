"""The precision policy: jscale's computations run float32 matmuls at `highest` precision unless asked otherwise.

JAX's default float32 matmul precision on NVIDIA GPUs is TF32 (about 10 mantissa bits), and on TPUs bfloat16
passes; on CPUs it is full float32. Left alone, the same sweep then gives numbers that differ between a laptop and
a GPU by ~1e-3 relative, silently. jscale's own entry points therefore run under the policy "highest":
`jscale.sweeps.run` / `resume` under the plan's `precision`, scoped with JAX's own context manager
(`jax.default_matmul_precision`), and the command lines (`scripts/*.py`, the `jscale` console command), which own
their process, program-wide (`apply_default`). Importing jscale changes nothing in the importing program. "default"
hands the choice back to JAX (faster on accelerators).

On a CPU-only install the policy "highest" sets nothing: JAX's CPU default is already full float32, and forcing
"highest" there sends matmuls down a slower path (measured: the 2048 x 2048 float32 matmul peak fell from 163 to
63 GFLOP/s on the 2-core CI machine, and the 784-300-100-10 engine ran 2.1x slower). A precision the user set
(`JAX_DEFAULT_MATMUL_PRECISION=...`, `jax.config.update`, an enclosing `jax.default_matmul_precision`) is left as
it is.

In your own code (a notebook calling `calculus.inspect` or `make_train` on a GPU), choose it yourself:

  with jscale.precision.scoped("highest"):      # this block only
    ...
  jscale.precision.set_precision("highest")    # the whole program, from now on
  jscale.precision.get_precision()             # "highest" | "default" | what the user set
"""
from __future__ import annotations

import contextlib
import importlib.util
import threading

import jax

POLICIES = ("highest", "default")
# Modules that accelerator builds of JAX install: jax[cuda*] / jax[rocm] register PJRT plugins under the
# jax_plugins namespace, jax[tpu] installs libtpu. Without any of them JAX can only run on the CPU.
_ACCELERATOR_MODULES = ("jax_plugins", "libtpu", "jax_cuda12_plugin", "jax_cuda13_plugin")
_state = threading.local()   # the policy in force in this thread (scoped() nests)


def accelerator_installed() -> bool:
  return any(importlib.util.find_spec(m) is not None for m in _ACCELERATOR_MODULES)


def _check(policy: str) -> str:
  if policy not in POLICIES:
    raise ValueError(f"precision must be one of {', '.join(POLICIES)}, got {policy!r}")
  return policy


def _jax_value(policy: str, force: bool):
  """What JAX's `jax_default_matmul_precision` holds under `policy`: "highest" where an accelerator may run
  (or with `force`); None (JAX's default) otherwise, which on a CPU-only install is already full float32."""
  return "highest" if policy == "highest" and (force or accelerator_installed()) else None


@contextlib.contextmanager
def scoped(policy: str = "highest", *, force: bool = False):
  """Run the block under `policy` (thread-local, restored on exit). A precision the user set is kept."""
  _check(policy)
  before = getattr(_state, "policy", None)
  _state.policy = policy
  try:
    if jax.config.jax_default_matmul_precision is not None and before is None:
      yield policy   # the user's own choice, set before jscale was asked: it wins
    else:
      with jax.default_matmul_precision(_jax_value(policy, force)):
        yield policy
  finally:
    _state.policy = before


def set_precision(policy: str = "highest", *, force: bool = False) -> str:
  """Set the float32 matmul policy for everything JAX compiles from now on, program-wide (an explicit choice:
  jscale never calls this on import). "highest" sets JAX's precision to "highest" where an accelerator may run
  (or with `force`); on a CPU-only install JAX's default is already full float32 and is kept."""
  _check(policy)
  jax.config.update("jax_default_matmul_precision", _jax_value(policy, force))
  _state.global_policy = policy
  return policy


def get_precision() -> str:
  """The policy in force: "highest" (float32 matmuls at full float32 on every backend), "default" (JAX's own
  choice per backend), or the value a user set directly."""
  value = jax.config.jax_default_matmul_precision
  if value in ("highest", "float32", "HIGHEST"):
    return "highest"
  if value is not None:
    return str(value)
  # None is JAX's own default: full float32 on a CPU-only install, TF32 / bfloat16 passes on accelerators.
  fallback = "default" if accelerator_installed() else "highest"
  return getattr(_state, "policy", None) or getattr(_state, "global_policy", None) or fallback


def apply_default() -> None:
  """What jscale's command lines do first (`jscale.cli.run`): "highest" for the whole program, unless the user
  already chose a precision. Program-wide rather than scoped because the scripts' work runs in threads too
  (JAX's context managers are thread-local)."""
  if jax.config.jax_default_matmul_precision is None:
    set_precision("highest")

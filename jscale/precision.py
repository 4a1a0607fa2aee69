"""The precision policy: float32 matmuls run at `highest` precision unless asked otherwise.

JAX's default float32 matmul precision on NVIDIA GPUs is TF32 (about 10 mantissa bits), and on TPUs
bfloat16 passes; on CPUs it is full float32. Left alone, the same sweep then gives numbers that differ
between a laptop and a GPU by ~1e-3 relative, silently. jscale therefore sets JAX's
`jax_default_matmul_precision` to "highest" when it is imported on a machine with an accelerator plugin
(CUDA, ROCm or TPU), so CPU, GPU and TPU agree to float32 rounding; "default" hands the choice back to
JAX (faster on accelerators). On a CPU-only install the policy "highest" sets nothing: JAX's CPU default is
already full float32, and forcing "highest" there sends matmuls down a slower path (measured: the
2048 x 2048 float32 matmul peak fell from 163 to 63 GFLOP/s on the 2-core CI machine, and the
784-300-100-10 engine ran 2.1x slower). A precision the user set before importing jscale
(`JAX_DEFAULT_MATMUL_PRECISION=...` or `jax.config.update`) is left as it is.

  jscale.precision.set_precision("default")    # or scripts/sweep.py --precision default
  jscale.precision.get_precision()             # "highest" | "default"
"""
from __future__ import annotations

import importlib.util

import jax

POLICIES = ("highest", "default")
# Modules that accelerator builds of JAX install: jax[cuda*] / jax[rocm] register PJRT plugins under the
# jax_plugins namespace, jax[tpu] installs libtpu. Without any of them JAX can only run on the CPU.
_ACCELERATOR_MODULES = ("jax_plugins", "libtpu", "jax_cuda12_plugin", "jax_cuda13_plugin")
_policy = "default"


def accelerator_installed() -> bool:
  return any(importlib.util.find_spec(m) is not None for m in _ACCELERATOR_MODULES)


def set_precision(policy: str = "highest", *, force: bool = False) -> str:
  """Set the float32 matmul policy for everything jscale (and JAX) compiles from now on. "highest" sets
  JAX's precision to "highest" where an accelerator may run (or with `force`); on a CPU-only install JAX's
  default is already full float32 and is kept (the forced setting is slower there)."""
  global _policy
  if policy not in POLICIES:
    raise ValueError(f"precision must be one of {', '.join(POLICIES)}, got {policy!r}")
  strict = policy == "highest" and (force or accelerator_installed())
  jax.config.update("jax_default_matmul_precision", "highest" if strict else None)
  _policy = policy
  return policy


def get_precision() -> str:
  """The policy in force: "highest" (float32 matmuls at full float32 on every backend), or "default"
  (JAX's own choice per backend), or the value a user set directly."""
  value = jax.config.jax_default_matmul_precision
  if value in ("highest", "float32", "HIGHEST"):
    return "highest"
  return _policy if value is None else str(value)


def apply_default() -> None:
  """At import: "highest", unless the user already chose a precision."""
  if jax.config.jax_default_matmul_precision is None:
    set_precision("highest")

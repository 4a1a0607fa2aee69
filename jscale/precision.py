"""The precision policy: float32 matmuls run at `highest` precision unless asked otherwise.

JAX's default float32 matmul precision on NVIDIA GPUs is TF32 (about 10 mantissa bits), and on TPUs
bfloat16 passes; on CPUs it is full float32. Left alone, the same sweep then gives numbers that differ
between a laptop and a GPU by ~1e-3 relative, silently. jscale therefore sets JAX's
`jax_default_matmul_precision` to "highest" when it is imported, so CPU, GPU and TPU agree to float32
rounding; "default" hands the choice back to JAX (faster on accelerators). A precision the user set
before importing jscale (`JAX_DEFAULT_MATMUL_PRECISION=...` or `jax.config.update`) is left as it is.

  jscale.precision.set_precision("default")    # or scripts/sweep.py --precision default
  jscale.precision.get_precision()             # "highest" | "default"
"""
from __future__ import annotations

import jax

POLICIES = ("highest", "default")


def set_precision(policy: str = "highest") -> str:
  """Set the float32 matmul precision for everything jscale (and JAX) compiles from now on."""
  if policy not in POLICIES:
    raise ValueError(f"precision must be one of {', '.join(POLICIES)}, got {policy!r}")
  jax.config.update("jax_default_matmul_precision", "highest" if policy == "highest" else None)
  return policy


def get_precision() -> str:
  """The policy in force: "highest", or "default" (JAX's own choice per backend)."""
  value = jax.config.jax_default_matmul_precision
  return "highest" if value in ("highest", "float32", "HIGHEST") else "default" if value is None else str(value)


def apply_default() -> None:
  """At import: "highest", unless the user already chose a precision."""
  if jax.config.jax_default_matmul_precision is None:
    set_precision("highest")

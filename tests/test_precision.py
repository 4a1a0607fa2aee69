"""The precision policy: "highest" after `import jscale`, switchable, respecting a user's own choice."""
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jscale import precision


def _in_fresh_python(code: str, **env) -> str:
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "JAX_PLATFORMS": "cpu", **env})
  assert out.returncode == 0, out.stderr
  return out.stdout.strip()


def test_import_sets_highest():
  code = ("import jax, jscale; from jscale import precision; "
          "print(precision.get_precision(), jax.config.jax_default_matmul_precision, precision.accelerator_installed())")
  policy, value, accel = _in_fresh_python(code).split()
  assert policy == "highest"
  # With an accelerator build JAX's precision is forced to highest; CPU-only keeps JAX's (full float32) default.
  assert value == ("highest" if accel == "True" else "None")


def test_force_sets_jax_precision_even_on_cpu():
  try:
    precision.set_precision("highest", force=True)
    assert jax.config.jax_default_matmul_precision == "highest"
    assert precision.get_precision() == "highest"
  finally:
    precision.set_precision("highest")


def test_a_users_own_choice_is_kept():
  code = "import jax, jscale; print(jax.config.jax_default_matmul_precision)"
  assert _in_fresh_python(code, JAX_DEFAULT_MATMUL_PRECISION="bfloat16") == "bfloat16"


def test_switch_and_back():
  try:
    assert precision.set_precision("default") == "default"
    assert precision.get_precision() == "default"
    assert jax.config.jax_default_matmul_precision is None
  finally:
    precision.set_precision("highest")
  assert precision.get_precision() == "highest"


def test_bad_policy():
  with pytest.raises(ValueError, match="highest, default"):
    precision.set_precision("tf32")


def test_highest_matches_float64_reference():
  # Under "highest" a float32 matmul is a float32 matmul on every backend: against a float64 reference the
  # error is float32 rounding, ~sqrt(K) * 2^-24 relative for K = 512 terms (bound 1e-5); TF32 would be
  # ~1e-3. On this CPU both policies pass; on a GPU only "highest" does.
  rng = np.random.default_rng(0)
  a, b = rng.normal(size=(64, 512)), rng.normal(size=(512, 64))
  got = np.asarray(jnp.asarray(a, jnp.float32) @ jnp.asarray(b, jnp.float32), np.float64)
  ref = a.astype(np.float32).astype(np.float64) @ b.astype(np.float32).astype(np.float64)
  np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5 * np.abs(ref).max())

"""The precision policy: importing jscale changes nothing; jscale's entry points run at "highest" (scoped, or
program-wide for the command lines); a user's own choice is kept.

A CPU-only install cannot tell "highest" applied from "nothing applied" (JAX's CPU default is full float32 and the
policy deliberately sets nothing there), so the checks that matter run with a stand-in accelerator install: a
`jax_plugins` namespace package on the path, which is what `precision.accelerator_installed` looks for (an empty
one: JAX finds no plugin in it and stays on the CPU).
"""
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jscale import precision


@pytest.fixture(scope="module")
def accelerator_standin(tmp_path_factory):
  root = tmp_path_factory.mktemp("standin")
  os.makedirs(root / "jax_plugins")
  (root / "jax_plugins" / "__init__.py").write_text("")
  return str(root)


def _in_fresh_python(code: str, path: str | None = None, **env) -> str:
  env = {**os.environ, "JAX_PLATFORMS": "cpu", **env}
  if path:
    env["PYTHONPATH"] = os.pathsep.join([path] + [p for p in [env.get("PYTHONPATH")] if p])
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
  assert out.returncode == 0, out.stderr
  return out.stdout.strip()


IMPORT_CHECK = ("import jax; before = dict(jax.config.values); import jscale, jscale.cli.sweep; "
                "from jscale import precision; changed = sorted(k for k, v in jax.config.values.items() "
                "if before.get(k, object()) != v); "
                "print(precision.accelerator_installed(), jax.config.jax_default_matmul_precision, changed)\n")
SCOPED_CHECK = ("from jscale import precision as p\n"
                "with p.scoped('highest'):\n"
                "  inner = (jax.config.jax_default_matmul_precision, p.get_precision())\n"
                "  with p.scoped('default'):\n"
                "    nested = (jax.config.jax_default_matmul_precision, p.get_precision())\n"
                "print(inner, nested, jax.config.jax_default_matmul_precision, p.get_precision())")


@pytest.fixture(scope="module")
def standin_lines(accelerator_standin):
  """The import check, then the scoped one, in one fresh interpreter with the stand-in (the import check runs
  first, so it still sees a fresh import; one interpreter's imports, ~2 CPU s, instead of two)."""
  return _in_fresh_python(IMPORT_CHECK + SCOPED_CHECK, accelerator_standin).splitlines()


def test_import_leaves_jax_config_unchanged(standin_lines):
  accel, value, changed = standin_lines[0].split(" ", 2)
  assert accel == "True"          # the stand-in is seen: the old import-time policy would have set "highest"
  assert value == "None" and changed == "[]"


def test_command_lines_apply_highest(accelerator_standin):
  code = ("import jax, sys; from jscale import cli; "
          "cli.run(lambda: print(jax.config.jax_default_matmul_precision))")
  assert _in_fresh_python(code, accelerator_standin) == "highest"
  # A user's own choice is kept by the command lines too.
  assert _in_fresh_python(code, accelerator_standin, JAX_DEFAULT_MATMUL_PRECISION="bfloat16") == "bfloat16"


def test_scoped_policy_is_restored(standin_lines):
  assert standin_lines[1] == "('highest', 'highest') (None, 'default') None default"


def test_a_users_own_choice_is_kept_by_scoped():
  # In-process: the user's choice is JAX's config value (JAX_DEFAULT_MATMUL_PRECISION sets the same at import,
  # test_command_lines_apply_highest starts a process with it); scoped reads only the value.
  try:
    jax.config.update("jax_default_matmul_precision", "bfloat16")
    with precision.scoped("highest", force=True):
      assert jax.config.jax_default_matmul_precision == "bfloat16"
    assert jax.config.jax_default_matmul_precision == "bfloat16"
  finally:
    jax.config.update("jax_default_matmul_precision", None)


def test_switch_and_back():
  try:
    assert precision.set_precision("highest", force=True) == "highest"
    assert jax.config.jax_default_matmul_precision == "highest"
    assert precision.set_precision("default") == "default"
    assert precision.get_precision() == "default"
    assert jax.config.jax_default_matmul_precision is None
  finally:
    jax.config.update("jax_default_matmul_precision", None)


def test_bad_policy():
  with pytest.raises(ValueError, match="highest, default"):
    precision.set_precision("tf32")
  with pytest.raises(ValueError, match="highest, default"):
    with precision.scoped("tf32"):
      pass


def test_forced_highest_matches_float64_reference():
  # Under "highest" a float32 matmul is a float32 matmul on every backend: against a float64 reference the
  # error is float32 rounding, ~sqrt(K) * 2^-24 relative for K = 512 terms (bound 1e-5); TF32 would be ~1e-3.
  # Forced, so that the policy is really in force here (on a CPU-only install "highest" otherwise sets nothing).
  rng = np.random.default_rng(0)
  a, b = rng.normal(size=(64, 512)), rng.normal(size=(512, 64))
  with precision.scoped("highest", force=True):
    assert jax.config.jax_default_matmul_precision == "highest"
    got = np.asarray(jax.jit(jnp.matmul)(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)), np.float64)
  ref = a.astype(np.float32).astype(np.float64) @ b.astype(np.float32).astype(np.float64)
  np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5 * np.abs(ref).max())

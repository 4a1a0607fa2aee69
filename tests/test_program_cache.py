"""jscale.program_cache: one compiled program per computation, never one shared by two computations
(compile counts from JAX's own compilation events, results against plain jax.jit)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jscale import calculus, program_cache
from jscale.sweeps.compile_clock import CompileClock


def _closure(c):
  """A fresh closure on every call, as `inspect` builds its measuring pass."""
  return lambda x: jnp.tanh(x * c) @ jnp.ones((x.shape[-1], 3))


@pytest.fixture(autouse=True)
def _empty_cache():
  program_cache.clear()
  yield
  program_cache.clear()


def test_same_computation_compiles_once():
  x = jnp.arange(12.0).reshape(4, 3) / 7
  x1 = x + 1
  with CompileClock() as first:
    a = program_cache.jit(_closure(2.0))(x)
  with CompileClock() as second:
    b = program_cache.jit(_closure(2.0))(x1)      # new closure, new values, same computation
  assert first.totals["programs"] == 1 and second.totals["programs"] == 0
  np.testing.assert_array_equal(np.asarray(a), np.asarray(jax.jit(_closure(2.0))(x)))
  np.testing.assert_array_equal(np.asarray(b), np.asarray(jax.jit(_closure(2.0))(x1)))


def test_different_constant_or_shape_compiles_its_own():
  x = jnp.arange(12.0).reshape(4, 3) / 7
  x2 = x[:2]
  a = program_cache.jit(_closure(2.0))(x)
  with CompileClock() as clock:
    b = program_cache.jit(_closure(3.0))(x)             # another closed-over constant
    c = program_cache.jit(_closure(2.0))(x2)            # another shape
  assert clock.totals["programs"] == 2
  np.testing.assert_array_equal(np.asarray(b), np.asarray(jax.jit(_closure(3.0))(x)))
  np.testing.assert_array_equal(np.asarray(c), np.asarray(jax.jit(_closure(2.0))(x2)))
  assert not np.allclose(np.asarray(a), np.asarray(b))


def test_keeps_at_most_max_programs(monkeypatch):
  monkeypatch.setattr(program_cache, "MAX_PROGRAMS", 2)
  x = jnp.ones((2, 3))
  for c in (1.0, 2.0, 3.0):
    program_cache.jit(_closure(c))(x)
  assert len(program_cache._programs) == 2
  with CompileClock() as clock:                         # the oldest (c = 1) was dropped, the newest kept
    program_cache.jit(_closure(3.0))(x)
    program_cache.jit(_closure(1.0))(x)
  assert clock.totals["programs"] == 1


def test_inspect_reuses_its_programs_for_the_same_network():
  """Two draws of one MLP: the second inspect compiles no program at all, and its numbers are those of an
  inspect with an empty cache (bitwise: the same programs)."""
  init = lambda k: [jax.random.normal(k1, s) / np.sqrt(s[0])                   # noqa: E731
                    for k1, s in zip(jax.random.split(k, 2), [(3, 8), (8, 2)])]
  apply = lambda p, x: jax.nn.relu(x @ p[0]) @ p[1]                            # noqa: E731
  x = jax.random.normal(jax.random.key(0), (8, 3))
  p0, p1 = init(jax.random.key(1)), init(jax.random.key(2))
  first = calculus.inspect(apply, p0, x)
  with CompileClock() as clock:
    warm = calculus.inspect(apply, p1, x)
  assert clock.totals["programs"] == 0
  program_cache.clear()
  cold = calculus.inspect(apply, p1, x)
  assert [r.G_meas for r in warm.layers] == [r.G_meas for r in cold.layers]
  assert [r.G_meas for r in warm.layers] != [r.G_meas for r in first.layers]

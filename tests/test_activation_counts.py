"""`jscale.train.activation_counts`: both activation counts from one packed float32 pass, exactly.

The counts are integers, so the check is equality with numpy's count (no tolerance): the packing is only
allowed where float32 holds every partial sum exactly, and a too-small code, a lost row or a wrong decode
changes a count by at least 1.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jscale.train import PACKED_ROWS, activation_counts

TAU = 1e-3


def reference(h, tau):
  h = np.asarray(h)
  return int(np.sum(np.abs(h) <= tau)), int(np.sum(h == 0))


def mixed(shape, seed):
  """Zeros, values inside +-tau (not zero), values outside, a NaN and infinities."""
  rng = np.random.default_rng(seed)
  h = rng.normal(size=shape).astype(np.float32)
  u = rng.random(shape)
  h[u < 0.3] = 0.0
  h[(u >= 0.3) & (u < 0.45)] = (rng.random(np.sum((u >= 0.3) & (u < 0.45))) - 0.5).astype(np.float32) * 1.9 * TAU
  flat = h.reshape(-1)
  flat[:3] = [np.nan, np.inf, -np.inf][:flat.size]
  return h


@pytest.mark.parametrize("shape", [(1, 1), (5, 3), (32, 300), (1400, 64), (PACKED_ROWS - 1, 2), (PACKED_ROWS, 2),
                                   (4, 6, 6, 8), (7,)])
def test_counts_equal_numpy(shape):
  h = mixed(shape, seed=sum(shape))
  got = jax.jit(lambda x: activation_counts(x, TAU))(h)
  assert tuple(int(v) for v in got) == reference(h, TAU)
  assert all(v.dtype == jnp.float32 for v in got)


def test_largest_packed_sums_are_exact():
  """All zeros at the packing's limit: every column sums to (PACKED_ROWS - 1) x (B + 1) = 2^24 - 1, the largest
  integer below which float32 holds every integer (so any summation order is exact)."""
  rows = PACKED_ROWS - 1
  assert rows * (2 ** rows.bit_length() + 1) < 2 ** 24 <= PACKED_ROWS * (2 ** PACKED_ROWS.bit_length() + 1)
  h = np.zeros((PACKED_ROWS - 1, 3), np.float32)
  assert tuple(int(v) for v in jax.jit(lambda x: activation_counts(x, TAU))(h)) == (h.size, h.size)


def test_tau_zero_and_negative_zero():
  h = np.array([[0.0, -0.0, 1e-30, -1e-30], [2.0, 0.0, -3.0, 0.0]], np.float32)
  assert tuple(int(v) for v in activation_counts(h, 0.0)) == (4, 4)
  assert tuple(int(v) for v in activation_counts(h, TAU)) == (6, 4)


def test_under_vmap_and_integer_fallback():
  hs = np.stack([mixed((64, 16), seed=s) for s in range(3)])
  got = jax.vmap(lambda x: activation_counts(x, TAU))(hs)
  assert [(int(a), int(b)) for a, b in zip(*got)] == [reference(h, TAU) for h in hs]
  integer = activation_counts(hs[0], TAU, exact_float=False)
  assert tuple(int(v) for v in integer) == reference(hs[0], TAU)

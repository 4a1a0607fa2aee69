"""Several kernels' normals drawn in one elementwise pass, bitwise `jax.random.normal(keys[l], shapes[l])`.

Why: a sweep draws every configuration's kernels at every training call, and on XLA:CPU the draw was up to a
third of a short run (784-300-100-10, 16 minibatch steps: 4.2 ms of ~15 ms per configuration). The earlier
single-program draw (`initializers.draw_scaled_normals`' vmapped flat draw) hashes max(sizes) counters for
every kernel, 2.7x the entries this network needs; drawing each kernel on its own costs a threefry program
compile per shape (1-2 s each on XLA:CPU). Here every kernel's counters are laid end to end and hashed once:
the entry count is exact and there is one program.

The numbers are JAX's own: with `jax_threefry_partitionable` (the default since JAX 0.5) entry i of
`normal(key, shape)` is the Threefry-2x32 hash of the counter pair (0, i) (its flat index) under `key`, its
two output words xor-ed, mapped to a float32 in [-1, 1) through the mantissa bits and then by sqrt(2) erfinv.
`concat_normals` computes exactly that per entry, with each entry's key selected by the kernel it belongs to.
The hash is written out (20 rounds, unrolled) rather than taken from JAX's primitive because XLA:CPU's lowering
of that primitive is a rolled loop which, with a key per entry, carries three key arrays through its five
iterations (2x slower than the unrolled hash here). `tests/test_concat_normals.py` checks it bitwise against
`jax.random.normal`; `usable` says when it applies (else callers draw as before).
"""
from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def usable(keys: Sequence[jax.Array], dtypes: Sequence) -> bool:
  """True when `concat_normals` gives `jax.random.normal`'s numbers: float32 kernels, Threefry keys (typed or
  raw uint32 pairs of the default implementation) and partitionable Threefry."""
  if not jax.config.jax_threefry_partitionable or any(jnp.dtype(d) != jnp.float32 for d in dtypes):
    return False
  for k in keys:
    if jnp.issubdtype(k.dtype, jax.dtypes.prng_key):
      if str(jax.random.key_impl(k)) != "threefry2x32":
        return False
    elif k.dtype != jnp.uint32 or k.shape != (2,) or jax.config.jax_default_prng_impl != "threefry2x32":
      return False
  return True


def _rotl(x, r: int):
  return (x << np.uint32(r)) | (x >> np.uint32(32 - r))


def threefry2x32(key1, key2, x1, x2):
  """The Threefry-2x32 block cipher (Salmon et al. 2011, 20 rounds) as JAX defines it, elementwise over
  uint32 arrays that broadcast together."""
  ks = (key1, key2, key1 ^ key2 ^ np.uint32(0x1BD11BDA))
  x = [x1 + ks[0], x2 + ks[1]]
  for j in range(5):
    for r in _ROTATIONS[j % 2]:
      x[0] = x[0] + x[1]
      x[1] = _rotl(x[1], r) ^ x[0]
    x[0] = x[0] + ks[(j + 1) % 3]
    x[1] = x[1] + ks[(j + 2) % 3] + np.uint32(j + 1)
  return x[0], x[1]


def bits_to_normal(bits):
  """uint32 bits -> float32 normals, as `jax.random.normal` maps them (uniform on [nextafter(-1, 0), 1) from the
  top 23 bits, then sqrt(2) erfinv)."""
  mantissa = jax.lax.shift_right_logical(bits, np.uint32(32 - 23)) | np.float32(1.0).view(np.uint32)
  floats = jax.lax.bitcast_convert_type(mantissa, jnp.float32) - np.float32(1.0)
  lo, hi = np.nextafter(np.float32(-1.0), np.float32(0.0), dtype=np.float32), np.float32(1.0)
  u = jax.lax.max(lo, floats * (hi - lo) + lo)
  return np.float32(np.sqrt(2)) * jax.lax.erf_inv(u)


def concat_normals(keys: Sequence[jax.Array], shapes: Sequence[tuple]) -> list:
  """[jax.random.normal(keys[l], shapes[l]) for each l] (float32), hashed in one pass over sum of the sizes.
  Only where `usable(keys, [float32] * len(keys))`."""
  sizes = [math.prod(s) for s in shapes]
  starts = np.cumsum([0] + sizes[:-1]).astype(np.uint32)
  data = [jax.random.key_data(k) if jnp.issubdtype(k.dtype, jax.dtypes.prng_key) else k for k in keys]
  i = jax.lax.iota(jnp.uint32, int(sum(sizes)))
  k1, k2, start = data[0][0], data[0][1], np.uint32(0)
  for l in range(1, len(shapes)):   # each entry's key and counter base: those of the kernel it falls in
    past = i >= starts[l]
    k1, k2, start = jnp.where(past, data[l][0], k1), jnp.where(past, data[l][1], k2), jnp.where(past, starts[l], start)
  b1, b2 = threefry2x32(k1, k2, jnp.zeros_like(i), i - start)
  z = bits_to_normal(b1 ^ b2)
  return [z[s:s + n].reshape(shape) for s, n, shape in zip(starts, sizes, shapes)]

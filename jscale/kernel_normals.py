"""Each kernel's normals from Threefry written out: bitwise `jax.random.normal(keys[l], shapes[l])`, one fused
pass per kernel.

Why: a sweep draws every configuration's kernels at every training call, and on XLA:CPU the draw is a large part
of a short run (784-300-100-10, 16 minibatch steps: 4.2 ms of ~15 ms per configuration with JAX's own draw, 1.8 ms
with every kernel's counters laid end to end and hashed once, issue 23 round 2). JAX's threefry primitive lowers on
XLA:CPU to a rolled loop (2x slower than the hash unrolled here) and costs a compile per shape. Laid end to end,
every entry picked its kernel's key with a `where` per kernel and the kernels were then sliced out of the flat
result; hashed kernel by kernel from its own counters (here), each kernel is one elementwise loop from its flat
index to its normals: 1.43 ms instead of 1.86 ms of CPU per configuration for the 266,200 entries of
784-300-100-10 (the draw alone, scaled, under `lax.map` as the CPU engine runs it; load 15), 1.02x the whole of
bench's 16-step run (14.4 vs 14.7 ms, same process, interleaved).

The numbers are JAX's own: with `jax_threefry_partitionable` (the default since JAX 0.5) entry i of
`normal(key, shape)` is the Threefry-2x32 hash of the counter pair (0, i) (its flat index) under `key`, its
two output words xor-ed, mapped to a float32 in [-1, 1) through the mantissa bits and then by sqrt(2) erfinv.
`kernel_normals` computes exactly that. The normals leave through an `optimization_barrier`: fused with the
caller's scaling (std, init_scale) XLA rounds some products 1 ulp differently from the same multiplications
done on stored normals, which training amplifies (moons, 20 Adam epochs: gradient norms 1e-3 apart); behind
the barrier every training metric is bitwise the earlier draw's. `tests/test_kernel_normals.py` checks the
draw bitwise against `jax.random.normal`; `usable` says when it applies (else callers draw as before).
"""
from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def usable(keys: Sequence[jax.Array], dtypes: Sequence) -> bool:
  """True when `kernel_normals` gives `jax.random.normal`'s numbers: float32 kernels, Threefry keys (typed or
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


def kernel_normals(keys: Sequence[jax.Array], shapes: Sequence[tuple]) -> list:
  """[jax.random.normal(keys[l], shapes[l]) for each l] (float32). Only where `usable(keys, [float32] * len(keys))`."""
  out = []
  for key, shape in zip(keys, shapes):
    k = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
    i = jax.lax.iota(jnp.uint32, math.prod(shape))
    b1, b2 = threefry2x32(k[0], k[1], jnp.zeros_like(i), i)
    out.append(bits_to_normal(b1 ^ b2).reshape(shape))
  return list(jax.lax.optimization_barrier(out))

"""PRNG keys: the one check every jscale entry point that takes a key runs before any compute.

Two kinds are valid, as in JAX: a typed key (`jax.random.key(seed)`, dtype `key<...>`, shape ()) and a legacy
raw key (`jax.random.PRNGKey(seed)`, uint32 of shape (2,); (4,) under the rbg implementations). Anything else
(an int seed, None, a float array, a batch of keys) is refused with a TypeError naming the parameter, instead
of JAX's "invalid PRNG key data" from deep inside a sampler. Works on tracers too (it reads only dtype and
shape), so it is safe under `jit` and `vmap`.
"""
from __future__ import annotations

import jax
import numpy as np

_RAW_SHAPES = ((2,), (4,))  # threefry (the default); rbg and unsafe_rbg
_HOW = "a JAX PRNG key: jax.random.key(seed) or jax.random.PRNGKey(seed)"


def check_key(key, what: str = "key"):
  """Return `key` if it is one PRNG key; else TypeError naming `what`, the value and what is allowed."""
  dtype, shape = getattr(key, "dtype", None), getattr(key, "shape", None)
  if dtype is None or shape is None:
    hint = " (to use an int seed, pass jax.random.key(seed))" if isinstance(key, (int, np.integer)) else ""
    raise TypeError(f"{what} must be {_HOW}, got {type(key).__name__} {key!r}{hint}")
  shape = tuple(shape)
  if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
    if shape != ():
      raise TypeError(f"{what} must be one PRNG key, got a batch of keys of shape {shape} (vmap over them, or "
                      "pick one)")
    return key
  if np.dtype(dtype) == np.uint32 and shape in _RAW_SHAPES:
    return key
  if np.dtype(dtype) == np.uint32 and len(shape) > 1 and shape[-1:] in _RAW_SHAPES:
    raise TypeError(f"{what} must be one PRNG key, got a batch of raw keys of shape {shape} (vmap over them, "
                    "or pick one)")
  raise TypeError(f"{what} must be {_HOW}, got an array of dtype {dtype} and shape {shape}")

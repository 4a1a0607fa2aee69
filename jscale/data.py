"""Data for the training engine: a data set by name, as device arrays that every configuration shares.

The data sets themselves live in `jscale.datasets` (one loader per name: `two_moons`, `iris`, `wine`,
`breast_cancer`, `digits_raw`, `fashion_mnist`, `libsvm:PATH`, ...; see `jscale.datasets.names()`);
adding a data set there makes it usable in every sweep by name. This module is the thin layer the
engine needs on top:

  ds = load("two_moons", seed=0)        # numpy `jscale.datasets.Dataset`, deterministic in `seed`
  data = to_device(ds)                  # `Data` NamedTuple of jnp arrays, the `data` argument of `train`
  fingerprint(ds)                       # short content hash, stored in a run's config.json

`two_moons` (the tutorial's data) is `sklearn.datasets.make_moons(n_samples=2000, noise=0.2)`, z-scored
with the training split's statistics, stratified 70/30 split, all from one seed.
"""
from __future__ import annotations

import hashlib
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jscale import datasets
from jscale.datasets import Dataset


class Data(NamedTuple):
  """What `train(key, hparams, data)` reads. Shared by every configuration of a sweep (never vmapped)."""
  x_train: jax.Array  # (N, D) float32
  y_train: jax.Array  # (N,) int32
  x_test: jax.Array   # (M, D) float32; M may be 0 (training-loss-only protocols)
  y_test: jax.Array   # (M,) int32


def names() -> list[str]:
  return datasets.names()


def load(name: str, *, seed: int = 0, **options) -> Dataset:
  """The data set `name` (see `jscale.datasets.names()`), deterministic in `seed` (split and sampling)."""
  return datasets.get(name, seed=seed, **options)


def to_device(ds: Dataset, dtype=jnp.float32) -> Data:
  return Data(jnp.asarray(ds.x_train, dtype), jnp.asarray(ds.y_train, jnp.int32),
              jnp.asarray(ds.x_test, dtype), jnp.asarray(ds.y_test, jnp.int32))


def fingerprint(ds: Dataset) -> str:
  """sha256 prefix of the arrays: a resumed run checks its data did not change underneath it."""
  h = hashlib.sha256()
  for a in (ds.x_train, ds.y_train, ds.x_test, ds.y_test):
    a = np.ascontiguousarray(a)
    h.update(str((a.dtype, a.shape)).encode())
    h.update(a.tobytes())
  return h.hexdigest()[:16]

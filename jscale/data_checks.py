"""The value checks a training set must pass before any training: finite inputs, integer labels in [0, classes).

Without them a data error is dressed as something else: a label >= the number of outputs makes the cross-entropy
NaN and the run is reported `diverged`, a label of -1 silently trains on the last class, a NaN input is reported
as a divergence. `check_values` refuses each with a ValueError naming the array and what is allowed. It reads
values, so it runs where the arrays are concrete: `jscale.datasets.to_device`, and `train(key, hparams, data)`
called eagerly or under `jax.vmap` with the data unmapped (under `jax.jit` the data are abstract: check them first
with `check_values(data, n_classes)`; the sweeps check every data set in their plan).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def is_concrete(*arrays) -> bool:
  """True when every array holds values (not a tracer of jit, vmap or grad)."""
  return not any(isinstance(a, jax.core.Tracer) for a in arrays)


def check_values(data, n_classes: int, *, what: str = "data", outputs: str = "") -> None:
  """`data` has x_train, y_train, x_test, y_test (a `Data` or a `Dataset`); `n_classes` the network's outputs
  (`outputs` says whose, e.g. " (widths (2, 64, 2))"). Reductions run where the arrays live: one scalar each
  comes back to the host, not the arrays."""
  for name in ("x_train", "x_test"):
    x = getattr(data, name)
    if x.size and jnp.issubdtype(x.dtype, jnp.inexact):
      n_bad = int(jnp.sum(~jnp.isfinite(x)))
      if n_bad:
        raise ValueError(f"{what}.{name} must be finite, got {n_bad} NaN/inf value(s) of {x.size}: a data error, "
                         "not a divergence (clean or impute the inputs)")
  for name in ("y_train", "y_test"):
    y = getattr(data, name)
    if not y.size:
      continue
    if not jnp.issubdtype(y.dtype, jnp.integer):
      raise ValueError(f"{what}.{name} must hold integer class labels, got dtype {y.dtype}")
    lo, hi = int(jnp.min(y)), int(jnp.max(y))
    if lo < 0 or hi >= n_classes:
      raise ValueError(f"{what}.{name} labels must be in [0, {n_classes}) (one network output per class"
                       f"{outputs}), got labels from {lo} to {hi}" +
                       (" (a data set with more classes than the network has outputs?)" if hi >= n_classes else ""))


def check_shapes(data) -> None:
  """Labels one per row: y_train (N,) beside x_train (N, ...), y_test (M,) beside x_test (M, ...). Shapes are
  known under jit too, so this runs wherever `train` is traced."""
  fields = ("x_train", "y_train", "x_test", "y_test")
  if not all(hasattr(data, f) for f in fields):
    raise TypeError(f"data must be a jscale.datasets.Data (x_train, y_train, x_test, y_test; from "
                    f"datasets.to_device), got {type(data).__name__}")
  for split in ("train", "test"):
    x, y = getattr(data, "x_" + split), getattr(data, "y_" + split)
    if getattr(y, "ndim", None) != 1 or not x.shape or y.shape[0] != x.shape[0]:
      raise ValueError(f"data.y_{split} must hold one label per row of data.x_{split}, got shape "
                       f"{getattr(y, 'shape', None)} beside x_{split} of shape {x.shape}")


def check_training_data(spec, data) -> None:
  """`check_shapes`, then `check_values` against a `TrainSpec`'s outputs when the arrays hold values (not
  under jit: abstract arrays, see the module's note)."""
  check_shapes(data)
  if is_concrete(*data):
    whose = f"widths {tuple(spec.widths)}" if spec.model is None else f"model {spec.model.name!r}"
    check_values(data, spec.widths[-1], outputs=f" of {whose}")

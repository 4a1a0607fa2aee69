"""`scale_by_prescription`: per-leaf learning-rate multipliers as an optax transformation.

The calculus's prescription (`jscale.calculus.prescribe`) gives every parameter leaf a learning-rate
multiplier; this transformation multiplies each leaf's update by its multiplier, after any optax optimizer
(`optax.chain(optax.adam(lr), scale_by_prescription(m))`), so the optimizer's own state (Adam's moments) is
untouched and the multiplier is exactly a per-leaf learning rate. `multipliers` is a pytree with the
parameters' structure whose leaves are scalars (Python numbers or traced arrays: a sweep may trace them), or
None for "1". Any pytree works: `jscale.mlp` tuples, Flax linen variables, nnx `State`.

  opt = jscale.optim.sgd(0.1, prescription.lr_multipliers)     # optax.sgd, then the multipliers
  opt = jscale.optim.adam(1e-3, prescription.lr_multipliers)   # optax.adam, then the multipliers

`choose(index, transforms)` runs one of several optimizers picked by a traced index (a sweep traces the
optimizer as it traces the learning rate: SGD and Adam rows in one compiled program).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax


def _is_none(x) -> bool:
  return x is None


def check_multipliers(multipliers, params) -> None:
  """ValueError unless `multipliers` has the structure of `params` with scalar (or None) leaves."""
  m_def = jax.tree_util.tree_structure(multipliers, is_leaf=_is_none)
  p_def = jax.tree_util.tree_structure(params)
  if m_def.num_leaves != p_def.num_leaves or m_def != jax.tree_util.tree_structure(
      jax.tree_util.tree_unflatten(p_def, [None] * p_def.num_leaves), is_leaf=_is_none):
    raise ValueError(f"scale_by_prescription: the multipliers' tree {m_def} does not match the parameters' "
                     f"tree {p_def}")
  for m in jax.tree_util.tree_leaves(multipliers, is_leaf=_is_none):
    if m is not None and jnp.ndim(m) != 0:
      raise ValueError(f"scale_by_prescription: every multiplier must be a scalar (or None), got shape "
                       f"{jnp.shape(m)}")


def scale_by_prescription(multipliers: Any) -> optax.GradientTransformation:
  """Multiply each leaf's update by its multiplier (None: unchanged). Stateless; chain it after an optimizer.
  The multipliers' structure is checked against the parameters' at `init` (before any step)."""

  def init_fn(params):
    check_multipliers(multipliers, params)
    return optax.EmptyState()

  def update_fn(updates, state, params=None):
    del params
    scaled = jax.tree.map(lambda m, u: u if m is None else (u * jnp.asarray(m, u.dtype)), multipliers, updates,
                          is_leaf=_is_none)
    return scaled, state

  return optax.GradientTransformation(init_fn, update_fn)


def choose(index, transforms) -> optax.GradientTransformation:
  """The update of `transforms[index]` (index traced, clipped into range): every candidate keeps its own
  state and computes its update, and each leaf takes the chosen one by a select, so the chosen candidate's
  numbers are its own bit for bit (under vmap a `lax.switch` computes every branch too). One compiled
  program then serves every candidate; the price is the others' arithmetic."""
  transforms = tuple(transforms)
  if not transforms:
    raise ValueError("choose needs at least one optimizer")

  def init_fn(params):
    return tuple(t.init(params) for t in transforms)

  def update_fn(updates, state, params=None):
    i = jnp.clip(index, 0, len(transforms) - 1)
    outs = [t.update(updates, s, params) for t, s in zip(transforms, state)]
    chosen = outs[-1][0]
    for k in range(len(transforms) - 2, -1, -1):
      chosen = jax.tree.map(lambda a, b, k=k: jnp.where(i == k, a, b), outs[k][0], chosen)
    return chosen, tuple(o[1] for o in outs)

  return optax.GradientTransformation(init_fn, update_fn)


def sgd(learning_rate, multipliers, momentum: float | None = None) -> optax.GradientTransformation:
  """`optax.sgd` with per-leaf learning rates `learning_rate * multiplier`."""
  return optax.chain(optax.sgd(learning_rate, momentum=momentum), scale_by_prescription(multipliers))


def adam(learning_rate, multipliers, **kwargs) -> optax.GradientTransformation:
  """`optax.adam` with per-leaf learning rates `learning_rate * multiplier` (kwargs: optax.adam's)."""
  return optax.chain(optax.adam(learning_rate, **kwargs), scale_by_prescription(multipliers))

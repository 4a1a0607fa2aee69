"""The scaling calculus (Defazio & Bottou): predicted and measured second moments, nu and G.

See ../shared/SCALING.md for the derivations.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def gradient_to_weight_ratio(params, grads) -> jax.Array:
  """Measured G_l = E[dW_l^2] / E[W_l^2] for each weight layer (weights only, biases excluded).

  `params` and `grads` are `jscale.mlp` parameter tuples; returns an array of shape (L,).
  """
  return jnp.stack([jnp.mean(jnp.square(g.w)) / jnp.mean(jnp.square(p.w)) for p, g in zip(params, grads)])

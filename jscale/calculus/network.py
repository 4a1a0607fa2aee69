"""Running a layer list: parameters, the forward pass, and `jscale.mlp` params as a layer list."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jscale import initializers, mlp
from jscale.calculus.prediction import mlp_layers
from jscale.calculus.stack import Probe, check_input, check_stack, init_stack, run_stack

# A fixed init for static layer lists used only to *run* given params: one jit compilation serves all.
PLACEHOLDER_INIT = initializers.zeros()


def init_layers(key: jax.Array, layers, n_in: int, spatial=(), dtype=jnp.float32) -> tuple:
  """Parameters for a layer list: `mlp.Dense(w, b)` per weight layer (b = 0), a tuple per Residual,
  () for parameter-free layers. Conv kernels are (*kernel, n_in, n_out) as in flax."""
  n_in, spatial = check_input(n_in, spatial)
  check_stack(layers, n_in, spatial)
  return init_stack(key, tuple(layers), n_in, spatial, dtype)


def apply_layers(params, layers, x: jax.Array, key: jax.Array | None = None) -> jax.Array:
  """Forward pass of a layer list on x: (batch, *spatial, n_in). `key` is needed only for Dropout."""
  return run_stack(params, tuple(layers), x, key, Probe())[0]


def mlp_as_layers(params: mlp.Params, activation: str = "relu") -> tuple:
  """(layers, params) for `measure` from a `jscale.mlp` parameter tuple (weights and biases as they are)."""
  widths = mlp.widths_of(params)
  layers = mlp_layers(widths, [PLACEHOLDER_INIT] * (len(widths) - 1), activation)
  it = iter(params)
  return layers, tuple(next(it) if l.is_weight else () for l in layers)

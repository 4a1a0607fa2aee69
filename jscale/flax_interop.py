"""The same MLP as a `flax.linen` module, built with jscale initializers as `kernel_init`.

`FlaxMLP(widths=..., kernel_init=jscale.initializers.get("geometric"))` is a drop-in for code that
already uses flax; `to_flax` / `from_flax` move parameters between it and `jscale.mlp`.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from jscale import initializers, mlp


class FlaxMLP(nn.Module):
  widths: Sequence[int]  # (n_1, ..., n_L): the input width comes from the data, as usual in flax
  kernel_init: Any = "he_normal"
  bias_init: Any = "zeros"
  activation: str = "relu"

  @nn.compact
  def __call__(self, x):
    act = mlp.get_activation(self.activation)
    kernel_init = initializers.get(self.kernel_init)
    bias_init = initializers.get(self.bias_init)
    for l, width in enumerate(self.widths):
      # flax hands bias_init the shape (n_out,); jscale's initializers want a 2-D kernel shape.
      x = nn.Dense(width, kernel_init=kernel_init,
                   bias_init=lambda key, shape, dtype=None: bias_init(key, (1,) + tuple(shape), dtype or jnp.float32).reshape(shape),
                   name=f"Dense_{l}")(x)
      if l < len(self.widths) - 1:
        x = act(x)
    return x


def to_flax(params: mlp.Params) -> dict:
  return {"params": {f"Dense_{l}": {"kernel": layer.w, "bias": layer.b} for l, layer in enumerate(params)}}


def from_flax(variables: dict) -> mlp.Params:
  p = variables["params"]
  return tuple(mlp.Dense(p[f"Dense_{l}"]["kernel"], p[f"Dense_{l}"]["bias"]) for l in range(len(p)))

"""Pure-function multilayer perceptrons: `init_mlp` builds the parameters, `apply_mlp` runs them.

Parameters are a tuple of `Dense(w, b)` NamedTuples, one per weight layer, so `jax.grad`,
`jax.hessian` and `jax.vmap` see a plain pytree: `jax.hessian(loss)(params)[i].w[j].w` is the
(w_i, w_j) Hessian block. `widths = (n_0, n_1, ..., n_L)` counts the input, so a 784-300-100-10 net
has three weight layers. Hidden layers apply the activation; the last layer is linear (logits).
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from jscale import checks, initializers
from jscale.keys import check_key


class Dense(NamedTuple):
  w: jax.Array  # (n_in, n_out)
  b: jax.Array  # (n_out,)


Params = tuple  # tuple[Dense, ...]


class Trace(NamedTuple):
  """Every layer's input x_l (post-activation, l = 0..L-1) and pre-activation y_l = x_l W_l + b_l."""
  inputs: tuple
  preacts: tuple


def leaky_relu(x, negative_slope: float = 0.01):
  return jnp.where(x >= 0, x, negative_slope * x)


def identity(x):
  return x


ACTIVATIONS: dict[str, Callable] = {"relu": jax.nn.relu, "leaky_relu": leaky_relu, "tanh": jnp.tanh,
                                    "identity": identity, "linear": identity}


def get_activation(activation: str | Callable) -> Callable:
  if callable(activation):
    return activation
  if activation not in ACTIVATIONS:
    raise ValueError(f"unknown activation {activation!r}; valid: {', '.join(sorted(ACTIVATIONS))}")
  return ACTIVATIONS[activation]


def check_widths(widths: Sequence[int]) -> tuple[int, ...]:
  """Validate a width list (input first); return it as a tuple of ints."""
  try:
    widths = tuple(widths)
  except TypeError:
    raise ValueError(f"widths must be a sequence of positive ints, got {widths!r}") from None
  if len(widths) < 2:
    raise ValueError(f"widths needs at least an input and an output width, got {widths!r}")
  for w in widths:
    if not checks.is_int(w):
      raise ValueError(f"widths must be integers, got {widths!r}")
    if int(w) <= 0:
      raise ValueError(f"widths must be positive, got {widths!r}")
  return tuple(int(w) for w in widths)


def _per_layer(spec, n_layers: int, what: str) -> list:
  if isinstance(spec, (list, tuple)):
    if len(spec) != n_layers:
      raise ValueError(f"{what}: got {len(spec)} entries for {n_layers} weight layers")
    return [_init(s, f"{what}[{l}]") for l, s in enumerate(spec)]
  return [_init(spec, what)] * n_layers


def _init(spec, what: str) -> initializers.Initializer:
  try:
    return initializers.get(spec)
  except ValueError as e:
    raise ValueError(f"{what}: {e}") from None


def init_mlp(key: jax.Array, widths: Sequence[int], kernel_init="he_normal", bias_init="zeros",
             dtype=jnp.float32) -> Params:
  """Parameters of an MLP. `kernel_init` / `bias_init`: an initializer, a spec string, or one per layer.

  Bias initializers get the shape `(1, n_out)` for their moments (fan_in 1) and return `(n_out,)`.
  """
  check_key(key, "init_mlp: key")
  widths = check_widths(widths)
  if not _is_float_dtype(dtype):
    raise ValueError(f"init_mlp: dtype must be a floating dtype (float32, bfloat16, ...), got {dtype!r}")
  n_layers = len(widths) - 1
  kernel_inits = _per_layer(kernel_init, n_layers, "kernel_init")
  bias_inits = _per_layer(bias_init, n_layers, "bias_init")
  keys = jax.random.split(key, 2 * n_layers)
  return tuple(
      Dense(kernel_inits[l](keys[2 * l], (widths[l], widths[l + 1]), dtype),
            bias_inits[l](keys[2 * l + 1], (1, widths[l + 1]), dtype).reshape(widths[l + 1]))
      for l in range(n_layers))


def _is_float_dtype(dtype) -> bool:
  try:
    return bool(jnp.issubdtype(dtype, jnp.floating))
  except TypeError:
    return False


def _check_scale(value, what: str) -> None:
  """A fixed input/output multiplier: a real number or a (possibly traced) numeric array."""
  if value is None:
    return
  dtype = getattr(value, "dtype", None)
  if dtype is not None:
    if not (jnp.issubdtype(dtype, jnp.number) or jnp.issubdtype(dtype, jnp.bool_)):
      raise TypeError(f"apply_mlp: {what} must be a number or a numeric array, got dtype {dtype}")
    return
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise TypeError(f"apply_mlp: {what} must be a number or a numeric array, got {type(value).__name__} {value!r}")
  if not math.isfinite(value):
    raise ValueError(f"apply_mlp: {what} must be finite, got {value!r}")


def check_params(params: Params) -> None:
  """MLP parameters: a non-empty sequence of `Dense(w, b)` whose widths chain, checked before compute."""
  if not isinstance(params, (list, tuple)) or not params:
    raise ValueError(f"params must be a non-empty tuple of Dense(w, b) layers, got {type(params).__name__}")
  for l, layer in enumerate(params):
    w, b = getattr(layer, "w", None), getattr(layer, "b", None)
    if getattr(w, "ndim", None) != 2 or getattr(b, "ndim", None) != 1:
      raise ValueError(f"layer {l}: expected Dense(w of shape (n_in, n_out), b of shape (n_out,)), "
                       f"got {type(layer).__name__}")
    if b.shape[0] != w.shape[1]:
      raise ValueError(f"layer {l}: bias has {b.shape[0]} entries but the kernel has {w.shape[1]} outputs")
    if l and w.shape[0] != params[l - 1].w.shape[1]:
      raise ValueError(f"layer {l} takes {w.shape[0]} inputs but layer {l - 1} gives {params[l - 1].w.shape[1]}: "
                       f"the widths do not chain (kernel shapes {[tuple(p.w.shape) for p in params]})")


def widths_of(params: Params) -> tuple[int, ...]:
  return (params[0].w.shape[0],) + tuple(layer.w.shape[1] for layer in params)


def layer_norm(x, eps: float = 1e-6):
  """Parameter-free LayerNorm over the feature axis (the paper's input normalisation)."""
  mean = jnp.mean(x, axis=-1, keepdims=True)
  var = jnp.var(x, axis=-1, keepdims=True)
  return (x - mean) * jax.lax.rsqrt(var + eps)


def apply_mlp(params: Params, x: jax.Array, activation: str | Callable = "relu", *, input_scale=None,
              output_scale=None, input_layernorm: bool = False, return_trace: bool = False):
  """Forward pass. x: (..., n_0) -> logits (..., n_L); with `return_trace`, also a `Trace`.

  `input_scale` multiplies the inputs (after the optional LayerNorm), `output_scale` the logits: fixed,
  untrained scalars (the calculus's input and output scaling); both may be traced arrays.
  """
  act = get_activation(activation)
  check_params(params)
  _check_scale(input_scale, "input_scale")
  _check_scale(output_scale, "output_scale")
  if x is None or isinstance(x, (str, bytes)):
    raise ValueError(f"apply_mlp: x must be an array of shape (..., n_0), got {type(x).__name__}")
  if not hasattr(x, "shape"):
    try:
      x = jnp.asarray(x)
    except (TypeError, ValueError):
      raise ValueError(f"apply_mlp: x must be an array of shape (..., n_0), got {type(x).__name__}") from None
  if x.ndim == 0:
    raise ValueError(f"x must have a feature axis (shape (..., n_0)), got a scalar {x!r}")
  n_0 = params[0].w.shape[0]
  if x.shape[-1] != n_0:
    raise ValueError(f"input has {x.shape[-1]} features but the first layer expects {n_0} "
                     f"(input shape {x.shape}, network widths {widths_of(params)})")
  if input_layernorm:
    x = layer_norm(x)
  if input_scale is not None:
    x = x * input_scale
  inputs, preacts = [], []
  for l, layer in enumerate(params):
    inputs.append(x)
    y = x @ layer.w + layer.b
    preacts.append(y)
    x = act(y) if l < len(params) - 1 else y
  if output_scale is not None:
    x = x * output_scale
  if return_trace:
    return x, Trace(tuple(inputs), tuple(preacts))
  return x

"""The paper's strided LeNet (its Figures 1-2): convolutions with stride = kernel, no max pooling, ReLU.

  conv(k_1, stride k_1) -> relu -> conv(k_2, stride k_2) -> relu -> flatten -> dense -> relu -> dense -> relu -> dense

Optionally an average pool (window = stride, `LeNetConfig.pools`) after a conv's ReLU: it has no parameters, so
the parameter tree is the same; `apply_lenet` takes the pools as an argument (issue 20's family samples them).

The paper replaces LeNet's max pooling by striding because max pooling does not keep nu (its Table 1);
stride = kernel (VALID) is the case its convolution rules are exact for. As pure functions
(`init_lenet`, `apply_lenet`) and as a Flax module (`LeNet`) with the same parameter tree
({"conv0": {"kernel", "bias"}, ..., "dense2": ...}), so `LeNet(...).apply(variables, x)` equals
`apply_lenet(variables["params"], x)`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jscale import initializers


@dataclasses.dataclass(frozen=True)
class LeNetConfig:
  image: tuple = (8, 8, 1)               # (height, width, channels) of one input
  channels: tuple = (6, 16)              # conv output channels
  kernels: tuple = ((2, 2), (2, 2))      # conv kernels; stride = kernel
  hidden: tuple = (120, 84)              # dense hidden widths
  n_out: int = 10
  pools: tuple = ()                      # per conv: the average pool's window (= stride) after its ReLU; 1: none

  def pool_windows(self) -> tuple:
    """One window per conv (1: no pool); `pools` may be empty (no pooling anywhere)."""
    return pool_windows(self.pools, len(self.channels))

  def check(self) -> "LeNetConfig":
    if len(self.image) != 3 or any(int(s) <= 0 for s in self.image):
      raise ValueError(f"image must be (height, width, channels) > 0, got {self.image!r}")
    if len(self.channels) != len(self.kernels) or not self.channels:
      raise ValueError(f"channels {self.channels!r} and kernels {self.kernels!r} need one entry per conv")
    if self.pools and (len(self.pools) != len(self.channels)
                       or any(not isinstance(p, (int, np.integer)) or p < 1 for p in self.pools)):
      raise ValueError(f"pools must hold one window >= 1 per conv (1: none), got {self.pools!r}")
    hw = tuple(self.image[:2])
    for i, (k, p) in enumerate(zip(self.kernels, self.pool_windows())):
      if len(k) != 2 or any(int(v) <= 0 for v in k):
        raise ValueError(f"kernel {i} must be two positive ints, got {k!r}")
      if hw[0] % k[0] or hw[1] % k[1]:
        raise ValueError(f"conv {i}: stride = kernel {tuple(k)} needs the grid {hw} divisible by it")
      hw = (hw[0] // k[0], hw[1] // k[1])
      if hw[0] % p or hw[1] % p:
        raise ValueError(f"conv {i}: the average pool {p}x{p} needs its output grid {hw} divisible by it")
      hw = (hw[0] // p, hw[1] // p)
    if any(int(n) <= 0 for n in tuple(self.channels) + tuple(self.hidden) + (self.n_out,)):
      raise ValueError("channels, hidden and n_out must be positive")
    return self

  def kernel_shapes(self) -> dict:
    """name -> kernel shape, in layer order."""
    shapes, c, hw = {}, self.image[2], tuple(self.image[:2])
    for i, (n, k, p) in enumerate(zip(self.channels, self.kernels, self.pool_windows())):
      shapes[f"conv{i}"] = (k[0], k[1], c, n)
      c, hw = n, (hw[0] // k[0] // p, hw[1] // k[1] // p)
    n_in = c * hw[0] * hw[1]
    for i, n in enumerate(tuple(self.hidden) + (self.n_out,)):
      shapes[f"dense{i}"] = (n_in, n)
      n_in = n
    return shapes


def _per_layer(init, n: int) -> list:
  inits = list(init) if isinstance(init, (list, tuple)) else [init] * n
  if len(inits) != n:
    raise ValueError(f"init: got {len(inits)} entries for {n} weight layers")
  return [initializers.get(s) for s in inits]


def layer_initializers(config: LeNetConfig, init: Any = "he_normal", scales=None) -> dict:
  """name -> key -> {"kernel", "bias"}: the kernel drawn by `init` (a spec, or one per layer) times
  `scales[l]` (may be traced: a per-layer multiplier for sweeps), the bias zero."""
  shapes = config.check().kernel_shapes()
  inits = _per_layer(init, len(shapes))
  scales = [1.0] * len(shapes) if scales is None else scales

  def make(shape, ini, s):
    return lambda key, dtype=jnp.float32: {"kernel": s * ini(key, shape, dtype), "bias": jnp.zeros(shape[-1], dtype)}

  return {name: make(shape, ini, scales[l]) for l, ((name, shape), ini) in enumerate(zip(shapes.items(), inits))}


def init_lenet(key: jax.Array, config: LeNetConfig = LeNetConfig(), init: Any = "he_normal", scales=None,
               dtype=jnp.float32) -> dict:
  """Parameters {"conv0": {"kernel", "bias"}, ...}; kernels (kh, kw, c_in, c_out) and (n_in, n_out) as in flax."""
  fns = layer_initializers(config, init, scales)
  return {name: fn(k, dtype) for (name, fn), k in zip(fns.items(), jax.random.split(key, len(fns)))}


def strided_conv_matmul(x: jax.Array, w: jax.Array) -> jax.Array:
  """VALID convolution with stride = kernel (NHWC, HWIO) as one matmul over the non-overlapping patches: the
  same sums as `lax.conv_general_dilated` in another order (float rounding apart), faster under vmap on CPU."""
  kh, kw, c, n = w.shape
  b, h, wd, _ = x.shape
  if h % kh or wd % kw:
    raise ValueError(f"stride = kernel {(kh, kw)} needs the grid {(h, wd)} divisible by it")
  p = x.reshape(b, h // kh, kh, wd // kw, kw, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, h // kh, wd // kw, -1)
  return p @ w.reshape(kh * kw * c, n)


def pool_windows(pools: Sequence, n_convs: int) -> tuple:
  """`LeNetConfig.pools` as one window per conv: empty means no pool anywhere (window 1 each)."""
  return tuple(int(p) for p in pools) if pools else (1,) * n_convs


def avg_pool(x: jax.Array, window: int) -> jax.Array:
  """Average pooling of NHWC maps with stride = window (non-overlapping; window 1: x itself)."""
  if window == 1:
    return x
  b, h, w, c = x.shape
  return x.reshape(b, h // window, window, w // window, window, c).mean(axis=(2, 4))


def apply_lenet(params: dict, x: jax.Array, *, input_scale=None, output_scale=None, return_hidden: bool = False,
                conv: str = "xla", pools: tuple = ()):
  """Logits for images x: (batch, height, width, channels). The layers come from `params`; each conv's
  stride is its kernel. `input_scale` / `output_scale`: fixed (possibly traced) scalars. `return_hidden`:
  (logits, the ReLU outputs of every hidden layer, after their pool). `conv`: "xla" (`lax.conv_general_dilated`,
  what `jscale.inspect` recognises as a conv) or "matmul" (`strided_conv_matmul`, for training sweeps).
  `pools`: `LeNetConfig.pools` (one window per conv, or empty: none)."""
  if x.ndim != 4:
    raise ValueError(f"x must be (batch, height, width, channels), got shape {x.shape}")
  if conv not in ("xla", "matmul"):
    raise ValueError(f"conv must be 'xla' or 'matmul', got {conv!r}")
  if input_scale is not None:
    x = x * input_scale
  convs = sorted((k for k in params if k.startswith("conv")), key=lambda k: int(k[4:]))
  denses = sorted((k for k in params if k.startswith("dense")), key=lambda k: int(k[5:]))
  windows = pool_windows(pools, len(convs))
  if len(windows) != len(convs):
    raise ValueError(f"pools {pools!r}: one window per conv ({len(convs)})")
  hidden = []
  for name, window in zip(convs, windows):
    w = params[name]["kernel"]
    if conv == "matmul":
      x = strided_conv_matmul(x, w)
    else:
      x = jax.lax.conv_general_dilated(x, w, w.shape[:2], "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    x = avg_pool(jax.nn.relu(x + params[name]["bias"]), window)
    hidden.append(x)
  x = x.reshape(x.shape[0], -1)
  for i, name in enumerate(denses):
    x = x @ params[name]["kernel"] + params[name]["bias"]
    if i < len(denses) - 1:
      x = jax.nn.relu(x)
      hidden.append(x)
  x = x if output_scale is None else x * output_scale
  return (x, tuple(hidden)) if return_hidden else x


class LeNet(nn.Module):
  """Flax module of the strided LeNet; its params equal `init_lenet`'s tree (drawn with flax's keys)."""
  config: LeNetConfig = LeNetConfig()
  kernel_init: Any = "he_normal"  # (`init` would shadow nn.Module.init)
  scales: Sequence | None = None

  @nn.compact
  def __call__(self, x):
    params = {name: self.param(name, fn) for name, fn in layer_initializers(self.config, self.kernel_init,
                                                                           self.scales).items()}
    return apply_lenet(params, x, pools=self.config.pools)

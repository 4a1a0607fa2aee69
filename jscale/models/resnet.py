"""The pre-activation bottleneck ResNet block of the paper's Section 11, with the fixed scalars the calculus
gives it, and a small unnormalised ResNet around it (stem conv -> blocks -> relu -> flatten -> dense).

The paper's copy lost its displayed formulas; this is jscale's reconstruction from its prose and the rules of
docs/calculus.md ("Residual blocks with fixed scalars"). A block maps x (n_in channels) to

    z = a S(x) + b F(x),   a^2 + b^2 = 1            (weighted residual, following Shao et al. 2020)
    F(x) = sigma_F alpha conv3(tau_3 relu(conv2(tau_2 relu(conv1(tau_1 relu(x))))))
    S(x) = x, or sigma_S conv1x1_stride(relu(x)) when the block changes channels or resolution

- inside the branch nu is b^2 times the block's (the gradient entering F is b dz), so a conv there has
  G = b^2 nu / (k n n' E[W^2]^2): its E[W^2] is multiplied by b (geometric numerator b c), which gives
  G = nu / c^2 as outside the block; the shortcut conv likewise gets a (numerator a c);
- tau_l^2 = sqrt(k0 / k_l) before a conv with k_l taps (the paper's Section 6.2: c is chosen for the typical
  kernel size k0, a fixed scalar corrects the others);
- alpha is a learnable scalar initialised to sqrt(b c): a scalar multiplier has G = nu_branch / alpha^4
  (paper Appendix E), which is nu / c^2 at alpha^2 = b c;
- sigma_F and sigma_S are fixed scalars that undo the forward gain of each path (Equation 6's telescoping
  product, counted with the taps that land inside the grid under SAME padding), so E[F^2] = E[S^2] = E[x^2]
  and the block keeps the forward moment, hence nu.
Under geometric init every conv, the shortcut, alpha, the stem and the head then have G = nu / c^2. The same
structure (b, a, tau, alpha) is used under any other `init`; sigma_F and sigma_S then use that init's E[W^2].
Pure functions (`init_block`, `apply_block`, `init_resnet`, `apply_resnet`) and Flax modules
(`BottleneckBlock`, `ResNet`) with the same parameter trees.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jscale import initializers

_DN = ("NHWC", "HWIO", "NHWC")


@dataclasses.dataclass(frozen=True)
class BlockConfig:
  n_out: int
  width: int            # bottleneck width
  stride: int = 1
  c: float = 2.0        # geometric numerator of the network
  k0: int = 1           # the network's typical kernel taps
  b2: float = 0.5       # b^2, the residual branch's weight (a^2 = 1 - b^2)

  def check(self, n_in: int) -> "BlockConfig":
    if min(self.n_out, self.width, self.stride, self.k0, n_in) < 1:
      raise ValueError(f"block sizes must be positive ints, got {self!r} with n_in={n_in}")
    if not (0 < self.b2 <= 1) or not self.c > 0:
      raise ValueError(f"need 0 < b2 <= 1 and c > 0, got b2={self.b2!r}, c={self.c!r}")
    return self

  def projects(self, n_in: int) -> bool:
    return self.stride != 1 or n_in != self.n_out

  def kernel_shapes(self, n_in: int) -> dict:
    shapes = {"conv1": (1, 1, n_in, self.width), "conv2": (3, 3, self.width, self.width),
              "conv3": (1, 1, self.width, self.n_out)}
    if self.projects(n_in):
      shapes["shortcut"] = (1, 1, n_in, self.n_out)
    return shapes


def tap_fraction(size: int, k: int, stride: int) -> float:
  """Mean over output positions of the fraction of a SAME-padded kernel's taps that land inside the grid."""
  out = -(-size // stride)
  lo = max((out - 1) * stride + k - size, 0) // 2
  inside = sum(sum(0 <= o * stride - lo + t < size for t in range(k)) for o in range(out))
  return inside / (out * k)


def _scale_init(init, factor):
  ini = initializers.get(init)
  return lambda key, shape, dtype=jnp.float32: math.sqrt(factor) * ini(key, shape, dtype)


def block_initializers(cfg: BlockConfig, n_in: int, init: Any = "geometric:c=2") -> dict:
  """name -> key -> leaf. Branch kernels have E[W^2] times b, the shortcut's times a (module docstring)."""
  cfg.check(n_in)
  a2, b2 = 1 - cfg.b2, cfg.b2
  fns = {}
  for name, shape in cfg.kernel_shapes(n_in).items():
    f = math.sqrt(a2) if name == "shortcut" else math.sqrt(b2)
    fns[name] = (lambda s, f: lambda key, dtype=jnp.float32: {"kernel": _scale_init(init, f)(key, s, dtype)})(shape, f)
  fns["alpha"] = lambda key, dtype=jnp.float32: jnp.asarray(math.sqrt(math.sqrt(b2) * cfg.c), dtype)
  return fns


def init_block(key, cfg: BlockConfig, n_in: int, init: Any = "geometric:c=2", dtype=jnp.float32) -> dict:
  fns = block_initializers(cfg, n_in, init)
  return {name: fn(k, dtype) for (name, fn), k in zip(fns.items(), jax.random.split(key, len(fns)))}


def block_scalars(cfg: BlockConfig, n_in: int, spatial: tuple, init: Any = "geometric:c=2") -> dict:
  """The fixed scalars (amplitudes) of a block on a grid `spatial`: tau per conv, sigma_F, sigma_S, a, b."""
  ini = initializers.get(init)
  shapes = cfg.kernel_shapes(n_in)
  a2, b2 = 1 - cfg.b2, cfg.b2
  tau2 = {n: math.sqrt(cfg.k0 / (s[0] * s[1])) for n, s in shapes.items()}
  gain = b2 * cfg.c  # alpha^2
  h, w = spatial
  for name in ("conv1", "conv2", "conv3"):
    s = shapes[name]
    frac = tap_fraction(h, 3, cfg.stride) * tap_fraction(w, 3, cfg.stride) if name == "conv2" else 1.0
    w_sq = math.sqrt(b2) * ini.second_moment(s)
    gain *= 0.5 * tau2[name] * frac * s[0] * s[1] * s[2] * w_sq  # relu, tau, conv
  out = dict(tau={n: math.sqrt(t) for n, t in tau2.items()}, sigma_F=1 / math.sqrt(gain), a=math.sqrt(a2),
             b=math.sqrt(b2))
  if "shortcut" in shapes:
    s = shapes["shortcut"]
    out["sigma_S"] = 1 / math.sqrt(0.5 * s[2] * math.sqrt(a2) * ini.second_moment(s))
  return out


def _conv(x, w, stride, padding):
  strides = (stride, stride) if isinstance(stride, int) else tuple(stride)
  return jax.lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=_DN)


def apply_block(params: dict, x: jax.Array, cfg: BlockConfig, init: Any = "geometric:c=2") -> jax.Array:
  """z = a S(x) + b F(x) on x: (batch, h, w, n_in). `init` only sets the fixed scalars sigma_F, sigma_S."""
  n_in, spatial = x.shape[-1], x.shape[1:3]
  if cfg.stride > 1 and (spatial[0] % cfg.stride or spatial[1] % cfg.stride):
    raise ValueError(f"stride {cfg.stride} needs the grid {spatial} divisible by it")
  sc = block_scalars(cfg, n_in, spatial, init)
  tau = sc["tau"]
  h = jax.nn.relu(x)
  f = _conv(tau["conv1"] * h, params["conv1"]["kernel"], 1, "VALID")
  f = _conv(tau["conv2"] * jax.nn.relu(f), params["conv2"]["kernel"], cfg.stride, "SAME")
  f = _conv(tau["conv3"] * jax.nn.relu(f), params["conv3"]["kernel"], 1, "VALID")
  f = (sc["sigma_F"] * f) * params["alpha"]
  if "shortcut" in params:
    s = sc["sigma_S"] * _conv(h, params["shortcut"]["kernel"], cfg.stride, "VALID")
  else:
    s = x
  return sc["a"] * s + sc["b"] * f


@dataclasses.dataclass(frozen=True)
class ResNetConfig:
  image: tuple = (8, 8, 3)
  stem_channels: int = 32
  stem_kernel: tuple = (2, 2)            # stride = kernel
  blocks: tuple = ((32, 16, 1), (64, 32, 2))  # (n_out, bottleneck width, stride) per block
  n_out: int = 10
  c: float = 2.0
  k0: int = 1
  b2: float = 0.5

  def block_configs(self) -> list:
    return [BlockConfig(n, w, s, self.c, self.k0, self.b2) for n, w, s in self.blocks]

  def shapes(self) -> tuple:
    """(stem kernel shape, [(n_in, spatial) per block], head kernel shape)."""
    h, w, c = self.image
    kh, kw = self.stem_kernel
    if h % kh or w % kw:
      raise ValueError(f"stem stride = kernel {self.stem_kernel} needs the image {self.image[:2]} divisible by it")
    hw, n = (h // kh, w // kw), self.stem_channels
    ins = []
    for cfg in self.block_configs():
      ins.append((n, hw))
      if hw[0] % cfg.stride or hw[1] % cfg.stride:
        raise ValueError(f"block stride {cfg.stride} needs the grid {hw} divisible by it")
      hw, n = (hw[0] // cfg.stride, hw[1] // cfg.stride), cfg.n_out
    return (kh, kw, c, self.stem_channels), ins, (n * hw[0] * hw[1], self.n_out)


def resnet_initializers(config: ResNetConfig, init: Any = "geometric:c=2") -> dict:
  stem, ins, head = config.shapes()
  ini = initializers.get(init)
  fns = {"stem": lambda key, dtype=jnp.float32: {"kernel": ini(key, stem, dtype), "bias": jnp.zeros(stem[-1], dtype)}}
  for i, (cfg, (n_in, _)) in enumerate(zip(config.block_configs(), ins)):
    sub = block_initializers(cfg, n_in, init)
    fns[f"block{i}"] = (lambda sub: lambda key, dtype=jnp.float32: {
        n: f(k, dtype) for (n, f), k in zip(sub.items(), jax.random.split(key, len(sub)))})(sub)
  fns["head"] = lambda key, dtype=jnp.float32: {"kernel": ini(key, head, dtype), "bias": jnp.zeros(head[-1], dtype)}
  return fns


def init_resnet(key, config: ResNetConfig = ResNetConfig(), init: Any = "geometric:c=2", dtype=jnp.float32) -> dict:
  fns = resnet_initializers(config, init)
  return {name: fn(k, dtype) for (name, fn), k in zip(fns.items(), jax.random.split(key, len(fns)))}


def apply_resnet(params: dict, x: jax.Array, config: ResNetConfig = ResNetConfig(), init: Any = "geometric:c=2", *,
                 output_scale=None) -> jax.Array:
  """Logits for images x: (batch, h, w, c): tau-scaled stem conv (stride = kernel), the blocks, relu, flatten,
  dense. `init` sets the blocks' fixed scalars (the one the params were drawn with)."""
  w = params["stem"]["kernel"]
  k = w.shape[0] * w.shape[1]
  x = _conv(math.sqrt(math.sqrt(config.k0 / k)) * x, w, w.shape[:2], "VALID") + params["stem"]["bias"]
  for i, cfg in enumerate(config.block_configs()):
    x = apply_block(params[f"block{i}"], x, cfg, init)
  x = jax.nn.relu(x).reshape(x.shape[0], -1)
  x = x @ params["head"]["kernel"] + params["head"]["bias"]
  return x if output_scale is None else x * output_scale


class BottleneckBlock(nn.Module):
  """Flax module of the block; params equal `init_block`'s tree."""
  config: BlockConfig
  kernel_init: Any = "geometric:c=2"  # (`init` would shadow nn.Module.init)

  @nn.compact
  def __call__(self, x):
    fns = block_initializers(self.config, x.shape[-1], self.kernel_init)
    return apply_block({n: self.param(n, f) for n, f in fns.items()}, x, self.config, self.kernel_init)


class ResNet(nn.Module):
  """Flax module of the small ResNet; params equal `init_resnet`'s tree."""
  config: ResNetConfig = ResNetConfig()
  kernel_init: Any = "geometric:c=2"  # (`init` would shadow nn.Module.init)

  @nn.compact
  def __call__(self, x):
    fns = resnet_initializers(self.config, self.kernel_init)
    return apply_resnet({n: self.param(n, f) for n, f in fns.items()}, x, self.config, self.kernel_init)

"""Weight layers (`Linear`, `Conv`): the rule objects that carry E[W^2] and make the entries of `Moments`.

A weight layer has weight E[W^2] from its initializer's own `second_moment` (or a fixed `weight_sq`) and
no bias at initialisation (biases are zero in the calculus; `LayerPrediction.db_sq` reports what their
gradient would be). Rules: docs/calculus.md.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jscale import checks, initializers, mlp
from jscale.calculus.moments import weight_backward_sq, weight_forward_sq
from jscale.calculus.signals import Backward, LayerSignal
from jscale.calculus.stack import BackStep, Layer, Probe, Step, positive_ints

_CONV_DIMS = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC"), 3: ("NDHWC", "DHWIO", "NDHWC")}


class LayerInfo(NamedTuple):
  """Static description of one weight layer (index l in `Moments`)."""
  path: str        # position in the layer list, e.g. "4" or "2.branch.0"
  kind: str        # "linear" or "conv"
  shape: tuple     # kernel shape (*kernel, n_in, n_out)
  k: int           # kernel taps
  n_in: int
  n_out: int
  rho_in: int      # spatial positions at the input / output (1 for an MLP)
  rho_out: int
  fan_in: int
  fan_out: int
  weight_var: float
  weight_sq: float
  init: str


class WeightForward(NamedTuple):
  """A weight layer's forward rule: what `predict` reads and its backward rule needs."""
  info: LayerInfo
  x_sq: float      # E[x^2] at its input
  r_x: float       # the input's correlation between examples
  w_sq: float      # E[W^2]
  k_eff: float     # taps that land inside the input (k, less the SAME-padding border)
  y_sq: float      # E[y^2] at its output


class WeightBackward(NamedTuple):
  """A weight layer's backward rule."""
  dy_sq: float       # E[Delta y^2] arriving at its output
  r_dy: float        # that gradient's correlation between examples
  below_pool: bool   # the gradient passed an AvgPool (spatial correlation not tracked)
  dx_sq: float       # E[Delta x^2] it sends to its input


class _WeightLayer(Layer):
  """Shared rules of `Linear` and `Conv` (fields n_out, init, weight_sq)."""
  is_weight = True
  kind = ""

  def kernel_shape(self, n_in: int, n_spatial: int) -> tuple:
    raise NotImplementedError

  def tap_fraction(self, spatial, kernel) -> float:
    """Fraction of (position, tap) pairs inside the input (1 unless padding feeds zeros)."""
    return 1.0

  def op(self, w, x):
    raise NotImplementedError

  def check(self, n, spatial, where, here):
    checks.positive_int(self.n_out, f"{where}: n_out")
    if self.weight_sq is None:
      initializers.get(self.init)
    elif not (self.weight_sq >= 0 and math.isfinite(self.weight_sq)):
      raise ValueError(f"{where}: weight_sq must be finite and >= 0")
    self.check_grid(n, spatial, where)
    return self.out_shape(n, spatial)

  def check_grid(self, n, spatial, where):
    pass

  def forward(self, s: LayerSignal, here: str) -> Step:
    rho = math.prod(s.spatial)
    shape = self.kernel_shape(s.n, len(s.spatial))
    fan = initializers.fans(shape)
    init = initializers.get(self.init)
    fixed = self.weight_sq is not None
    w_sq = float(self.weight_sq) if fixed else float(init.second_moment(shape))
    w_var = float(self.weight_sq) if fixed else float(init.variance(shape))
    notes = ()
    if not fixed and init.mean(shape) != 0:
      notes = (f"layer {here}: initializer {init.name} has a non-zero mean; the rules assume zero-mean weights",)
    out_spatial = self.out_shape(s.n, s.spatial)[1]
    info = LayerInfo(path=here, kind=self.kind, shape=shape, k=fan.k, n_in=fan.n_in, n_out=fan.n_out,
                     rho_in=rho, rho_out=math.prod(out_spatial), fan_in=fan.fan_in, fan_out=fan.fan_out,
                     weight_var=w_var, weight_sq=w_sq, init="weight_sq" if fixed else init.name)
    k_eff = fan.k * self.tap_fraction(s.spatial, shape[:-2])
    rec = WeightForward(info=info, x_sq=s.sq, r_x=s.r, w_sq=w_sq, k_eff=k_eff,
                        y_sq=weight_forward_sq(s.sq, w_sq, fan.n_in, k_eff))
    out = LayerSignal(n=fan.n_out, spatial=out_spatial, sq=rec.y_sq, r=s.r, sym=True)
    return Step(out, extra=rec, records=(rec,), notes=notes)

  def backward(self, g: Backward, s_in: LayerSignal, rec: WeightForward) -> BackStep:
    info = rec.info
    dx_sq = weight_backward_sq(g.sq, rec.w_sq, info.n_out, rec.k_eff, info.rho_out / info.rho_in)
    return BackStep(g._replace(sq=dx_sq), (WeightBackward(dy_sq=g.sq, r_dy=g.r, below_pool=g.pooled, dx_sq=dx_sq),))

  def init_params(self, key, n, spatial, dtype):
    shape = self.kernel_shape(n, len(spatial))
    w = initializers.get(self.init)(key, shape, dtype)
    if self.weight_sq is not None:  # a fixed E[W^2]: a normal draw of that second moment
      w = jnp.sqrt(jnp.asarray(self.weight_sq, dtype)) * jax.random.normal(key, shape, dtype)
    return mlp.Dense(w, jnp.zeros((self.n_out,), dtype))

  def apply(self, p, x, key, probe: Probe):
    l = len(probe.xs)
    if probe.eps_x is not None:
      x = x + probe.eps_x[l]
    y = self.op(p.w, x) + p.b
    if probe.eps_y is not None:
      y = y + probe.eps_y[l]
    return y, probe._replace(xs=probe.xs + (x,), ys=probe.ys + (y,), last_weight=l)

  def weight_params(self, p):
    yield p

  def example_dW_sq(self, w, x, dy):
    """Mean over the batch of E[dW^2] of each example's own gradient (x, dy: this layer's batch)."""
    g_b = jax.vmap(lambda xb, db: jax.vjp(lambda w_: self.op(w_, xb[None]), w)[1](db[None])[0])(x, dy)
    return jnp.mean(jnp.square(g_b))

  def batch_dW_sq(self, w, x, dy):
    """E[dW^2] of the minibatch-mean gradient."""
    return jnp.mean(jnp.square(jax.vjp(lambda w_: self.op(w_, x), w)[1](dy / x.shape[0])[0]))


@dataclasses.dataclass(frozen=True)
class Linear(_WeightLayer):
  """Dense map over the channel axis (applied at every spatial position, k = 1)."""
  n_out: int
  init: Any = "he_normal"
  weight_sq: float | None = None  # overrides the initializer's E[W^2] in predictions
  kind = "linear"

  def kernel_shape(self, n_in, n_spatial):
    return (n_in, self.n_out)

  def out_shape(self, n, spatial):
    return int(self.n_out), spatial

  def op(self, w, x):
    return x @ w

  def example_dW_sq(self, w, x, dy):
    if x.ndim == 2:  # dW_b = x_b dy_b^T: its mean square factorises
      return jnp.mean(jnp.mean(x * x, 1) * jnp.mean(dy * dy, 1))
    return super().example_dW_sq(w, x, dy)


@dataclasses.dataclass(frozen=True)
class Conv(_WeightLayer):
  """Convolution with kernel taps k = prod(kernel); stride = kernel (VALID) or stride 1 with SAME padding."""
  n_out: int
  kernel: tuple
  stride: str = "kernel"  # "kernel" or "same"
  init: Any = "he_normal"
  weight_sq: float | None = None
  kind = "conv"

  def kernel_shape(self, n_in, n_spatial):
    kernel = positive_ints(self.kernel, "Conv.kernel")
    if len(kernel) != n_spatial:
      raise ValueError(f"Conv kernel {kernel} has {len(kernel)} dims for an input with {n_spatial} spatial dims")
    return kernel + (n_in, self.n_out)

  def out_shape(self, n, spatial):
    if self.stride == "kernel":
      spatial = tuple(a // b for a, b in zip(spatial, positive_ints(self.kernel, "Conv.kernel")))
    return int(self.n_out), spatial

  def check_grid(self, n, spatial, where):
    if not spatial:
      raise ValueError(f"{where}: a Conv needs spatial input dims (pass spatial=...)")
    kernel = self.kernel_shape(n, len(spatial))[:-2]
    if self.stride == "kernel":
      if any(s % k for s, k in zip(spatial, kernel)):
        raise ValueError(f"{where}: stride = kernel needs the spatial size {spatial} divisible by {kernel}")
    elif self.stride != "same":
      raise ValueError(f"{where}: stride must be 'kernel' or 'same', got {self.stride!r}")

  def tap_fraction(self, spatial, kernel):
    return same_tap_fraction(spatial, kernel) if self.stride == "same" else 1.0

  def op(self, w, x):
    d = x.ndim - 2
    strides, padding = (w.shape[:-2], "VALID") if self.stride == "kernel" else ((1,) * d, "SAME")
    return jax.lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=_CONV_DIMS[d])


def same_tap_fraction(spatial, kernel) -> float:
  """Fraction of (output position, tap) pairs that fall inside the input under SAME padding.

  The paper's conv rules count k taps at every position; at the border SAME padding feeds zeros, so the
  measured E[y^2] of a 2x2 conv on a 4x4 grid is 49/64 of the k-tap rule. With k_eff = k * this
  fraction: E[y^2] = k_eff n E[W^2] E[x^2], E[dx^2] = k_eff n' E[W^2] E[dy^2],
  E[dW^2] = rho (k_eff / k) E[x^2] E[dy^2]; nu is still kept and G = nu / (k n n' E[W^2]^2) still holds.
  """
  frac = 1.0
  for size, taps in zip(spatial, kernel):
    low = (taps - 1) // 2  # XLA's SAME convention: the extra padding goes after
    inside = sum(min(size, size + low - t) - max(0, low - t) for t in range(taps))
    frac *= inside / (size * taps)
  return frac


def kernel_shape(layer, n_in: int, n_spatial: int) -> tuple:
  """Kernel shape (*kernel, n_in, n_out) of a weight layer."""
  return layer.kernel_shape(n_in, n_spatial)


WEIGHT_LAYERS = (Linear, Conv)

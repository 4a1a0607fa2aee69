"""The calculus's layer types, each one rule object (interface: `stack.Layer`); rules: docs/calculus.md.

Weight layers (`Linear`, `Conv`) live in `weights.py`; here are the parameter-free ones and `Residual`.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from jscale import mlp
from jscale.calculus.correlation import act_corr
from jscale.calculus.moments import ACT_KINDS, gains
from jscale.calculus.signals import Backward, LayerSignal
from jscale.calculus.stack import (BackStep, Layer, Step, backward_stack, check_stack, flat_layers, flat_params,
                                   forward_stack, init_stack, positive_ints, run_stack)
from jscale.calculus.weights import WEIGHT_LAYERS, Conv, LayerInfo, Linear, kernel_shape  # noqa: F401


@dataclasses.dataclass(frozen=True)
class Act(Layer):
  kind: str = "relu"

  def check(self, n, spatial, where, here):
    if self.kind not in ACT_KINDS:
      raise ValueError(f"{where}: unknown activation {self.kind!r}; valid: {', '.join(ACT_KINDS)}")
    return n, spatial

  def forward(self, s: LayerSignal, here: str) -> Step:
    notes = []
    if self.kind == "tanh":
      notes.append(f"layer {here}: tanh is not positively homogeneous; predicted with its linear regime "
                   "(gain 1), which only holds while E[y^2] << 1 (see check_calculus)")
    odd = self.kind in ("identity", "linear")
    if not s.sym and not odd:
      notes.append(f"layer {here}: {self.kind} applied to a non-symmetric input (e.g. a residual sum of "
                   "ReLU outputs); the gain 1/2 assumes a symmetric pre-activation")
    r_out, _ = act_corr(self.kind, s.r)
    sym = (odd or self.kind == "tanh") and s.sym
    return Step(s._replace(sq=gains(self.kind)[0] * s.sq, r=r_out, sym=sym), notes=tuple(notes))

  def backward(self, g: Backward, s_in: LayerSignal, extra) -> Backward:
    _, rb = act_corr(self.kind, s_in.r)
    return g._replace(sq=gains(self.kind)[1] * g.sq, r=rb * g.r)

  def apply(self, p, x, key, probe):
    return mlp.get_activation(self.kind)(x), probe._replace(acts=probe.acts + ((probe.last_weight, self.kind, x),))


@dataclasses.dataclass(frozen=True)
class Scale(Layer):
  """Fixed scalar multiplier a (forward and backward second moments times a^2)."""
  a: float

  def check(self, n, spatial, where, here):
    if not math.isfinite(self.a):
      raise ValueError(f"{where}: a must be finite")
    return n, spatial

  def forward(self, s: LayerSignal, here: str) -> LayerSignal:
    return s._replace(sq=self.a ** 2 * s.sq)

  def backward(self, g: Backward, s_in: LayerSignal, extra) -> Backward:
    return g._replace(sq=self.a ** 2 * g.sq)

  def apply(self, p, x, key, probe):
    return self.a * x


@dataclasses.dataclass(frozen=True)
class Dropout(Layer):
  """Keep each entry with probability `keep`; `rescale=True` divides the kept ones by `keep` (inverted)."""
  keep: float
  rescale: bool = False
  needs_key = True

  def check(self, n, spatial, where, here):
    if not 0 < self.keep <= 1:
      raise ValueError(f"{where}: keep must be in (0, 1]")
    return n, spatial

  def gain(self) -> float:
    return self.keep * (1 / self.keep ** 2 if self.rescale else 1.0)

  def forward(self, s: LayerSignal, here: str) -> LayerSignal:
    return s._replace(sq=self.gain() * s.sq, r=self.keep * s.r)

  def backward(self, g: Backward, s_in: LayerSignal, extra) -> Backward:
    return g._replace(sq=self.gain() * g.sq, r=self.keep * g.r)

  def apply(self, p, x, key, probe):
    if key is None:
      raise ValueError("a Dropout layer needs a key")
    probe = probe._replace(key_count=probe.key_count + 1)
    mask = jax.random.bernoulli(jax.random.fold_in(key, probe.key_count), self.keep, x.shape)
    return jnp.where(mask, x / self.keep if self.rescale else x, 0.0), probe


@dataclasses.dataclass(frozen=True)
class AvgPool(Layer):
  """Average pooling with stride = window."""
  window: tuple

  def out_shape(self, n, spatial):
    return n, tuple(a // b for a, b in zip(spatial, positive_ints(self.window, "window")))

  def check(self, n, spatial, where, here):
    window = positive_ints(self.window, "AvgPool.window")
    if len(window) != len(spatial) or any(s % w for s, w in zip(spatial, window)):
      raise ValueError(f"{where}: window {window} must match and divide the spatial size {spatial}")
    return self.out_shape(n, spatial)

  def forward(self, s: LayerSignal, here: str) -> LayerSignal:
    k, r = math.prod(positive_ints(self.window, "window")), s.r
    gain = (1 + (k - 1) * r) / k
    return s._replace(spatial=self.out_shape(s.n, s.spatial)[1], sq=gain * s.sq, r=r / gain if gain > 0 else r)

  def backward(self, g: Backward, s_in: LayerSignal, extra) -> Backward:
    k = math.prod(positive_ints(self.window, "window"))
    return g._replace(sq=g.sq / k ** 2, pooled=True)

  def apply(self, p, x, key, probe):
    window = positive_ints(self.window, "window")
    dims = (1,) + window + (1,)
    return jax.lax.reduce_window(x, 0.0, jax.lax.add, dims, dims, "VALID") / math.prod(window)


@dataclasses.dataclass(frozen=True)
class Flatten(Layer):
  """(batch, *spatial, n) -> (batch, prod(spatial) n)."""

  def out_shape(self, n, spatial):
    return n * math.prod(spatial), ()

  def forward(self, s: LayerSignal, here: str) -> LayerSignal:
    return s._replace(n=s.n * math.prod(s.spatial), spatial=())

  def backward(self, g: Backward, s_in: LayerSignal, extra) -> Backward:
    return g

  def apply(self, p, x, key, probe):
    return x.reshape(x.shape[0], -1)


@dataclasses.dataclass(frozen=True)
class Residual(Layer):
  """x + a f(x), f = `branch` (a layer tuple mapping the input's shape to itself).

  The calculus's rule (both second moments times 1 + a^2 s, s = f's forward gain) drops the cross term
  2 a E[x f(x)]; that is exact in expectation when f ends with a zero-mean weight layer.
  """
  branch: tuple
  a: float = 1.0

  def check(self, n, spatial, where, here):
    out = check_stack(self.branch, n, spatial, f"{here}.branch.")
    if out != (n, spatial):
      raise ValueError(f"{where}: the branch maps (n={n}, spatial={spatial}) to (n={out[0]}, "
                       f"spatial={out[1]}); a residual branch must keep the shape")
    if not math.isfinite(self.a):
      raise ValueError(f"{where}: a must be finite")
    return n, spatial

  def forward(self, s: LayerSignal, here: str) -> Step:
    branch = forward_stack(self.branch, s, f"{here}.branch.")
    f_out, a2 = branch.out, self.a ** 2
    sq = s.sq + a2 * f_out.sq
    r = (s.sq * s.r + a2 * f_out.sq * f_out.r) / sq if sq > 0 else s.r
    return Step(s._replace(sq=sq, r=r, sym=s.sym and f_out.sym), extra=branch.tape, records=branch.records,
                notes=branch.notes)

  def backward(self, g: Backward, s_in: LayerSignal, tape) -> BackStep:
    branch = backward_stack(tape, g._replace(sq=self.a ** 2 * g.sq))
    gb = branch.grad
    sq = g.sq + gb.sq
    r = (g.sq * g.r + gb.sq * gb.r) / sq if sq > 0 else g.r
    return BackStep(g._replace(sq=sq, r=r, pooled=g.pooled or gb.pooled), branch.records)

  def init_params(self, key, n, spatial, dtype):
    return init_stack(key, tuple(self.branch), n, spatial, dtype)

  def apply(self, p, x, key, probe):
    y, probe = run_stack(p, tuple(self.branch), x, key, probe)
    return x + self.a * y, probe

  def flat(self):
    yield from flat_layers(tuple(self.branch))

  def weight_params(self, p):
    yield from flat_params(p, tuple(self.branch))


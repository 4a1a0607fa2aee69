"""A layer list as the calculus sees it: the `Layer` interface and the loops that chain it.

Every layer type (`layers.py`) is one rule object carrying its own validation, forward and backward
moment rules, parameter init and forward pass; the loops here only chain them, so adding a layer type
touches one class. Activations are (batch, *spatial, channels) arrays, as in flax.

The moment rules pass typed signals (signals.py): `LayerSignal` forward, `Backward` backward. A rule returns
the next signal, or a `Step` / `BackStep` when it has more to say (what its backward rule needs, weight-layer
records, notes); the forward pass returns its output, or the output and a new `Probe` when it records
something. Nothing is written into what a caller passed in.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

import jax

from jscale import checks
from jscale.calculus.signals import Backward, LayerSignal


class Step(NamedTuple):
  """A forward rule's answer."""
  out: LayerSignal
  extra: Any = None    # what the layer's backward rule needs
  records: tuple = ()  # one record per weight layer within (weights.WeightForward), in layer order
  notes: tuple = ()    # where a rule is used outside its assumptions


class BackStep(NamedTuple):
  """A backward rule's answer."""
  grad: Backward
  records: tuple = ()  # one weights.WeightBackward per weight layer within, in layer order


class StackForward(NamedTuple):
  """`forward_stack`'s answer."""
  out: LayerSignal
  tape: tuple          # (layer, its input signal, its extra) per layer, for `backward_stack`
  records: tuple
  notes: tuple


class Layer:
  """Interface of a calculus layer (subclasses are frozen dataclasses, hashable for jit)."""
  is_weight = False  # a weight layer: one entry of `Moments`, params mlp.Dense(w, b)
  needs_key = False  # its forward pass draws randomness (Dropout)

  def out_shape(self, n: int, spatial: tuple) -> tuple[int, tuple]:
    """(channels, spatial) of the output for an input of `n` channels on `spatial` (already checked)."""
    return n, spatial

  def check(self, n: int, spatial: tuple, where: str, here: str) -> tuple[int, tuple]:
    """Validate against the input shape (ValueError naming `where`); returns `out_shape`."""
    return self.out_shape(n, spatial)

  def forward(self, s: LayerSignal, here: str) -> LayerSignal | Step:
    """The output signal (a `Step` to add what `backward` needs, weight records or notes); `here` is the
    layer's path in the list, for notes."""
    raise NotImplementedError

  def backward(self, g: Backward, s_in: LayerSignal, extra) -> Backward | BackStep:
    """The gradient signal at the input from the one at the output (`s_in`: the forward input signal)."""
    raise NotImplementedError

  def init_params(self, key, n: int, spatial: tuple, dtype):
    """Parameters: () for parameter-free layers."""
    return ()

  def apply(self, p, x, key, probe: "Probe"):
    """Forward pass of x: (batch, *spatial, n); returns the output, or (output, probe) to record something
    (`probe._replace(...)`)."""
    raise NotImplementedError

  def flat(self):
    """The layers of this one, nested ones flattened (Residual yields its branch's)."""
    yield self

  def weight_params(self, p):
    """The mlp.Dense params of the weight layers within, in `flat` order."""
    yield from ()


def positive_ints(v, what) -> tuple:
  """A positive int or a non-empty sequence of them, as a tuple of ints."""
  v = tuple(v) if isinstance(v, Iterable) else (v,)
  if not v:
    raise ValueError(f"{what} must be positive ints, got ()")
  return tuple(checks.positive_int(t, f"{what} entry") for t in v)


def check_input(n_in, spatial):
  return checks.positive_int(n_in, "n_in"), (positive_ints(spatial, "spatial") if spatial else ())


def check_stack(layers, n_in, spatial, path=""):
  """Validate a layer list against an input shape before any compute; returns the output (n, spatial)."""
  if not isinstance(layers, (list, tuple)) or not layers:
    raise ValueError(f"layers{' at ' + path if path else ''} must be a non-empty list of layers, got {layers!r}")
  for i, layer in enumerate(layers):
    where = f"layer {path}{i} ({layer!r})"
    if not isinstance(layer, Layer):
      raise ValueError(f"{where}: not a calculus layer (Linear, Conv, Act, Scale, Dropout, AvgPool, Flatten, "
                       "Residual)")
    n_in, spatial = layer.check(n_in, spatial, where, f"{path}{i}")
  return n_in, spatial


def forward_stack(layers, sig: LayerSignal, path: str = "") -> StackForward:
  """Forward moment rules through a layer list."""
  tape, records, notes = [], [], []
  for i, layer in enumerate(layers):
    step = layer.forward(sig, f"{path}{i}")
    step = step if isinstance(step, Step) else Step(step)
    tape.append((layer, sig, step.extra))
    records += step.records
    notes += step.notes
    sig = step.out
  return StackForward(sig, tuple(tape), tuple(records), tuple(notes))


def backward_stack(tape, g: Backward) -> BackStep:
  """Backward moment rules through a `forward_stack` tape; the records come back in layer order."""
  records = ()
  for layer, s_in, extra in reversed(tape):
    step = layer.backward(g, s_in, extra)
    step = step if isinstance(step, BackStep) else BackStep(step)
    g, records = step.grad, tuple(step.records) + records
  return BackStep(g, records)


def init_stack(key, layers, n, spatial, dtype):
  params = []
  for layer, k in zip(layers, jax.random.split(key, len(layers))):
    params.append(layer.init_params(k, n, spatial, dtype))
    n, spatial = layer.out_shape(n, spatial)
  return tuple(params)


class Probe(NamedTuple):
  """What one forward pass records: weight-layer inputs / outputs and activation inputs. `eps_x` / `eps_y`
  are added to each weight layer's input / output (zeros whose vjp gives the gradients there)."""
  eps_x: Any = None
  eps_y: Any = None
  xs: tuple = ()            # each weight layer's input
  ys: tuple = ()            # ... and output
  acts: tuple = ()          # (index of the weight layer right before or None, kind, input) per activation
  last_weight: int | None = None
  key_count: int = 0        # keys folded in so far (Dropout)


def run_stack(params, layers, x, key, probe: Probe) -> tuple:
  """The forward pass of a layer list: (output, `probe` with what the pass recorded)."""
  for p, layer in zip(params, layers):
    out = layer.apply(p, x, key, probe)
    x, probe = out if isinstance(out, tuple) else (out, probe)
    if not layer.is_weight:
      probe = probe._replace(last_weight=None)
  return x, probe


def flat_layers(layers):
  for layer in layers:
    yield from layer.flat()


def flat_params(params, layers):
  for p, layer in zip(params, layers):
    yield from layer.weight_params(p)

"""A layer list as the calculus sees it: the `Layer` interface and the loops that chain it.

Every layer type (`layers.py`) is one rule object carrying its own validation, forward and backward
moment rules, parameter init and forward pass; the loops here only chain them, so adding a layer type
touches one class. Activations are (batch, *spatial, channels) arrays, as in flax.

Signals passed between the moment rules are plain dicts:
  forward  s = dict(n=channels, spatial=grid, sq=E[x^2], r=corr between examples, sym=symmetric law)
  backward g = dict(sq=E[Delta^2], r=corr between examples, pooled=below an AvgPool)
"""
from __future__ import annotations

import jax
import numpy as np


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

  def forward(self, s: dict, here: str, recs: list, notes: list):
    """(output signal, what `backward` needs); weight layers append their record to `recs`."""
    raise NotImplementedError

  def backward(self, g: dict, s_in: dict, extra, recs: list) -> dict:
    """The gradient signal at the input from the one at the output."""
    raise NotImplementedError

  def init_params(self, key, n: int, spatial: tuple, dtype):
    """Parameters: () for parameter-free layers."""
    return ()

  def apply(self, p, x, key, tape: "Tape"):
    """Forward pass of x: (batch, *spatial, n)."""
    raise NotImplementedError

  def flat(self):
    """The layers of this one, nested ones flattened (Residual yields its branch's)."""
    yield self

  def weight_params(self, p):
    """The mlp.Dense params of the weight layers within, in `flat` order."""
    yield from ()


def positive_ints(v, what) -> tuple:
  v = (v,) if isinstance(v, (int, np.integer)) else tuple(v)
  if not v or any(isinstance(t, bool) or int(t) != t or t <= 0 for t in v):
    raise ValueError(f"{what} must be positive ints, got {v!r}")
  return tuple(int(t) for t in v)


def check_input(n_in, spatial):
  if isinstance(n_in, bool) or not isinstance(n_in, (int, np.integer)) or n_in <= 0:
    raise ValueError(f"n_in must be a positive int, got {n_in!r}")
  return int(n_in), (tuple(positive_ints(spatial, "spatial")) if spatial else ())


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


def forward_stack(layers, sig, path, recs, notes):
  """Forward moment rules through a layer list: (output signal, tape for `backward_stack`)."""
  tape = []
  for i, layer in enumerate(layers):
    s = dict(sig)
    sig, extra = layer.forward(s, f"{path}{i}", recs, notes)
    tape.append((layer, s, extra))
  return sig, tape


def backward_stack(tape, g, recs):
  for layer, s_in, extra in reversed(tape):
    g = layer.backward(g, s_in, extra, recs)
  return g


def init_stack(key, layers, n, spatial, dtype):
  params = []
  for layer, k in zip(layers, jax.random.split(key, len(layers))):
    params.append(layer.init_params(k, n, spatial, dtype))
    n, spatial = layer.out_shape(n, spatial)
  return tuple(params)


class Tape:
  """Collects weight-layer inputs/outputs and activation inputs during one forward pass; `eps_x` /
  `eps_y` are added to each weight layer's input / output (zeros whose vjp gives the gradients)."""

  def __init__(self, eps_x=None, eps_y=None):
    self.eps_x, self.eps_y = eps_x, eps_y
    self.xs, self.ys, self.acts, self.last_weight = [], [], [], None
    self.key_count = 0


def run_stack(params, layers, x, key, tape: Tape):
  for p, layer in zip(params, layers):
    x = layer.apply(p, x, key, tape)
    if not layer.is_weight:
      tape.last_weight = None
  return x


def flat_layers(layers):
  for layer in layers:
    yield from layer.flat()


def flat_params(params, layers):
  for p, layer in zip(params, layers):
    yield from layer.weight_params(p)

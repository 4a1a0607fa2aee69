"""The signals the moment rules hand from one operation to the next (docs/calculus.md).

  Forward      what the rules know about a value v: E[v^2], the uncentred correlation r between two examples'
               entries, whether v's law is symmetric (the ReLU gain 1/2 needs it)
  Backward     the same for the gradient arriving at v, and whether it passed an average pooling (whose
               spatial correlation the rules do not track)
  LayerSignal  `Forward` of a layer list (`stack.Layer`), with the value's channels and spatial grid

On a traced graph (rules.py) a signal can be unknown: `sq` is None exactly when `why` says why.
"""
from __future__ import annotations

from typing import NamedTuple


class Forward(NamedTuple):
  sq: float | None
  r: float
  sym: bool
  why: str | None = None
  rp: float | None = None  # the correlation between two positions (tokens) of one example; None: not tracked
  rf: float | None = None  # the correlation between two features of one position (a common offset, e.g. the
                           # mean of a GELU's output); None: not tracked (taken as 0)

  @classmethod
  def unknown(cls, why: str) -> "Forward":
    return cls(None, 0.0, False, why)


class Backward(NamedTuple):
  sq: float | None
  r: float
  pooled: bool = False
  why: str | None = None
  rp: float | None = None  # as Forward.rp, for the gradient

  @classmethod
  def unknown(cls, why: str) -> "Backward":
    return cls(None, 0.0, False, why)

  def scaled(self, f: float, r: float | None = None, pooled: bool | None = None,
             rp: float | None = None) -> "Backward":
    """E[Delta^2] times f (and a new correlation, pooled flag or position correlation); an unknown signal
    stays unknown."""
    if self.why:
      return self
    return self._replace(sq=self.sq * f, r=self.r if r is None else r,
                         pooled=self.pooled if pooled is None else pooled, rp=self.rp if rp is None else rp)


class LayerSignal(NamedTuple):
  n: int           # channels
  spatial: tuple   # the grid (() for vectors)
  sq: float
  r: float
  sym: bool

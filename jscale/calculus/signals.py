"""The signals the moment rules hand from one operation to the next (docs/calculus.md).

  Forward      what the rules know about a value v: E[v^2], the uncentred correlation r between two examples'
               entries, whether v's law is symmetric (the ReLU gain 1/2 needs it)
  Backward     the same for the gradient arriving at v, whether it passed an average pooling, and its spatial
               correlation: sp = sum over the example's other positions p' of E[g_p g_p'] / E[g^2] (pooling
               shares one gradient among a window's positions), and sp_gate, the same sp before the ReLU
               whose gate made this gradient (None where the last step was not a ReLU's gate)
  rc           (both) the correlation between two different positions of two different examples; with r (same
               position) and rp (same example) it gives the minibatch cross term of a leaf shared by tokens
  b            (Backward) how one example's gradient size follows its own forward scale (example_scale.py)
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
  rc: float | None = None  # the correlation between two positions of two different examples (a position
                           # embedding is shared by examples at the same position only: in r, not here);
                           # None: not tracked (taken as r rp, the product form)

  @classmethod
  def unknown(cls, why: str) -> "Forward":
    return cls(None, 0.0, False, why)


class Backward(NamedTuple):
  sq: float | None
  r: float
  pooled: bool = False
  why: str | None = None
  rp: float | None = None  # as Forward.rp, for the gradient
  sp: float = 0.0
  sp_gate: float | None = None
  rc: float | None = None  # as Forward.rc, for the gradient
  b: float | None = None   # d log |g_b|^2 / d log E[v_b^2]: how one example's gradient here follows its own
                           # forward scale (example_scale.py); None: not tracked
  rp_gate: float | None = None  # tokens: a smooth activation's slope right above couples two positions'
                                # gradients to their own inputs; the dense layer below adds rp_gate / fan_in
                                # to its pair term (elementwise.gate_coupling); None: no such activation

  @classmethod
  def unknown(cls, why: str) -> "Backward":
    return cls(None, 0.0, False, why)

  def scaled(self, f: float, r: float | None = None, pooled: bool | None = None,
             rp: float | None = None, sp: float | None = None, gate: bool = True,
             rc: float | None = None) -> "Backward":
    """E[Delta^2] times f (and a new correlation, pooled flag, token correlation rp, spatial correlation sp or
    cross-example token correlation rc);
    `gate=False` forgets sp_gate and rp_gate (a layer between this gradient and the gate). An unknown signal stays
    unknown."""
    if self.why:
      return self
    return self._replace(sq=self.sq * f, r=self.r if r is None else r,
                         pooled=self.pooled if pooled is None else pooled, rp=self.rp if rp is None else rp,
                         sp=self.sp if sp is None else sp, sp_gate=self.sp_gate if gate else None,
                         rc=self.rc if rc is None else rc, rp_gate=self.rp_gate if gate else None)


class LayerSignal(NamedTuple):
  n: int           # channels
  spatial: tuple   # the grid (() for vectors)
  sq: float
  r: float
  sym: bool


def cross_position(sig) -> float | None:
  """A signal's rc, or where it is not tracked the product form r rp (two examples' entries at two positions
  as correlated as the same example's times the same position's); None when positions are not tracked."""
  if sig.rc is not None:
    return sig.rc
  return None if sig.rp is None else sig.r * sig.rp

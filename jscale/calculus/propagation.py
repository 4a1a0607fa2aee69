"""Propagating signals through a flat jaxpr graph (tracing.py): the forward pass, the backward pass and the
bookkeeping of unknown values. Which rule applies to which primitive lives in rules.py (`Predictor`).

Signals: forward dict(sq=E[v^2], r=corr between examples, sym, why), backward dict(sq, r, pooled, why);
sq is None exactly when why says why.
"""
from __future__ import annotations

import math

import numpy as np

from jscale.calculus.tracing import Lit, Tag, is_float

_REASONS = {
    "reduce_window_max": "max pooling has no rule: it does not keep nu (paper Table 1)",
    "reduce_max": "a max over positions (max pooling) has no rule: it does not keep nu (paper Table 1)",
    "argmax": "argmax has no rule",
    "logistic": "sigmoid has no rule: it is not positively homogeneous and does not keep nu (paper Table 1)",
    "rsqrt": "normalisation (a division by a measured scale) has no rule in the calculus",
    "sqrt": "normalisation (a division by a measured scale) has no rule in the calculus",
    "exp": "exp (softmax / attention) has no rule in the calculus",
    "integer_pow": "a power of an activation (normalisation, gelu) has no rule in the calculus",
    "erf": "erf (gelu) has no rule: it is not positively homogeneous",
}


def unknown_sig(why):
  return dict(sq=None, r=0.0, sym=False, why=why)


class Propagation:
  """Forward then backward pass over a graph, dispatching each equation to the subclass's `rule_<primitive>`.
  After `run`: `fwd`, `bwd` (per value id), `ops` (weight / bias / scalar uses of parameter leaves), `acts`
  (recognised activations), `leaf_why`."""

  def __init__(self, graph, tags, const_vals, leaf_sq, x_sig, batch_size):
    self.g, self.tags, self.cv = graph, tags, dict(graph.consts, **const_vals)
    self.leaf_sq, self.B = leaf_sq, batch_size
    self.fwd = {graph.x_id: x_sig}
    self.bwd = {}
    self.back = []      # (eqn, [(in id, fn(g_out) -> contribution)])
    self.ops, self.acts, self.notes = [], [], []
    self.leaf_why = {}

  # -- helpers
  def tag(self, a):
    return Tag("const") if isinstance(a, Lit) else self.tags.get(a, Tag("const"))

  def const(self, a):
    if isinstance(a, Lit):
      return a.val
    return self.cv.get(a)

  def shape(self, a):
    return tuple(np.shape(a.val)) if isinstance(a, Lit) else tuple(self.g.avals[a].shape)

  def per_example(self, a) -> int:
    return math.prod(self.shape(a)[1:])

  def unknown(self, e, why):
    for o in e.outs:
      self.fwd[o] = unknown_sig(why)
    ins = [a for a in e.ins if self.tag(a).kind == "act"]
    self.back.append((e, [(a, lambda g, why=why: dict(sq=None, r=0.0, pooled=False, why=g["why"] or why))
                          for a in ins]))
    for a in e.ins:
      t = self.tag(a)
      if t.kind == "param":
        self.leaf_why.setdefault(t.leaf, why)

  def set_out(self, e, sig, backs):
    self.fwd[e.outs[0]] = sig
    self.back.append((e, backs))

  # -- the pass
  def run(self, out_grads: dict):
    for e in self.g.eqns:
      ins = [a for a in e.ins if self.tag(a).kind == "act"]
      if not ins or not all(is_float(self.g.avals[o]) for o in e.outs):
        viewed = all(self.tags.get(o) is not None and self.tags[o].kind == "param" for o in e.outs)
        for a in e.ins:  # parameters used outside any activation path (views of a leaf are fine)
          t = self.tag(a)
          if t.kind == "param" and not ins and not viewed:
            self.leaf_why.setdefault(t.leaf, f"used by '{e.name}' on parameters only (not a layer the calculus "
                                     "knows)")
        continue
      upstream = next((self.fwd[a]["why"] for a in ins if self.fwd.get(a, unknown_sig("?"))["why"]), None)
      if upstream:
        self.structure_only(e, ins, upstream)
        continue
      rule = getattr(self, "rule_" + e.name, None)
      if rule is None:
        self.unknown(e, _REASONS.get(e.name, f"no rule for the primitive '{e.name}'"))
        continue
      why = rule(e, ins)
      if why:
        self.unknown(e, why)
    self.backward(out_grads)
    return self

  def structure_only(self, e, ins, why):
    """Downstream of an unknown value: record what the op is (kind, fans, taps) with no moments."""
    rule = getattr(self, "rule_" + e.name, None)
    n_ops, n_back, saved = len(self.ops), len(self.back), {a: self.fwd[a] for a in ins}
    if rule is not None:
      for a in ins:
        self.fwd[a] = dict(sq=0.0, r=0.0, sym=True, why=None)
      try:
        rule(e, ins)
      except (ArithmeticError, ValueError, TypeError):
        pass
      self.fwd.update(saved)
      for r in self.ops[n_ops:]:
        r["x_sig"] = saved[r["in_id"]]
      del self.back[n_back:]
    self.unknown(e, why)

  def backward(self, out_grads):
    self.bwd = {}
    for i, g in out_grads.items():
      self._acc(i, g)
    for e, backs in reversed(self.back):
      gs = [self.bwd.get(o) for o in e.outs]
      if all(g is None for g in gs):
        continue
      g = gs[0] if gs[0] is not None else dict(sq=0.0, r=0.0, pooled=False, why=None)
      for a, fn in backs:
        self._acc(a, fn(g))

  def _acc(self, i, c):
    old = self.bwd.get(i)
    if old is None:
      self.bwd[i] = dict(c)
      return
    if old["why"] or c["why"]:
      self.bwd[i] = dict(sq=None, r=0.0, pooled=False, why=old["why"] or c["why"])
      return
    sq = old["sq"] + c["sq"]
    r = (old["sq"] * old["r"] + c["sq"] * c["r"]) / sq if sq > 0 else old["r"]
    self.bwd[i] = dict(sq=sq, r=r, pooled=old["pooled"] or c["pooled"], why=None)

  @staticmethod
  def scaled(g, f, r=None, pooled=None):
    if g["why"]:
      return dict(g)
    return dict(g, sq=g["sq"] * f, r=g["r"] if r is None else r, pooled=g["pooled"] if pooled is None else pooled)

"""Propagating signals through a flat jaxpr graph (tracing.py): the forward pass, the backward pass and the
bookkeeping of unknown values. Which rule applies to which primitive lives in rules.py (`Predictor`).

Signals are `signals.Forward` / `signals.Backward` per value id. The pass records each use of a parameter leaf
(`LeafUse`: a weight, bias or multiplier) and each recognised activation (`ActivationUse`); `run` returns
them with the signals as one `Propagated`.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from threadpoolctl import threadpool_limits

from jscale.calculus import attention_own, draw_gradient, draw_mean, example_scale, token_carry
from jscale.calculus.signals import Backward, Forward, cross_position
from jscale.calculus.tracing import Graph, Lit, Tag, is_float

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
    "scan": ("a scan (nn.scan / lax.scan: a loop over layers or steps) has no rule: inspect reads a flat graph "
             "(write the loop in Python to unroll it)"),
    "while": "a while loop has no rule: inspect reads a flat graph (write the loop in Python to unroll it)",
}
# A gather of a parameter by integer ids computed from the input (nn.Embed) cuts the float path from x: the
# values after it are computed from the parameters only, and every leaf on them says so.
_GATHER_WHY = ("the input reaches it through an embedding lookup (a gather of a parameter by integer ids), "
               "which has no rule: the calculus follows float activations; one-hot rows times a dense embedding "
               "are the same function and have one (jscale.models.Transformer)")
# What an equation's inputs get when only another of its outputs reached the loss.
_NO_GRAD = Backward(0.0, 0.0, False, None)
# A known placeholder input, to run a rule for its structure alone (`structure_only`).
_PLACEHOLDER = Forward(0.0, 0.0, True, None)
# Equations whose backward keeps Backward.b (an example's gradient scales with its input as with its output):
# weight layers, reshapes, fixed scalars, a bias add (one activation operand); the smooth activation sets its
# own (elementwise.py). Any other equation's contribution is untracked (b None) below it.
_KEEPS_B = frozenset({"dot_general", "reshape", "convert_element_type", "squeeze", "expand_dims", "copy",
                      "copy_p", "reduce_precision", "transpose", "rev", "broadcast_in_dim", "mul", "div", "neg",
                      "add", "sub", "add_any"})


class LeafUse(NamedTuple):
  """One use of a parameter leaf by a rule: as a weight layer ("dense", "conv"), a bias, or a multiplier."""
  leaf: int            # index among the float leaves
  kind: str            # "dense", "conv", "bias", "scalar" or "other" (an elementwise multiplier)
  op: str              # the primitive
  in_id: int           # the activation it acts on
  out_id: int
  x_sig: Forward       # the input's signal (a constant 1 for a bias)
  rho: float           # positions per example sharing each entry of the leaf
  w_sq: float          # the leaf's E[W^2]
  fan_in: int
  fan_out: int
  taps: int
  g: Backward | None = None  # the gradient at out_id (set by `run`); None when it does not reach the loss
  position_factor: float | None = None  # a block's own E[dW^2] / (rho E[x^2] E[Delta^2]) for one example
                                        # (attention's projections), in place of the product form
  batch_cross: float | None = None  # the minibatch gradient's cross-example term E[dW_b dW_b'] from the
                                    # examples' expected gradients (draw_gradient.leaf_cross), where a block
                                    # says the product of correlations does not hold (attention's keys)
  example_scale: float | None = None  # E_b[|x_b|^2 |dy_b|^2] / (E[x^2] E[dy^2]) (example_scale.kernel_factor);
                                      # None: 1


class ActivationUse(NamedTuple):
  kind: str            # "relu", "leaky_relu:0.1", "tanh", ...
  in_id: int
  out_id: int


class Propagated(NamedTuple):
  """What `Propagation.run` found."""
  graph: Graph
  fwd: dict            # value id -> Forward
  bwd: dict            # value id -> Backward
  uses: tuple          # LeafUse, in graph order
  acts: tuple          # ActivationUse, in graph order
  notes: tuple         # rules used outside their assumptions (may repeat)
  leaf_why: dict       # leaf index -> why it has no prediction, from operations outside its uses


class Propagation:
  """Forward then backward pass over a graph, dispatching each equation to the subclass's `rule_<primitive>`.
  A rule reads its operands' signals, sets its output's (`set_out`, with one backward function per
  activation operand) and returns None, or returns why it does not apply. The pass is one object's state,
  built up by the rules; `run` hands it back frozen."""

  def __init__(self, graph: Graph, tags: dict, *, const_vals: dict, leaf_sq, x_sig: Forward,
               leaf_vals=None, x_mean=None, x_scale_var=None, x_tok=None, x_tok_ex=None):
    self.g, self.tags, self.cv = graph, tags, {**graph.consts, **const_vals}
    self.leaf_sq = leaf_sq
    # the draw's own mean (draw_mean.py): with the leaves' values and the input's batch mean, each value's mean
    # over the batch is carried along and conditions the dense layers' shared correlations
    self.leaf_vals = leaf_vals
    self.mean = {} if x_mean is None or leaf_vals is None else {graph.x_id: np.asarray(x_mean, np.float64)}
    self.pvals = {} if leaf_vals is None else {i: v for i, v in zip(graph.leaf_ids, leaf_vals)}
    # the tokens' own covariance (token_carry.py), beside the mean; Predictor keeps it only where a
    # self-attention reads it
    self.tok = {} if x_tok is None or not self.mean else {graph.x_id: np.asarray(x_tok, np.float64)}
    self.mean_weights = {}   # attention weights' id -> attention_own's mean weights (attention_own.MEAN_WEIGHTS)
    # the batch's own examples' deviations from the batch mean, carried as rows of their own through the same
    # linear maps and the attention's uniform average (token_carry.EXAMPLES, read by attention_own.DIRECT)
    self.tok_ex = ({graph.x_id: x_tok_ex} if self.tok and x_tok_ex is not None and token_carry.EXAMPLES else {})
    # values downstream of an activation whose moments were taken at the draw's offsets (elementwise.py):
    # without token positions, only these are conditioned on the draw's mean (draw_mean.condition)
    self.drawn = set()
    self.fwd = {graph.x_id: x_sig}
    # each example's own scale (example_scale.py): V, the variance over examples of the log of its E[v_b^2];
    # value id -> (V of the scale its input sets, the dense output whose r sets its own term, that layer's
    # n_out (0: none), a factor), read by scale_var once that r is final
    self.scale = ({} if x_scale_var is None or x_sig.rp is not None else
                  {graph.x_id: (float(x_scale_var), None, 0, 1.0)})
    self.bwd = {}
    self.back = []      # (eqn, [(in id, fn(g_out) -> contribution)])
    self.ops, self.acts, self.notes = [], [], []
    self.op_grads = {}  # index into ops -> the gradient at its output
    self.position_factor_at = {}  # a leaf use's output id -> its position factor, set by a block's backward
    self.coherence_at = {}  # an attention's values id -> GaussianAttention.coherence (draw_gradient.MeanBackward)
    self.carried = None   # draw_gradient.MeanBackward of the last backward pass, where one ran
    self.leaf_extra = {}  # a dense leaf use's output id -> its examples' expected gradients' block term
    self.batch_cross_at = {}  # a leaf use's output id -> draw_gradient.leaf_cross
    self.leaf_why = {}
    # a smooth activation's couplings to the kernels beside it (unit_coupling.py): a dense use's output id ->
    # the factor on its backward; an activation's output id -> R from the activations above it, and the states
    # of the lower activations' perturbations that reach it
    self.unit_factor, self.h2_coupling, self.chains = {}, {}, {}
    # Blocks (blocks.py): several equations read as one rule. eqn index -> the rule run there instead of the
    # primitive's; the block's other equations are skipped (their values are used inside the block only).
    self.block_at, self.skip = {}, set()
    self.gathered = set()   # values computed from an embedding lookup's output (_GATHER_WHY)

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

  def use(self, rec: LeafUse):
    """Record a use of a leaf; returns the function that records the gradient reaching its output."""
    i = len(self.ops)
    self.ops.append(rec)

    def seen(g: Backward) -> Backward:
      self.op_grads[i] = g
      return g

    return seen

  def unknown(self, e, why):
    for o in e.outs:
      self.fwd[o] = Forward.unknown(why)
    ins = [a for a in e.ins if self.tag(a).kind == "act"]
    self.back.append((e, [(a, lambda g, why=why: Backward.unknown(g.why or why)) for a in ins]))
    for a in e.ins:
      t = self.tag(a)
      if t.kind == "param":
        self.leaf_why.setdefault(t.leaf, why)

  def set_out(self, e, sig: Forward, backs):
    self.fwd[e.outs[0]] = sig
    self.back.append((e, backs))

  # -- the pass
  def run(self, out_grads: dict, out_cot: dict | None = None) -> Propagated:
    """Both passes, `out_grads` (value id -> Backward) at the outputs; `out_cot` (value id -> (batch, ...)
    array): each example's loss gradient there, carried down by the draw's mean Jacobian
    (draw_gradient.py) where the draw's mean is carried and token positions are tracked."""
    # The rules' matrices are small (d x d, T d x d, B x B): a multithreaded BLAS only spins on them beside XLA
    # and other processes on few cores (the attention's token-covariance SVD of a 496 x 64 matrix took 0.5-0.8 s
    # of CPU instead of 2 ms on 2 busy cores; docs/performance.md, "Eighteenth session"). The seed-1300
    # inspect JSON is byte for byte the same at one thread.
    with threadpool_limits(limits=1):
      return self._run(out_grads, out_cot)

  def _run(self, out_grads: dict, out_cot: dict | None) -> Propagated:
    for n, e in enumerate(self.g.eqns):
      if n in self.skip:
        continue
      ins = [a for a in e.ins if self.tag(a).kind == "act"]
      if n in self.block_at:
        ins = self.block_at[n].inputs
      if not ins or not all(is_float(self.g.avals[o]) for o in e.outs):
        self._param_values(e)
        viewed = all(self.tags.get(o) is not None and self.tags[o].kind == "param" for o in e.outs)
        gathered = e.name == "gather" or any(isinstance(a, int) and a in self.gathered for a in e.ins)
        if gathered:
          self.gathered.update(e.outs)
        for a in e.ins:  # parameters used outside any activation path (views of a leaf are fine)
          t = self.tag(a)
          if t.kind == "param" and not ins and not viewed:
            self.leaf_why.setdefault(t.leaf, _GATHER_WHY if gathered else f"used by '{e.name}' on parameters "
                                     "only (not a layer the calculus knows)")
        continue
      upstream = next((self.fwd[a].why for a in ins if self.fwd.get(a, Forward.unknown("?")).why), None)
      if n in self.block_at:
        why = upstream or self.block_at[n].rule(self, self.block_at[n])
        if not why and self.mean:
          self._block_mean(self.block_at[n])
        if why:
          self.unknown(e, why)
          # the block's own inputs (unknown() only sees this equation's operands)
          self.back.append((e, [(a, lambda g, why=why: Backward.unknown(g.why or why)) for a in ins
                                if a not in e.ins]))
        continue
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
      elif self.mean:
        self._carry_mean(e)
    self.backward(out_grads, out_cot)
    uses = tuple(u._replace(g=self.op_grads.get(i), position_factor=self.position_factor_at.get(u.out_id),
                            batch_cross=self.batch_cross_at.get(u.out_id),
                            example_scale=example_scale.kernel_factor(
                                self.scale_var(u.in_id), self.op_grads[i].b if i in self.op_grads else None)
                            if u.kind == "dense" else None)
                 for i, u in enumerate(self.ops))
    return Propagated(self.g, dict(self.fwd), dict(self.bwd), uses, tuple(self.acts), tuple(self.notes),
                      dict(self.leaf_why))

  def carry_scale(self, a, o, f: float = 1.0):
    """o's V is a's times f (an example's log scale moves by log f of its own for each example: f = 1 for a
    reshape or a fixed scalar; the shrink of a constant added to it)."""
    v = self.scale.get(a)
    if v is not None:
      v_pop, r_id, n_out, f0 = v
      self.scale[o] = (v_pop, r_id, n_out, f0 * f)

  def scale_var(self, a, population: bool = False) -> float | None:
    """V of value a (example_scale.py), None where not tracked. `population`: without the last dense layer's
    own term, which is its units' sample (an example whose 64 units came out large has not a larger spread:
    no Jensen term from it), only the scale its input sets."""
    v = self.scale.get(a)
    if v is None:
      return None
    v_pop, r_id, n_out, f = v
    if population or not n_out:
      return v_pop * f
    return (v_pop + example_scale.dense_fresh(n_out, self.fwd[r_id].r)) * f

  # -- the draw's mean (draw_mean.py)
  def _param_values(self, e):
    """Values computed from parameters and constants only (views of a leaf), for the mean pass."""
    if not self.pvals or not all(isinstance(a, Lit) or a in self.pvals or self.const(a) is not None
                                 for a in e.ins):
      return
    try:
      outs = draw_mean.bind_eqn(e, [a.val if isinstance(a, Lit) else self.pvals.get(a, self.const(a))
                                    for a in e.ins])
    except Exception:  # noqa: BLE001 - not re-evaluable here: values after it have no mean
      return
    self.pvals.update(zip(e.outs, outs))

  def _carry_mean(self, e):
    got = draw_mean.linear_mean(self, e, self.g.avals[self.g.x_id].shape[0])
    if got is None:
      return
    for o, m in zip(e.outs, got):
      if m is not None:
        self.mean[o] = m
    for tok in (self.tok, self.tok_ex):   # the factor rows, then the batch's own examples: the same linear carry
      if tok:
        rows = token_carry.linear(self, e, self.g.avals[self.g.x_id].shape[0], tok)
        for o, F in zip(e.outs, rows or ()):
          if o in self.mean:
            tok[o] = F
    o = e.outs[0]
    if o not in self.mean:
      return
    acts = [a for a in e.ins if not isinstance(a, Lit) and self.tag(a).kind == "act"]
    drawn = any(a in self.drawn for a in acts)
    if drawn:
      self.drawn.update(e.outs)
    if e.name in ("add", "sub", "add_any") and len(acts) == 2:
      # a sum of two activations: the rules drop the cross term, which over weight draws is zero; one draw's
      # two means are fixed vectors with a dot product of their own (2 m_a m_b, in E[y^2] and in r)
      self.fwd[o] = draw_mean.condition(self.fwd[o], self.mean[o], self.shape(o)[-1], drawn)
      if token_carry.ADD_CROSS and self.tok_ex and acts[0] != acts[1]:
        self.fwd[o] = token_carry.cross_examples(self.fwd[o], self.tok_ex.get(acts[0]), self.tok_ex.get(acts[1]),
                                                 -1.0 if e.name == "sub" else 1.0)
      return
    last = self.ops[-1] if self.ops else None
    if last is None or last.out_id != o or last.kind not in ("dense", "bias"):
      return
    # a dense layer's features are its fan-out; a bias adds per feature (or per position and feature: a
    # position embedding)
    n_feat = last.fan_out if last.kind == "dense" or last.fan_out < self.per_example(o) else self.shape(o)[-1]
    self.fwd[o] = draw_mean.condition(self.fwd[o], self.mean[o], n_feat, drawn)

  def _block_mean(self, b):
    if b.kind == "attention" and attention_own.OUT_SPLIT:   # the mean's parts once, for both
      parts = draw_mean.attention_mean_parts(self, b)
      m = draw_mean.mean_of_parts(parts)
      o, split = b.info["out"], attention_own.OUT_SPLIT
      e = self.mean_weights.get(("examples", b.info.get("p")))
      if parts is not None and split == "mean":
        self.fwd[o] = draw_mean.mean_to_shared(self.fwd[o], m)
      elif parts is not None and split == "own" and e is not None:
        self.fwd[o] = draw_mean.examples_to_shared(self.fwd[o], e)
      elif parts is not None and split == "cov":
        self.fwd[o] = draw_mean.cov_to_shared(self.fwd[o], *parts)
    else:
      m = draw_mean.block_mean(self, b)
    if m is not None:
      self.mean[b.info["out"]] = m
      for tok in (self.tok, self.tok_ex):
        F = token_carry.block(self, b, tok) if tok else None
        if F is not None:
          tok[b.info["out"]] = F
      if any(a in self.drawn for a in b.inputs):
        self.drawn.add(b.info["out"])

  def structure_only(self, e, ins, why):
    """Downstream of an unknown value: record what the op is (kind, fans, taps) with no moments."""
    rule = getattr(self, "rule_" + e.name, None)
    n_ops, n_back, saved = len(self.ops), len(self.back), {a: self.fwd[a] for a in ins}
    if rule is not None:
      for a in ins:
        self.fwd[a] = _PLACEHOLDER
      try:
        rule(e, ins)
      except (ArithmeticError, ValueError, TypeError):
        pass
      self.fwd.update(saved)
      self.ops[n_ops:] = [u._replace(x_sig=saved[u.in_id]) for u in self.ops[n_ops:]]
      del self.back[n_back:]
    self.unknown(e, why)

  def backward(self, out_grads, out_cot=None):
    self.bwd = {}
    for i, g in out_grads.items():
      self._acc(i, g)
    carried = self.carried = self._mean_backward(out_cot)
    blocks = {b.info["out"]: b for b in self.block_at.values()}  # a block's back is keyed by its output
    dense_outs = {u.out_id for u in self.ops if u.kind in ("dense", "conv")} if carried is not None else set()
    for e, backs in reversed(self.back):
      gs = [self.bwd.get(o) for o in e.outs]
      if all(g is None for g in gs):
        continue
      if carried is not None:
        o = e.outs[0]
        if o in self.bwd and o not in out_grads and carried.at(o) is not None:
          self.bwd[o] = gs[0] = draw_gradient.with_cross(self.bwd[o], carried, o)
        if o in self.bwd and o not in out_grads and self.bwd[o].rp is not None and carried.at(o) is not None:
          self.bwd[o] = draw_gradient.condition(self.bwd[o], carried.at(o))
          gs[0] = self.bwd[o]
        b = blocks.get(o)
        t = draw_gradient.block_transpose(self, b) if b is not None else draw_gradient.linear_transpose(self, e)
        above = carried.at(o)
        got = carried.step(t, o, [a for a, _ in backs])
      g = gs[0] if gs[0] is not None else _NO_GRAD
      # a block (normalisation, attention) is keyed by its last equation, which may be a mul or an add
      keeps = getattr(e, "keeps_b", False) or (getattr(e, "name", None) in _KEEPS_B and len(backs) == 1
                                                and e.outs[0] not in blocks)
      f = self.unit_factor.get(e.outs[0])
      for a, fn in backs:
        c = fn(g)
        if f is not None and not c.why:
          c = c._replace(sq=c.sq * f)
        if carried is not None and o in dense_outs and got is not None and a in got:
          c = draw_gradient.realised(c, g, above, got[a], carried.excess(o))
        self._acc(a, c if keeps or c.b is None else c._replace(b=None))
    if carried is not None:
      for u in self.ops:
        if u.out_id in self.leaf_extra and carried.at(u.out_id) is not None:
          c = draw_gradient.leaf_cross(self, u, carried.at(u.out_id), self.leaf_extra[u.out_id])
          if c is not None:
            self.batch_cross_at[u.out_id] = c

  def _mean_backward(self, out_cot):
    """The carried gradients (draw_gradient.MeanBackward) seeded at the outputs, or None: without the draw's
    mean, or where no value has token positions (networks without them keep the expectation: the MLP calculus
    and every stored prediction of an MLP or a LeNet)."""
    if not out_cot or not self.mean:
      return None
    if not any(s.rp is not None and not s.why for i, s in self.fwd.items() if i != self.g.x_id):
      return None
    carried = draw_gradient.MeanBackward()
    for i, c in (out_cot() if callable(out_cot) else out_cot).items():
      carried.seed(i, c)
    return carried

  def _acc(self, i, c: Backward):
    old = self.bwd.get(i)
    if old is None:
      self.bwd[i] = c
      return
    if old.why or c.why:
      self.bwd[i] = Backward.unknown(old.why or c.why)
      return
    sq = old.sq + c.sq
    r = (old.sq * old.r + c.sq * c.r) / sq if sq > 0 else old.r
    rp = None
    if old.rp is not None and c.rp is not None:
      rp = (old.sq * old.rp + c.sq * c.rp) / sq if sq > 0 else old.rp
    sp = (old.sq * old.sp + c.sq * c.sp) / sq if sq > 0 else old.sp  # the two contributions' cross term dropped
    rc = None
    if (old.rc, c.rc) != (None, None) and None not in (cross_position(old), cross_position(c)):
      rc = (old.sq * cross_position(old) + c.sq * cross_position(c)) / sq if sq > 0 else cross_position(old)
    b = None
    if old.b is not None and c.b is not None:
      b = (old.sq * old.b + c.sq * c.b) / sq if sq > 0 else old.b
    self.bwd[i] = Backward(sq, r, old.pooled or c.pooled, None, rp=rp, sp=sp, rc=rc, b=b)

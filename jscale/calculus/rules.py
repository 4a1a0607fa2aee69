"""The calculus's rules applied to a flat jaxpr graph (tracing.py): predicted moments per value and per leaf.

Each equation with an activation operand is matched to a rule of docs/calculus.md:
  dot_general / conv_general_dilated against a parameter leaf  weight layer (any strides, padding, dilation,
        feature groups: the (output position, tap) pairs that land inside the input are counted exactly, which
        gives the SAME-padding k_eff of the docs and the stride = kernel rules as special cases)
  max(u, 0); select_n(u > 0, a u, b u) (jax.nn.relu, leaky_relu, jnp.where)   piecewise-linear activation
  a block of elementwise primitives on one activation (tanh, GELU, SiLU, softplus, ELU, sigmoid, ...)
        any activation, by quadrature (elementwise.py); LayerNorm / RMSNorm (normalisation.py); softmax
        attention (attention.py): the blocks of blocks.py, recognised before the per-primitive rules
  mul / div / neg by a constant              fixed scalar (a constant 0/1 mask: dropout)
  mul by a parameter leaf                    learnable scalar ("scalar") or elementwise multiplier ("other")
  add of a parameter leaf                    bias;  add of two activations: residual sum (cross term dropped)
  reduce_window_sum, reduce_sum over positions   (average / global) pooling with the ReLU correlation correction
        (and, backward, the window's shared gradient: Backward.sp, inspection_assembly.position_pairs)
  reshape, transpose, convert, slice, pad, concatenate   moments kept
Anything else touching an activation (max pooling, batch statistics, ...) makes the
value unknown, with the reason; unknown values propagate forward, and backward to everything below.
Signals: `signals.Forward` / `signals.Backward` (sq is None exactly when why says why).
"""
from __future__ import annotations

import math

import numpy as np

from jscale.calculus.blocks import find_blocks
from jscale.calculus.correlation import relu_corr
from jscale.calculus.propagation import ActivationUse, LeafUse, Propagation
from jscale.calculus.signals import cross_position, Forward
from jscale.calculus.tracing import scalar_value

def pwl_gains(p: float, q: float) -> tuple[float, float]:
  """(forward, backward) gain of phi(u) = p u (u > 0), q u (u < 0) on a symmetric input."""
  g = (p * p + q * q) / 2
  return g, g


def pwl_corr(p: float, q: float, r: float) -> tuple[float, float]:
  """(forward r, backward factor) of phi(u) = p relu(u) - q relu(-u) for input correlation r (Cho & Saul)."""
  r = min(max(r, -1.0), 1.0)
  e2 = (p * p + q * q) / 2
  fwd = ((p * p + q * q) / 2 * relu_corr(r) * 2 - 2 * p * q * relu_corr(-r)) / (2 * e2) if e2 > 0 else r
  both = (math.pi - math.acos(r)) / (2 * math.pi)
  cross = math.acos(r) / (2 * math.pi)
  bwd = ((p * p + q * q) * both + 2 * p * q * cross) / e2 if e2 > 0 else 1.0
  return fwd, bwd


def act_name(p: float, q: float) -> str:
  if p == 1 and q == 0:
    return "relu"
  if p == 1 and 0 < q < 1:
    return f"leaky_relu:{q:g}"
  if p == q:
    return f"linear:{p:g}"
  return f"piecewise_linear:{p:g},{q:g}"


def _axis_counts(n: int, k: int, stride: int, pad, lhs_dil: int, rhs_dil: int) -> np.ndarray:
  """Along one spatial axis: per output position, how many of the k window taps land on a real input entry
  (the input dilated by lhs_dil, padded by pad = (lo, hi), possibly negative; taps rhs_dil apart)."""
  lo, hi = pad
  n_dil = (n - 1) * lhs_dil + 1 if n > 0 else 0
  k_dil = (k - 1) * rhs_dil + 1
  n_out = max((lo + n_dil + hi - k_dil) // stride + 1, 0)
  pos = np.arange(n_out)[:, None] * stride + np.arange(k)[None, :] * rhs_dil - lo
  return np.sum((pos >= 0) & (pos < n_dil) & (pos % lhs_dil == 0), axis=1).astype(np.float64)


def _separable_counts(axes) -> np.ndarray:
  """The per-output counts of a window over several axes, flattened in C order: a tap lands on a real entry
  iff it does along every axis, so the count is the product of the axes' counts. Exact integers, as the conv
  (or reduce_window) of ones that it replaces computed them, without compiling one per shape."""
  out = np.ones(())
  for c in axes:
    out = np.multiply.outer(out, c)
  return out.reshape(-1)


def _counts(in_sp, k_sp, strides, padding, lhs_dil, rhs_dil) -> np.ndarray:
  """Per output position, how many kernel taps land on a real input entry."""
  d = len(in_sp)
  lhs, rhs = tuple(lhs_dil or (1,) * d), tuple(rhs_dil or (1,) * d)
  return _separable_counts(_axis_counts(n, k, s, p, a, b)
                           for n, k, s, p, a, b in zip(in_sp, k_sp, strides, padding, lhs, rhs))


def _window_counts(in_shape, params) -> np.ndarray:
  """Per output position of a reduce_window_sum (per example), how many real entries its window sums."""
  p = params
  return _separable_counts(_axis_counts(*args) for args in zip(
      in_shape[1:], p["window_dimensions"][1:], p["window_strides"][1:], p["padding"][1:],
      p["base_dilation"][1:], p["window_dilation"][1:]))


class Predictor(Propagation):
  """The rules of docs/calculus.md, one `rule_<primitive>` method each (see the module docstring), and the
  blocks' rules (blocks.py: activations from elementwise primitives, normalisations, attention)."""

  def __init__(self, graph, tags, **kw):
    super().__init__(graph, tags, **kw)
    for b in find_blocks(graph, tags, self.const):
      self.block_at[b.out_eqn] = b
      self.skip |= b.eqns
    self.skip -= set(self.block_at)
    if not any(b.kind == "attention" and b.info.get("d_in") for b in self.block_at.values()):
      self.tok = {}   # token_carry.py: read by self-attention only
      self.tok_ex = {}

  # -- shape-only rules
  def _pass(self, e, ins):
    a = ins[0]
    if len(ins) != 1 or self.shape(a)[:1] != self.shape(e.outs[0])[:1]:
      return "an operation that moves or mixes the batch axis"
    if e.name == "transpose" and e.params["permutation"][0] != 0:
      return "a transpose that moves the batch axis"
    if e.name == "broadcast_in_dim" and self.per_example(e.outs[0]) != self.per_example(a):
      return "a broadcast of an activation (repeats entries; no rule)"
    self.set_out(e, self.fwd[a], [(a, lambda g: g)])
    self.carry_scale(a, e.outs[0])

  rule_reshape = rule_convert_element_type = rule_squeeze = rule_expand_dims = rule_copy = rule_copy_p = _pass
  rule_reduce_precision = rule_transpose = rule_rev = rule_broadcast_in_dim = _pass

  def rule_slice(self, e, ins):
    a = ins[0]
    if e.params["start_indices"][0] != 0 or self.shape(e.outs[0])[0] != self.shape(a)[0]:
      return "a slice across examples"
    frac = self.per_example(e.outs[0]) / self.per_example(a)
    self.set_out(e, self.fwd[a], [(a, lambda g: g.scaled(frac))])

  def rule_pad(self, e, ins):
    a = e.ins[0]
    if a not in ins or scalar_value(self.const(e.ins[1])) != 0 or tuple(e.params["padding_config"][0]) != (0, 0, 0):
      return "padding with a non-zero value or across examples"
    frac = self.per_example(a) / self.per_example(e.outs[0])
    s = self.fwd[a]
    self.set_out(e, s._replace(sq=s.sq * frac), [(a, lambda g: g.scaled(1.0))])

  def rule_concatenate(self, e, ins):
    if e.params["dimension"] == 0 or len(ins) != len(e.ins):
      return "a concatenation across examples or with constants"
    sizes = [self.per_example(a) for a in ins]
    sigs = [self.fwd[a] for a in ins]
    tot = sum(sizes)
    sq = sum(n * s.sq for n, s in zip(sizes, sigs)) / tot
    r = sum(n * s.sq * s.r for n, s in zip(sizes, sigs)) / (tot * sq) if sq > 0 else 0.0
    self.set_out(e, Forward(sq, r, all(s.sym for s in sigs)), [(a, lambda g: g) for a in ins])

  # -- scalars, masks, learnable multipliers
  def _scale(self, e, a, c):
    s = self.fwd[a]
    arr = np.asarray(c, np.float64)
    c2, m = float(np.mean(arr * arr)), float(np.mean(arr))
    r = s.r * (m * m / c2) if c2 > 0 else s.r
    odd = np.all(arr >= 0) or np.all(arr <= 0)
    f = m * m / c2 if c2 > 0 else 1.0
    rc = None if s.rc is None else s.rc * f
    self.set_out(e, Forward(s.sq * c2, r, s.sym and bool(odd), None, s.rp, s.rf, rc),
                 [(a, lambda g: g.scaled(c2, r=g.r * f, sp=g.sp * f, rc=None if g.rc is None else g.rc * f))])
    if arr.size == 1:
      self.carry_scale(a, e.outs[0])

  def _param_mul(self, e, a, t):
    s, w_sq = self.fwd[a], self.leaf_sq[t.leaf]
    n_leaf = math.prod(self.shape(e.ins[1] if e.ins[0] == a else e.ins[0]))
    rho = self.per_example(a) / max(n_leaf, 1)
    kind = "scalar" if n_leaf == 1 else "other"
    seen = self.use(LeafUse(leaf=t.leaf, kind=kind, op=e.name, in_id=a, out_id=e.outs[0], x_sig=s, rho=rho,
                            w_sq=w_sq, fan_in=1, fan_out=1, taps=1))
    self.set_out(e, s._replace(sq=s.sq * w_sq), [(a, lambda g: seen(g).scaled(w_sq))])
    if n_leaf == 1:
      self.carry_scale(a, e.outs[0])

  def rule_mul(self, e, ins):
    if len(ins) == 2:
      return "a product of two activations (gating / attention) has no rule"
    a = ins[0]
    other = e.ins[1] if e.ins[0] == a else e.ins[0]
    t = self.tag(other)
    if t.kind == "param":
      return self._param_mul(e, a, t)
    c = self.const(other)
    if t.kind != "const" or c is None:
      return "a product with a value computed from the parameters (weight normalisation?) has no rule"
    return self._scale(e, a, c)

  def rule_div(self, e, ins):
    a = e.ins[0]
    if len(ins) != 1 or a not in ins or self.tag(e.ins[1]).kind != "const" or self.const(e.ins[1]) is None:
      return "a division by an activation or a parameter (normalisation) has no rule"
    c = np.asarray(self.const(e.ins[1]), np.float64)
    if np.any(c == 0):
      return "a division by zero"
    return self._scale(e, a, 1.0 / c)

  def rule_neg(self, e, ins):
    return self._scale(e, ins[0], -1.0)

  def rule_select_n(self, e, ins):
    pred, cases = e.ins[0], e.ins[1:]
    pt = self.tag(pred)
    if pt.kind == "const" and self.const(pred) is not None and len(cases) == 2:  # dropout-style mask
      acts = [i for i, c in enumerate(cases) if self.tag(c).kind == "act"]
      zeros = [i for i, c in enumerate(cases) if self.tag(c).kind == "const" and scalar_value(self.const(c)) == 0]
      if len(acts) == 1 and len(zeros) == 1:
        mask = np.asarray(self.const(pred)).astype(bool)
        return self._scale(e, cases[acts[0]], (mask if acts[0] == 1 else ~mask).astype(np.float64))
    if pt.kind == "gate":
      u, positive = pt.gate
      coefs = []
      for c in cases:
        t = self.tag(c)
        if isinstance(c, int) and c == u:
          coefs.append(1.0)
        elif t.kind == "act" and t.base == u:
          coefs.append(t.coef)
        elif t.kind == "const" and scalar_value(self.const(c)) == 0:
          coefs.append(0.0)
        else:
          return "a select between values that are not multiples of the gated input has no rule"
      if len(coefs) != 2:
        return "a select with more than two cases has no rule"
      p, q = (coefs[1], coefs[0]) if positive else (coefs[0], coefs[1])
      return self._pwl(e, u, p, q)
    return "a data-dependent select has no rule"

  def _pwl(self, e, u, p, q):
    s = self.fwd[u]
    gf, gb = pwl_gains(p, q)
    r_out, rb = pwl_corr(p, q, s.r)
    name = act_name(p, q)
    if not s.sym and p != q:
      self.notes.append(f"{name} applied to a non-symmetric input (e.g. a residual sum of ReLU outputs, or "
                        "non-negative inputs); its gain 1/2 assumes a symmetric pre-activation")
    self.acts.append(ActivationUse(kind=name, in_id=u, out_id=e.outs[0]))
    rp_out, rpb = pwl_corr(p, q, s.rp) if s.rp is not None else (None, None)
    rc_in = cross_position(s)
    rc_out, rcb = pwl_corr(p, q, rc_in) if rc_in is not None else (None, None)
    relu = p == 1 and q == 0

    def back(g):
      # Two positions' gates correlate like two examples' (the patches' correlation s.r stands for both).
      g2 = g.scaled(gb, r=g.r * rb if not g.why else 0.0, sp=g.sp * rb,
                    rp=g.rp * rpb if g.rp is not None and rpb is not None else None)
      if not g.why and rcb is not None and cross_position(g) is not None:
        g2 = g2._replace(rc=cross_position(g) * rcb)
      return g2 if g.why else g2._replace(sp_gate=g.sp if relu else None)

    self.set_out(e, Forward(gf * s.sq, r_out, p == q and s.sym, None, rp_out, pwl_corr(p, q, s.rf or 0.0)[0],
                            rc_out), [(u, back)])

  def rule_max(self, e, ins):
    if len(ins) != 1:
      return "a max of two activations has no rule"
    a = ins[0]
    other = e.ins[1] if e.ins[0] == a else e.ins[0]
    if scalar_value(self.const(other)) != 0:
      return "a max against a non-zero constant (clipping) has no rule"
    return self._pwl(e, a, 1.0, 0.0)

  # -- sums
  def rule_add(self, e, ins):
    if len(ins) == 2:
      a, b = ins
      if a == b:
        return self._scale(e, a, 2.0)
      sa, sb = self.fwd[a], self.fwd[b]
      sq = sa.sq + sb.sq
      r = (sa.sq * sa.r + sb.sq * sb.r) / sq if sq > 0 else sa.r
      rp = (sa.sq * sa.rp + sb.sq * sb.rp) / sq if sq > 0 and None not in (sa.rp, sb.rp) else None
      rf = (sa.sq * (sa.rf or 0.0) + sb.sq * (sb.rf or 0.0)) / sq if sq > 0 else None
      ca, cb = cross_position(sa), cross_position(sb)
      rc = ((sa.sq * ca + sb.sq * cb) / sq if sq > 0 and None not in (ca, cb) and (sa.rc, sb.rc) != (None, None)
            else None)
      # a difference has the same second-moment rule as a sum (the cross term is dropped)
      self.set_out(e, Forward(sq, r, sa.sym and sb.sym, None, rp, rf, rc), [(a, lambda g: g), (b, lambda g: g)])
      return None
    a = ins[0]
    other = e.ins[1] if e.ins[0] == a else e.ins[0]
    t = self.tag(other)
    s = self.fwd[a]
    if t.kind == "param":
      b_sq = self.leaf_sq[t.leaf]
      n_leaf = math.prod(self.shape(other))
      # a bias is a weight on a constant-1 input, the same for every example
      seen = self.use(LeafUse(leaf=t.leaf, kind="bias", op=e.name, in_id=a, out_id=e.outs[0],
                              x_sig=Forward(1.0, 1.0, False), rho=self.per_example(a) / max(n_leaf, 1), w_sq=b_sq,
                              fan_in=1, fan_out=n_leaf, taps=1))
      sq = s.sq + b_sq
      r = (s.sq * s.r + b_sq) / sq if sq > 0 else s.r
      # the bias is independent across features (rf), and the same at every position (rp) unless it has an
      # entry per position (a position embedding)
      shared = b_sq if n_leaf <= self.shape(a)[-1] else 0.0
      rp = (s.sq * s.rp + shared) / sq if sq > 0 and s.rp is not None else None
      rf = s.sq * (s.rf or 0.0) / sq if sq > 0 else None
      # two examples at two positions share the bias only where it is shared by the positions: a position
      # embedding adds to r (same position) and to neither rp nor rc
      c = cross_position(s)
      rc = (s.sq * c + shared) / sq if sq > 0 and c is not None else None
      f = s.sq / sq if sq > 0 else 1.0

      def back_bias(g):
        # an example's scale below the bias moves its output's by the share f: its gradient's b shrinks alike
        g = seen(g)
        return g if g.b is None or f == 1.0 else g._replace(b=g.b * f)

      self.set_out(e, Forward(sq, r, s.sym and b_sq == 0, None, rp, rf, rc), [(a, back_bias)])
      if sq > 0:
        self.carry_scale(a, e.outs[0], f * f)
      return None
    c = self.const(other)
    if t.kind != "const" or c is None:
      return "a sum with a value computed from the parameters has no rule"
    c2 = float(np.mean(np.square(np.asarray(c, np.float64))))
    if c2 > 0:
      self.notes.append("a constant is added to an activation: the rules assume zero-mean values")
    sq = s.sq + c2
    rp = (s.sq * s.rp + c2) / sq if sq > 0 and s.rp is not None else None
    rf = (s.sq * (s.rf or 0.0) + c2) / sq if sq > 0 else None
    c = cross_position(s)
    rc = (s.sq * c + c2) / sq if sq > 0 and c is not None else None
    self.set_out(e, Forward(sq, (s.sq * s.r + c2) / sq if sq > 0 else s.r, s.sym and c2 == 0, None, rp, rf, rc),
                 [(a, lambda g: g)])
    if sq > 0:
      self.carry_scale(a, e.outs[0], (s.sq / sq) ** 2)
    return None

  rule_sub = rule_add_any = rule_add

  # -- pooling
  def _pool(self, e, a, counts, rho_in):
    s = self.fwd[a]
    mc, mc2 = float(np.mean(counts)), float(np.mean(counts ** 2))
    sq = s.sq * (mc + s.r * (mc2 - mc))
    r_out = s.r * mc2 / (mc + s.r * (mc2 - mc)) if sq > 0 else s.r
    back_f = float(np.sum(counts)) / rho_in
    # Each input position gets its window's one gradient: corr 1 with the window's other mc - 1 positions and
    # the window's corr with the other windows. Exact for windows that tile the input; overlapping windows
    # (sum of counts != rho_in) keep the `pooled` flag: their G is approximate.
    tiles = abs(float(np.sum(counts)) - rho_in) < 0.5

    def back(g):
      return g.scaled(back_f, pooled=not tiles, sp=(mc - 1) + mc * g.sp, gate=False)

    self.set_out(e, Forward(sq, min(r_out, 1.0), s.sym), [(a, back)])

  def rule_reduce_window_sum(self, e, ins):
    a = ins[0]
    p = e.params
    if p["window_dimensions"][0] != 1 or p["window_strides"][0] != 1 or tuple(p["padding"][0]) != (0, 0):
      return "a pooling window across examples"
    return self._pool(e, a, _window_counts(self.shape(a), p), self.per_example(a))

  def rule_reduce_sum(self, e, ins):
    a = ins[0]
    axes, nd = tuple(e.params["axes"]), len(self.shape(a))
    if 0 in axes:
      return "a reduction across the batch (batch normalisation?) has no rule"
    if nd - 1 in axes and len(axes) > 1 and nd > 3:
      return ("a statistic over features and positions together (GroupNorm / InstanceNorm) has no rule: it mixes "
              "the positions of one example")
    if nd - 1 in axes or nd < 3:
      return "a reduction over the feature axis (normalisation, softmax, attention) has no rule"
    k = math.prod(self.shape(a)[i] for i in axes)
    if self.fwd[a].rp is not None:
      return self._pool_tokens(e, a, k, nd - 1 - len(axes) > 1)
    rho_out = self.per_example(e.outs[0]) // self.shape(a)[-1]
    return self._pool(e, a, np.full(rho_out, float(k)), self.per_example(a) // self.shape(a)[-1])

  def _pool_tokens(self, e, a, k, positions_left):
    """A sum over k positions whose correlation rp is tracked (token pooling): E[(sum_t x_t)^2] =
    k E[x^2] (1 + (k - 1) rp), and two examples' sums k E[x^2] (r + (k - 1) rc) (same position r, the others
    rc); the gradient reaches every pooled position unchanged (rp = 1 between them, rc = the pooled r)."""
    s = self.fwd[a]
    f = k * (1 + (k - 1) * s.rp)
    sq = s.sq * f
    rc = cross_position(s)
    r = min(max(k * (s.r + (k - 1) * rc) / f, -1.0), 1.0) if f > 0 else s.r
    left = positions_left

    def back(g):
      return g.scaled(1.0, rp=1.0) if left else g.scaled(1.0, rp=1.0, rc=g.r)

    self.set_out(e, Forward(sq, r, s.sym, None, s.rp if left else None, s.rf, rc if left else None), [(a, back)])

  # -- weight layers
  def rule_dot_general(self, e, ins):
    if len(ins) != 1:
      return "a product of two activations (attention / bilinear) has no rule"
    a = ins[0]
    if e.ins[0] != a:
      return "a dot_general with the parameter on the left (the batch axis moves) has no rule"
    t = self.tag(e.ins[1])
    if t.kind != "param":
      return ("a dot_general with a fixed matrix has no rule" if t.kind == "const" else
              "a dot_general with a matrix computed from the parameters (weight normalisation?) has no rule")
    (cx, cw), (bx, bw) = e.params["dimension_numbers"]
    if bx or bw or 0 in cx:
      return "a batched dot_general (attention) or one contracting the batch axis has no rule"
    xs, ws = self.shape(a), self.shape(e.ins[1])
    n_in = math.prod(xs[i] for i in cx)
    n_out = math.prod(ws[i] for i in range(len(ws)) if i not in cw)
    rho = math.prod(xs[i] for i in range(1, len(xs)) if i not in cx)
    return self._weight(e, a, t.leaf, "dense", n_in=n_in, n_out=n_out, k=1, pairs=rho, rho_in=rho, rho_out=rho,
                        fan_in=n_in, fan_out=n_out)

  def rule_conv_general_dilated(self, e, ins):
    if len(ins) != 1 or e.ins[0] != ins[0]:
      return "a convolution with an activation as the kernel has no rule"
    a = ins[0]
    t = self.tag(e.ins[1])
    if t.kind != "param":
      return "a convolution with a kernel that is not a parameter leaf has no rule"
    p = e.params
    dn = p["dimension_numbers"]
    lhs_spec, rhs_spec, out_spec = dn.lhs_spec, dn.rhs_spec, dn.out_spec
    if lhs_spec[0] != 0 or out_spec[0] != 0 or p["batch_group_count"] != 1:
      return "a convolution that moves or groups the batch axis has no rule"
    xs, ws = self.shape(a), self.shape(e.ins[1])
    in_sp = [xs[i] for i in lhs_spec[2:]]
    k_sp = [ws[i] for i in rhs_spec[2:]]
    counts = _counts(in_sp, k_sp, p["window_strides"], p["padding"], p["lhs_dilation"], p["rhs_dilation"])
    I, O, G = ws[rhs_spec[1]], ws[rhs_spec[0]], p["feature_group_count"]
    k = math.prod(k_sp)
    return self._weight(e, a, t.leaf, "conv", n_in=I, n_out=O // G, k=k, pairs=float(np.sum(counts)),
                        rho_in=math.prod(in_sp), rho_out=counts.size, fan_in=k * I, fan_out=k * O)

  def _weight(self, e, a, leaf, kind, *, n_in, n_out, k, pairs, rho_in, rho_out, fan_in, fan_out):
    """`pairs`: (output position, tap) pairs that land inside the input, per example."""
    s, w_sq = self.fwd[a], self.leaf_sq[leaf]
    seen = self.use(LeafUse(leaf=leaf, kind=kind, op=e.name, in_id=a, out_id=e.outs[0], x_sig=s, rho=pairs / k,
                            w_sq=w_sq, fan_in=fan_in, fan_out=fan_out, taps=k))
    y_sq = (pairs / rho_out) * n_in * w_sq * s.sq
    back_f = (pairs / rho_in) * n_out * w_sq
    # a dense layer keeps the correlation between positions; a convolution mixes neighbouring positions, whose
    # correlation the rules do not track (rp None: pooling then uses the example correlation, as before).
    # Input positions of one patch meet different weight slices (uncorrelated), of different patches the same
    # slice: the input gradient's spatial correlation sp is the output's (exact for stride = kernel).
    rp = s.rp if kind == "dense" else None
    rc = s.rc if kind == "dense" else None

    def back(g):
      g2 = seen(g).scaled(back_f, rp=None if kind != "dense" else g.rp, gate=False)
      return g2 if kind == "dense" or g2.why else g2._replace(rc=None)

    self.set_out(e, Forward(y_sq, s.r, True, None, rp, None, rc), [(a, back)])
    v = self.scale_var(a)
    if kind == "dense" and rho_out == 1 and s.rp is None and v is not None:
      self.scale[e.outs[0]] = (v, e.outs[0], n_out, 1.0)   # example_scale.dense_fresh once its r is final

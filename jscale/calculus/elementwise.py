"""Activations built from elementwise primitives (GELU, SiLU, softplus, ELU, sigmoid, tanh, ...), recognised
from the jaxpr and given their moments by quadrature (activation_maps.py).

A value is an elementwise function of an activation u when every equation from u to it is elementwise
(ELEMENTWISE) with scalar constants as its other operands. `find` groups such equations by u; a group with a
non-linear smooth primitive (SMOOTH) is one activation block per value it hands outside the group (plain
ReLU / leaky ReLU patterns keep rules.py's closed forms). The rule evaluates the group's equations on
quadrature nodes (the activation phi recovered from the jaxpr) and applies, with the input's E[y^2] = q and
correlations r (two examples) and rp (two positions):
  forward   E[phi^2],  r -> E[phi(y) phi(y')]_r / E[phi^2],  likewise rp
  backward  E[Delta_u^2] = E[phi'^2] E[Delta^2],  r_Delta -> r_Delta E[phi' phi']_r / E[phi'^2]
(y Gaussian, the gradient independent of y: the calculus's assumptions, docs/calculus.md "Any activation").
Where the input's batch mean is carried (draw_mean.py), E[phi^2] and E[phi'^2] are taken at the draw's own
per-entry offsets instead (activation_maps.offset_moments): one draw's offsets do not average out over units,
and the expectation missed a He GELU layer's E[phi^2] by s.d. 0.08-0.10 in log per draw at width 64.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from jscale.calculus import activation_maps as am
from jscale.calculus import example_scale, unit_coupling
from jscale.calculus.blocks import Block
from jscale.calculus.propagation import ActivationUse
from jscale.calculus.signals import Forward, cross_position
from jscale.calculus.tracing import Lit, scalar_value

ELEMENTWISE = frozenset({
    "neg", "add", "sub", "mul", "div", "max", "min", "tanh", "logistic", "erf", "erfc", "exp", "exp2", "expm1",
    "log", "log1p", "integer_pow", "pow", "sqrt", "rsqrt", "cbrt", "abs", "sign", "select_n", "gt", "ge", "lt",
    "le", "eq", "ne", "convert_element_type", "copy", "copy_p", "square", "sin", "cos", "clamp", "is_finite",
    "not", "and", "or", "stop_gradient", "erf_inv", "atan", "asinh", "logaddexp"})
SMOOTH = frozenset({
    "tanh", "logistic", "erf", "erfc", "exp", "exp2", "expm1", "log", "log1p", "integer_pow", "pow", "sqrt",
    "rsqrt", "cbrt", "abs", "sign", "square", "sin", "cos", "clamp", "erf_inv", "atan", "asinh", "logaddexp"})


def find(graph, tags, const, u, taken) -> list:
  src, groups = {}, {}   # value -> the activation it is a function of; activation -> [eqn indices]
  for n, e in enumerate(graph.eqns):
    if n in taken or e.name not in ELEMENTWISE:
      continue
    base, ok = None, True
    for a in e.ins:
      if isinstance(a, Lit):
        ok = scalar_value(a.val) is not None
      elif a in src:
        ok = base in (None, src[a])
        base = src[a]
      elif tags.get(a) is not None and tags[a].kind in ("act", "gate"):
        ok = base in (None, a) and tags[a].kind == "act"
        base = a
      else:
        ok = tags.get(a) is None or tags[a].kind == "const"
        ok = ok and scalar_value(const(a)) is not None
      if not ok:
        break
    if not ok or base is None or any(tuple(graph.avals[o].shape) != tuple(graph.avals[base].shape)
                                     for o in e.outs):
      continue
    for o in e.outs:
      src[o] = base
    groups.setdefault(base, []).append(n)
  blocks = []
  for base, eqns in groups.items():
    if not any(graph.eqns[n].name in SMOOTH for n in eqns):
      continue
    members, outs = set(eqns), []
    for n in eqns:
      for o in graph.eqns[n].outs:
        used_outside = o in u.outputs or any(c not in members for c in u.consumers.get(o, ()))
        if used_outside and o in tags and tags[o].kind == "act":
          outs.append((n, o))
    # A group handing several values outside is one block per value: the first holds the group's equations
    # (skipped by the pass), the others their output equation only.
    out_eqns = {n for n, _ in outs}
    for i, (n, o) in enumerate(outs):
      own = (members - out_eqns) | {n} if i == 0 else {n}
      blocks.append(Block("activation", n, (base,), frozenset(own), activation_rule,
                          dict(base=base, out=o, eqns=tuple(eqns))))
  return blocks


def phi_of(graph, eqns, base, out, const):
  """The activation z -> value `out` as a function of `base`, for a 1-d float array z (the group's
  equations, their scalar constants broadcast to z's shape)."""
  def phi(z):
    # no convert where the dtypes agree: on a traced z even a same-dtype astype compiled a program per size
    env = {base: z if z.dtype == graph.avals[base].dtype else z.astype(graph.avals[base].dtype)}

    def read(a):
      # constants broadcast on the host: jnp.full compiled a program per grid size
      if isinstance(a, Lit):
        return np.full(z.shape, a.val, np.asarray(a.val).dtype)
      if a in env:
        return env[a]
      c = np.asarray(const(a))
      return np.full(z.shape, scalar_value(c), c.dtype)

    for n in eqns:
      e = graph.eqns[n]
      vals = e.prim.bind(*[read(a) for a in e.ins], **e.params)
      vals = vals if e.prim.multiple_results else [vals]
      for o, v in zip(e.outs, vals):
        env[o] = v
      if out in env:
        break
    v = env[out]
    return v if v.dtype == jnp.float32 else v.astype(jnp.float32)

  return phi


def activation_rule(pred, block) -> str | None:
  info = block.info
  base, out = info["base"], info["out"]
  s = pred.fwd[base]
  phi = phi_of(pred.g, info["eqns"], base, out, pred.const)
  name = am.identify(phi) or "elementwise(" + ",".join(
      dict.fromkeys(pred.g.eqns[n].name for n in info["eqns"] if pred.g.eqns[n].name in SMOOTH)) + ")"
  m = am.maps(phi, s.sq, s.r)
  if not (np.isfinite(m.fwd_sq) and np.isfinite(m.bwd_sq)):
    return f"the activation {name} is not finite on a Gaussian input of E[y^2] = {s.sq:.3g}"
  mp = am.maps(phi, s.sq, s.rp) if s.rp is not None else None
  rf = am.maps(phi, s.sq, s.rf or 0.0).fwd_corr  # a common offset across features: E[phi]^2 / E[phi^2] from 0
  # two examples at two positions: the pair map at their correlation rc (the product form where not tracked)
  rc_in = cross_position(s)
  mc = am.maps(phi, s.sq, rc_in) if s.rc is not None else None
  fwd_sq, bwd_sq, r_out = m.fwd_sq, m.bwd_sq, m.fwd_corr
  mean = pred.mean.get(base)
  resp, v_y, own_cov = None, None, None
  if mean is not None and np.all(np.isfinite(mean)):
    # the draw's own per-entry offsets (draw_mean.py): E[phi^2] and E[phi'^2] averaged over the entries, each
    # at its own mean; two independent examples then share exactly the output's mean, E[phi_b phi_b'] =
    # mean(mu^2), which the next dense layer's conditioning (draw_mean.condition) takes out of its E[y^2]
    # one node grid for the three readers below (offset_moments, example_scale.response, unit_coupling.slopes:
    # each at the common spread, order 32): phi and phi' on it are an eager JAX call (~0.03 s), once not thrice
    nodes = am.offset_nodes(phi, mean, am.offset_spread(mean, s.sq), unit_coupling.ORDER)
    om = am.offset_moments(phi, mean, s.sq, nodes=nodes)
    if np.isfinite(om.fwd_sq) and np.isfinite(om.bwd_sq) and om.fwd_sq > 0:
      fwd_sq, bwd_sq = om.fwd_sq, om.bwd_sq
      # each example at its own scale (example_scale.py): the mean over examples of each one's moments
      v_y = pred.scale_var(base) if s.rp is None else None
      resp = (example_scale.response(phi, mean, s.sq, pred.per_example(out), nodes=nodes)
              if v_y is not None else None)
      if resp is not None:
        jf, jb = resp.jensen(pred.scale_var(base, population=True))
        fwd_sq, bwd_sq = fwd_sq * jf, bwd_sq * jb
        pred.scale[out] = (resp.gamma ** 2 * v_y + resp.fresh, None, 0, 1.0)
      r_out = min(float(np.mean(om.mean * om.mean)) / fwd_sq, 1.0)
      pred.drawn.add(out)
      if s.rp is None:
        own_cov = _unit_couplings(pred, phi, base, out, mean, s.sq, nodes)
  pred.acts.append(ActivationUse(kind=name, in_id=base, out_id=out))
  pred.fwd[out] = Forward(fwd_sq, r_out, m.odd and s.sym, None, mp.fwd_corr if mp else None, rf,
                          mc.fwd_corr if mc else None)
  rb = m.bwd_corr
  rpb = mp.bwd_corr if mp else None
  coupling = gate_coupling(phi, s.sq, s.rp, mp) if mp is not None and s.sq > 0 else None

  def back(g):
    g2 = g.scaled(bwd_sq, r=g.r * rb, rp=g.rp * rpb if (g.rp is not None and rpb is not None) else None)
    coupled = pred.h2_coupling.get(out) if own_cov is not None else None
    if coupled is not None and not g2.why:
      # the gradient at each unit comes back through the slopes its own value moved (unit_coupling.py (b))
      g2 = g2._replace(sq=g2.sq * max(1.0 + coupled * own_cov, 0.0))
    if coupling is not None and not g2.why and g.rp is not None:
      g2 = g2._replace(rp_gate=g.rp * coupling)
    if mc is not None and not g2.why and cross_position(g) is not None:
      g2 = g2._replace(rc=cross_position(g) * mc.bwd_corr)
    if g2.why or g.b is None or resp is None:
      return g2 if g2.b is None else g2._replace(b=None)
    # an example's E[phi'^2] against its own |dx_b|^2, both following its scale (example_scale.py)
    cov = g.b * (resp.beta * resp.gamma * v_y + resp.cross)
    return g2._replace(sq=g2.sq * float(np.exp(cov)), b=resp.beta + resp.gamma * g.b)

  pred.back.append((_OutOnly(out), [(base, back)]))
  return None


def _unit_couplings(pred, phi, base, out, mean, q, nodes):
  """Where the activation's input is a dense kernel's output (through a bias add at most), with the draw's
  offsets carried and no token positions: the kernel's backward factor from its columns (unit_coupling.py
  (a), read by propagation.backward); R of every lower activation whose value reaches this one along the
  stack of kernels (b: the adjacent one through this kernel's 4th moment, the others through the chain of
  their perturbation), read by that activation's backward; returns this activation's own Cov(phi'^2,
  phi^2) / E[phi'^2], or None."""
  sl = unit_coupling.slopes(phi, mean, q, nodes=nodes)
  below = _kernel_below(pred, base)
  if below is None or sl is None:
    return None if sl is None else sl.cov
  use, W = below
  f = unit_coupling.column_factor(phi, mean, q, np.sum(W * W, axis=0))
  if f is not None:
    pred.unit_factor[use.out_id] = f
  w2, kr = float(np.mean(W * W)), unit_coupling.kernel_ratio(W)
  h2 = pred.h2_coupling
  if kr is not None:
    h2[use.in_id] = h2.get(use.in_id, 0.0) + kr * sl.kappa
  # the activation two kernels below this one: its perturbation's second step (unit_coupling.chain_step);
  # carried no further (the recursion's third step over-predicted tanh's coupling in Monte Carlo)
  for low, state in pred.chains.get(use.in_id, ()):
    k, _ = unit_coupling.chain_step(state, W.shape[0] * w2, sl)
    h2[low] = h2.get(low, 0.0) + k
  pred.chains[out] = [(use.in_id, (sl.C * w2, sl.pp2 * w2))]
  return sl.cov


def _kernel_below(pred, base):
  """(the dense leaf use, its kernel as drawn (fan_in, units)) whose output is `base`, directly or through a
  bias add; None otherwise (or a kernel contracted on another axis)."""
  if pred.leaf_vals is None:
    return None
  target = base
  for u in reversed(pred.ops):
    if u.out_id != target:
      continue
    if u.kind == "bias":
      target = u.in_id
      continue
    if u.kind != "dense":
      return None
    W = np.asarray(pred.leaf_vals[u.leaf], np.float64)
    e = next((e for e in pred.g.eqns if e.outs and e.outs[0] == u.out_id), None)
    if e is None or e.name != "dot_general" or W.ndim != 2 or W.shape[1] != pred.per_example(base):
      return None
    (_, cw), _ = e.params["dimension_numbers"]
    return (u, W) if tuple(cw) == (0,) else None
  return None


def gate_coupling(phi, q: float, rho: float, mp) -> float:
  """Two positions t != t' of one example, inputs x_t, x_t' (n features, correlation rho) of a dense unit
  y = w.x feeding phi: E[(x_t.x_t') phi'(y_t) phi'(y_t')] / (n E[x^2] E[phi'^2]) is rho rp_phi' (the product
  form) plus this over n. Split x = w y / |w|^2 + z (z orthogonal to w, independent of y for Gaussian x,
  E[z.z'] = (n - 1) rho E[x^2], |w|^2 E[x^2] = q): x.x' = E[x^2] y y' / q + z.z', so the pair gains
  (E[y y' phi' phi'] / q - rho E[phi' phi']) / E[phi'^2]: each unit's slopes follow its own projections of the
  two tokens (as a ReLU's gate does, correlation.relu_gate_coupling). Per unit of the gradient's correlation
  above phi; pairs only (a LayerNorm fixes each token's own norm)."""
  if mp.bwd_sq <= 0:
    return 0.0
  return (am.slope_pair(phi, q, rho) / q - rho * mp.bwd_pair) / mp.bwd_sq


class _OutOnly:
  """An equation stand-in whose only output is `out` (a group can hand several values outside)."""
  keeps_b = True   # its backward sets Backward.b itself

  def __init__(self, out):
    self.outs = [out]

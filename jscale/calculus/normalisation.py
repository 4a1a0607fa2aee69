"""LayerNorm and RMSNorm over the feature (last) axis, recognised from the jaxpr, and their rule.

Recognised: an `rsqrt` of (eps +) a mean over the last axis of a square -- of x (RMSNorm), of x minus its mean
(LayerNorm), or E[x^2] - E[x]^2 (Flax's LayerNorm) -- multiplying x (or x minus its mean), possibly through a
learnable scale (Flax multiplies the scale into the rsqrt first). A bias added after is the ordinary bias rule.

The rule (docs/calculus.md, "LayerNorm and RMSNorm"), for x with E[x^2] = q over D features, uncorrelated:
  the row statistic concentrates: var = q (1 - 1/D) (LayerNorm: the mean removed) or q (RMSNorm), so
  forward    E[xhat^2] = var / (var + eps) (~1), times E[scale^2]; correlations between examples and
             between positions kept (the normalisation divides both of a pair by the same number)
  backward   dx = (P (scale * g)) / sqrt(var + eps) with P the projection removing the row mean (LayerNorm)
             and the xhat direction: E[dx^2] = E[scale^2] E[g^2] (1 - 1/D - E[xhat^2]/D) E[1 / (s^2 + eps)]
             (RMSNorm: no 1/D for the mean), the row statistic s^2 taken as chi-square: E[1/s^2] =
             (D - 1) / ((D - 3) var) (RMSNorm: D / ((D - 2) var))
  the scale  a leaf of its own: dscale_j = sum over positions of xhat_j g_j, so its G is that of an elementwise
             multiplier on xhat.
Where it breaks: features with a common offset (the mean over D is then not ~q/D), D so small that the
statistic does not concentrate, and batch statistics (BatchNorm: refused, examples interact).
"""
from __future__ import annotations

import math

from jscale.calculus.blocks import Block, between
from jscale.calculus.propagation import LeafUse
from jscale.calculus.signals import Forward, cross_position
from jscale.calculus.tracing import Lit, scalar_value

# Equations a row statistic passes through between its reductions and the rsqrt.
_STAT = {"add", "sub", "div", "mul", "max", "broadcast_in_dim", "reduce_sum", "square", "integer_pow", "reshape",
         "convert_element_type", "stop_gradient", "squeeze", "expand_dims", "copy", "copy_p"}
_VIEWS = {"broadcast_in_dim", "reshape", "convert_element_type", "copy", "copy_p", "expand_dims", "squeeze"}


def _prod(graph, u, v):
  return graph.eqns[u.producer[v]] if v in u.producer else None


def _squared(graph, u, v):
  """The value v is the square of (square, integer_pow 2, or a product with itself), else None."""
  e = _prod(graph, u, v)
  if e is None:
    return None
  if e.name == "square" or (e.name == "integer_pow" and e.params.get("y") == 2):
    return e.ins[0]
  if e.name == "mul" and len(e.ins) == 2 and e.ins[0] == e.ins[1] and not isinstance(e.ins[0], Lit):
    return e.ins[0]
  return None


def _centred_source(graph, u, h):
  """x when h = x - broadcast(mean of x over the last axis), else None."""
  e = _prod(graph, u, h)
  if e is None or e.name != "sub" or isinstance(e.ins[1], Lit) or isinstance(e.ins[0], Lit):
    return None
  x, m = e.ins
  # walk the subtrahend back to a reduce_sum over the last axis of x
  while True:
    p = _prod(graph, u, m)
    if p is None:
      return None
    if p.name == "reduce_sum":
      nd = len(graph.avals[p.ins[0]].shape)
      return x if p.ins[0] == x and tuple(p.params["axes"]) == (nd - 1,) else None
    if p.name not in ("broadcast_in_dim", "div", "mul", "reshape", "stop_gradient", "convert_element_type"):
      return None
    nxt = [a for a in p.ins if not isinstance(a, Lit) and _prod(graph, u, a) is not None]
    if len(nxt) != 1:
      return None
    m = nxt[0]


def _unshifted(graph, u, tags, const, h):
  """x when h is x or x - 0 (Flax's RMSNorm subtracts a zero mean), else h."""
  e = _prod(graph, u, h)
  if e is not None and e.name == "sub" and not isinstance(e.ins[0], Lit):
    c = e.ins[1]
    val = scalar_value(c.val) if isinstance(c, Lit) else (scalar_value(const(c)) if tags.get(c) is None
                                                          or tags[c].kind == "const" else None)
    if val == 0:
      return e.ins[0]
  return h


def _stat_sources(graph, u, v, const):
  """Walk a row statistic back: (values summed squared, values summed plain, eps, reduce axes ok)."""
  sq_src, plain_src, eps, ok, seen, todo = [], [], 0.0, True, set(), [v]
  while todo:
    w = todo.pop()
    e = _prod(graph, u, w)
    if e is None or w in seen:
      continue
    seen.add(w)
    if e.name not in _STAT:
      return [], [], 0.0, False
    if e.name == "reduce_sum":
      a = e.ins[0]
      nd = len(graph.avals[a].shape)
      ok = ok and tuple(e.params["axes"]) == (nd - 1,)
      s = _squared(graph, u, a)
      (sq_src if s is not None else plain_src).append(s if s is not None else a)
      continue
    if e.name == "add":
      for a in e.ins:
        c = scalar_value(a.val) if isinstance(a, Lit) else scalar_value(const(a))
        if c is not None and c > 0:
          eps = c
    todo += [a for a in e.ins if not isinstance(a, Lit)]
  return sq_src, plain_src, eps, ok


def find(graph, tags, const, u, taken) -> list:
  blocks = []
  for n, e in enumerate(graph.eqns):
    if e.name != "rsqrt" or n in taken or tags.get(e.outs[0]) is None or tags[e.outs[0]].kind != "act":
      continue
    sq_src, plain_src, eps, ok = _stat_sources(graph, u, e.ins[0], const)
    if not ok or len(set(sq_src)) != 1:
      continue
    xs = sq_src[0]
    centred_x = _centred_source(graph, u, xs)
    if centred_x is not None:
      x, kind = centred_x, "layer_norm"
    elif plain_src and set(plain_src) == {xs}:
      x, kind = xs, "layer_norm"      # E[x^2] - E[x]^2 (Flax)
    elif not plain_src:
      x, kind = xs, "rms_norm"
    else:
      continue
    # forward from the rsqrt: views, an optional multiplication by a parameter (the scale), then x (or x minus
    # its mean) times it
    v, scale = e.outs[0], None
    while True:
      cs = u.consumers.get(v, [])
      if len(cs) != 1:
        break
      c = graph.eqns[cs[0]]
      if c.name in _VIEWS:
        v = c.outs[0]
        continue
      if c.name == "mul" and len(c.ins) == 2:
        other = c.ins[1] if c.ins[0] == v else c.ins[0]
        t = tags.get(other) if not isinstance(other, Lit) else None
        if t is not None and t.kind == "param" and scale is None:
          scale, v = t.leaf, c.outs[0]
          continue
        if t is not None and t.kind == "act" and tuple(graph.avals[c.outs[0]].shape) == tuple(graph.avals[x].shape):
          h_ok = (_unshifted(graph, u, tags, const, other) == x if kind == "rms_norm"
                  else _centred_source(graph, u, other) == x)
          if h_ok:
            out = c.outs[0]
            eqns = between(graph, u, out, [x])
            if eqns is not None and not (eqns & taken):
              blocks.append(Block(kind, cs[0], (x,), eqns, norm_rule,
                                  dict(x=x, out=out, scale=scale, eps=eps, D=graph.avals[x].shape[-1])))
      break
  return blocks


def norm_rule(pred, block) -> str | None:
  info = block.info
  x, out, D, eps = info["x"], info["out"], info["D"], info["eps"]
  s = pred.fwd[x]
  centred = block.kind == "layer_norm"
  rf = min(max(s.rf or 0.0, 0.0), 1.0)
  # x = m + e: a common offset m across features (E[m^2] = rf q), which LayerNorm removes, and the rest
  var = s.sq * (1 - rf) * (1 - 1 / D) if centred else s.sq
  if var + eps <= 0:
    return "a normalisation of an input with E[x^2] = 0"
  hat = var / (var + eps)
  proj = 1 - hat / D - (1 / D if centred else 0.0)
  if centred:
    def unshare(c):
      return None if c is None else (c - rf) / (1 - rf) if rf < 1 else 0.0
    x_hat = Forward(hat, unshare(s.r), True, None, unshare(s.rp), 0.0, unshare(s.rc))
  else:
    x_hat = Forward(hat, s.r, s.sym, None, s.rp, s.rf, s.rc)
  w_sq, seen = 1.0, (lambda g: g)
  if info["scale"] is not None:
    leaf = info["scale"]
    w_sq = pred.leaf_sq[leaf]
    seen = pred.use(LeafUse(leaf=leaf, kind="other", op="mul", in_id=out, out_id=out, x_sig=x_hat,
                            rho=pred.per_example(x) / D, w_sq=w_sq, fan_in=1, fan_out=1, taps=1))
  pred.acts.append(_act(block.kind, x, out))
  # E[1 / s^2] of a row statistic of D Gaussian features (chi-square with D - 1 or D degrees of freedom):
  # (D - 1) / (D - 3) resp. D / (D - 2) times 1 / E[s^2] (Jensen; 3% at D = 64)
  dof = D - 1 if centred else D
  jensen = dof / (dof - 2) if dof > 2 else 1.0
  back_f = w_sq * proj * jensen / (var + eps)
  keep_rp = backward_rp_factor(D, hat, x_hat.rp or 0.0, centred)
  # two examples' rows are two rows as much as two positions' are: the same factor at their correlations
  keep_r = backward_rp_factor(D, hat, x_hat.r, centred)
  keep_rc = backward_rp_factor(D, hat, cross_position(x_hat) or 0.0, centred)

  def back(g):
    g2 = seen(g).scaled(back_f, rp=None if g.rp is None else g.rp * keep_rp, r=g.r * keep_r)
    rc = cross_position(g)
    return g2 if g2.why or rc is None or x_hat.rc is None else g2._replace(rc=rc * keep_rc)

  pred.set_out(pred.g.eqns[block.out_eqn], x_hat._replace(sq=hat * w_sq), [(x, back)])
  if not math.isfinite(back_f):
    return "a normalisation whose backward factor is not finite"
  return None


def backward_rp_factor(D: int, hat: float, rp: float, centred: bool) -> float:
  """The factor on the gradient's correlation between two positions t, t' through the normalisation.

  dx_t = P_t u_t / s_t with P_t = I - 11^T/D - xhat_t xhat_t^T / D: each position removes its own xhat
  direction, so for gradients u, u' independent of x, E[u P_t P_t' u'] / E[u P_t u] = (1 - 1/D - 2 hat/D +
  hat^2 (rp^2 + 1/D)/D) / (1 - 1/D - hat/D) (RMSNorm: no 1/D for the mean); and E[1/(s_t s_t')] / E[1/s_t^2] <
  1 for the two positions' own statistics (chi-square with n = D - 1 or D degrees of freedom:
  ((n - 2)/2) (Gamma((n-1)/2) / Gamma(n/2))^2 when independent; a component rp shared by the two positions
  makes their statistics move together, taken as scaling the gap by 1 - rp^2). [measured] At D = 64 it is
  0.976; the last LayerNorm of models.Transformer turned the pooled gradient's rp = 1 into 0.978 +- 0.003."""
  mean = 1 / D if centred else 0.0
  rp = min(max(rp, 0.0), 1.0)
  own = 1 - mean - hat / D
  cross = 1 - mean - 2 * hat / D + hat * hat * (rp * rp + 1 / D) / D
  n = D - 1 if centred else D
  if n <= 2 or own <= 0:
    return 1.0
  indep = (n - 2) / 2 * math.exp(2 * (math.lgamma((n - 1) / 2) - math.lgamma(n / 2)))
  return min(max(cross / own * (1 - (1 - indep) * (1 - rp * rp)), 0.0), 1.0)


def _act(kind, x, out):
  from jscale.calculus.propagation import ActivationUse
  return ActivationUse(kind=kind, in_id=x, out_id=out)

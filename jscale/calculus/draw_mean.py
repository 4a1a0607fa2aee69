"""The draw's own mean: each value's mean over the batch, carried with the realized parameters.

The rules' correlations r (two examples, one position), rc (two examples, two positions) and part of rp (one
example, two positions) are, for independent examples, products of the value's mean over examples: E[y_b y_b']
= m m. Their expectations over weight draws are what the rules propagate; one draw's mean vector is instead
`m_out = m_in W` for its own W, and its squared length fluctuates by ~sqrt(2 / width) per dense layer (a GELU's
mean, then each projection). In a pre-LN transformer this component is most of the tokens' correlation rp that
sets attention's output (mean over keys): on development draws 310-313 (depth 6) rp of block 2's values was 0.07
on one draw and 0.22 on another, all of it this component, and attention's E[o^2] was mispredicted by -27% ...
+31%, which the LayerNorms' 1/variance turned into a common backward offset of the whole draw.

`mean_out` carries m through every equation that is linear in its one activation operand (dense / conv with a
parameter, adds of parameters, reshapes, sums, scalings) exactly, by binding the primitive on the mean
broadcast over the batch; through the blocks by their Gaussian expectation: an activation per entry
E[phi(m + s z)], a normalisation (m - mean(m)) scale / sqrt(var + eps), attention the mean weights (uniform over
the unmasked keys) times the values' mean. `condition` then replaces, in a dense layer's output signal, the
rules' expected shared part by the draw's: sq r -> mean_t |m_t|^2 / n, sq rc -> the same over pairs of
positions (rp moves by rc's change: the per-example part is kept), and E[y^2] by the difference. It uses the
parameters as drawn and the input's batch mean, nothing measured inside the network.
"""
from __future__ import annotations

import math

import jax
import numpy as np

from jscale.calculus import activation_maps as am
from jscale.calculus.tracing import Lit

# primitives linear in their activation operand (given the others are constants or parameters)
LINEAR = frozenset({"dot_general", "conv_general_dilated", "add", "sub", "neg", "reshape", "transpose",
                    "broadcast_in_dim", "squeeze", "expand_dims", "convert_element_type", "reduce_sum", "copy",
                    "copy_p", "rev", "reduce_precision", "mul", "div", "slice", "pad", "concatenate"})
_GH = np.polynomial.hermite_e.hermegauss(32)   # nodes, weights for N(0, 1) (weights sum to sqrt(2 pi))


# The input's batch mean shrunk in two parts where it has token positions (batch, positions, ...): its mean over
# the positions and each position's departure from it, each by its own noise (issue 21, twentieth session, second
# part; docs/calculus.md). One factor for the whole vector takes the noise's share of the total out of every part,
# but the noise of i.i.d. tokens is spread evenly over the positions while the signal (the vocabulary's mean
# embedding) is common to them: attention's mean weights average over the keys, which keeps the common part and
# drops most of the rest, so the one factor takes the whole's noise share (B / (B + V - 1): 19.5% of the energy at
# vocabulary 32, batch 128) out of what survives them; block 0's carried attention mean was 0.02-0.045 short in log
# energy on dev, about 0 with the split. Off: on dev it moved misses between draws (-0.10 +- 0.14 per draw, kernel
# misses 3 -> 6 of 48 draws), so it was not judged.
POSITION_SPLIT = False
# An activation's mean with each entry's own spread (issue 21, twenty-second session, tw6; docs/calculus.md, "The
# stream's position-common mean with depth"): E[phi(m + s_j z)] with s_j^2 from the batch's carried examples at its
# input (token_carry.EXAMPLES' rows: their variance per entry, the rule's rest isotropic on top), where one spread s
# for all entries was taken. A drawn kernel gives its units different spreads (relative s.d. 0.14 at width 64 on
# dev), and E[gelu(s z)] is convex in s, so one spread shortens the MLP's mean, most of it the part common to the
# positions that attention's mean weights pass whole. Off: on dev the backward misses fell 73 -> 60 but the kernel
# misses rose 3 -> 4 (48 draws), so it was not judged.
EXAMPLE_SPREAD = False


def input_mean(x: np.ndarray) -> np.ndarray:
  """The batch mean of x (batch, ...), shrunk so that its squared length is unbiased for the examples' own
  noise (E|xbar|^2 = |mu|^2 + sum var / B; the rules' correlations leave each example's pair with itself out):
  one factor for the whole vector, which keeps its direction (with POSITION_SPLIT and token positions, one for
  the mean over positions and one for the departures from it)."""
  B = x.shape[0]
  if POSITION_SPLIT and x.ndim >= 3 and x.shape[1] > 1 and B >= 2:
    u = x.mean(axis=1, keepdims=True)   # each example's mean over positions: its batch mean is the common part
    return _shrunk(u, B) + _shrunk(x - u, B)
  return _shrunk(x, B)


def _shrunk(x: np.ndarray, B: int) -> np.ndarray:
  """x's batch mean times one factor that takes the mean's noise energy, sum var / B, out of its squared length."""
  m = x.mean(axis=0)
  tot = float(np.sum(m * m))
  if B < 2 or tot <= 0:
    return m
  noise = float(np.sum(x.var(axis=0, ddof=1))) / B
  return m * math.sqrt(max(tot - noise, 0.0) / tot)


def bind_eqn(e, vals):
  host = _on_host(e, vals)
  if host is not None:
    return [host]
  out = e.prim.bind(*vals, **e.params)
  return list(out) if e.prim.multiple_results else [out]


def _on_host(e, vals):
  """e on concrete operands, computed on the host where that gives XLA's bits: a reshape, transpose, squeeze
  or broadcast (the same values moved), or an add, subtract or multiply of floats of one dtype (correctly
  rounded in both; refused where an operand or the result is subnormal, which XLA:CPU flushes to zero). Run
  by XLA, each compiled a program per shape (the parameters' views in `_param_values`, the bias adds and
  scalings of `linear_mean`). None otherwise."""
  if any(isinstance(v, jax.core.Tracer) for v in vals):
    return None
  if e.name in ("add", "sub", "mul"):
    return _arith_on_host(e.name, vals)
  if e.name not in ("reshape", "transpose", "squeeze", "broadcast_in_dim") or len(vals) != 1 \
      or not hasattr(vals[0], "shape"):
    return None
  x, p = np.asarray(vals[0]), e.params
  if e.name == "reshape":
    return x.reshape(p["new_sizes"]) if p.get("dimensions") is None else None
  if e.name == "transpose":
    return x.transpose(p["permutation"])
  if e.name == "squeeze":
    return x.squeeze(tuple(p["dimensions"]))
  shape, dims = tuple(p["shape"]), tuple(p["broadcast_dimensions"])
  if any(d is None or not isinstance(d, int) for d in shape):
    return None
  expanded = [1] * len(shape)
  for i, d in enumerate(dims):
    expanded[d] = x.shape[i]
  return np.broadcast_to(x.reshape(expanded), shape)


def _arith_on_host(name, vals):
  arrays = [v for v in vals if hasattr(v, "shape") and np.ndim(v)]
  if len(vals) != 2 or not arrays:
    return None
  dtype = np.dtype(arrays[0].dtype)
  if dtype not in (np.float32, np.float64) or any(np.dtype(v.dtype) != dtype for v in arrays):
    return None
  a, b = (np.asarray(v, dtype) for v in vals)
  try:
    out = {"add": np.add, "sub": np.subtract, "mul": np.multiply}[name](a, b)
  except ValueError:   # shapes numpy does not broadcast: leave it to the primitive
    return None
  tiny = np.finfo(dtype).tiny
  if any(np.any((x != 0) & (np.abs(x) < tiny)) for x in (a, b, out)):
    return None
  return out


def linear_acts(pred, e) -> list | None:
  """e's activation operands when e is linear in them and each has a carried mean, else None (the cases
  `linear_mean` and token_carry.linear re-evaluate: a product or quotient with one activation factor, a
  quotient only in its numerator)."""
  if e.name not in LINEAR:
    return None
  acts = [a for a in e.ins if not isinstance(a, Lit) and pred.tag(a).kind == "act"]
  if not acts or any(a not in pred.mean for a in acts):
    return None
  if e.name in ("mul", "div", "dot_general", "conv_general_dilated") and len(acts) != 1:
    return None
  if e.name == "div" and e.ins[0] not in acts:
    return None
  return acts


def bind_at(pred, e, acts, act_value):
  """e's outputs with each activation operand `a` in `acts` replaced by `act_value(a)`, literals and leaves as
  they are; None where a leaf's value is unknown or the primitive cannot be re-evaluated here."""
  vals = []
  for a in e.ins:
    if isinstance(a, Lit):
      vals.append(a.val)
    elif a in acts:
      vals.append(act_value(a))
    else:
      v = pred.pvals.get(a, pred.const(a))
      if v is None:
        return None
      vals.append(v)
  try:
    return bind_eqn(e, vals)
  except Exception:  # noqa: BLE001 - a primitive this pass cannot re-evaluate: the value stays unknown
    return None


def linear_mean(pred, e, B: int):
  """The batch mean of e's outputs when e is linear in its activation operands, else None."""
  acts = linear_acts(pred, e)
  if acts is None:
    return None
  # an add of an activation and a constant: only the activation's mean is averaged; a constant offset added
  # to every example is its own mean, so the bind is exact either way
  # the broadcast made on the host (a compiled broadcast per shape otherwise)
  outs = bind_at(pred, e, acts, lambda a: np.broadcast_to(np.asarray(pred.mean[a], pred.g.avals[a].dtype),
                                                          pred.g.avals[a].shape))
  if outs is None:
    return None
  return [np.asarray(o, np.float64)[0] if np.ndim(o) and np.shape(o)[0] == B else None for o in outs]


def activation_mean(phi, m: np.ndarray, sq: float, v: float | None = None, ex: np.ndarray | None = None) -> np.ndarray:
  """E[phi(m + s z)] per entry, s^2 = sq - mean(m^2) (the entries' spread around the draw's mean). With `v`
  (example_scale.py: each example's own q_b, lognormal with Var(log q_b) = v, in the spread) the mean over
  examples of each one's: + (1/2) d^2/d(s^2)^2 E[phi(m + s z)] Var(q_b), the derivative E[phi He_4(z)] / (4 s^4).
  With `ex` (B, m's shape: the carried examples' deviations, EXAMPLE_SPREAD) each entry's own spread,
  `example_spread`; with `v` as well, `ex` is ignored and the one spread kept (the two are not combined)."""
  s2 = max(sq - float(np.mean(m * m)), 0.0)
  s = math.sqrt(s2)
  z, w = _GH
  if ex is not None and v is None:
    s = np.sqrt(example_spread(ex, s2)).reshape(-1, 1)
  pts = (m.reshape(-1, 1) + s * z.reshape(1, -1)).astype(np.float32)
  vals = am.values(phi, pts.reshape(-1)).reshape(pts.shape)
  out = vals @ (w / w.sum())
  if v is not None and s2 > 1e-6 * sq:
    out = out + 0.5 * math.expm1(v) * sq * sq * (vals @ am.he4_weights(len(z))) / (4 * s2 * s2)
  return out.reshape(m.shape)


def example_spread(ex: np.ndarray, s2: float) -> np.ndarray:
  """Each entry's spread around the mean (the per-entry shape of ex[0]): the carried examples' variance over the
  batch there, plus the rest of the rule's spread s2 that they do not hold, isotropic; where they hold more than s2
  (the linear carry overstates the examples' spread deeper down), scaled to s2. Its mean over entries is s2."""
  v = np.mean(np.asarray(ex, np.float64) ** 2, axis=0)
  vbar = float(np.mean(v))
  if not vbar > 0:
    return np.full(v.shape, s2)
  return v * min(1.0, s2 / vbar) + max(s2 - vbar, 0.0)


def condition(sig, m: np.ndarray, n_feat: int, drawn: bool = True):
  """`sig` (a dense layer's output) with its shared part taken from the draw's mean m (per-example shape; the
  last n_feat entries of each position are features). Without token positions only where `drawn`: the value
  is downstream of an activation whose moments were taken at the draw's offsets (elementwise.py); a
  network of ReLUs and linear layers keeps the expectation (the MLP calculus that inspect is tested against,
  and every stored ReLU prediction)."""
  if sig.why or sig.sq is None or not sig.sq > 0 or m is None or not np.all(np.isfinite(m)):
    return sig
  if sig.rp is None:
    if not drawn:
      return sig
    f_r = float(np.mean(m * m))
    sq = sig.sq + f_r - sig.sq * sig.r
    return sig._replace(sq=sq, r=f_r / sq) if sq > 0 else sig
  M = m.reshape(-1, n_feat)
  T = M.shape[0]
  f_r = float(np.mean(M * M))
  sq = sig.sq + f_r - sig.sq * sig.r
  if not sq > 0:
    return sig
  out = sig._replace(sq=sq, r=f_r / sq)
  if T > 1 and sig.rc is not None:
    tot = M.sum(axis=0)
    f_c = float((np.sum(tot * tot) - np.sum(M * M)) / (T * (T - 1) * n_feat))
    out = out._replace(rc=f_c / sq, rp=min((sig.sq * sig.rp + f_c - sig.sq * sig.rc) / sq, 1.0))
  else:
    out = out._replace(rp=sig.sq * sig.rp / sq)
  return out


def activation_at_mean(pred, info):
  """(phi, the carried mean of its input, the input's E[y^2]) of an activation block (blocks.py), or None where
  the input's mean is not carried: what the forward mean and the backward slope (draw_gradient) both evaluate."""
  m = pred.mean.get(info["base"])
  if m is None:
    return None
  from jscale.calculus.elementwise import phi_of
  return phi_of(pred.g, info["eqns"], info["base"], info["out"], pred.const), m, pred.fwd[info["base"]].sq


def examples_at(pred, info, m):
  """The carried examples' deviations (B, m's shape) at an activation block's input (token_carry.EXAMPLES), or None
  where there are none of that shape (networks without self-attention carry none)."""
  ex = getattr(pred, "tok_ex", {}).get(info["base"])
  return ex if ex is not None and np.shape(ex)[1:] == np.shape(m) else None


def block_mean(pred, b):
  """The batch mean of a block's output (blocks.py), from its input's; None where unknown."""
  info = b.info
  if b.kind == "activation":
    at = activation_at_mean(pred, info)
    if at is None:
      return None
    v = pred.scale_var(info["base"], population=True) if pred.fwd[info["base"]].rp is None else None
    return activation_mean(*at, v=v, ex=examples_at(pred, info, at[1]) if EXAMPLE_SPREAD else None)
  if b.kind in ("layer_norm", "rms_norm"):
    return normalised_rows(pred, b, pred.mean.get(info["x"]))
  if b.kind == "attention":
    return _attention_mean(pred, b)
  return None


def normalised_rows(pred, b, rows):
  """A LayerNorm or RMSNorm block's map applied to `rows` (its input's batch mean, or token_carry's factor
  rows), linear in them: centred (LayerNorm) over the last axis, divided by the rule's sqrt(var + eps) for
  the input's second moment, times the learnable scale; None where `rows` or the scale is unknown."""
  if rows is None:
    return None
  info, s = b.info, pred.fwd[b.info["x"]]
  D = info["D"]
  rf = min(max(s.rf or 0.0, 0.0), 1.0)
  centred = b.kind == "layer_norm"
  var = s.sq * (1 - rf) * (1 - 1 / D) if centred else s.sq
  h = rows - rows.mean(axis=-1, keepdims=True) if centred else rows
  out = h / math.sqrt(var + info["eps"])
  if info["scale"] is not None:
    scale = pred.leaf_vals[info["scale"]] if pred.leaf_vals is not None else None
    if scale is None or np.size(scale) != D:
      return None
    out = out * np.asarray(scale, np.float64).reshape(-1)
  return out


def _attention_mean(pred, b):
  """The mean weights (attention_own's model's mean over the batch with MEAN_WEIGHTS, else uniform over the unmasked
  keys) times the values' mean, plus the model's weights-values covariance (attention_own.MEAN_COV): the attention
  product's equation and the transposes after it evaluated on them."""
  return mean_of_parts(attention_mean_parts(pred, b))


def mean_of_parts(parts):
  """`attention_mean_parts`'s two parts summed (the covariance's where there is one): the attention's batch mean."""
  if parts is None:
    return None
  o, oc = parts
  return o if oc is None else o + oc


def attention_mean_parts(pred, b):
  """(the mean weights times the values' mean, the weights-values covariance's part or None) at the attention's
  output, per example (the batch axis dropped); None where the block's equations cannot be evaluated."""
  mv = pred.mean.get(b.info["v"])
  if mv is None:
    return None
  v_aval = pred.g.avals[b.info["v"]]
  B = pred.g.avals[b.info["p"]].shape[0]
  o = uniform_attention(pred, b, np.broadcast_to(np.asarray(mv, v_aval.dtype), v_aval.shape), own_weights(pred, b))
  if o is None or np.shape(o)[0] != B:
    return None
  c, oc = own_cov(pred, b), None
  if c is not None:   # the covariance through the same equations: identity weights pass it on
    T = v_aval.shape[1]
    eye = np.broadcast_to(np.eye(T), pred.g.avals[b.info["p"]].shape[1:])
    oc = uniform_attention(pred, b, np.broadcast_to(np.asarray(c, v_aval.dtype), v_aval.shape), eye)
    oc = oc[0] if oc is not None and np.shape(oc)[0] == B else None
  return o[0], oc


def _shared_energy(M: np.ndarray):
  """(mean_t |M_t|^2 / n, the same over pairs of positions t != t') of rows M (T, n): condition's f_r, f_c."""
  T, n = M.shape
  f_r = float(np.mean(M * M))
  if T < 2:
    return f_r, None
  tot = M.sum(axis=0)
  return f_r, float((np.sum(tot * tot) - np.sum(M * M)) / (T * (T - 1) * n))


def cov_to_shared(sig, o: np.ndarray, oc: np.ndarray):
  """The attention output's signal `sig` with the weights-values covariance's energy moved from the per-example
  part into the shared one (attention_own.OUT_SPLIT = "cov"): the Gaussian model's E[o^2] holds the covariance (each
  model example's weights and values come from its own tokens) but its shared part sq r is the mean weights times
  the values' correlation across examples, independent weights, so it does not. With the mean m = o + oc the
  draw's shared energy grows by |o + oc|^2 - |o|^2 (and over pairs of positions likewise for rc), which is taken
  out of sq (1 - r), the total kept: exactly the energy MEAN_COV adds to the mean. `o`, `oc` per example, the
  first axis the positions."""
  if sig.why or sig.sq is None or not sig.sq > 0 or oc is None or not np.all(np.isfinite(oc)):
    return sig
  T = np.shape(o)[0]
  n = int(np.size(o)) // T
  (r0, c0), (r1, c1) = (_shared_energy(np.asarray(m, np.float64).reshape(T, n)) for m in (o, o + oc))
  out = sig._replace(r=min(max(sig.r + (r1 - r0) / sig.sq, 0.0), 1.0))
  if sig.rc is not None and c0 is not None:
    out = out._replace(rc=min(max(sig.rc + (c1 - c0) / sig.sq, -1.0), 1.0))
  return out


def mean_to_shared(sig, m: np.ndarray):
  """The attention output's signal `sig` with its shared part the draw's carried mean `m` (per example, the first
  axis the positions) and E[o^2] kept (attention_own.OUT_SPLIT = "mean"): the Gaussian model's E[o^2] is close to
  the network's (within a few % at w32 on dev), its shared part r (the values' correlations through its mean
  weights, independent of the values) is not, and the W_o condition keeps whatever sq (1 - r) is left here."""
  if sig.why or sig.sq is None or not sig.sq > 0 or m is None or not np.all(np.isfinite(m)):
    return sig
  T = np.shape(m)[0]
  f_r, f_c = _shared_energy(np.asarray(m, np.float64).reshape(T, int(np.size(m)) // T))
  out = sig._replace(r=min(f_r / sig.sq, 1.0))
  if sig.rc is not None and f_c is not None:
    out = out._replace(rc=min(max(f_c / sig.sq, -1.0), 1.0))
  return out


def examples_to_shared(sig, e: float):
  """The attention output's signal `sig` with its per-example part sq (1 - r) = e, E[o^2] kept
  (attention_own.OUT_SPLIT = "own": e the own model's examples' spread)."""
  if sig.why or sig.sq is None or not sig.sq > 0 or not np.isfinite(e) or e < 0:
    return sig
  return sig._replace(r=min(max(1.0 - e / sig.sq, 0.0), 1.0))


def own_weights(pred, b):
  """The attention_own model's mean weights over the batch at this block (attention_own.MEAN_WEIGHTS), or None."""
  w = getattr(pred, "mean_weights", {}).get(b.info.get("p"))
  return w if w is not None and b.info["mask"] is None and np.shape(w) == pred.g.avals[b.info["p"]].shape[1:] else None


def own_cov(pred, b):
  """attention_own's weights-values covariance (T, heads, d_v) at this block (attention_own.MEAN_COV), or None."""
  c = getattr(pred, "mean_weights", {}).get(("cov", b.info.get("p")))
  v_shape = pred.g.avals[b.info["v"]].shape
  return c if c is not None and b.info["mask"] is None and np.shape(c) == tuple(v_shape[1:]) else None


def uniform_attention(pred, b, v: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray | None:
  """The attention block's output (float64, the batch's shape) for the weights uniform over the unmasked keys (or
  `weights`, (heads, T, T) the same for every example: `own_weights`) and the values v (the values' full shape):
  the attention product's equation and the transposes after it bound on the host, or None where the block's
  equations cannot be evaluated so. Linear in v: the mean (_attention_mean) and each example's rows
  (token_carry.examples_attention) go through the same equations."""
  info = b.info
  n, p = info.get("dot"), info.get("p")
  if n is None:
    return None
  g = pred.g
  shape = g.avals[p].shape
  mask = info["mask"]
  if weights is not None:   # (heads, T, T) mean weights, the same for every example (attention_own.MEAN_WEIGHTS)
    w = np.broadcast_to(weights, shape)
  else:
    w = np.ones(shape[-2:]) if mask is None else np.broadcast_to(np.asarray(mask, bool), shape)
    w = np.broadcast_to(w / np.maximum(w.sum(axis=-1, keepdims=True), 1), shape)
  env = {p: np.asarray(w, g.avals[p].dtype), info["v"]: np.asarray(v, g.avals[info["v"]].dtype)}
  for k in sorted(i for i in b.eqns if i >= n):
    e = g.eqns[k]
    if not all(isinstance(a, Lit) or a in env for a in e.ins):
      continue
    try:
      outs = bind_eqn(e, [a.val if isinstance(a, Lit) else env[a] for a in e.ins])
    except Exception:  # noqa: BLE001
      return None
    env.update(zip(e.outs, outs))
    if info["out"] in env:
      return np.asarray(env[info["out"]], np.float64)
  return None

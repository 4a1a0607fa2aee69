"""`inspect`: "will my network train?" -- the scaling calculus on any JAX or Flax model.

`inspect(apply_fn, params, x)` traces `apply_fn(params, x)` (tracing.py), recognises its layers from the
jaxpr and applies the calculus's rules to them (rules.py), and measures, on the batch x, every parameter
leaf's gradient-to-weight ratio G (per example, the paper's batch-1 form, and for the batch-mean loss) and
the moments at every recognised activation. Flax linen works as `inspect(model.apply, variables, x)`, nnx
as `inspect(module, None, x)` (or with the state of `nnx.split`). The answer is an `Inspection`:
`.layers` (one dict per parameter leaf), `.activations`, `.output`, `.verdict` (preconditioning score and
fixes), `.notes`, `.to_json()`, `.table()` (inspection_table.py).

Definitions (docs/calculus.md): for a leaf W, G_meas = mean_b E[dW_b^2] / E[W^2] with dW_b the gradient of
example b's own loss, G_batch_meas = E[dW^2] / E[W^2] for the gradient of the batch's mean loss, and G_pred
the rules' prediction of G_meas from E[W^2], the input's measured E[x_0^2] and the loss's gradient at the
outputs (E = 1 for the default random projection), or None with the reason where no rule applies.
"""
from __future__ import annotations

import dataclasses
import json
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jscale.calculus.design import bias_balance_input_scale, check_calculus, preconditioning
from jscale.calculus.inspection_table import render
from jscale.calculus.memory import available_bytes, check_bytes
from jscale.calculus.rules import Predictor
from jscale.calculus.tracing import classify, const_operands, evaluate, flatten, is_float
from jscale.keys import check_key

WEIGHT_KINDS = ("dense", "conv", "scalar")


def _num(v):
  if v is None:
    return None
  v = float(v)
  return v if math.isfinite(v) else None


def _key_str(k) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(k, attr):
      return str(getattr(k, attr))
  return str(k)


def _path(keys) -> str:
  parts = [_key_str(k) for k in keys]
  if len(parts) > 1 and parts[-1] == "value" and type(keys[-1]).__name__ == "GetAttrKey":
    parts = parts[:-1]  # nnx variables: "layer/kernel", not "layer/kernel/value"
  return "/".join(parts)


def _is_nnx_module(obj) -> bool:
  return any(c.__name__ == "Module" and c.__module__.startswith("flax.nnx") for c in type(obj).__mro__)


def _pair_corr(v) -> float:
  """Mean over example pairs b != b' of E[v_b v_b'] / E[v^2] (uncentred, per entry)."""
  B = v.shape[0]
  if B < 2:
    return 0.0
  f = np.asarray(v, np.float64).reshape(B, -1)
  s = f.sum(0)
  ms = float(np.mean(f * f))
  return float((np.sum(s * s) - np.sum(f * f)) / (B * (B - 1) * f.shape[1] * ms)) if ms > 0 else 0.0


def projection_loss(key: jax.Array, outputs) -> Callable:
  """The paper's random loss: sum over outputs of <out_b, v_b>, v i.i.d. N(0, 1) drawn from `key` (for one
  output array, `v = jax.random.normal(split(key)[0], out.shape)`, as `calculus.measure` draws it)."""
  leaves = jax.tree_util.tree_leaves(outputs)
  k_proj = jax.random.split(key)[0]
  keys = [k_proj] if len(leaves) == 1 else list(jax.random.split(k_proj, len(leaves)))
  vs = [jax.random.normal(k, o.shape, o.dtype) for k, o in zip(keys, leaves)]

  def loss(out):
    outs = jax.tree_util.tree_leaves(out)
    return sum(jnp.sum((o * v).reshape(o.shape[0], -1), axis=1) for o, v in zip(outs, vs))

  return loss


@dataclasses.dataclass
class Inspection:
  """What `inspect` found; every number is a plain float or None (JSON-ready)."""
  layers: list
  activations: list
  output: dict
  verdict: dict
  notes: list
  batch_size: int
  x0_sq: float
  loss: str

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  def to_json(self, indent: int | None = 1) -> str:
    return json.dumps(self.to_dict(), indent=indent)

  def table(self) -> str:
    return render(self.to_dict())


def inspect(apply_fn, params, x, *, loss: Callable | None = None, key: jax.Array | None = None,
            target_std: float = 0.05, memory_limit: float | None = None) -> Inspection:
  """The calculus on any `apply_fn(params, x) -> outputs` (a pytree of parameters; x: (batch, ...)).

  `loss(outputs) -> (batch,)` per-example losses; by default the paper's random projection drawn from `key`
  (PRNGKey(0) if None). Examples must not interact inside the model (no batch statistics), since example b's
  own gradient is computed from the model applied to x[b:b+1]. `target_std` sets the output multiplier the
  verdict suggests. Raises ValueError before any compute for bad input or a job larger than `memory_limit`
  bytes (default: a share of the device's free memory).
  """
  if _is_nnx_module(apply_fn):
    from flax import nnx  # only for nnx models: calculus does not otherwise depend on flax
    graphdef, state = nnx.split(apply_fn)
    params = state if params is None else params
    apply_fn = lambda p, x_: nnx.merge(graphdef, p)(x_)  # noqa: E731
  if not callable(apply_fn):
    raise ValueError(f"apply_fn must be callable (or an nnx Module), got {type(apply_fn).__name__}")
  if loss is not None and not callable(loss):
    raise ValueError(f"loss must be a callable outputs -> (batch,) losses, got {type(loss).__name__}")
  x = jnp.asarray(x)
  if x.ndim < 2 or x.shape[0] < 1 or not jnp.issubdtype(x.dtype, jnp.inexact):
    raise ValueError(f"x must be a float batch of shape (batch, ...), got {x.dtype} {x.shape}")
  if not (target_std > 0 and math.isfinite(target_std)):
    raise ValueError(f"target_std must be finite and > 0, got {target_std!r}")
  key = jax.random.PRNGKey(0) if key is None else check_key(key, "inspect: key")
  B = x.shape[0]

  with_path, treedef = jax.tree_util.tree_flatten_with_path(params)
  all_leaves = [jnp.asarray(l) if hasattr(l, "shape") else l for _, l in with_path]
  diff = [i for i, l in enumerate(all_leaves) if hasattr(l, "dtype") and jnp.issubdtype(l.dtype, jnp.inexact)]
  if not diff:
    raise ValueError("params has no float leaves: nothing to inspect")
  paths = [_path(p) for p, _ in with_path]

  def fn(leaves, x_):
    full = list(all_leaves)
    for i, l in zip(diff, leaves):
      full[i] = l
    return apply_fn(jax.tree_util.tree_unflatten(treedef, full), x_)

  leaves = [all_leaves[i] for i in diff]
  try:
    graph = flatten(fn, leaves, x)
  except Exception as e:  # noqa: BLE001 - report the user's function failing on its own input
    raise ValueError(f"apply_fn(params, x) failed on x of shape {x.shape}: {type(e).__name__}: {e}") from e
  outs_aval = [graph.avals[a] for a in graph.out_atoms if isinstance(a, int)]
  if not outs_aval or any(not is_float(a) or not a.shape or a.shape[0] != B for a in outs_aval):
    raise ValueError("apply_fn must return float arrays with the batch axis first "
                     f"(got {[getattr(a, 'shape', None) for a in outs_aval]} for a batch of {B})")

  # Memory: the whole-batch pass (values, perturbations, cotangents) plus one chunk of per-example gradients.
  act_bytes = sum(math.prod(a.shape) * a.dtype.itemsize for a in graph.avals.values() if hasattr(a, "dtype")
                  and a.shape and a.shape[0] == B and is_float(a))
  param_bytes = sum(l.size * l.dtype.itemsize for l in leaves)
  limit = 0.7 * available_bytes() if memory_limit is None else memory_limit
  base = 3.0 * act_bytes + 3.0 * param_bytes
  per_ex = 2.0 * param_bytes + 3.0 * act_bytes / B
  check_bytes(base + per_ex, f"inspect on a batch of {B}", limit)
  chunk = int(max(1, min(B, (limit - base) // per_ex, 64)))
  while B % chunk:
    chunk -= 1

  tags = classify(graph)
  need = const_operands(graph, tags)
  # Every activation value is tapped, so that one compiled pass measures whatever the rules recognise.
  taps = sorted(i for i, t in tags.items() if t.kind == "act" and i in graph.avals and is_float(graph.avals[i])
                and graph.avals[i].shape and graph.avals[i].shape[0] == B)
  loss_name = "random projection" if loss is None else getattr(loss, "__name__", "loss")
  meas = _measure(graph, fn, leaves, x, loss, key, taps, need, chunk)
  const_vals = {i: np.asarray(v) for i, v in meas["consts"].items()}
  tags = classify(graph, const_vals)

  # Prediction: input moments measured, output gradient from the loss (1 for the random projection).
  xn = np.asarray(x, np.float64)
  x0_sq = float(np.mean(xn * xn))
  x_sig = dict(sq=x0_sq, r=_pair_corr(xn), sym=bool(np.any(xn < 0)), why=None)
  leaf_sq = [float(jnp.mean(jnp.square(l))) for l in leaves]
  out_grads = {}
  for a, (sq, r) in zip(graph.out_atoms, meas["g_out"]):
    if isinstance(a, int):
      out_grads[a] = dict(sq=1.0 if loss is None else float(sq), r=0.0 if loss is None else float(r),
                          pooled=False, why=None)
  pred = Predictor(graph, tags, const_vals, leaf_sq, x_sig, B).run(out_grads)
  return _assemble(graph, pred, meas, leaves, [paths[i] for i in diff], leaf_sq, x0_sq, B, target_std,
                   loss_name)


def _jnp_pair_corr(v):
  B = v.shape[0]
  f = v.reshape(B, -1).astype(jnp.float32)
  s = jnp.sum(f, 0)
  ms = jnp.mean(f * f)
  return jnp.where((B > 1) & (ms > 0), (jnp.sum(s * s) - jnp.sum(f * f)) / jnp.maximum(B * (B - 1) * f.shape[1] * ms,
                                                                                         1e-30), 0.0)


def _measure(graph, fn, leaves, x, loss, key, taps, need, chunk):
  """One compiled pass: the tapped moments, the loss's output gradient, per-example and batch gradients."""
  B = x.shape[0]

  @jax.jit
  def run(leaves, x, key):
    eps = {i: jnp.zeros(graph.avals[i].shape, graph.avals[i].dtype) for i in taps}
    keep = sorted(set(taps) | set(need))
    (o, kept), vjp_fn = jax.vjp(lambda e: evaluate(graph, leaves, x, e, keep=keep), eps)
    outputs = jax.tree_util.tree_unflatten(graph.out_tree, o)
    loss_fn = projection_loss(key, outputs) if loss is None else loss
    per = loss_fn(outputs)
    if getattr(per, "shape", None) != (B,):
      raise ValueError(f"loss must map the outputs to per-example losses of shape ({B},), got "
                       f"{getattr(per, 'shape', type(per).__name__)}")
    g_leaves = jax.tree_util.tree_leaves(jax.grad(lambda out: jnp.sum(loss_fn(out)))(outputs))
    (ct,) = vjp_fn((list(g_leaves), {i: jnp.zeros_like(v) for i, v in kept.items()}))
    ms = lambda v: jnp.mean(jnp.square(v.astype(jnp.float32)))  # noqa: E731
    v_sq = {i: ms(kept[i]) for i in taps}
    c_sq = {i: ms(v) for i, v in ct.items()}
    # Gradient of the batch's mean loss.
    _, vjp_p = jax.vjp(lambda l: fn(l, x), leaves)
    g_batch = vjp_p(jax.tree_util.tree_unflatten(graph.out_tree, [g / B for g in g_leaves]))[0]
    batch_sq = [ms(g) for g in g_batch]

    # Per-example gradients, `chunk` examples at a time: example b's own loss through the model on x[b:b+1].
    def one(xb, gb):
      _, vjp_b = jax.vjp(lambda l: fn(l, xb[None]), leaves)
      grads = vjp_b(jax.tree_util.tree_unflatten(graph.out_tree, [g[None] for g in gb]))[0]
      return [jnp.sum(jnp.square(g.astype(jnp.float32))) for g in grads]

    xs = x.reshape((B // chunk, chunk) + x.shape[1:])
    gs = [g.reshape((B // chunk, chunk) + g.shape[1:]) for g in g_leaves]
    per_ex = jax.lax.map(lambda args: jax.vmap(one)(*args), (xs, gs))
    ex_sq = [jnp.sum(p) / B / l.size for p, l in zip(per_ex, leaves)]
    flat = jnp.concatenate([v.reshape(-1).astype(jnp.float32) for v in o])
    return dict(v_sq=v_sq, c_sq=c_sq, batch_sq=batch_sq, ex_sq=ex_sq, out_std=jnp.std(flat),
                out_sq=jnp.mean(flat * flat), consts={i: kept[i] for i in need},
                g_out=[(ms(g), _jnp_pair_corr(g)) for g in g_leaves])

  return jax.device_get(run(leaves, x, key))


def _assemble(graph, pred, meas, leaves, paths, leaf_sq, x0_sq, B, target_std, loss_name) -> Inspection:
  by_leaf = {}
  for r in pred.ops:
    by_leaf.setdefault(r["leaf"], []).append(r)
  notes = list(dict.fromkeys(pred.notes))
  rows = []
  for n, (path, leaf) in enumerate(zip(paths, leaves)):
    recs = by_leaf.get(n, [])
    w_sq = leaf_sq[n]
    g_ex, g_b = float(meas["ex_sq"][n]), float(meas["batch_sq"][n])
    row = dict(path=path, shape=list(leaf.shape), kind=recs[0]["kind"] if recs else "other",
               op=recs[0]["op"] if recs else None, fan_in=None, fan_out=None, taps=None, weight_sq=_num(w_sq),
               grad_sq_meas=_num(g_ex), G_meas=_num(g_ex / w_sq) if w_sq > 0 else None,
               G_batch_meas=_num(g_b / w_sq) if w_sq > 0 else None,
               grad_sq_pred=None, G_pred=None, G_batch_pred=None, x_sq_pred=None, x_sq_meas=None,
               dy_sq_pred=None, dy_sq_meas=None, reason=None)
    if recs:
      r0 = recs[0]
      row.update(fan_in=r0["fan_in"], fan_out=r0["fan_out"], taps=r0["taps"])
      if r0["kind"] != "bias":
        row.update(x_sq_pred=_num(r0["x_sig"]["sq"]), x_sq_meas=_num(meas["v_sq"].get(r0["in_id"])))
      row["dy_sq_meas"] = _num(meas["c_sq"].get(r0["out_id"]))
      if len(recs) > 1:
        notes.append(f"{path} is used by {len(recs)} operations: its predicted E[dW^2] adds theirs "
                     "(cross terms dropped)")
    why = _leaf_reason(n, recs, pred)
    if recs and not why:
      gs = [r.get("g") for r in recs]
      if any(g is None for g in gs):
        why = "its output does not reach the loss"
      else:
        dW = sum(r["rho"] * r["x_sig"]["sq"] * g["sq"] for r, g in zip(recs, gs))
        dWb = sum(r["rho"] * r["x_sig"]["sq"] * g["sq"] * (1 / B + (1 - 1 / B) * r["x_sig"]["r"] * g["r"])
                  for r, g in zip(recs, gs))
        row.update(grad_sq_pred=_num(dW), dy_sq_pred=_num(gs[0]["sq"]))
        if w_sq > 0:
          row.update(G_pred=_num(dW / w_sq), G_batch_pred=_num(dWb / w_sq))
        else:
          why = "E[W^2] = 0 (a zero-initialised leaf): G is undefined"
        if any(g["pooled"] for g in gs):
          notes.append(f"{path}: below an average pooling; the spatial gradient correlation pooling creates "
                       "is not tracked, so its G is approximate")
    row["reason"] = why
    rows.append(row)

  acts = []
  for a in pred.acts:
    f_in, f_out = pred.fwd.get(a["in_id"], {}), pred.fwd.get(a["out_id"], {})
    g_out = pred.bwd.get(a["out_id"]) or {}
    size = math.prod(graph.avals[a["out_id"]].shape[1:])
    x_m, dx_m = meas["v_sq"].get(a["out_id"]), meas["c_sq"].get(a["out_id"])
    x_p = f_out.get("sq")
    dx_p = g_out.get("sq")
    acts.append(dict(
        index=len(acts), kind=a["kind"], shape=list(graph.avals[a["out_id"]].shape[1:]),
        y_sq_pred=_num(f_in.get("sq")), y_sq_meas=_num(meas["v_sq"].get(a["in_id"])),
        x_sq_pred=_num(x_p), x_sq_meas=_num(x_m), dx_sq_pred=_num(dx_p), dx_sq_meas=_num(dx_m),
        nu_pred=_num(size * x_p * dx_p) if x_p is not None and dx_p is not None else None,
        nu_meas=_num(size * x_m * dx_m) if x_m is not None and dx_m is not None else None,
        reason=f_out.get("why") or g_out.get("why")))

  verdict = _verdict(rows, acts, pred, graph, x0_sq, meas, target_std)
  for r in rows:
    if r["reason"]:
      verdict["reasons"].setdefault(r["reason"], []).append(r["path"])
  output = dict(out_sq_meas=_num(meas["out_sq"]), out_std_meas=_num(meas["out_std"]),
                out_sq_pred=_out_pred(graph, pred))
  return Inspection(layers=rows, activations=acts, output=output, verdict=verdict, notes=notes, batch_size=B,
                    x0_sq=x0_sq, loss=loss_name)


def _leaf_reason(n, recs, pred):
  if recs:
    for r in recs:
      if r["x_sig"].get("why"):
        return r["x_sig"]["why"]
      g = r.get("g")
      if g is not None and g.get("why"):
        return g["why"]
    return pred.leaf_why.get(n) if n in pred.leaf_why else None
  return pred.leaf_why.get(n, "not used by any layer the calculus recognises")


def _out_pred(graph, pred):
  sqs = [pred.fwd.get(a, {}).get("sq") for a in graph.out_atoms if isinstance(a, int)]
  sizes = [math.prod(graph.avals[a].shape) for a in graph.out_atoms if isinstance(a, int)]
  if any(s is None for s in sqs):
    return None
  return _num(sum(s * n for s, n in zip(sqs, sizes)) / sum(sizes))


def _verdict(rows, acts, pred, graph, x0_sq, meas, target_std) -> dict:
  w = [r for r in rows if r["kind"] in WEIGHT_KINDS and r["G_meas"] and r["G_meas"] > 0]
  pc_m = preconditioning([r["G_meas"] for r in w]) if w else None
  have_pred = [r for r in w if r["G_pred"]]
  pc_p = preconditioning([r["G_pred"] for r in have_pred]) if have_pred and len(have_pred) == len(w) else None
  med = float(np.median([r["G_meas"] for r in w])) if w else None
  fixes = []
  for i, r in enumerate(w):
    m = (r["G_meas"] / med) ** 0.25
    r["G_over_median"] = _num(r["G_meas"] / med)
    r["verdict"] = pc_m.verdicts[i]
    fixes.append(dict(path=r["path"], G_over_median=_num(r["G_meas"] / med), init_std_multiplier=_num(m),
                      fixed_scalar_after=_num(1 / m)))
  for r in rows:
    r.setdefault("G_over_median", None)
    r.setdefault("verdict", None)
  first = next((op for op in pred.ops if op["in_id"] == graph.x_id and op["kind"] in ("dense", "conv")), None)
  nus = [a["nu_meas"] for a in acts if a["nu_meas"]]
  chk = check_calculus(nus) if nus else None
  out_std = meas["out_std"]
  return dict(
      preconditioning_score_meas=_num(pc_m.score) if pc_m else None,
      preconditioning_score_pred=_num(pc_p.score) if pc_p else None,
      G_median_meas=_num(med) if med else None,
      equalising_multipliers=fixes,
      output_multiplier=_num(target_std / out_std) if out_std > 0 else None, target_logit_std=target_std,
      input_scale_for_bias_balance=(_num(bias_balance_input_scale(x0_sq, first["fan_in"]))
                                    if first and x0_sq > 0 else None),
      x0_sq_for_bias_balance=_num(1 / math.sqrt(first["fan_in"])) if first else None,
      calculus_check=dict(ok=chk.ok, nu_spread=_num(chk.nu_spread), reason=chk.reason) if chk else None,
      reasons={})

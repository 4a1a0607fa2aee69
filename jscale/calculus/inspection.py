"""`inspect`: "will my network train?" -- the scaling calculus on any JAX or Flax model.

`inspect(apply_fn, params, x)` traces `apply_fn(params, x)` (tracing.py), recognises its layers from the
jaxpr and applies the calculus's rules to them (rules.py), and measures, on the batch x, every parameter
leaf's gradient-to-weight ratio G (per example, the paper's batch-1 form, and for the batch-mean loss) and
the moments at every recognised activation. Flax linen works as `inspect(model.apply, variables, x)`, nnx
as `inspect(module, None, x)` (or with the state of `nnx.split`). The answer is an `Inspection`
(inspection_records.py): `.layers` (a `LeafRow` per parameter leaf: `res.layers[0].G_meas`), `.activations`,
`.output`, `.verdict` (preconditioning score and fixes), `.notes`, `.to_json()`, `.table()`. The pieces:
inspection_measure.py measures, rules.py predicts, inspection_assembly.py puts the rows together.

Definitions (docs/calculus.md): for a leaf W, G_meas = mean_b E[dW_b^2] / E[W^2] with dW_b the gradient of
example b's own loss, G_batch_meas = E[dW^2] / E[W^2] for the gradient of the batch's mean loss, and G_pred
the rules' prediction of G_meas from E[W^2], the input's measured E[x_0^2] and the loss's gradient at the
outputs (its E[g^2] and correlation between examples as measured: for the default random projection, that
draw's), or None with the reason where no rule applies.
"""
from __future__ import annotations

import math
import warnings
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jscale import program_cache
from jscale.calculus.correlation import cross_position_corr, pair_corr, position_corr
from jscale.calculus import draw_mean, example_scale, inspection_checks, token_carry
from jscale.calculus.inspection_assembly import Leaves, assemble
from jscale.calculus import pair_law
from jscale.calculus.inspection_measure import measure_graph, projection_loss, projection_vectors
from jscale.calculus.inspection_records import Inspection
from jscale.calculus.rules import Predictor
from jscale.calculus.signals import Backward, Forward
from jscale.calculus.tracing import classify, const_operands, flatten, is_float
from jscale.keys import check_key
from jscale.memory import available_bytes, check_bytes


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


def inspect(apply_fn, params, x, *, loss: Callable | None = None, key: jax.Array | None = None,
            target_std: float = 0.05, memory_limit: float | None = None, groups=None) -> Inspection:
  """The calculus on any `apply_fn(params, x) -> outputs` (a pytree of parameters; x: (batch, ...)).

  `loss(outputs) -> (batch,)` per-example losses; by default the paper's random projection drawn from `key`
  (PRNGKey(0) if None). Examples must not interact inside the model (no batch statistics), since example b's
  own gradient is computed from the model applied to x[b:b+1]. `target_std` sets the output multiplier the
  verdict suggests. `groups` (batch,) integer group ids (class labels): the predicted minibatch G then takes its
  cross term from the class-pair law (pair_law.py) instead of the product of the mean correlations. Raises
  ValueError before any compute for bad input or a job larger than `memory_limit`
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
  if groups is not None and np.shape(groups) != (B,):
    raise ValueError(f"groups must have shape ({B},) (one group id per example), got {np.shape(groups)}")

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

  inspection_checks.check(fn, leaves, x, [paths[i] for i in diff], loss)
  chunk = _chunk(graph, leaves, B, memory_limit)
  tags = classify(graph)
  need = const_operands(graph, tags)
  # Every activation value is tapped, so that one compiled pass measures whatever the rules recognise.
  taps = sorted(i for i, t in tags.items() if t.kind == "act" and i in graph.avals and is_float(graph.avals[i])
                and graph.avals[i].shape and graph.avals[i].shape[0] == B)
  loss_name = "random projection" if loss is None else getattr(loss, "__name__", "loss")
  meas = measure_graph(graph, fn, leaves, x, loss=loss, key=key, taps=taps, need=need, chunk=chunk)
  const_vals = {i: np.asarray(v) for i, v in meas.consts.items()}
  tags = classify(graph, const_vals)

  # Prediction: input moments measured, output gradient from the loss (1 for the random projection).
  xn = np.asarray(x, np.float64)
  x0_sq = float(np.mean(xn * xn))
  x_sig = Forward(x0_sq, pair_corr(xn), bool(np.any(xn < 0)), None, position_corr(xn), None,
                  cross_position_corr(xn))
  leaf_sq = _mean_squares(leaves)
  out_grads = {}
  for a, (sq, r) in zip(graph.out_atoms, meas.g_out):
    if isinstance(a, int):
      # the random projection is independent across positions (rp = 0) where the output has them; its draw's
      # E[v^2] (1 on average, +-sqrt(2 / entries)) and correlation between examples (r ~ +-1 / (B sqrt(outputs)),
      # zero on average) are kept, as for any loss: summed over the B (B - 1) pairs r moves one batch's G_batch
      # by tens of percent (docs/calculus.md, "Token correlations in the minibatch G")
      rp = 0.0 if loss is None and len(graph.avals[a].shape) >= 3 else None
      # the random projection's v_b does not depend on the example: its gradient does not follow the
      # example's scale (b = 0, example_scale.py); a given loss's may (untracked)
      out_grads[a] = Backward(float(sq), float(r), rp=rp, b=0.0 if loss is None else None)
  prop = Predictor(graph, tags, const_vals=const_vals, leaf_sq=leaf_sq, x_sig=x_sig,
                   leaf_vals=[np.asarray(l) for l in leaves], x_mean=draw_mean.input_mean(xn),
                   x_scale_var=example_scale.input_var(xn),
                   x_tok=token_carry.input_factor(xn),
                   x_tok_ex=token_carry.input_examples(xn) if token_carry.EXAMPLES else None).run(
                       out_grads, lambda: _output_cotangents(graph, fn, leaves, x, loss, key))
  cross = None
  if groups is not None:
    cross = _pair_law_cross(graph, tags, const_vals, leaf_sq, x_sig, xn, fn, leaves, x, loss, key, groups)
  found = Leaves(paths=tuple(paths[i] for i in diff), shapes=tuple(l.shape for l in leaves), w_sq=tuple(leaf_sq))
  return assemble(prop, meas, found, batch_size=B, x0_sq=x0_sq, target_std=target_std, loss_name=loss_name,
                  cross=cross)


def _output_cotangents(graph, fn, leaves, x, loss, key) -> dict:
  """Output value id -> each example's loss gradient there (batch, ...), as the measured pass takes it. The
  random projection's does not depend on the outputs (no model evaluation): it is its v, drawn directly (its
  gradient taken eagerly compiled seven more programs, for the same bits)."""
  if loss is None:
    outs = jax.tree_util.tree_unflatten(graph.out_tree, [np.zeros(graph.avals[a].shape, graph.avals[a].dtype)
                                                         if isinstance(a, int) else a.val
                                                         for a in graph.out_atoms])
    g = projection_vectors(key, outs)
  else:
    outs = program_cache.jit(fn)(leaves, x)
    g = program_cache.jit(jax.grad(lambda out: jnp.sum(loss(out))))(outs)
  return {a: np.asarray(v, np.float64) for a, v in zip(graph.out_atoms, jax.tree_util.tree_leaves(g))
          if isinstance(a, int)}


def _pair_law_cross(graph, tags, const_vals, leaf_sq, x_sig, xn, fn, leaves, x, loss, key, groups) -> dict:
  """Per leaf use, the class-pair law's cross term (pair_law.py): one propagation per pair type, with that
  type's input correlation and the loss gradient's correlation at the outputs (measured on the batch)."""

  def output_grads(leaves, x, key):
    outputs = fn(leaves, x)
    loss_fn = projection_loss(key, outputs) if loss is None else loss
    return jax.tree_util.tree_leaves(jax.grad(lambda out: jnp.sum(loss_fn(out)))(outputs))

  # One program (shared by calls on networks of the same computation), not the model's and the loss's
  # operations compiled one by one per shape (bitwise the eager numbers on the transfer experiment's networks).
  g_out = jax.device_get(program_cache.jit(output_grads)(leaves, x, key))
  if len(g_out) != 1:
    raise ValueError("inspect: groups= needs a model with one output array")
  runs = {}
  out_id = next(a for a in graph.out_atoms if isinstance(a, int))
  g_sq = float(np.mean(np.square(np.asarray(g_out[0], np.float64))))
  for n, (w, r0, rg) in enumerate(pair_law.pair_bins(xn, np.asarray(g_out[0]), groups)):
    runs[n] = (w, Predictor(graph, tags, const_vals=const_vals, leaf_sq=leaf_sq, x_sig=x_sig._replace(r=r0))
               .run({out_id: Backward(g_sq, rg)}))
  return pair_law.cross_terms(runs)


def _mean_squares(leaves) -> list:
  """E[l^2] per leaf as floats, from two compiled programs for every leaf (shared by calls with leaves of the
  same shapes): `jnp.mean(jnp.square(l))` leaf by leaf compiled two programs per leaf shape. The squares are
  the second program's inputs on purpose: XLA:CPU sums a squaring fused into the mean in another order (a
  32x32 kernel's mean square moved by 6e-8), and apart they are the eager numbers bitwise."""
  squares = program_cache.jit(lambda ls: [jnp.square(l) for l in ls])(list(leaves))
  return [float(v) for v in jax.device_get(program_cache.jit(lambda ss: [jnp.mean(s) for s in ss])(squares))]


def _chunk(graph, leaves, B: int, memory_limit: float | None) -> int:
  """Examples per step of the per-example gradients (a divisor of B), after refusing a job too large for
  `memory_limit` bytes: the whole-batch pass (values, perturbations, cotangents) plus one chunk's gradients."""
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
  default = max(d for d in range(1, min(B, 64) + 1) if B % d == 0)
  if chunk < default:
    # XLA's per-example gradients over a narrower vmap sum in another order: the float32 measured columns move at
    # rounding, so the same model and key give other low digits on a machine with less free memory (found on a
    # depth-6 transformer at 32 against 64). Said, not hidden; `memory_limit` pins the choice.
    warnings.warn(f"inspect: per-example gradients in chunks of {chunk} examples instead of {default} (free memory "
                  f"{limit / 2**30:.2f} GiB usable): measured float32 columns may differ at rounding from a run "
                  f"with the default chunk", RuntimeWarning, stacklevel=3)
  return chunk

"""`inspect`'s measured side: one compiled pass over a traced graph (tracing.py) that taps every activation.

It measures E[v^2] at the tapped values and E[Delta^2] of the loss's gradient there (by perturbing each value
with a zero, whose cotangent is the gradient), the loss's gradient at the outputs, and each parameter leaf's
E[dW^2] for the batch's mean loss and per example (example b's own loss through the model on x[b:b+1]).
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from jscale import program_cache
from jscale.calculus.correlation import pair_corr
from jscale.calculus.tracing import Graph, evaluate


def projection_loss(key: jax.Array, outputs) -> Callable:
  """The paper's random loss: sum over outputs of <out_b, v_b>, v i.i.d. N(0, 1) drawn from `key` (for one
  output array, `v = jax.random.normal(split(key)[0], out.shape)`, as `calculus.measure` draws it)."""
  vs = projection_vectors(key, outputs)

  def loss(out):
    outs = jax.tree_util.tree_leaves(out)
    return sum(jnp.sum((o * v).reshape(o.shape[0], -1), axis=1) for o, v in zip(outs, vs))

  return loss


def projection_vectors(key: jax.Array, outputs) -> list:
  """The v of `projection_loss(key, outputs)`, one per output leaf: also its per-example gradient, exactly
  (the loss's gradient is 1.0 * v)."""
  leaves = jax.tree_util.tree_leaves(outputs)
  k_proj = jax.random.split(key)[0]
  keys = [k_proj] if len(leaves) == 1 else list(jax.random.split(k_proj, len(leaves)))
  return [jax.random.normal(k, o.shape, o.dtype) for k, o in zip(keys, leaves)]


class Measured(NamedTuple):
  """What `measure_graph` found, on the host (numpy values)."""
  v_sq: dict        # tapped value id -> E[v^2]
  c_sq: dict        # value id -> E[Delta^2] of the loss's gradient there
  batch_sq: list    # per leaf: E[dW^2] of the batch's mean-loss gradient
  ex_sq: list       # per leaf: mean over examples of E[dW_b^2] of example b's own gradient
  out_std: float    # std of all outputs
  out_sq: float     # E[out^2]
  consts: dict      # value id -> concrete value of a computed constant the rules need (dropout masks, ...)
  g_out: list       # per output: (E[g^2], correlation between examples) of the loss's gradient


def measure_graph(graph: Graph, fn: Callable, leaves, x, *, loss: Callable | None, key: jax.Array, taps,
                  need, chunk: int) -> Measured:
  """One compiled pass of `fn(leaves, x)` (traced as `graph`): `taps` are the value ids measured, `need`
  the computed constants to read, `chunk` the examples per vmapped step of the per-example gradients (it
  divides the batch). `loss(outputs) -> (batch,)`, or None for `projection_loss(key, outputs)`."""
  B = x.shape[0]

  # A new closure on every call: program_cache compiles it only if this computation was not compiled before
  # (inspecting another draw of the same network, or another network of the same shapes, reuses it).
  @program_cache.jit
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
    # A dict, not `Measured`: the compiled program stays the one the pinned numbers came from.
    return dict(v_sq=v_sq, c_sq=c_sq, batch_sq=batch_sq, ex_sq=ex_sq, out_std=jnp.std(flat),
                out_sq=jnp.mean(flat * flat), consts={i: kept[i] for i in need},
                g_out=[(ms(g), pair_corr(g, traced=True)) for g in g_leaves])

  return Measured(**jax.device_get(run(leaves, x, key)))

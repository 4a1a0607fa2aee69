"""The measured side: moments, nu and G from one forward/backward pass (`jax.vjp`) on a batch."""
from __future__ import annotations

import functools
import math
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from jscale import mlp
from jscale.calculus.correlation import pair_corr
from jscale.calculus.moments import Moments
from jscale.calculus.network import mlp_as_layers
from jscale.calculus.stack import Probe, flat_layers, flat_params, run_stack
from jscale.keys import check_key


def gradient_to_weight_ratio(params, grads) -> jax.Array:
  """Measured G_l = E[dW_l^2] / E[W_l^2] for each weight layer (weights only, biases excluded).

  `params` and `grads`: `jscale.mlp` parameter tuples, or the kernels of any model and their gradients in the
  same order (`jscale.models.Model.kernels`); returns an array of shape (L,).
  """
  kernel = lambda p: getattr(p, "w", p)
  return jnp.stack([jnp.mean(jnp.square(kernel(g))) / jnp.mean(jnp.square(kernel(p))) for p, g in zip(params, grads)])


def mlp_bytes(widths: Sequence[int], batch: int, itemsize: int = 4) -> float:
  """Estimated peak of `mlp_summary` / `measure` on an MLP: weights, their gradients and two copies of
  the Monte-Carlo probes (3 per weight), and about ten (batch, width) arrays per layer (inputs,
  pre-activations, their perturbations and cotangents)."""
  n_w = sum(a * b for a, b in zip(widths[:-1], widths[1:]))
  return itemsize * (3.0 * n_w + 10.0 * batch * sum(widths))


class Measurement(NamedTuple):
  """Moments measured on one batch, one entry per weight layer (see `measure`)."""
  moments: Moments         # per-example (batch-1) semantics; G uses each example's own gradient
  dW_sq_example: jax.Array  # mean over examples of E[dW_l^2] of that example's gradient
  dW_sq_batch: jax.Array   # E[dW_l^2] of the minibatch-mean gradient
  G_batch: jax.Array       # dW_sq_batch / E[W_l^2]
  db_sq_example: jax.Array
  db_sq_batch: jax.Array
  saturation: jax.Array    # fraction of the following activation's inputs where act' < 0.1 act'(0); nan if none
  dead: jax.Array          # fraction of units saturated on every example of the batch; nan if none
  out_sq: jax.Array        # E[out^2]
  out_std: jax.Array       # std of the outputs over the batch (for the output multiplier)
  x0_corr: jax.Array       # uncentered correlation between two examples' inputs (mean over pairs)
  batch_size: int


def measure(params, layers, x: jax.Array, key: jax.Array | None = None, *, loss_fn: Callable | None = None,
            projection: str = "independent", dy_out_sq: float = 1.0) -> Measurement:
  """Measured moments from one forward/backward pass (`jax.vjp`) on the batch x: (B, *spatial, n_in).

  The loss is `loss_fn(out) -> (B,)` per-example losses when given, else a random projection
  sum_b <v_b, out_b> with v ~ N(0, dy_out_sq): independent per example (`projection="independent"`)
  or one v shared by the batch (`"shared"`). Per-example gradients are what the paper's batch-1 calculus
  describes; the minibatch-mean gradient (of the mean loss) adds cross-example terms E[x_b x_b'] E[dy_b dy_b']
  that the ReLU's non-zero mean makes positive for every layer but the first. `key` draws the projection
  and the dropout masks; None means `jax.random.PRNGKey(0)` (as `calculus.inspect`), so a call without a key
  is reproducible: pass keys of your own to average over projections. Jit-able with `layers`, `loss_fn` and
  `projection` static.
  """
  layers = tuple(layers)
  if projection not in ("independent", "shared"):
    raise ValueError(f"measure: projection must be 'independent' or 'shared', got {projection!r}")
  if loss_fn is not None and not callable(loss_fn):
    raise ValueError(f"measure: loss_fn must be None or a callable out -> (B,) losses, got {loss_fn!r}")
  if isinstance(dy_out_sq, (bool, str, bytes)) or dy_out_sq is None:
    raise ValueError(f"measure: dy_out_sq must be a number > 0, got {dy_out_sq!r}")
  if isinstance(dy_out_sq, (int, float)) and not (0 < dy_out_sq < math.inf):
    raise ValueError(f"measure: dy_out_sq (the projection's variance) must be finite and > 0, got {dy_out_sq!r}")
  if getattr(x, "ndim", 0) < 2 or not jnp.issubdtype(x.dtype, jnp.inexact):
    raise ValueError(f"measure: x must be a float batch of shape (B, ..., n_in), got "
                     f"{getattr(x, 'dtype', type(x).__name__)} {getattr(x, 'shape', '')}".rstrip())
  key = jax.random.PRNGKey(0) if key is None else check_key(key, "measure: key")
  return _measure(params, layers, x, key, loss_fn=loss_fn, projection=projection, dy_out_sq=dy_out_sq)


@functools.partial(jax.jit, static_argnames=("layers", "loss_fn", "projection"))
def _measure(params, layers, x, key, *, loss_fn, projection, dy_out_sq) -> Measurement:
  k_proj, k_drop = jax.random.split(key)
  B = x.shape[0]
  out, probe = run_stack(params, layers, x, k_drop, Probe())
  eps_x = [jnp.zeros_like(v) for v in probe.xs]
  eps_y = [jnp.zeros_like(v) for v in probe.ys]

  def f(ex, ey):
    return run_stack(params, layers, x, k_drop, Probe(ex, ey))[0]

  if loss_fn is None:
    v_shape = out.shape if projection == "independent" else (1,) + out.shape[1:]
    v = jnp.sqrt(jnp.asarray(dy_out_sq, out.dtype)) * jax.random.normal(k_proj, v_shape, out.dtype)
    _, vjp_fn = jax.vjp(f, eps_x, eps_y)
    dxs, dys = vjp_fn(jnp.broadcast_to(v, out.shape))
  else:
    dxs, dys = jax.grad(lambda ex, ey: jnp.sum(loss_fn(f(ex, ey))), argnums=(0, 1))(eps_x, eps_y)

  wl = [l for l in flat_layers(layers) if l.is_weight]
  ms = lambda a: jnp.mean(jnp.square(a))
  x_sq = jnp.stack([ms(v) for v in probe.xs])
  y_sq = jnp.stack([ms(v) for v in probe.ys])
  dx_sq = jnp.stack([ms(v) for v in dxs])
  dy_sq = jnp.stack([ms(v) for v in dys])
  weights = [p.w for p in flat_params(params, layers)]
  w_sq = jnp.stack([ms(w) for w in weights])
  n_rho = jnp.asarray([math.prod(v.shape[1:]) for v in probe.xs], x_sq.dtype)
  dW_ex, dW_b, db_ex, db_b = [], [], [], []
  for layer, w, xl, dyl in zip(wl, weights, probe.xs, dys):
    dW_ex.append(layer.example_dW_sq(w, xl, dyl))
    dW_b.append(layer.batch_dW_sq(w, xl, dyl))
    per_ex_db = jnp.sum(dyl.reshape(B, -1, dyl.shape[-1]), axis=1)
    db_ex.append(ms(per_ex_db))
    db_b.append(ms(jnp.mean(per_ex_db, axis=0)))
  dW_ex, dW_b = jnp.stack(dW_ex), jnp.stack(dW_b)
  sat = [jnp.nan] * len(wl)
  dead = [jnp.nan] * len(wl)
  for l, kind, y in probe.acts:
    if l is None:
      continue
    act = mlp.get_activation(kind)
    d = jax.jvp(act, (y,), (jnp.ones_like(y),))[1]
    d0 = jax.jvp(act, (jnp.ones(()) * 1e-6,), (jnp.ones(()),))[1]
    low = jnp.abs(d) < 0.1 * jnp.abs(d0)
    sat[l] = jnp.mean(low)
    dead[l] = jnp.mean(jnp.all(low.reshape(B, -1), axis=0))
  moments = Moments(x_sq=x_sq, y_sq=y_sq, dx_sq=dx_sq, dy_sq=dy_sq, nu=n_rho * x_sq * dx_sq,
                    G=dW_ex / w_sq, weight_sq=w_sq)
  return Measurement(moments=moments, dW_sq_example=dW_ex, dW_sq_batch=dW_b, G_batch=dW_b / w_sq,
                     db_sq_example=jnp.stack(db_ex), db_sq_batch=jnp.stack(db_b),
                     saturation=jnp.asarray(sat, x_sq.dtype), dead=jnp.asarray(dead, x_sq.dtype),
                     out_sq=ms(out), out_std=jnp.std(out), x0_corr=pair_corr(x, pairs_first=True), batch_size=B)


def measure_mlp(params: mlp.Params, x: jax.Array, key: jax.Array | None = None, activation: str = "relu",
                **kwargs) -> Measurement:
  """`measure` for a `jscale.mlp` network (x: (B, n_0)); `key` and kwargs as in `measure`."""
  mlp.check_params(params)
  n_0 = params[0].w.shape[0]
  if getattr(x, "ndim", None) != 2 or x.shape[1] != n_0:
    raise ValueError(f"measure_mlp: x must be a batch of shape (B, {n_0}) for a network of widths "
                     f"{mlp.widths_of(params)}, got {getattr(x, 'shape', type(x).__name__)}")
  layers, lparams = mlp_as_layers(params, activation)
  return measure(lparams, layers, x, key, **kwargs)

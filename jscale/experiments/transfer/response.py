"""The network's first-order response to its first step, per unit learning rate, before any training: the input
of the predicted drift (`calculus.response_drift`; docs/calculus.md, *Predicted drift from the response*).

Per (parametrization, optimizer) and layer output (hidden layers, then the logits): the relative RMS change
sqrt(E[dh^2] / E[h^2]) that the first step's update makes at learning rate 1, to first order (a JVP of the
forward pass along the update), at the probe inits (`run.probe_draws`) on the probe minibatch. Measured this
way it covers any model (the LeNet too); for dense ReLU stacks the calculus predicts it from the batch alone
(`calculus.unit_response`), which `calculus_response` gives beside it.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jscale import calculus, initializers, optim


def per_draw_program(net, x, y, optimizers=("sgd", "adam")):
  """The jitted `run(p0s, init_m, lr_m, unit)` of `per_draw` (init_m, lr_m (opt, rule, L), unit (opt, rule)
  float32) -> per optimizer (E[h^2], E[dh^2]) (rule, draw, L)."""
  base_opts = {"sgd": optax.sgd(1.0), "adam": optax.adam(1.0)}

  def loss_fn(p):
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(net.forward(p, x)[0], y))

  def one(base_opt, p0, init_m, lr_m, unit):
    p = net.map_kernels(lambda l, w: w * init_m[l], p0)
    mult = net.map_kernels(lambda l, _: unit * lr_m[l], jax.tree.map(lambda _: unit, p))
    tx = optax.chain(base_opt, optim.scale_by_prescription(mult))
    u, _ = tx.update(jax.grad(loss_fn)(p), tx.init(p), p)
    (z, hidden), (dz, dhidden) = jax.jvp(lambda q: net.forward(q, x), (p,), (u,))
    sq = lambda vs: jnp.stack([jnp.mean(jnp.square(v)) for v in vs])   # noqa: E731
    return sq(list(hidden) + [z]), sq(list(dhidden) + [dz])

  # the draws are an argument: closed over, they were constants copied into the program
  @jax.jit
  def run(p0s, init_m, lr_m, unit):
    out = []
    for j, opt in enumerate(optimizers):
      base_opt = base_opts[opt]
      per = jax.vmap(lambda p0, im, lm, u: one(base_opt, p0, im, lm, u), in_axes=(0, None, None, None))
      out.append(jax.vmap(per, in_axes=(None, 0, 0, 0))(p0s, init_m[j], lr_m[j], unit[j]))   # (rule, draw, L)
    return out

  return run


def per_draw(net, pres: dict, x, y, p0s, rules, optimizers=("sgd", "adam"),
             program=None) -> tuple[np.ndarray, np.ndarray]:
  """(E[h^2], E[dh^2]) per (rule, opt, draw, L) at each init of `p0s` (stacked), the step at learning rate 1
  (`measured_response`'s arguments); the replicate check of its SE reads them draw by draw. `program`:
  `per_draw_program(net, x, y, optimizers)` compiled (run.experiment compiles it ahead), or None to build it."""
  run = per_draw_program(net, x, y, optimizers) if program is None else program
  pick = lambda k: np.asarray([[pres[r, o][k] for r in rules] for o in optimizers], np.float32)  # noqa: E731
  # `jax.device_put`, not `jnp.asarray` (which compiled a program per shape): the same float32 arrays
  out = jax.device_get(run(p0s, jax.device_put(pick(1)), jax.device_put(pick(2)), jax.device_put(pick(3))))
  h = np.stack([np.asarray(a, np.float64) for a, _ in out], 1)    # (rule, opt, draw, L)
  d = np.stack([np.asarray(b, np.float64) for _, b in out], 1)
  return h, d


def ratio_and_se(h: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(sqrt(mean d / mean h) over the draws (axis -2), its relative SE by the delta method (~ the SE of its
  log; NaN with one draw))."""
  n = h.shape[-2]
  mh, md = h.mean(-2), d.mean(-2)
  # delta method for log sqrt(mean d / mean h): half the SE of log(mean d) - log(mean h), covariance included
  rd, rh = d / md[..., None, :] - 1, h / mh[..., None, :] - 1
  var = (rd - rh).var(-2, ddof=1) / n if n > 1 else np.full(mh.shape, np.nan)
  return np.sqrt(md / mh), 0.5 * np.sqrt(var)


def measured_response(net, pres: dict, x, y, p0s, rules, optimizers=("sgd", "adam")) -> tuple[np.ndarray, np.ndarray]:
  """(relative response (rule, opt, L), its relative SE over the init draws (rule, opt, L)): the ratio of the
  draws' mean E[dh^2] to their mean E[h^2], square-rooted; the SE is the delta method's over the draws (~ the
  SE of log R). `pres[rule, opt]` = (Prescription, init multipliers (L,), lr multipliers (L,)) as
  `run.prescriptions` returns, plus the unit that multiplies every leaf's rate, for every rule in `rules` and
  optimizer in `optimizers` (the output's order); biases step at the unit, as in training."""
  return ratio_and_se(*per_draw(net, pres, x, y, p0s, rules, optimizers))


def calculus_response(net, pres: dict, x, y, rules, optimizers=("sgd", "adam")) -> np.ndarray:
  """(rule, opt, L) the calculus's relative response (`calculus.unit_response`) at the init's expected E[W^2]
  (He times each parametrization's init multipliers squared), for dense stacks; NaN for other models."""
  shapes = [tuple(w.shape) for w in net.kernels(jax.eval_shape(lambda k: net.draw(k, "he_normal"),
                                                               jax.random.key(0)))]
  out = np.full((len(rules), len(optimizers), len(shapes)), np.nan)
  if not all(len(s) == 2 for s in shapes):
    return out
  he = initializers.get("he_normal")
  w_exp = np.array([he.second_moment(s) for s in shapes])
  for i, rule in enumerate(rules):
    for j, opt in enumerate(optimizers):
      _, init_m, lr_m, unit = pres[rule, opt]
      out[i, j] = calculus.unit_response(np.asarray(x), np.asarray(y), [s[-1] for s in shapes],
                                         w_exp * np.square(np.asarray(init_m, np.float64)),
                                         unit * np.asarray(lr_m, np.float64), opt)
  return out

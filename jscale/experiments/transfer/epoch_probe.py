"""Adam's one-epoch pilot: the drift of the first epoch's optimum at the probe inits (docs/calculus.md, *The
threshold rate over the first epoch*, candidate T4), before and without any training run. It is a short
learning-rate sweep (half the experiment's two epochs, at 33 rates from 16 inits), not a prediction from the
calculus: the experiment reports it beside the response predictor, and only in grids that ask for it (`pilot`).

Per (parametrization) at one width: from each of the first EPOCH_DRAWS probe inits (`run.probe_draws`), one
epoch of Adam (the training set's first minibatches in order, the experiment's minibatch size; the
prescription's init and learning-rate multipliers and equal-G's unit, as training applies them) at every rate of
a half-octave ladder around the experiment's learning-rate centre; the loss on the probe minibatch after the
epoch, minimised over the ladder and refined by the parabola through the minimum and its neighbours
(`analysis.refined_argmin`, as the experiment refines its optimum; a diverged run counts as an infinite
loss). The pilot's drift is the mean over the paired draws (the same key at both widths) of the difference of
their optima, its SE their spread / sqrt(draws).

Why Adam only: Adam's step has the rate's size whatever the gradient, so how far a rate overshoots depends on
the logits' scale that the first steps themselves set (μP's vanishing init logits), which the first step's
response does not see. SGD's first-epoch optimum sits where the narrow network's rising loss is still soft and
the wide one's already diverges, a threshold its 18-step optimum does not follow (MLP: -1.6 octaves against
-1.0 measured); SGD keeps the response (`calculus.response_drift`).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jscale import optim, train as train_lib
from jscale.experiments.transfer import analysis

EPOCH_DRAWS = 16                       # the probe inits it runs from: the first 16 of run.PROBE_DRAWS
# log2 offsets from the learning-rate centre, half an octave apart: the training grid's 12 octaves and 2 more each side
LADDER = np.arange(-16, 17) / 2.0


def final_losses(net, pres: dict, x_train, y_train, xb, yb, p0s, rules, centers: dict, batch_size: int,
                 optimizer: str = "adam") -> tuple[np.ndarray, np.ndarray]:
  """(loss on (xb, yb) after one epoch (rule, draw, rate), diverged (rule, draw, rate)) from each init of
  `p0s` (stacked; all of them are used) at the rates `centers[f"{rule}/{optimizer}"] * 2**LADDER` (times each
  rule's unit, as training applies it). The epoch: the first `len(x_train) // batch_size` minibatches of
  (x_train, y_train) in order. Diverged: a non-finite loss or parameter at any step, or a non-finite final
  loss."""
  steps = x_train.shape[0] // batch_size
  xs = jnp.asarray(x_train[:steps * batch_size]).reshape((steps, batch_size) + tuple(x_train.shape[1:]))
  ys = jnp.asarray(y_train[:steps * batch_size]).reshape(steps, batch_size)
  base_opt = {"sgd": optax.sgd(1.0), "adam": optax.adam(1.0)}[optimizer]

  def loss_on(p, x, y):
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(net.forward(p, x)[0], y))

  def one(p0, init_m, lr_m, lr):
    p = net.map_kernels(lambda l, w: w * init_m[l], p0)
    mult = net.map_kernels(lambda l, _: lr * lr_m[l], jax.tree.map(lambda _: lr, p))
    tx = optax.chain(base_opt, optim.scale_by_prescription(mult))

    def step(carry, batch):
      p, s, bad = carry
      loss, g = jax.value_and_grad(loss_on)(p, *batch)
      u, s = tx.update(g, s, p)
      p = optax.apply_updates(p, u)
      return (p, s, bad | ~jnp.isfinite(loss) | ~train_lib.all_finite(p)), None

    (p, _, bad), _ = jax.lax.scan(step, (p, tx.init(p), jnp.bool_(False)), (xs, ys))
    f = loss_on(p, xb, yb)
    return f, bad | ~jnp.isfinite(f)

  @jax.jit
  def grid(p0, init_m, lr_m, lrs):   # init_m, lr_m (rule, L); lrs (rule, rate)
    per_rate = jax.vmap(one, in_axes=(None, None, None, 0))
    return jax.vmap(per_rate, in_axes=(None, 0, 0, 0))(p0, init_m, lr_m, lrs)

  im = jnp.asarray([pres[r, optimizer][1] for r in rules], jnp.float32)
  lm = jnp.asarray([pres[r, optimizer][2] for r in rules], jnp.float32)
  lrs = jnp.asarray([centers[f"{r}/{optimizer}"] * pres[r, optimizer][3] * 2.0 ** LADDER for r in rules],
                    jnp.float32)
  n = jax.tree.leaves(p0s)[0].shape[0]
  f, bad = [], []
  for d in range(n):   # one init at a time: the LeNet's 512-wide Adam states for every rule and rate at once
    p0 = jax.tree.map(lambda v: jnp.asarray(np.asarray(v)[d]), p0s)
    fd, bd = jax.device_get(grid(p0, im, lm, lrs))
    f.append(np.asarray(fd, np.float64))
    bad.append(np.asarray(bd, bool))
  return np.stack(f, 1), np.stack(bad, 1)


def optima(f: np.ndarray, bad: np.ndarray) -> np.ndarray:
  """(...,) log2 offset from the centre of each run's one-epoch optimum over the ladder (last axis), refined by
  the parabola through the minimum and its neighbours; NaN where the minimum is at an end of the ladder
  (censored: the optimum may lie outside)."""
  pos, edge = analysis.refined_argmin(np.where(bad | ~np.isfinite(f), np.inf, f))
  return np.where(edge, np.nan, LADDER[0] + pos * (LADDER[1] - LADDER[0]))


def drift(small: np.ndarray, large: np.ndarray) -> tuple[float | None, float | None]:
  """(predicted drift in octaves, its SE) from the per-draw optima (draw,) at the narrow and the wide width,
  paired by draw; (None, None) if any draw is censored."""
  diff = np.asarray(large, np.float64) - np.asarray(small, np.float64)
  if diff.size == 0 or not np.all(np.isfinite(diff)):
    return None, None
  se = float(np.std(diff, ddof=1) / math.sqrt(diff.size)) if diff.size > 1 else None
  return float(np.mean(diff)), se

"""The training loop as it was before the per-step metrics moved off the hot path (issue 23), kept verbatim as
the reference the engine's metrics are tested against (tests/test_train_metrics.py): every step measures every
metric, G included, the scan stacks them and the epoch averages the stack; the divergence guard is a select."""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from jscale import mlp
from jscale.calculus.measurement import gradient_to_weight_ratio
from jscale.datasets import Data
from jscale.train import (HParams, Metrics, StepStats, TrainSpec, accuracy, check_data, cross_entropy,
                          first_bad_onward, make_optimizer)


def all_finite(tree) -> jax.Array:
  """True when every entry of every leaf is finite (one fused reduction per leaf)."""
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]))


def make_reference_train(spec: TrainSpec) -> Callable[[jax.Array, HParams, Data], Metrics]:
  """The per-step definition: every metric measured on every step (G too), stacked and averaged."""
  if not isinstance(spec, TrainSpec):
    raise ValueError(f"make_train expects a TrainSpec, got {type(spec).__name__}")
  net = spec.network
  draw = net.make_draw(spec.kernel_inits)   # a traced choice; every candidate draws from the same keys
  opt_factory = make_optimizer(spec)
  tau = spec.saturation_threshold
  full_batch = spec.batch_size is None

  def init_params(key, hp: HParams):
    return net.map_kernels(lambda l, w: w * (hp.init_scale * hp.layer_scale)[l], draw(key, hp.init_index))

  def forward(params, hp, out_scale, x):
    """(logits, the hidden activations saturation is measured on)."""
    x = mlp.layer_norm(x) if spec.input_layernorm else x
    return net.forward(params, x, hp.input_scale, out_scale)

  def g_ratio(params, grads):
    return gradient_to_weight_ratio(net.kernels(params), net.kernels(grads))

  def loss_fn(params, hp, out_scale, x, y):
    logits, hidden = forward(params, hp, out_scale, x)
    return cross_entropy(logits, y), (logits, hidden)

  def train(key: jax.Array, hp: HParams, data: Data) -> Metrics:
    n_train, n_test = data.x_train.shape[0], data.x_test.shape[0]
    check_data(spec, data)
    steps = spec.steps_per_epoch(n_train)
    k_init, k_data = jax.random.split(key)
    epoch_keys = jax.random.split(k_data, spec.epochs)
    params = init_params(k_init, hp)

    def epoch_batches(ekey):
      if spec.batch_size is None:
        return data.x_train[None], data.y_train[None]
      idx = jax.random.permutation(ekey, n_train)[:steps * spec.batch_size].reshape(steps, spec.batch_size)
      return data.x_train[idx], data.y_train[idx]

    out_scale = hp.output_scale
    if spec.output_std is not None:
      x0 = epoch_batches(epoch_keys[0])[0][0]
      logits0, _ = forward(params, hp, 1.0, x0)
      out_scale = out_scale * spec.output_std / jnp.std(logits0)

    opt = opt_factory(learning_rate=hp.lr, weight_decay=hp.weight_decay)
    opt_state = opt.init(params)

    def step(carry, batch):
      params, opt_state, alive = carry
      x, y = batch
      (loss, (logits, hidden)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, hp, out_scale, x, y)
      gnorm = optax.global_norm(grads)
      updates, new_state = opt.update(grads, opt_state, params)
      new_params = optax.apply_updates(params, updates)
      # Checked after the update, so the step that blows the weights up is the one flagged; it is dropped
      # and the configuration frozen at its last finite parameters: NaNs never reach the carry.
      ok = alive & jnp.isfinite(loss) & jnp.isfinite(gnorm) & all_finite(new_params)
      keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)
      n_hidden = sum(h.size for h in hidden)
      sat = sum(jnp.sum(jnp.abs(h) <= tau) for h in hidden) / max(n_hidden, 1)
      zero = sum(jnp.sum(h == 0) for h in hidden) / max(n_hidden, 1)
      if not hidden:  # a model that reports no hidden activations: not measured
        sat = zero = jnp.float32(jnp.nan)
      stats = StepStats(loss, accuracy(logits, y), gnorm, sat, zero, g_ratio(params, grads))
      return (keep(new_params, params), keep(new_state, opt_state), ok), stats

    def pass_loss(params, x, y):
      logits, _ = forward(params, hp, out_scale, x)
      return cross_entropy(logits, y), logits

    nan = jnp.float32(jnp.nan)

    def epoch(carry, ekey):
      xb, yb = epoch_batches(ekey)
      if steps == 1:
        carry, stats = step(carry, (xb[0], yb[0]))
      else:
        carry, stats = jax.lax.scan(step, carry, (xb, yb))
        stats = jax.tree.map(lambda s: jnp.mean(s, axis=0), stats)
      params, opt_state, alive = carry
      if n_test:
        test_loss, logits = pass_loss(params, data.x_test, data.y_test)
        test_acc = accuracy(logits, data.y_test)
        alive = alive & jnp.isfinite(test_loss)
      else:
        test_loss = test_acc = nan
      if full_batch or not spec.train_pass:  # full batch: filled in after the scan (next epoch's step loss)
        train_pass = nan
      else:
        train_pass, _ = pass_loss(params, data.x_train, data.y_train)
        alive = alive & jnp.isfinite(train_pass)
      # A non-finite measured loss at finite parameters freezes them too (its epoch is diverged).
      m = Metrics(stats.loss, stats.acc, train_pass, test_loss, test_acc, stats.grad_norm, stats.saturation,
                  stats.zero_fraction, stats.g_ratio, ~alive)
      return (params, opt_state, alive), m

    (params, _, _), raw = jax.lax.scan(epoch, (params, opt_state, jnp.array(True)), epoch_keys)
    if full_batch and spec.train_pass:
      # Epoch e+1's full-batch step loss is the loss over the training split at epoch e's final
      # parameters (the carry, frozen or not): only the last epoch needs its own forward pass.
      last, _ = pass_loss(params, data.x_train, data.y_train)
      raw = raw._replace(train_pass_loss=jnp.concatenate([raw.train_loss[1:], last[None]]))
    bad = raw.diverged | ~jnp.isfinite(raw.train_pass_loss) if spec.train_pass else raw.diverged
    diverged = first_bad_onward(bad)
    dead = lambda v: diverged.reshape((-1,) + (1,) * (v.ndim - 1))
    nan_if_dead = lambda v: jnp.where(dead(v), jnp.nan, v).astype(jnp.float32)
    return raw._replace(diverged=diverged,
                        **{f: nan_if_dead(getattr(raw, f)) for f in Metrics._fields if f != "diverged"})

  train.spec = spec
  return train

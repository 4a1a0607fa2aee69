"""A pure training loop for sweeps: `make_train(spec)` returns `train(key, hparams, data) -> Metrics`.

PureJaxRL style. `spec` (a hashable `TrainSpec`) fixes everything that changes shapes or the program:
widths, activation, optimizer family, epochs, batch size, the tuple of candidate initializers.
Everything a sweep varies is a traced argument of `train`, so `jax.jit(jax.vmap(train, (0, 0, None)))`
trains a whole grid in one program:

  key      the configuration's PRNG key (initialization and minibatch shuffles; split, never reused)
  hparams  `HParams`: init_scale (sigma), per-layer layer_scale, input_scale (feature scale),
           output_scale, lr, weight_decay, and init_index (the initializer CHOICE, an int indexing
           `spec.kernel_inits`; `Model.make_draw`: one scaled normal draw when every candidate declares
           itself a scaled normal, else a `lax.switch`)
  data     `jscale.datasets.Data`: shared by the configurations (in_axes None) or one draw each (in_axes
           0; the sweep runner stacks a group's data seeds and gives each configuration its own)

  train = make_train(TrainSpec(widths=(2, 64, 64, 2), kernel_inits=("normal:1",), optimizer="adam"))
  train = make_train(TrainSpec(model=jscale.models.get_model("lenet", 10), kernel_inits=("geometric",)))
  data = jscale.datasets.to_device(jscale.datasets.get("two_moons"))
  hp = stack_hparams([hparams(train.spec, init_scale=s, lr=1e-3) for s in (0.01, 0.1, 0.5, 1.0)])
  keys = jax.random.split(jax.random.key(0), 4)
  m = jax.jit(jax.vmap(train, in_axes=(0, 0, None)))(keys, hp, data)   # m.test_acc: (4, epochs)

Every network is a `jscale.models.Model` (`TrainSpec.network`): the MLP of `widths` (`jscale.models.mlp`), or
`TrainSpec.model` (an init and an apply function, a Flax module, the strided LeNet). One path trains them all: the
data rows are flat (N, prod(input_shape)) and reshaped by the model, the weight layers are its kernel leaves
(float leaves with >= 2 dims, in tree order), each redrawn by the chosen initializer; its biases are its own
init's. Everything above stays traced.

Weights are `init_scale * layer_scale[l] * W_l` with `W_l` drawn by `spec.kernel_inits[init_index]`, so
`kernel_inits=("normal:1",)` with `init_scale=sigma` is the tutorial's N(0, sigma^2). All candidate
initializers draw from the same key: configurations that differ only in the initializer see the same
underlying random numbers (common random numbers make comparisons less noisy).

Per epoch, per configuration (`Metrics`, each (epochs,) or (epochs, L)):
  train_loss, train_acc, grad_norm, saturation, zero_fraction
      averaged over the epoch's measured steps: every step by default, every k-th counted back from the
      epoch's last with `TrainSpec(metric_every=k)`; each step's values are measured on its own minibatch
      at the parameters *before* its update (full batch: the parameters at the start of the epoch). This
      costs no extra forward pass. The scan adds each measured step's values to running sums; unmeasured
      steps skip their passes over the gradients and activations (a branch on the step index).
  g_ratio               G at the epoch's last step (`TrainSpec(g_ratio_steps="last")`, the default), or averaged
                        over the measured steps like the others (`"all"`: one more pass over the weights per
                        step). Full batch: one step, the same either way.
  train_pass_loss       mean loss over the whole training split with the parameters at the *end* of the
                        epoch ("the training loss after epoch e", as the scaling-calculus paper reports
                        it). Measured only with `TrainSpec(train_pass=True)` (else NaN: not measured).
                        Minibatch mode: one extra forward pass over the training set per epoch; full
                        batch: it is the next epoch's step loss (same parameters, same data), so only the
                        last epoch costs an extra forward pass.
  test_loss, test_acc   on the held-out split, with the parameters at the *end* of the epoch (NaN when the
                        held-out split is empty: a training-loss-only protocol, not a divergence).
  grad_norm             global L2 norm of the gradient of all parameters (weights and biases).
  saturation            share of hidden-layer activations with |a| <= `spec.saturation_threshold`
                        (default 1e-3, absolute; the tutorial's "near-zero ReLU activations"). A model's
                        hidden activations are those it reports (`jscale.models.Model`); NaN (not measured,
                        not a divergence) for one that reports none.
  zero_fraction         share of hidden-layer activations exactly 0 (ReLU's dead side).
  g_ratio               (see above) per-layer measured G_l = E[dW_l^2] / E[W_l^2] (`jscale.calculus`; undefined, NaN
                        or inf, for an all-zero weight matrix such as zeros init -- not a divergence); a
                        model's per kernel leaf, the gradient of the minibatch's mean loss.
  diverged              True from the first epoch in which an update produced a non-finite parameter, or
                        the loss, the gradient norm, the train-pass loss (when measured) or the test loss was NaN/inf.

Divergence never crashes and never poisons neighbours: the update that makes a parameter non-finite (or that
follows a non-finite loss or gradient) marks the configuration dead, and every metric of the epoch in which
that happened and of the later ones is NaN -- accuracies included, never a number computed from broken
parameters -- with `diverged` True (the sweep reports the configuration and its first diverged epoch). A
non-finite train-pass or test loss at finite parameters (logits overflowing float32) marks its epoch diverged
too. A dead configuration keeps training on whatever its parameters became (they are not reset to their last
finite state: no reported number depends on them, and selecting between the old and the new parameters was a
pass over every parameter per step, issue 23); under vmap or the sweep's per-device loop its neighbours never
see them. Because a parameter made non-finite stays non-finite under p + update, the parameters are checked
once per epoch, at its end: the same per-epoch flag as a check after every update.

Minibatch mode (`batch_size=B`): every epoch draws a fresh permutation from the configuration's own key
and takes floor(N / B) full batches (the remainder is dropped, a different remainder each epoch);
`batch_size=None` is full-batch gradient descent, one step per epoch.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jscale import data_checks, mlp, optim
from jscale.calculus.measurement import gradient_to_weight_ratio
from jscale.datasets import Data
# The spec and hyperparameters are defined beside (train_spec.py) and used from here: `jscale.train.TrainSpec`.
from jscale.train_spec import (HPARAM_DEFAULTS, OPTIMIZERS, SETTING_CHECKS, HParams, TrainSpec,  # noqa: F401
                               check_setting, hparams, stack_hparams)

class Metrics(NamedTuple):
  """Per-epoch metrics of one configuration: each (epochs,), g_ratio (epochs, L). See the module doc."""
  train_loss: jax.Array
  train_acc: jax.Array
  train_pass_loss: jax.Array
  test_loss: jax.Array
  test_acc: jax.Array
  grad_norm: jax.Array
  saturation: jax.Array
  zero_fraction: jax.Array
  g_ratio: jax.Array
  diverged: jax.Array


class StepStats(NamedTuple):
  loss: jax.Array
  acc: jax.Array
  grad_norm: jax.Array
  saturation: jax.Array
  zero_fraction: jax.Array
  g_ratio: jax.Array


def make_optimizer(spec: TrainSpec) -> Callable[..., optax.GradientTransformation]:
  """`opt(learning_rate, weight_decay)` with both traced, via `optax.inject_hyperparams`; for a tuple of
  candidate optimizers `opt(learning_rate, weight_decay, optimizer_index)`, the index traced too
  (`jscale.optim.choose`)."""
  momentum = spec.momentum

  def factory_of(name):
    def factory(learning_rate, weight_decay):
      if name == "adamw":
        return optax.adamw(learning_rate, weight_decay=weight_decay)
      base = {"sgd": lambda: optax.sgd(learning_rate),
              "momentum": lambda: optax.sgd(learning_rate, momentum=momentum),
              "adam": lambda: optax.adam(learning_rate)}[name]()
      return optax.chain(optax.add_decayed_weights(weight_decay), base)
    return optax.inject_hyperparams(factory)

  if not isinstance(spec.optimizer, tuple):
    return factory_of(spec.optimizer)
  factories = [factory_of(name) for name in spec.optimizer]

  def chosen(learning_rate, weight_decay, optimizer_index):
    return optim.choose(optimizer_index, [f(learning_rate=learning_rate, weight_decay=weight_decay)
                                          for f in factories])

  return chosen


def cross_entropy(logits, y):
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))


def accuracy(logits, y):
  return jnp.mean((jnp.argmax(logits, -1) == y).astype(jnp.float32))


def all_finite(tree) -> jax.Array:
  """True when every entry of every leaf is finite: x * 0 is 0 for a finite x and NaN for inf or NaN (XLA keeps
  IEEE semantics: it does not fold x * 0), so one float sum per leaf decides (a boolean all() over isfinite does
  not vectorize on XLA:CPU)."""
  return jnp.isfinite(sum(jnp.sum(leaf * 0) for leaf in jax.tree.leaves(tree)))


SUM_SQUARES_SCOPE = "sum_squares"


def sum_squares(tree, by_rows: bool = True) -> list:
  """Per-leaf sums of squares: the gradient norm and G's numerators share them (one pass per leaf).

  With `by_rows`, a leaf of two or more dims is summed as its rows' sums, a matrix-vector product with ones, then
  their sum. On XLA:CPU a plain sum over a 784 x 300 leaf becomes a reduce-window over 32 x 32 tiles of the leaf
  padded to 800 x 320, which YNNPACK copies into a padded buffer at every step; the matrix-vector form, which
  XLA:CPU fuses with the squaring into one loop, makes bench's 784 net 1.13x cheaper in CPU time
  (docs/performance.md, round 7). The squares are the same, their summation order another: the sums agree to
  float32 rounding (tests/test_sum_squares.py). Inside a `lax.cond` branch (the sampled steps of
  `metric_every > 1`) XLA:CPU does not fuse the product (it squares into a buffer, then calls a 784 x 1 dot),
  which costs more than the plain sum there: `by_rows=False`. HIGHEST keeps the product float32 where a
  backend's default precision would round it (TF32 on NVIDIA GPUs)."""
  out = []
  with jax.named_scope(SUM_SQUARES_SCOPE):   # its dot is a reduction, not the model's: FLOP counts skip it
    for leaf in jax.tree.leaves(tree):
      if leaf.ndim < 2 or not by_rows:
        out.append(jnp.sum(jnp.square(leaf)))
      else:
        sq = jnp.square(leaf.reshape(-1, leaf.shape[-1]))
        rows = jnp.dot(sq, jnp.ones((sq.shape[1],), sq.dtype), precision=jax.lax.Precision.HIGHEST)
        out.append(jnp.sum(rows))
  return out


def count(mask) -> jax.Array:
  """The number of True entries, as a float sum of 0/1 (exact while the entries number below 2^24: every partial
  sum is then an integer float32 holds), which vectorizes where XLA:CPU's integer count of booleans does not (2.5x
  faster on a step's activations)."""
  return jnp.sum(jnp.where(mask, jnp.float32(1), jnp.float32(0)))


PACKED_ROWS = 4096   # rows below which `activation_counts` packs both counts in one float32 (see there)


def activation_counts(h: jax.Array, tau: float, exact_float: bool = True) -> tuple[jax.Array, jax.Array]:
  """(#{|h| <= tau}, #{h == 0}) of one activation array, as exact float32 integers.

  One pass: with h seen as R rows of its last axis and B = 2^bitlength(R) > R, each entry becomes
  [|h| <= tau] + B [h == 0] (one select chain, so XLA:CPU writes one mask, not two), the column sums
  s = sat_c + B zero_c are integers below R (B + 1) < 2^24 (R < 4096), so float32 sums them exactly in any
  order, and zero_c = floor(s / B), sat_c = s - B zero_c recover both counts exactly (sat_c <= R < B). Two
  masks and two full reductions per layer cost the moons bench net 9-15% of its engine CPU; this one 5-7%
  (interleaved ablations, docs/performance.md, round 8). The counts, hence the fractions, are the same numbers as two separate
  `count`s (tests/test_activation_counts.py). Larger R (or `exact_float=False`: the caller's total is beyond
  2^24) falls back to two counts, integer ones beyond float32's exact range."""
  if not exact_float:
    return jnp.sum(jnp.abs(h) <= tau).astype(jnp.float32), jnp.sum(h == 0).astype(jnp.float32)
  m = h.reshape(-1, h.shape[-1]) if h.ndim else h.reshape(1, 1)
  rows = m.shape[0]
  if rows >= PACKED_ROWS:
    return count(jnp.abs(h) <= tau), count(h == 0)
  B = 2 ** rows.bit_length()
  zero_code = jnp.float32(B + (0 <= tau))   # h == 0 is also |h| <= tau whenever tau >= 0
  packed = jnp.where(m == 0, zero_code, jnp.where(jnp.abs(m) <= tau, jnp.float32(1), jnp.float32(0)))
  s = jnp.sum(packed, axis=0)
  zeros = jnp.floor(s * jnp.float32(1 / B))   # exact: B is a power of two
  return jnp.sum(s - zeros * B), jnp.sum(zeros)


def first_bad_onward(bad: jax.Array) -> jax.Array:
  """(epochs,) bool: True from the first True of `bad` on (divergence is permanent)."""
  return jnp.cumsum(bad.astype(jnp.int32)) > 0


def check_data(spec: TrainSpec, data: Data) -> None:
  """Refuse data whose rows do not fit the network (at trace time, before any compute)."""
  for name in ("x_train", "x_test"):
    x = getattr(data, name)
    if x.ndim != 2 or (x.shape[0] and x.shape[1] != spec.widths[0]):
      what = f"model {spec.model.name!r} (input shape {spec.model.input_shape})" if spec.model is not None else \
          f"widths {spec.widths}"
      raise ValueError(f"data.{name} has shape {x.shape}; {what} needs rows of {spec.widths[0]} features")


def make_train(spec: TrainSpec) -> Callable[[jax.Array, HParams, Data], Metrics]:
  """`train(key, hparams, data) -> Metrics`, pure and jittable; `train.spec` is `spec`."""
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
    data_checks.check_training_data(spec, data)
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

    if isinstance(spec.optimizer, tuple):
      if hp.optimizer_index is None:
        raise ValueError(f"HParams.optimizer_index must pick one of the optimizers {spec.optimizer}")
      opt = opt_factory(hp.lr, hp.weight_decay, hp.optimizer_index)
    else:
      opt = opt_factory(learning_rate=hp.lr, weight_decay=hp.weight_decay)
    if hp.lr_scale is not None:   # per-kernel learning rates (a sweep traces them); biases keep the base rate
      ones = jax.tree.map(lambda _: 1.0, params)
      opt = optax.chain(opt, optim.scale_by_prescription(net.map_kernels(lambda l, _: hp.lr_scale[l], ones)))
    opt_state = opt.init(params)

    n_measured = len(range(steps - 1, -1, -spec.metric_every))   # steps - 1, steps - 1 - k, ... down to 0
    n_layers = spec.n_layers

    def activation_stats(hidden):
      """(saturation, zero fraction) of one step's hidden activations."""
      if not hidden:  # a model that reports no hidden activations: not measured
        return jnp.float32(jnp.nan), jnp.float32(jnp.nan)
      n = sum(h.size for h in hidden)
      counts = [activation_counts(h, tau, exact_float=n < 2 ** 24) for h in hidden]
      return sum(c[0] for c in counts) / n, sum(c[1] for c in counts) / n

    def measure_on(pred, fn, skipped):
      """fn() on the steps `pred` picks, `skipped` on the others: a real branch (the step index is the same for
      every configuration, so it stays one under vmap); no branch when `pred` is known at trace time."""
      if isinstance(pred, bool):
        return fn() if pred else skipped
      return jax.lax.cond(pred, fn, lambda: skipped)

    def g_of(w_sq, grad_sq, params):
      """Measured G_l = E[dW_l^2] / E[W_l^2] per kernel, from the per-leaf sums of squares of the gradient and of
      the kernels (`kernel_sq`)."""
      idx = kernel_indices(params)
      return jnp.stack([grad_sq[i] / w_s for i, w_s in zip(idx, w_sq)])

    def kernel_sq(params) -> jax.Array:
      """(L,) sums of squares of the kernels: G's denominators."""
      return jnp.stack([jnp.sum(jnp.square(w)) for w in net.kernels(params)])

    def kernel_indices(params):
      """Positions of the kernels among the parameter leaves (tree order)."""
      leaves = jax.tree.leaves(params)
      ids = {id(leaf): i for i, leaf in enumerate(leaves)}
      return [ids[id(w)] for w in net.kernels(params)]

    def step(carry, batch):
      params, opt_state, alive, sums, w_sq = carry
      x, y, i = batch
      (loss, (logits, hidden)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, hp, out_scale, x, y)
      measured = True if spec.metric_every == 1 else (steps - 1 - i) % spec.metric_every == 0
      # by_rows where every step is measured (straight-line code), the plain sum inside the branch (`sum_squares`).
      grad_sq = measure_on(measured, lambda: sum_squares(grads, by_rows=measured is True),
                           [jnp.float32(0)] * len(jax.tree.leaves(grads)))
      gnorm = jnp.sqrt(sum(grad_sq))
      updates, new_state = opt.update(grads, opt_state, params)
      new_params = optax.apply_updates(params, updates)
      # The divergence guard, in two parts. Per step, on scalars: a non-finite loss, or gradient norm where it
      # is measured (an overflowing norm of finite gradients is a non-finite metric: flagged like one). Per
      # epoch, on the parameters (`epoch`): the update is applied unconditionally and written in place, and a
      # parameter made non-finite stays non-finite (p + u is non-finite whenever p is), so the epoch's final
      # parameters are finite exactly when no update of the epoch broke one: the same per-epoch flag as a check
      # after every update, for one pass over the parameters per epoch instead of one per step.
      ok = alive & jnp.isfinite(loss) & jnp.isfinite(gnorm)

      def stats():
        sat, zero = activation_stats(hidden)
        g = g_of(kernel_sq(params), grad_sq, params) if spec.g_ratio_steps == "all" else \
            jnp.zeros((n_layers,), jnp.float32)
        return StepStats(loss, accuracy(logits, y), gnorm, sat, zero, g)

      step_stats = measure_on(measured, stats, jax.tree.map(jnp.zeros_like, sums))
      if spec.g_ratio_steps == "last":
        if steps == 1:
          step_stats = step_stats._replace(g_ratio=g_of(kernel_sq(params), grad_sq, params))
        else:
          # The last step's G needs its parameters' kernel sums of squares: taken from the step before's new
          # parameters and carried (a read of the old parameters here would keep them alive beside the
          # in-place update: XLA then copies every kernel at every step).
          step_stats = step_stats._replace(g_ratio=jnp.where(i == steps - 1, g_of(w_sq, grad_sq, params), 0.0))
          w_sq = measure_on(i == steps - 2, lambda: kernel_sq(new_params), w_sq)
      sums = jax.tree.map(jnp.add, sums, step_stats)
      return (new_params, new_state, ok, sums, w_sq), None

    def epoch_stats(sums: StepStats) -> StepStats:
      """The epoch's means over its measured steps (G at the last step alone with g_ratio_steps="last")."""
      means = jax.tree.map(lambda s: s / n_measured, sums)
      return means._replace(g_ratio=sums.g_ratio) if spec.g_ratio_steps == "last" else means

    zero_sums = StepStats(*(jnp.float32(0),) * 5, jnp.zeros((n_layers,), jnp.float32))

    def pass_loss(params, x, y):
      logits, _ = forward(params, hp, out_scale, x)
      return cross_entropy(logits, y), logits

    nan = jnp.float32(jnp.nan)

    def epoch(carry, ekey):
      xb, yb = epoch_batches(ekey)
      params, opt_state, alive = carry
      carry = (params, opt_state, alive, zero_sums, jnp.ones((n_layers,), jnp.float32))
      if steps == 1:
        carry, _ = step(carry, (xb[0], yb[0], 0))
      else:
        carry, _ = jax.lax.scan(step, carry, (xb, yb, jnp.arange(steps, dtype=jnp.int32)))
      params, opt_state, alive, sums, _ = carry
      alive = alive & all_finite(params)   # an update of this epoch made a parameter non-finite (see `step`)
      stats = epoch_stats(sums)
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
      # A non-finite measured loss at finite parameters marks the configuration dead too (its epoch is diverged).
      m = Metrics(stats.loss, stats.acc, train_pass, test_loss, test_acc, stats.grad_norm, stats.saturation,
                  stats.zero_fraction, stats.g_ratio, ~alive)
      return (params, opt_state, alive), m

    (params, _, _), raw = jax.lax.scan(epoch, (params, opt_state, jnp.array(True)), epoch_keys)
    if full_batch and spec.train_pass:
      # Epoch e+1's full-batch step loss is the loss over the training split at epoch e's final
      # parameters (the carry): only the last epoch needs its own forward pass.
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

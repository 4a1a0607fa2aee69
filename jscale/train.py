"""A pure training loop for sweeps: `make_train(spec)` returns `train(key, hparams, data) -> Metrics`.

PureJaxRL style. `spec` (a hashable `TrainSpec`) fixes everything that changes shapes or the program:
widths, activation, optimizer family, epochs, batch size, the tuple of candidate initializers.
Everything a sweep varies is a traced argument of `train`, so `jax.jit(jax.vmap(train, (0, 0, None)))`
trains a whole grid in one program:

  key      the configuration's PRNG key (initialization and minibatch shuffles; split, never reused)
  hparams  `HParams`: init_scale (sigma), per-layer layer_scale, input_scale (feature scale),
           output_scale, lr, weight_decay, and init_index (the initializer CHOICE, an int indexing
           `spec.kernel_inits`; `lax.switch` under vmap)
  data     `jscale.datasets.Data`: shared by the configurations (in_axes None) or one draw each (in_axes
           0; the sweep runner stacks a group's data seeds and gives each configuration its own)

  train = make_train(TrainSpec(widths=(2, 64, 64, 2), kernel_inits=("normal:1",), optimizer="adam"))
  train = make_train(TrainSpec(model=jscale.models.get_model("lenet", 10), kernel_inits=("geometric",)))
  data = jscale.datasets.to_device(jscale.datasets.get("two_moons"))
  hp = stack_hparams([hparams(train.spec, init_scale=s, lr=1e-3) for s in (0.01, 0.1, 0.5, 1.0)])
  keys = jax.random.split(jax.random.key(0), 4)
  m = jax.jit(jax.vmap(train, in_axes=(0, 0, None)))(keys, hp, data)   # m.test_acc: (4, epochs)

Any model (`TrainSpec.model`, a `jscale.models.Model`: an init and an apply function, a Flax module, the strided
LeNet) trains the same way: its data rows are flat (N, prod(input_shape)) and reshaped by the model, its weight
layers are its kernel leaves (float leaves with >= 2 dims, in tree order), each redrawn by the chosen
initializer; its biases are its own init's. Everything above stays traced.

Weights are `init_scale * layer_scale[l] * W_l` with `W_l` drawn by `spec.kernel_inits[init_index]`, so
`kernel_inits=("normal:1",)` with `init_scale=sigma` is the tutorial's N(0, sigma^2). All candidate
initializers draw from the same key: configurations that differ only in the initializer see the same
underlying random numbers (common random numbers make comparisons less noisy).

Per epoch, per configuration (`Metrics`, each (epochs,) or (epochs, L)):
  train_loss, train_acc, grad_norm, saturation, zero_fraction, g_ratio
      averaged over the epoch's steps; each step's values are measured on its own minibatch at the
      parameters *before* its update (full batch: the parameters at the start of the epoch). This costs
      no extra forward pass.
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
  g_ratio               per-layer measured G_l = E[dW_l^2] / E[W_l^2] (`jscale.calculus`; undefined, NaN
                        or inf, for an all-zero weight matrix such as zeros init -- not a divergence); a
                        model's per kernel leaf, the gradient of the minibatch's mean loss.
  diverged              True from the first epoch in which an update produced a non-finite parameter, or
                        the loss, the gradient norm, the train-pass loss (when measured) or the test loss was NaN/inf.

Divergence never crashes and never poisons neighbours: the update that would make a parameter non-finite
(or that follows a non-finite loss or gradient) is not applied, the configuration's parameters freeze at
their last finite state, and every metric of the epoch in which that happened and of the later ones is
NaN -- accuracies included, never a number computed from broken parameters -- with `diverged` True (the
sweep reports the configuration and its first diverged epoch). A non-finite train-pass or test loss at
finite parameters (logits overflowing float32) marks its epoch diverged and freezes the parameters too.

Minibatch mode (`batch_size=B`): every epoch draws a fresh permutation from the configuration's own key
and takes floor(N / B) full batches (the remainder is dropped, a different remainder each epoch);
`batch_size=None` is full-batch gradient descent, one step per epoch.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import optax

from jscale import calculus, initializers, mlp
from jscale.datasets import Data
from jscale.models.model import Model

OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")


@dataclasses.dataclass(frozen=True)
class TrainSpec:
  """The static part of a training run (changing any field compiles a new program).

  model: None (the MLP of `widths`, `activation`, `bias_init`) or a `jscale.models.Model`; then `widths` is
    (its input features, its classes) and `activation` / `bias_init` must stay at their defaults (the model
    brings its own); `n_layers` is its number of kernels.
  kernel_inits: candidate kernel initializers (spec strings, `jscale.initializers.get`), or a tuple of
    per-layer specs per candidate; `HParams.init_index` picks one per configuration.
  output_std: if set, the logits are calibrated once at initialization to this std on the first
    training minibatch (the scaling-calculus paper's "logits fixed to std 0.05"); the calibration factor
    multiplies `HParams.output_scale`.
  weight_decay is coupled L2 (added to the gradient before the optimizer) except for "adamw" (decoupled).
  train_pass: measure `Metrics.train_pass_loss` (a forward pass over the whole training split at the end of
    every epoch; 1.4-1.5x a minibatch run's time on CPU). False: the metric is NaN ("not measured").
  """
  widths: tuple = (2, 64, 64, 2)
  model: Any = None
  activation: str = "relu"
  input_layernorm: bool = False
  kernel_inits: tuple = ("normal:1",)
  bias_init: str = "zeros"
  optimizer: str = "adam"
  momentum: float = 0.9
  epochs: int = 200
  batch_size: int | None = None
  output_std: float | None = None
  saturation_threshold: float = 1e-3
  train_pass: bool = False

  def __post_init__(self):
    set_ = functools.partial(object.__setattr__, self)
    if self.model is not None:
      self._check_model()
      set_("widths", (self.model.n_in, self.model.n_out))
    set_("widths", mlp.check_widths(self.widths))
    mlp.get_activation(self.activation)
    inits = self.kernel_inits
    if isinstance(inits, (str, initializers.Initializer)):
      inits = (inits,)
    inits = tuple(tuple(k) if isinstance(k, list) else k for k in inits)
    if not inits:
      raise ValueError("kernel_inits needs at least one initializer")
    for k in inits:
      for s in (k if isinstance(k, tuple) else (k,)):
        initializers.get(s)  # raises ValueError naming the valid initializers
      if isinstance(k, tuple) and len(k) != self.n_layers:
        raise ValueError(f"kernel_inits entry {k!r} has {len(k)} per-layer specs for {self.n_layers} layers"
                         + (f" (the kernels of model {self.model.name!r})" if self.model is not None else ""))
    set_("kernel_inits", inits)
    initializers.get(self.bias_init)
    if self.optimizer not in OPTIMIZERS:
      raise ValueError(f"unknown optimizer {self.optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
    if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 1:
      raise ValueError(f"epochs must be an int >= 1, got {self.epochs!r}")
    if self.batch_size is not None and (isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int)
                                        or self.batch_size < 1):
      raise ValueError(f"batch_size must be None (full batch) or an int >= 1, got {self.batch_size!r}")
    if self.output_std is not None and not (self.output_std > 0 and math.isfinite(self.output_std)):
      raise ValueError(f"output_std must be None or a finite number > 0, got {self.output_std!r}")
    if not isinstance(self.train_pass, bool):
      raise ValueError(f"train_pass must be True or False, got {self.train_pass!r}")

  def _check_model(self):
    m = self.model
    if not isinstance(m, Model):
      raise ValueError(f"model must be None (the MLP of widths) or a jscale.models.Model (Model.from_functions, "
                       f"Model.from_flax, Model.lenet, models.get_model), got {type(m).__name__}")
    defaults = {f.name: f.default for f in dataclasses.fields(TrainSpec)}
    w = tuple(self.widths)
    if w != defaults["widths"] and (len(w) < 2 or (w[0], w[-1]) != (m.n_in, m.n_out)):
      raise ValueError(f"widths {w} do not fit model {m.name!r}: it takes {m.n_in} features and has {m.n_out} "
                       f"classes (leave widths out with a model)")
    for name in ("activation", "bias_init"):
      if getattr(self, name) != defaults[name]:
        raise ValueError(f"{name} {getattr(self, name)!r} is the MLP's setting; model {m.name!r} brings its own "
                         f"(leave {name} at {defaults[name]!r})")

  @property
  def n_layers(self) -> int:
    """Weight layers: the MLP's, or the model's kernels (what layer_scale and g_ratio index)."""
    return self.model.n_layers if self.model is not None else len(self.widths) - 1

  def steps_per_epoch(self, n_train: int) -> int:
    if self.batch_size is None:
      return 1
    if self.batch_size > n_train:
      raise ValueError(f"batch_size {self.batch_size} is larger than the training set ({n_train} examples)")
    return n_train // self.batch_size

  def init_index(self, kernel_init) -> int:
    """Index of `kernel_init` (a spec string as given in `kernel_inits`) for `HParams.init_index`."""
    if kernel_init not in self.kernel_inits:
      raise ValueError(f"initializer {kernel_init!r} is not among this spec's kernel_inits {self.kernel_inits}")
    return self.kernel_inits.index(kernel_init)


class HParams(NamedTuple):
  """The traced, per-configuration hyperparameters (stack them along axis 0 for a sweep)."""
  init_scale: jax.Array    # () multiplies every kernel: sigma for kernel_inits=("normal:1",)
  layer_scale: jax.Array   # (L,) per-layer kernel multipliers (e.g. 1 / weight_scale_factor on layer 0)
  input_scale: jax.Array   # () multiplies the inputs (1 / feature_scale_factor)
  output_scale: jax.Array  # () multiplies the logits
  lr: jax.Array            # () learning rate
  weight_decay: jax.Array  # ()
  init_index: jax.Array    # () int32, which of spec.kernel_inits


HPARAM_DEFAULTS = dict(init_scale=1.0, input_scale=1.0, output_scale=1.0, lr=1e-3, weight_decay=0.0, init_index=0)


def hparams(spec: TrainSpec, **values) -> HParams:
  """One configuration's `HParams`: defaults from `HPARAM_DEFAULTS`, layer_scale all ones."""
  unknown = set(values) - set(HParams._fields)
  if unknown:
    raise ValueError(f"unknown hyperparameters {sorted(unknown)}; valid: {', '.join(HParams._fields)}")
  v = {**HPARAM_DEFAULTS, "layer_scale": (1.0,) * spec.n_layers, **values}
  layer_scale = jnp.asarray(v["layer_scale"], jnp.float32).reshape(-1)
  if layer_scale.shape != (spec.n_layers,):
    raise ValueError(f"layer_scale needs {spec.n_layers} entries (one per weight layer), got {v['layer_scale']!r}")
  idx = int(v["init_index"])
  if not 0 <= idx < len(spec.kernel_inits):
    raise ValueError(f"init_index {idx} out of range for {len(spec.kernel_inits)} kernel_inits")
  f32 = lambda name: jnp.asarray(v[name], jnp.float32)
  return HParams(f32("init_scale"), layer_scale, f32("input_scale"), f32("output_scale"), f32("lr"),
                 f32("weight_decay"), jnp.asarray(idx, jnp.int32))


def stack_hparams(hps: Sequence[HParams]) -> HParams:
  return jax.tree.map(lambda *xs: jnp.stack(xs), *hps)


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
  """`opt(learning_rate, weight_decay)` with both traced, via `optax.inject_hyperparams`."""
  name, momentum = spec.optimizer, spec.momentum

  def factory(learning_rate, weight_decay):
    if name == "adamw":
      return optax.adamw(learning_rate, weight_decay=weight_decay)
    base = {"sgd": lambda: optax.sgd(learning_rate),
            "momentum": lambda: optax.sgd(learning_rate, momentum=momentum),
            "adam": lambda: optax.adam(learning_rate)}[name]()
    return optax.chain(optax.add_decayed_weights(weight_decay), base)

  return optax.inject_hyperparams(factory)


def cross_entropy(logits, y):
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))


def accuracy(logits, y):
  return jnp.mean((jnp.argmax(logits, -1) == y).astype(jnp.float32))


def all_finite(tree) -> jax.Array:
  """True when every entry of every leaf is finite (one fused reduction per leaf)."""
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]))


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
  act = mlp.get_activation(spec.activation)
  model = spec.model
  if model is None:
    draw_mlp = mlp.make_init(spec.widths, spec.kernel_inits, spec.bias_init)
  else:  # every candidate redraws the model's kernels from the same keys
    draw_model = model.make_draw(spec.kernel_inits)
  opt_factory = make_optimizer(spec)
  tau = spec.saturation_threshold
  full_batch = spec.batch_size is None

  def init_params(key, hp: HParams):
    if model is not None:
      return model.map_kernels(lambda l, w: w * (hp.init_scale * hp.layer_scale)[l], draw_model(key, hp.init_index))
    params = draw_mlp(key, hp.init_index)   # a traced choice; every candidate draws from the same key
    scale_L = hp.init_scale * hp.layer_scale
    return tuple(mlp.Dense(p.w * scale_L[l], p.b) for l, p in enumerate(params))

  def forward(params, hp, out_scale, x):
    """(logits, the hidden activations saturation is measured on)."""
    if model is not None:
      x = mlp.layer_norm(x) if spec.input_layernorm else x
      return model.forward(params, x, hp.input_scale, out_scale)
    logits, trace = mlp.apply_mlp(params, x, act, input_scale=hp.input_scale, output_scale=out_scale,
                                  input_layernorm=spec.input_layernorm, return_trace=True)
    return logits, tuple(trace.inputs[1:])

  def g_ratio(params, grads):
    if model is None:
      return calculus.gradient_to_weight_ratio(params, grads)
    return jnp.stack([jnp.mean(jnp.square(g)) / jnp.mean(jnp.square(w))
                      for w, g in zip(model.kernels(params), model.kernels(grads))])

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


def flops_per_config(spec: TrainSpec, n_train: int, n_test: int) -> float:
  """Model FLOPs of one configuration's whole run, counted analytically (matmuls only, 2 per MAC).

  Per training example: forward sum_l 2 n_l n_{l+1}; backward dW_l for every layer plus dX_l for every
  layer but the first (the input needs no gradient). Plus a test-set forward pass every epoch, the
  train-pass forward (every epoch in minibatch mode; full batch: once, after the last epoch) and, with
  `output_std`, the calibration forward pass on the first minibatch. A model: its forward FLOPs from XLA's cost
  analysis (`Model.forward_flops`, all operations, not only matmuls) and twice that for the backward pass.
  """
  if spec.model is not None:
    fwd = spec.model.forward_flops()
    bwd = 2 * fwd
  else:
    mm = [spec.widths[l] * spec.widths[l + 1] for l in range(spec.n_layers)]
    fwd = 2 * sum(mm)
    bwd = 2 * sum(mm) + 2 * sum(mm[1:])
  rows = spec.steps_per_epoch(n_train) * (spec.batch_size or n_train)
  train_pass = 0 if not spec.train_pass else n_train * fwd * (1 if spec.batch_size is None else spec.epochs)
  calibration = 0 if spec.output_std is None else (spec.batch_size or n_train) * fwd
  return float(spec.epochs * (rows * (fwd + bwd) + n_test * fwd) + train_pass + calibration)


def bytes_per_config(spec: TrainSpec, n_train: int, n_test: int, dtype_bytes: int = 4) -> int:
  """A deliberately generous estimate of one configuration's device memory in a vmapped run.

  Parameters with optimizer state, updates and the frozen copies (8 P); the step's activations forward
  and backward (4 per unit per row, + the input); the epoch's gathered minibatches; the test forward and,
  in minibatch mode, the train-pass forward over the training split; the metrics; all times 2 for XLA's
  temporaries. The data set itself is not included (the runner adds it).
  """
  w = spec.widths
  if spec.model is not None:  # its parameters and its activations per example (hidden and logits)
    P, units = spec.model.num_params(), spec.model.units()
  else:
    P, units = sum(w[l] * w[l + 1] + w[l + 1] for l in range(spec.n_layers)), sum(w[1:])
  rows = spec.batch_size or n_train
  acts = rows * (w[0] + 4 * units)
  gathered = 0 if spec.batch_size is None else n_train * (w[0] + 1)
  test = 2 * n_test * (w[0] + units)
  train_pass = 0 if spec.batch_size is None or not spec.train_pass else 2 * n_train * units
  metrics = spec.epochs * (len(Metrics._fields) + spec.n_layers)
  return int(2 * dtype_bytes * (8 * P + acts + gathered + test + train_pass + metrics))

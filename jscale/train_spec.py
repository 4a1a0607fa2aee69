"""What a training run is made of: `TrainSpec`, the static part (changing any field compiles a new program), and
`HParams`, the traced part (one row per configuration of a sweep); `SETTING_CHECKS`, what every setting allows,
written once for `TrainSpec`, `hparams` and the sweeps' per-configuration checks. `jscale.train.make_train(spec)`
turns them into a pure `train(key, hparams, data)`."""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jscale import checks, initializers, mlp, models

OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")
G_RATIO_STEPS = ("last", "all")   # which steps of an epoch measure Metrics.g_ratio

# What each training setting allows, defined once: `TrainSpec` checks its static settings with it, the sweeps
# (`jscale.sweeps.experiment.validate_settings`) every configuration's settings, traced ones included, before any
# compute. name -> check(value, name, context=...).
_nonneg = functools.partial(checks.finite_real, minimum=0)
SETTING_CHECKS: dict[str, Callable] = {
    "init_scale": _nonneg,
    "input_scale": functools.partial(checks.finite_real, minimum=0, strict=True),   # 0 would erase the inputs
    "output_scale": functools.partial(checks.finite_real, minimum=0, strict=True),
    "lr": _nonneg,                                                                  # < 0 would ascend the loss
    "weight_decay": _nonneg,
    "momentum": functools.partial(checks.in_range, lo=0, hi=1, hi_open=True),
    "saturation_threshold": _nonneg,
    "epochs": checks.positive_int,
    "batch_size": checks.optional(checks.positive_int),                             # None: full batch
    "output_std": checks.optional(functools.partial(checks.finite_real, minimum=0, strict=True)),
    "train_pass": checks.boolean,
    "metric_every": checks.positive_int,
    "g_ratio_steps": lambda v, name, context="": _one_of(v, name, G_RATIO_STEPS, context),
}


def _one_of(v, name: str, choices: tuple, context: str = ""):
  if not isinstance(v, str) or v not in choices:
    raise ValueError(f"{name} must be one of {', '.join(choices)}{context}, got {v!r}")
  return v


def check_setting(name: str, value, context: str = ""):
  """`value` if setting `name` allows it, else ValueError naming both and what is allowed."""
  return SETTING_CHECKS[name](value, name, context=context)


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
  optimizer: one of OPTIMIZERS, or a tuple of them: candidates that `HParams.optimizer_index` picks per
    configuration (one program for SGD and Adam rows, `jscale.optim.choose`; each row computes every
    candidate's update).
  weight_decay is coupled L2 (added to the gradient before the optimizer) except for "adamw" (decoupled).
  train_pass: measure `Metrics.train_pass_loss` (a forward pass over the whole training split at the end of
    every epoch; 1.4-1.5x a minibatch run's time on CPU). False: the metric is NaN ("not measured").
  metric_every: k measures the per-step metrics (train_loss, train_acc, grad_norm, saturation, zero_fraction) on
    every k-th step of an epoch counted back from its last (steps - 1, steps - 1 - k, ...) and averages those;
    1 (the default) is every step. Each measurement is a pass over the activations (the gradient's norm comes
    from the divergence guard's pass, made at every step).
  g_ratio_steps: "last" (the default) measures `Metrics.g_ratio` at the epoch's last step only; "all" averages
    it over the measured steps (one more pass over the weights per step). Full batch: the same.
  """
  widths: tuple = (2, 64, 64, 2)
  model: Any = None
  activation: str = "relu"
  input_layernorm: bool = False
  kernel_inits: tuple = ("normal:1",)
  bias_init: str = "zeros"
  optimizer: str | tuple = "adam"
  momentum: float = 0.9
  epochs: int = 200
  batch_size: int | None = None
  output_std: float | None = None
  saturation_threshold: float = 1e-3
  train_pass: bool = False
  metric_every: int = 1
  g_ratio_steps: str = "last"

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
    if isinstance(self.optimizer, (tuple, list)):
      if not self.optimizer or len(set(self.optimizer)) != len(self.optimizer):
        raise ValueError(f"optimizer candidates must be distinct and at least one, got {self.optimizer!r}")
      for o in self.optimizer:
        checks.one_of(o, "optimizer", OPTIMIZERS)
      set_("optimizer", tuple(self.optimizer))
    else:
      checks.one_of(self.optimizer, "optimizer", OPTIMIZERS)
    for name, value in self.static_settings().items():
      check_setting(name, value)

  def static_settings(self) -> dict:
    """The settings `SETTING_CHECKS` knows, as this spec holds them."""
    return {name: getattr(self, name) for name in SETTING_CHECKS if hasattr(self, name)}

  def _check_model(self):
    m = self.model
    if not isinstance(m, models.Model):
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
  def network(self) -> models.Model:
    """What trains: `model`, or the MLP of `widths`, `activation` and `bias_init` as a `Model`."""
    if self.model is not None:
      return self.model
    return models.mlp(self.widths, self.activation, self.bias_init)

  @property
  def n_layers(self) -> int:
    """Weight layers: the network's kernels (what layer_scale and g_ratio index)."""
    return self.network.n_layers

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
  # (L,) per-kernel learning-rate multipliers (`jscale.optim.scale_by_prescription`, after the optimizer; biases
  # keep 1); None (the default): no multipliers, the program is the one without them.
  lr_scale: jax.Array | None = None
  # () int32, which of spec.optimizer's candidates when it is a tuple; None (the default) for one optimizer
  optimizer_index: jax.Array | None = None


HPARAM_DEFAULTS = dict(init_scale=1.0, input_scale=1.0, output_scale=1.0, lr=1e-3, weight_decay=0.0, init_index=0)


def hparams(spec: TrainSpec, **values) -> HParams:
  """One configuration's `HParams`: defaults from `HPARAM_DEFAULTS`, layer_scale all ones."""
  unknown = set(values) - set(HParams._fields)
  if unknown:
    raise ValueError(f"unknown hyperparameters {sorted(unknown)}; valid: {', '.join(HParams._fields)}")
  v = {**HPARAM_DEFAULTS, "layer_scale": (1.0,) * spec.n_layers, **values}
  for name in ("init_scale", "input_scale", "output_scale", "lr", "weight_decay"):
    if checks.is_real(v[name]):   # a plain number is checked here; arrays (a sweep's rows) by whoever built them
      check_setting(name, v[name])
    elif _holds_values(v[name]):  # a concrete array: every entry (traced rows are checked by whoever built them)
      for e in np.ravel(np.asarray(v[name])):
        check_setting(name, e.item())
  layer_scale = jnp.asarray(v["layer_scale"], jnp.float32).reshape(-1)
  if layer_scale.shape != (spec.n_layers,):
    raise ValueError(f"layer_scale needs {spec.n_layers} entries (one per weight layer), got {v['layer_scale']!r}")
  lr_scale = v.get("lr_scale")
  if lr_scale is not None:
    lr_scale = jnp.asarray(lr_scale, jnp.float32).reshape(-1)
    if lr_scale.shape != (spec.n_layers,):
      raise ValueError(f"lr_scale needs {spec.n_layers} entries (one per weight layer), got {v['lr_scale']!r}")
  idx = int(v["init_index"])
  if not 0 <= idx < len(spec.kernel_inits):
    raise ValueError(f"init_index {idx} out of range for {len(spec.kernel_inits)} kernel_inits")
  opt_idx = v.get("optimizer_index")
  if isinstance(spec.optimizer, tuple):
    opt_idx = int(0 if opt_idx is None else opt_idx)
    if not 0 <= opt_idx < len(spec.optimizer):
      raise ValueError(f"optimizer_index {opt_idx} out of range for {len(spec.optimizer)} optimizers")
    opt_idx = jnp.asarray(opt_idx, jnp.int32)
  elif opt_idx is not None:
    raise ValueError(f"optimizer_index needs a tuple of candidate optimizers, got optimizer={spec.optimizer!r}")
  f32 = lambda name: jnp.asarray(v[name], jnp.float32)
  return HParams(f32("init_scale"), layer_scale, f32("input_scale"), f32("output_scale"), f32("lr"),
                 f32("weight_decay"), jnp.asarray(idx, jnp.int32), lr_scale, opt_idx)


def _holds_values(v) -> bool:
  return isinstance(v, (np.ndarray, jax.Array)) and not isinstance(v, jax.core.Tracer)


def stack_hparams(hps: Sequence[HParams]) -> HParams:
  return jax.tree.map(lambda *xs: jnp.stack(xs), *hps)

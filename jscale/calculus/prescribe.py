"""`prescribe`: per-leaf learning-rate multipliers from the calculus (docs/calculus.md, "Prescription").

`prescribe(apply_fn, params, x, optimizer=..., rule=...)` runs `inspect` on the batch x and returns a
`Prescription`: per parameter leaf, a learning-rate multiplier (and an init multiplier) for one of three rules:

  "standard"  every multiplier 1 (the network as given, one global learning rate)
  "mup"       the μP table (Yang et al., Tensor Programs V, Table 3, in its standard-parametrization form) relative
              to `base` (the parameters of the same network at its base width): per weight leaf with fan-in
              ratio r_in and fan-out ratio r_out to the base, input-like leaves (r_in = 1) SGD x r_out, Adam x 1;
              hidden (both > 1) SGD x 1, Adam x 1/r_in; output-like (r_out = 1) init x r_in^-1/2, SGD and Adam
              x 1/r_in; biases SGD x r_out, Adam x 1
  "equal_G"   jscale's: every weight layer's output moves by the same amount per step, and the network's
              response to the step is the same at every width. The calculus predicts, per unit learning rate,
              the mean square change U_l that leaf l's first update makes at its layer's output: for SGD
              U_l = fan_in^2 E[x_l^2] E[dW_l^2]_batch = fan_in^2 E[x_l^2] G_batch,l E[W_l^2] (the minibatch
              gradient is aligned with the inputs, so ΔW^T x adds fan_in terms of one sign); for Adam, whose
              first step is lr * sign(g) per entry whatever the gradient's size, U_l = fan_in^2 E[x_l^2].
              The multipliers U_l^-1/2 set the layers' ratios. Their common scale comes from the response
              (`normalised`, with `prescribe(layers=...)`): U counts each layer's own change only, and the
              lower layers' changes reach the layers above through the same aligned weights, so the
              network's relative change per unit rate still moved with width (the MLP's logits under Adam
              grew 1.9x from width 32 to 512). Every leaf, biases included, is divided by the first step's
              relative response that sets the optimum (`response_at`), so `lr` is that relative change per
              step at every width. Without `layers` the scale is U's (Prescription.scale 1).

The predicted drift of the optimal learning rate across widths follows from `step_size`: with multipliers m_l
the predicted RMS output change per unit learning rate is S = sqrt(sum_l m_l^2 U_l); if the best run moves
each layer by a width-independent amount, the optimal learning rate scales as 1/S, so its drift from width a
to width b is log2(S_a / S_b) octaves (`predicted_drift`). Only weight leaves ("dense", "conv") get U's
multipliers under equal_G; biases and other leaves keep 1 (a zero-initialised bias has no G), times the
response normalisation.

`step_size` counts each layer's own change only. `response_drift` predicts the drift from the first-order
response of the whole network instead (per layer output, the relative RMS change per unit learning rate:
`calculus.unit_response` for dense ReLU stacks, or measured by a JVP at the init, `first_step_response`)
read per optimizer by `response_at`: Adam's logits (its step does not shrink as the logits fit, so the
logits' change is what a too-large rate overshoots), SGD's last hidden layer (cross-entropy's gradient
shrinks as the logits grow, so SGD tolerates large logit steps; what a too-large rate destroys is the
representation the read-out sees). From the fourth to the ninth session SGD read the hidden layers' geometric
mean, chosen on 4 probe inits; measured on 64, it mispredicted the LeNet's three SGD cells in the same
direction, and the last hidden layer scored best against every stored drift (docs/calculus.md, *SGD's layer
choice scored at 64 probe inits*, which says which seeds developed and judged it).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jscale import checks, optim, program_cache
from jscale.calculus.inspection import inspect
from jscale.calculus.records import Record, finite_or_none as num

RULES = ("standard", "mup", "equal_G")
OPTIMIZERS = ("sgd", "adam")
PRESCRIBED_KINDS = ("dense", "conv")


@dataclasses.dataclass(frozen=True)
class LeafPrescription(Record):
  """One float parameter leaf, in tree order."""
  path: str
  shape: tuple
  kind: str                    # inspect's kind: "dense", "conv", "bias", ...
  fan_in: int | None
  weight_sq: float | None      # E[W^2] as given
  x_sq: float | None           # E[x^2] at its input (predicted, or measured with measured=True)
  G_batch: float | None        # G of the minibatch-mean gradient (predicted, or measured)
  update_to_output: float | None  # U: E[Δy^2] at its layer's output per unit learning rate, multiplier 1
  lr_multiplier: float
  init_multiplier: float


@dataclasses.dataclass(frozen=True)
class Prescription(Record):
  """What `prescribe` found. `lr_multipliers(params)` / `init_multipliers(params)` give them as pytrees with
  the structure of `params` (None for leaves that are not float arrays)."""
  rule: str
  optimizer: str
  source: str                  # "predicted" (the calculus's G) or "measured" (inspect's measured G)
  leaves: tuple                # LeafPrescription per float leaf
  batch_size: int
  scale: float = 1.0           # the response normalisation folded into every leaf's multiplier (`normalised`)

  def _tree(self, params, field: str):
    with_path, treedef = jax.tree_util.tree_flatten_with_path(params)
    floats = [i for i, (_, l) in enumerate(with_path) if _is_float(l)]
    if len(floats) != len(self.leaves):
      raise ValueError(f"params has {len(floats)} float leaves; this prescription has {len(self.leaves)}")
    vals: list = [None] * len(with_path)
    for i, row in zip(floats, self.leaves):
      vals[i] = getattr(row, field)
    return jax.tree_util.tree_unflatten(treedef, vals)

  def lr_multipliers(self, params):
    """Per-leaf learning-rate multipliers, a pytree like `params` (`jscale.optim.scale_by_prescription`)."""
    return self._tree(params, "lr_multiplier")

  def init_multipliers(self, params):
    """Per-leaf multipliers of the initial values (not 1 only for the output layer under "mup")."""
    return self._tree(params, "init_multiplier")

  def step_size(self) -> float | None:
    """Predicted RMS change per unit learning rate at the layers' outputs, sqrt(sum_l m_l^2 U_l) over the
    prescribed (weight) leaves; None when a weight leaf has no prediction."""
    us = [(r.lr_multiplier, r.update_to_output) for r in self.leaves if r.kind in PRESCRIBED_KINDS]
    if not us or any(u is None for _, u in us):
      return None
    return math.sqrt(sum(m * m * u for m, u in us))


def predicted_drift(small: Prescription, large: Prescription) -> float | None:
  """Predicted drift of the optimal learning rate, in octaves (log2), from the narrow network's prescription
  to the wide one's: log2(S_small / S_large) with S = `step_size` (negative: the optimum moves down)."""
  a, b = small.step_size(), large.step_size()
  return None if a is None or b is None or a <= 0 or b <= 0 else math.log2(a / b)


RESPONSE_AT = {"sgd": "the last hidden layer", "adam": "the logits"}   # what sets the optimum


def response_at(response, optimizer: str) -> float:
  """The response that sets the optimal learning rate, from the per-layer-output relative responses
  (hidden layers, then the logits; module doc): Adam the logits', SGD the last hidden layer's; NaN where it
  has none (a response not positive and finite, or no hidden layer for SGD)."""
  checks.one_of(optimizer, "optimizer", OPTIMIZERS)
  r = np.asarray(response, np.float64).reshape(-1)
  use = r[-1:] if optimizer == "adam" else r[-2:-1]
  if use.size == 0 or not np.all(np.isfinite(use) & (use > 0)):
    return float("nan")
  return float(use[0])


def response_se(rse, optimizer: str) -> float:
  """The relative SE of `response_at` from the per-layer ones: the logits' for Adam, the last hidden layer's
  for SGD."""
  checks.one_of(optimizer, "optimizer", OPTIMIZERS)
  r = np.asarray(rse, np.float64).reshape(-1)
  return float(r[-1] if optimizer == "adam" else r[-2])


def response_drift(small, large, optimizer: str) -> float | None:
  """Predicted drift of the optimal learning rate (octaves) from the narrow to the wide network, from their
  per-layer-output relative responses per unit learning rate: log2(R_small / R_large) with R = `response_at`;
  None where either has none."""
  a, b = response_at(small, optimizer), response_at(large, optimizer)
  ok = all(math.isfinite(v) and v > 0 for v in (a, b))
  return math.log2(a / b) if ok else None


def normalised(pr: Prescription, response) -> Prescription:
  """`pr` with every leaf's learning-rate multiplier (biases and other leaves included) divided by the first
  step's relative response per unit learning rate that sets the optimum (`response_at`: Adam the logits', SGD
  the last hidden layer's); `response`: per layer output (hidden layers, then the logits)
  sqrt(E[dh^2] / E[h^2]) that the step with `pr`'s multipliers makes at learning rate 1
  (`first_step_response`, or a mean over init draws). To first order every layer's response is linear in a
  common factor of the multipliers, so the result's is 1: the learning rate *is* that relative change per
  step, at every width (module doc: equal-G's per-layer balance sets the ratios, the response their scale)."""
  r = np.asarray(response, np.float64).reshape(-1)
  if r.size < 2 and pr.optimizer == "sgd":
    raise ValueError("normalised: SGD's response is the last hidden layer's; it needs the hidden layers' outputs too "
                     "(layers(params, x) -> [hidden ..., logits])")
  v = response_at(r, pr.optimizer)
  if not (math.isfinite(v) and v > 0):
    raise ValueError(f"normalised: the {pr.optimizer} response ({RESPONSE_AT[pr.optimizer]}) of {r.tolist()} is "
                     f"not positive and finite")
  leaves = tuple(dataclasses.replace(row, lr_multiplier=row.lr_multiplier / v) for row in pr.leaves)
  return dataclasses.replace(pr, leaves=leaves, scale=pr.scale / v)


def first_step_response(layers: Callable, params, x, loss: Callable, multipliers, optimizer: str) -> np.ndarray:
  """Per output of `layers(params, x)` (a sequence of arrays: the hidden layers' outputs, then the logits; or
  one array), sqrt(E[dh^2] / E[h^2]): the first-order change that the first step of `optimizer` (optax's sgd
  or adam at learning rate 1, then the per-leaf `multipliers`, a pytree like params) on the mean of
  `loss(outputs)` makes there, relative to the output's size, measured by a JVP along the update."""
  checks.one_of(optimizer, "optimizer", OPTIMIZERS)

  def outs(p, x_):
    o = layers(p, x_)
    return list(o) if isinstance(o, (list, tuple)) else [o]

  base = optax.sgd(1.0) if optimizer == "sgd" else optax.adam(1.0)

  # One compiled program (shared by calls on networks of the same computation): op by op, the gradient, the
  # optimizer's update and the JVP compiled ~60 small programs, 1.4 of the README prescribe block's 5.4 CPU s
  # (docs/performance.md, "Eighteenth session"); fused, the ratios move by float32 rounding.
  def squares(params, x_, multipliers):
    tx = optax.chain(base, optim.scale_by_prescription(multipliers))   # traced: one program for any multipliers
    g = jax.grad(lambda p: jnp.mean(loss(outs(p, x_)[-1])))(params)
    u, _ = tx.update(g, tx.init(params), params)
    h, dh = jax.jvp(lambda p: outs(p, x_), (params,), (u,))
    return [(jnp.mean(jnp.square(a)), jnp.mean(jnp.square(d))) for a, d in zip(h, dh)]

  got = jax.device_get(program_cache.jit(squares)(params, x, multipliers))
  return np.array([math.sqrt(float(d) / float(a)) for a, d in got])


def _is_float(leaf) -> bool:
  return hasattr(leaf, "dtype") and np.issubdtype(leaf.dtype, np.inexact)


def _fans(shape) -> tuple[int, int]:
  """(fan_in, fan_out) of a kernel from its shape: the last axis is the output's."""
  return (math.prod(shape[:-1]) if len(shape) > 1 else 1), (shape[-1] if shape else 1)


def prescribe(apply_fn, params, x, *, optimizer: str = "sgd", rule: str = "equal_G", loss: Callable | None = None,
              key: jax.Array | None = None, measured: bool = False, base=None,
              layers: Callable | None = None) -> Prescription:
  """Per-leaf learning-rate (and init) multipliers for `rule` under `optimizer` ("sgd" or "adam").

  `apply_fn(params, x)`, `loss` (outputs -> (batch,) per-example losses; default the random projection) and
  `key` are `inspect`'s; x should be a training minibatch, since the minibatch G depends on the batch size.
  `measured=True` uses inspect's measured G and E[x^2] instead of the calculus's predicted ones. `base`: the
  parameters of the same network at its base width (required by "mup", ignored otherwise).
  `layers(params, x)` -> [hidden layer outputs ..., logits] (for Adam `apply_fn` itself will do): with it,
  equal-G is `normalised` by the first step's response at this init (`first_step_response`, which needs the
  real `loss`), so that the learning rate is the response layer's relative change per step at every width.
  """
  checks.one_of(optimizer, "optimizer", OPTIMIZERS)
  checks.one_of(rule, "rule", RULES)
  checks.boolean(measured, "measured")
  if layers is not None and (loss is None or not callable(layers)):
    raise ValueError("prescribe: layers= needs a callable layers(params, x) and the training loss= (the "
                     "response is the change the real first step makes)")
  if rule == "mup":
    if base is None:
      raise ValueError("prescribe: rule 'mup' needs base= (the parameters of the network at its base width)")
    p_def, b_def = jax.tree_util.tree_structure(params), jax.tree_util.tree_structure(base)
    if p_def != b_def:
      raise ValueError(f"prescribe: base's tree {b_def} does not match params' {p_def}")
  res = inspect(apply_fn, params, x, loss=loss, key=key)
  base_shapes = None
  if rule == "mup":
    base_shapes = [tuple(np.shape(l)) for l in jax.tree_util.tree_leaves(base) if _is_float(l)]
  pr = from_inspection(res, optimizer=optimizer, rule=rule, measured=measured, base_shapes=base_shapes)
  if layers is None or rule != "equal_G":
    return pr
  return normalised(pr, first_step_response(layers, params, x, loss, pr.lr_multipliers(params), optimizer))


def from_inspection(res, *, optimizer: str = "sgd", rule: str = "equal_G", measured: bool = False,
                    base_shapes=None) -> Prescription:
  """`prescribe` from an `Inspection` already computed (no compute: one inspection serves both optimizers and
  every rule); `base_shapes`: the base network's float leaf shapes in tree order (for "mup")."""
  checks.one_of(optimizer, "optimizer", OPTIMIZERS)
  checks.one_of(rule, "rule", RULES)
  if rule == "mup" and (base_shapes is None or len(base_shapes) != len(res.layers)):
    raise ValueError("prescribe: rule 'mup' needs the base network's shape for every float leaf")
  rows = []
  for n, r in enumerate(res.layers):
    x_sq = r.x_sq_meas if measured else r.x_sq_pred
    G = r.G_batch_meas if measured else r.G_batch_pred
    U = update_to_output(r.kind, r.fan_in, x_sq, G, r.weight_sq, optimizer)
    lr_m, init_m = 1.0, 1.0
    if rule == "equal_G" and r.kind in PRESCRIBED_KINDS:
      if not U or U <= 0 or not math.isfinite(U):
        raise ValueError(f"prescribe: no {'measured' if measured else 'predicted'} update size for weight leaf "
                         f"{r.path!r} ({r.reason or 'its input moment or G is missing'}); equal_G needs one "
                         f"for every weight leaf")
      lr_m = U ** -0.5
    elif rule == "mup":
      lr_m, init_m = _mup(r.kind, tuple(r.shape), tuple(base_shapes[n]), optimizer)
    rows.append(LeafPrescription(path=r.path, shape=tuple(r.shape), kind=r.kind, fan_in=r.fan_in,
                                 weight_sq=r.weight_sq, x_sq=num(x_sq), G_batch=num(G), update_to_output=num(U),
                                 lr_multiplier=float(lr_m), init_multiplier=float(init_m)))
  return Prescription(rule=rule, optimizer=optimizer, source="measured" if measured else "predicted",
                      leaves=tuple(rows), batch_size=res.batch_size)


def update_to_output(kind: str, fan_in, x_sq, G_batch, weight_sq, optimizer: str) -> float | None:
  """U: the predicted E[Δy^2] at a weight leaf's layer output per unit learning rate (module doc); None for
  leaves that are not weights or lack a moment."""
  if kind not in PRESCRIBED_KINDS or not fan_in or x_sq is None:
    return None
  if optimizer == "adam":
    return fan_in ** 2 * x_sq
  if G_batch is None or not weight_sq:
    return None
  return fan_in ** 2 * x_sq * G_batch * weight_sq


def _mup(kind: str, shape: tuple, base_shape: tuple, optimizer: str) -> tuple[float, float]:
  """(lr multiplier, init multiplier) of one leaf under μP relative to its base shape."""
  if len(shape) != len(base_shape):
    raise ValueError(f"prescribe: a leaf of shape {shape} has base shape {base_shape}")
  if kind not in PRESCRIBED_KINDS:   # biases and other vectors: like input weights (their size is a fan-out)
    r_out = math.prod(shape) / max(math.prod(base_shape), 1)
    return (r_out if optimizer == "sgd" else 1.0), 1.0
  (fi, fo), (bfi, bfo) = _fans(shape), _fans(base_shape)
  r_in, r_out = fi / bfi, fo / bfo
  if r_in == 1:                                      # input-like: only the fan-out grows
    return (r_out if optimizer == "sgd" else 1.0), 1.0
  if r_out == 1:                                     # output-like: init variance 1/fan_in^2 (relative to base)
    return 1.0 / r_in, r_in ** -0.5
  return (1.0 if optimizer == "sgd" else 1.0 / r_in), 1.0   # hidden

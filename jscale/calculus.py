"""The scaling calculus (Defazio & Bottou): predicted and measured second moments, nu and G.

See ../shared/SCALING.md for the derivations.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp

from jscale import mlp


def gradient_to_weight_ratio(params, grads) -> jax.Array:
  """Measured G_l = E[dW_l^2] / E[W_l^2] for each weight layer (weights only, biases excluded).

  `params` and `grads` are `jscale.mlp` parameter tuples; returns an array of shape (L,).
  """
  return jnp.stack([jnp.mean(jnp.square(g.w)) / jnp.mean(jnp.square(p.w)) for p, g in zip(params, grads)])


class Moments(NamedTuple):
  """Per-weight-layer second moments; every field has shape (L,), index l = weight layer l (0-based)."""
  x_sq: jax.Array       # E[x_l^2]: layer l's input (x_0 = network input)
  y_sq: jax.Array       # E[y_l^2]: layer l's pre-activation (y_{L-1} = logits)
  dx_sq: jax.Array      # E[Delta x_l^2]: back-propagated gradient at layer l's input
  dy_sq: jax.Array      # E[Delta y_l^2]: back-propagated gradient at layer l's pre-activation
  nu: jax.Array         # nu_l = n_l rho_l E[x_l^2] E[Delta x_l^2]
  G: jax.Array          # G_l = E[Delta W_l^2] / E[W_l^2], batch size 1
  weight_sq: jax.Array  # E[W_l^2]


# Positively 1-homogeneous activations: (forward gain E[act(y)^2]/E[y^2], backward gain
# E[Delta y^2]/E[Delta x^2]) for a symmetric pre-activation y. leaky_relu uses mlp's slope 0.01.
_LEAKY_SLOPE = 0.01
HOMOGENEOUS_GAINS = {
    "relu": (0.5, 0.5),
    "leaky_relu": ((1 + _LEAKY_SLOPE ** 2) / 2, (1 + _LEAKY_SLOPE ** 2) / 2),
    "identity": (1.0, 1.0),
    "linear": (1.0, 1.0),
}


def _check_activation(activation) -> str:
  if activation == "tanh":
    raise ValueError("activation 'tanh' is not positively homogeneous, so the calculus's propagation rules "
                     "do not hold for it (it does not keep nu outside its linear regime); measure it with "
                     "`measure_mlp` and see `check_calculus`")
  if not isinstance(activation, str) or activation not in HOMOGENEOUS_GAINS:
    raise ValueError(f"unknown activation {activation!r}; the calculus covers {', '.join(HOMOGENEOUS_GAINS)}")
  return activation


def predict_dense(widths: Sequence[int], weight_sq, x0_sq=1.0, dy_out_sq=1.0,
                  activation: str = "relu") -> Moments:
  """Predicted moments of a bias-free dense MLP, from the propagation rules (no sampling).

  widths = (n_0, ..., n_L); `weight_sq` has L entries E[W_l^2]; `x0_sq` = E[x_0^2] of the input;
  `dy_out_sq` = E[Delta y_{L-1}^2] of the gradient at the logits (1 for a unit random projection).
  The activation sits between layers, the last layer is linear. Rules (SCALING.md, rho = k = 1):
    E[y_l^2] = n_l E[W_l^2] E[x_l^2],  E[Delta x_l^2] = n_{l+1} E[W_l^2] E[Delta y_l^2],
    E[x_{l+1}^2] = g E[y_l^2],  E[Delta y_l^2] = g E[Delta x_{l+1}^2]  (g = 1/2 for relu),
    G_l = E[x_l^2] E[Delta y_l^2] / E[W_l^2].
  `weight_sq`, `x0_sq` and `dy_out_sq` may be traced (jit / vmap over them); widths and activation are static.
  A zero E[W_l^2] gives G_l = inf (or nan): the calculus has nothing to say about a zero layer.
  """
  widths = mlp.check_widths(widths)
  gf, gb = HOMOGENEOUS_GAINS[_check_activation(activation)]
  n_layers = len(widths) - 1
  weight_sq = jnp.asarray(weight_sq, dtype=jnp.result_type(float))
  if weight_sq.shape != (n_layers,):
    raise ValueError(f"weight_sq needs one entry per weight layer ({n_layers} for widths {widths}), "
                     f"got shape {weight_sq.shape}")
  x_sq, y_sq = [], []
  x = jnp.asarray(x0_sq, weight_sq.dtype)
  for l in range(n_layers):
    x_sq.append(x)
    y_sq.append(widths[l] * weight_sq[l] * x)
    x = gf * y_sq[-1]
  dx_sq, dy_sq = [None] * n_layers, [None] * n_layers
  dy = jnp.asarray(dy_out_sq, weight_sq.dtype)
  for l in reversed(range(n_layers)):
    dy_sq[l] = dy
    dx_sq[l] = widths[l + 1] * weight_sq[l] * dy
    dy = gb * dx_sq[l]
  x_sq, y_sq, dx_sq, dy_sq = (jnp.stack(v) for v in (x_sq, y_sq, dx_sq, dy_sq))
  n_in = jnp.asarray(widths[:-1], weight_sq.dtype)
  return Moments(x_sq=x_sq, y_sq=y_sq, dx_sq=dx_sq, dy_sq=dy_sq, nu=n_in * x_sq * dx_sq,
                 G=x_sq * dy_sq / weight_sq, weight_sq=weight_sq)


# ---------------------------------------------------------------------------------------------------
# Layer lists: the richer architecture description that `predict` and `measure` share.
#
# Activations are (batch, *spatial, channels) arrays, as in flax. A weight layer (`Linear`, `Conv`)
# has weight E[W^2] from its initializer's own `second_moment` (or a fixed `weight_sq`) and no bias
# at initialisation (biases are zero in the calculus; `db_sq` reports what their gradient would be).

import dataclasses
import functools
import math
from typing import Any, Callable

import numpy as np

from jscale import initializers


@dataclasses.dataclass(frozen=True)
class Linear:
  """Dense map over the channel axis (applied at every spatial position, k = 1)."""
  n_out: int
  init: Any = "he_normal"
  weight_sq: float | None = None  # overrides the initializer's E[W^2] in predictions


@dataclasses.dataclass(frozen=True)
class Conv:
  """Convolution with kernel taps k = prod(kernel); stride = kernel (VALID) or stride 1 with SAME padding."""
  n_out: int
  kernel: tuple
  stride: str = "kernel"  # "kernel" or "same"
  init: Any = "he_normal"
  weight_sq: float | None = None


@dataclasses.dataclass(frozen=True)
class Act:
  kind: str = "relu"


@dataclasses.dataclass(frozen=True)
class Scale:
  """Fixed scalar multiplier a (forward and backward second moments times a^2)."""
  a: float


@dataclasses.dataclass(frozen=True)
class Dropout:
  """Keep each entry with probability `keep`; `rescale=True` divides the kept ones by `keep` (inverted)."""
  keep: float
  rescale: bool = False


@dataclasses.dataclass(frozen=True)
class AvgPool:
  """Average pooling with stride = window."""
  window: tuple


@dataclasses.dataclass(frozen=True)
class Flatten:
  """(batch, *spatial, n) -> (batch, prod(spatial) n)."""


@dataclasses.dataclass(frozen=True)
class Residual:
  """x + a f(x), f = `branch` (a layer tuple mapping the input's shape to itself).

  The calculus's rule (both second moments times 1 + a^2 s, s = f's forward gain) drops the cross term
  2 a E[x f(x)]; that is exact in expectation when f ends with a zero-mean weight layer.
  """
  branch: tuple
  a: float = 1.0


WEIGHT_LAYERS = (Linear, Conv)
# A fixed init for static layer lists used only to *run* given params: one jit compilation serves all.
_PLACEHOLDER = initializers.zeros()
ACT_KINDS = tuple(HOMOGENEOUS_GAINS) + ("tanh",)


def mlp_layers(widths: Sequence[int], init: Any = "he_normal", activation: str = "relu") -> tuple:
  """The layer list of `jscale.mlp` with these widths: Linear, Act, ..., Linear (linear output)."""
  widths = mlp.check_widths(widths)
  inits = list(init) if isinstance(init, (list, tuple)) else [init] * (len(widths) - 1)
  if len(inits) != len(widths) - 1:
    raise ValueError(f"init: got {len(inits)} entries for {len(widths) - 1} weight layers")
  if activation not in ACT_KINDS:
    raise ValueError(f"unknown activation {activation!r}; valid: {', '.join(ACT_KINDS)}")
  layers = []
  for l, n in enumerate(widths[1:]):
    if l:
      layers.append(Act(activation))
    layers.append(Linear(n, inits[l]))
  return tuple(layers)


def _tuple(v, what) -> tuple:
  v = (v,) if isinstance(v, (int, np.integer)) else tuple(v)
  if not v or any(isinstance(t, bool) or int(t) != t or t <= 0 for t in v):
    raise ValueError(f"{what} must be positive ints, got {v!r}")
  return tuple(int(t) for t in v)


def kernel_shape(layer, n_in: int, n_spatial: int) -> tuple:
  if isinstance(layer, Linear):
    return (n_in, layer.n_out)
  kernel = _tuple(layer.kernel, "Conv.kernel")
  if len(kernel) != n_spatial:
    raise ValueError(f"Conv kernel {kernel} has {len(kernel)} dims for an input with {n_spatial} spatial dims")
  return kernel + (n_in, layer.n_out)


class LayerInfo(NamedTuple):
  """Static description of one weight layer (index l in `Moments`)."""
  path: str        # position in the layer list, e.g. "4" or "2.branch.0"
  kind: str        # "linear" or "conv"
  shape: tuple     # kernel shape (*kernel, n_in, n_out)
  k: int           # kernel taps
  n_in: int
  n_out: int
  rho_in: int      # spatial positions at the input / output (1 for an MLP)
  rho_out: int
  fan_in: int
  fan_out: int
  weight_var: float
  weight_sq: float
  init: str


def _check_layers(layers, n_in, spatial, path=""):
  """Validate a layer list against an input shape before any compute; returns the output (n, spatial)."""
  if not isinstance(layers, (list, tuple)) or not layers:
    raise ValueError(f"layers{' at ' + path if path else ''} must be a non-empty list of layers, got {layers!r}")
  for i, layer in enumerate(layers):
    where = f"layer {path}{i} ({layer!r})"
    if isinstance(layer, WEIGHT_LAYERS):
      if isinstance(layer.n_out, bool) or not isinstance(layer.n_out, (int, np.integer)) or layer.n_out <= 0:
        raise ValueError(f"{where}: n_out must be a positive int")
      if layer.weight_sq is None:
        initializers.get(layer.init)
      elif not (layer.weight_sq >= 0 and math.isfinite(layer.weight_sq)):
        raise ValueError(f"{where}: weight_sq must be finite and >= 0")
      if isinstance(layer, Conv):
        if not spatial:
          raise ValueError(f"{where}: a Conv needs spatial input dims (pass spatial=...)")
        kernel = kernel_shape(layer, n_in, len(spatial))[:-2]
        if layer.stride == "kernel":
          if any(s % k for s, k in zip(spatial, kernel)):
            raise ValueError(f"{where}: stride = kernel needs the spatial size {spatial} divisible by {kernel}")
          spatial = tuple(s // k for s, k in zip(spatial, kernel))
        elif layer.stride != "same":
          raise ValueError(f"{where}: stride must be 'kernel' or 'same', got {layer.stride!r}")
      n_in = int(layer.n_out)
    elif isinstance(layer, Act):
      if layer.kind not in ACT_KINDS:
        raise ValueError(f"{where}: unknown activation {layer.kind!r}; valid: {', '.join(ACT_KINDS)}")
    elif isinstance(layer, Scale):
      if not math.isfinite(layer.a):
        raise ValueError(f"{where}: a must be finite")
    elif isinstance(layer, Dropout):
      if not 0 < layer.keep <= 1:
        raise ValueError(f"{where}: keep must be in (0, 1]")
    elif isinstance(layer, AvgPool):
      window = _tuple(layer.window, "AvgPool.window")
      if len(window) != len(spatial) or any(s % w for s, w in zip(spatial, window)):
        raise ValueError(f"{where}: window {window} must match and divide the spatial size {spatial}")
      spatial = tuple(s // w for s, w in zip(spatial, window))
    elif isinstance(layer, Flatten):
      n_in, spatial = n_in * math.prod(spatial), ()
    elif isinstance(layer, Residual):
      out = _check_layers(layer.branch, n_in, spatial, f"{path}{i}.branch.")
      if out != (n_in, spatial):
        raise ValueError(f"{where}: the branch maps (n={n_in}, spatial={spatial}) to (n={out[0]}, "
                         f"spatial={out[1]}); a residual branch must keep the shape")
      if not math.isfinite(layer.a):
        raise ValueError(f"{where}: a must be finite")
    else:
      raise ValueError(f"{where}: not a calculus layer (Linear, Conv, Act, Scale, Dropout, AvgPool, Flatten, "
                       "Residual)")
  return n_in, spatial


def _check_input(n_in, spatial):
  if isinstance(n_in, bool) or not isinstance(n_in, (int, np.integer)) or n_in <= 0:
    raise ValueError(f"n_in must be a positive int, got {n_in!r}")
  return int(n_in), (tuple(_tuple(spatial, "spatial")) if spatial else ())


# --- correlation maps (beyond the paper; used for batch effects and average pooling) ----------------
# r is the uncentered correlation E[u v] / E[u^2] between two *distinct* entries (two examples, or two
# positions) of the same unit. Zero-mean shared weights keep r; an activation maps it by its arc-cosine
# kernel (Cho & Saul): relu outputs have E[x]^2 = E[x^2] / pi, hence r = 1/pi from independent inputs.


def _k1(r):  # E[relu(u) relu(v)] / E[relu(u)^2] for unit-variance Gaussians with correlation r
  r = min(max(r, -1.0), 1.0)
  return (math.sqrt(1 - r * r) + (math.pi - math.acos(r)) * r) / math.pi


def _act_corr(kind, r):
  """(forward r after the activation, backward factor on the gradient correlation) for input corr r."""
  r = min(max(r, -1.0), 1.0)
  if kind in ("identity", "linear"):
    return r, 1.0
  if kind == "tanh":  # linear regime only
    return r, 1.0
  a = _LEAKY_SLOPE if kind == "leaky_relu" else 0.0
  # phi(u) = relu(u) - a relu(-u); E[relu(u) relu(-v)] has correlation -r.
  fwd = ((1 + a * a) * _k1(r) - 2 * a * _k1(-r)) / (1 + a * a)
  both = (math.pi - math.acos(r)) / (2 * math.pi)  # P(u > 0, v > 0) = P(u < 0, v < 0)
  bwd = ((1 + a * a) * both + a * math.acos(r) / math.pi) / ((1 + a * a) / 2)
  return fwd, bwd


class Prediction(NamedTuple):
  """`predict`'s answer: per-weight-layer moments plus what the design helpers need."""
  moments: Moments         # batch-1 moments, numpy float64, one entry per weight layer
  layers: tuple            # LayerInfo per weight layer
  db_sq: np.ndarray        # E[Delta b_l^2] per example (bias as a weight on a constant-1 input)
  bias_balance: np.ndarray  # k n_l E[x_l^2]^2: weight-block / bias-block scale; 1 = balanced
  dW_sq_batch: np.ndarray  # E[Delta W_l^2] of the minibatch-mean gradient (batch_size examples)
  G_batch: np.ndarray      # dW_sq_batch / E[W_l^2]
  out_sq: float            # E[out^2] of the network output
  in_dx_sq: float          # E[Delta x_0^2] at the network input
  exact: bool              # False when a rule was used outside its assumptions (see notes)
  notes: tuple             # why not exact


def predict(layers, n_in: int, spatial=(), x0_sq: float = 1.0, dy_out_sq: float = 1.0, *,
            batch_size: int = 1, x0_corr: float = 0.0, dy_out_corr: float = 0.0,
            x0_symmetric: bool = True) -> Prediction:
  """Predicted (analytic) second moments of a layer list, from SCALING.md's propagation rules.

  Input: `n_in` channels on a `spatial` grid (() for vectors), E[x_0^2] = `x0_sq`; the gradient arriving
  at the output has E[Delta^2] = `dy_out_sq`. Per-example (batch-1) quantities follow the paper exactly.
  Beyond the paper, entries are allowed to be correlated: `x0_corr` is the uncentered correlation between
  two examples' inputs (0 for zero-mean i.i.d. inputs), `dy_out_corr` that of their output gradients
  (0 for independent random projections and, near init, for cross-entropy; 1 for one shared projection).
  Zero-mean weights keep these correlations and activations map them by their arc-cosine kernels, which
  gives the minibatch-mean gradient moment E[dW^2] = rho_out E[x^2] E[dy^2] (1/B + (1 - 1/B) r_x r_dy)
  and the average-pooling forward rule E[y^2] = E[x^2] (1 + (k-1) r) / k. The paper's pooling rule
  (E[x^2] / k) is the r = 0 case; after a ReLU r >= 1/pi (non-zero mean), so measured pooling outputs
  are larger than the paper's rule and pooling does not keep nu exactly (it multiplies it by
  1 + (k-1) r). Spatial correlation of *gradients* made by pooling is not tracked: `exact` is False
  for weight layers below an AvgPool.
  """
  n_in, spatial = _check_input(n_in, spatial)
  _check_layers(layers, n_in, spatial)
  if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
    raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
  for name, v in (("x0_sq", x0_sq), ("dy_out_sq", dy_out_sq)):
    if not (v >= 0 and math.isfinite(v)):
      raise ValueError(f"{name} must be finite and >= 0, got {v!r}")
  for name, v in (("x0_corr", x0_corr), ("dy_out_corr", dy_out_corr)):
    if not -1 <= v <= 1:
      raise ValueError(f"{name} must be in [-1, 1], got {v!r}")
  recs, notes = [], []
  sig = dict(n=n_in, spatial=spatial, sq=float(x0_sq), r=float(x0_corr), sym=bool(x0_symmetric))
  out, tape = _fwd(tuple(layers), sig, "", recs, notes)
  g = dict(sq=float(dy_out_sq), r=float(dy_out_corr), pooled=False)
  g_in = _bwd(tape, g, recs)
  B = batch_size
  info = tuple(r["info"] for r in recs)
  f = lambda key: np.array([r[key] for r in recs], dtype=np.float64)
  x_sq, y_sq, dx_sq, dy_sq, w_sq = f("x_sq"), f("y_sq"), f("dx_sq"), f("dy_sq"), f("w_sq")
  rho_in = np.array([i.rho_in for i in info], np.float64)
  rho_out = np.array([i.rho_out for i in info], np.float64)
  n_l = np.array([i.n_in for i in info], np.float64)
  k = np.array([i.k for i in info], np.float64)
  with np.errstate(divide="ignore", invalid="ignore"):
    dW_ex = rho_out * f("k_eff") / k * x_sq * dy_sq
    dW_batch = dW_ex * (1 / B + (1 - 1 / B) * f("r_x") * f("r_dy"))
    moments = Moments(x_sq=x_sq, y_sq=y_sq, dx_sq=dx_sq, dy_sq=dy_sq, nu=n_l * rho_in * x_sq * dx_sq,
                      G=dW_ex / w_sq, weight_sq=w_sq)
    G_batch = dW_batch / w_sq
  if any(r["below_pool"] for r in recs):
    notes.append("weight layers below an AvgPool: the spatial gradient correlation pooling creates is not "
                 "tracked, so their E[dW^2] and G are approximate")
  return Prediction(moments=moments, layers=info, db_sq=rho_out * dy_sq, bias_balance=k * n_l * x_sq ** 2,
                    dW_sq_batch=dW_batch, G_batch=G_batch, out_sq=out["sq"], in_dx_sq=g_in["sq"],
                    exact=not notes, notes=tuple(dict.fromkeys(notes)))


def _fwd(layers, sig, path, recs, notes):
  tape = []
  for i, layer in enumerate(layers):
    s = dict(sig)
    rho = math.prod(s["spatial"])
    if isinstance(layer, WEIGHT_LAYERS):
      shape = kernel_shape(layer, s["n"], len(s["spatial"]))
      fan = initializers.fans(shape)
      init = initializers.get(layer.init)
      w_sq = float(layer.weight_sq) if layer.weight_sq is not None else float(init.second_moment(shape))
      w_var = float(layer.weight_sq) if layer.weight_sq is not None else float(init.variance(shape))
      if layer.weight_sq is None and init.mean(shape) != 0:
        notes.append(f"layer {path}{i}: initializer {init.name} has a non-zero mean; the rules assume zero-mean "
                     "weights")
      out_spatial = s["spatial"]
      if isinstance(layer, Conv) and layer.stride == "kernel":
        out_spatial = tuple(a // b for a, b in zip(s["spatial"], shape[:-2]))
      info = LayerInfo(path=f"{path}{i}", kind="conv" if isinstance(layer, Conv) else "linear", shape=shape,
                       k=fan.k, n_in=fan.n_in, n_out=fan.n_out, rho_in=rho, rho_out=math.prod(out_spatial),
                       fan_in=fan.fan_in, fan_out=fan.fan_out, weight_var=w_var, weight_sq=w_sq,
                       init="weight_sq" if layer.weight_sq is not None else init.name)
      k_eff = fan.k * (_same_tap_fraction(s["spatial"], shape[:-2])
                       if isinstance(layer, Conv) and layer.stride == "same" else 1.0)
      rec = dict(info=info, x_sq=s["sq"], r_x=s["r"], w_sq=w_sq, k_eff=k_eff, y_sq=k_eff * fan.n_in * w_sq * s["sq"])
      recs.append(rec)
      sig = dict(n=fan.n_out, spatial=out_spatial, sq=rec["y_sq"], r=s["r"], sym=True)
      tape.append((layer, s, sig, rec))
    elif isinstance(layer, Act):
      if layer.kind == "tanh":
        notes.append(f"layer {path}{i}: tanh is not positively homogeneous; predicted with its linear regime "
                     "(gain 1), which only holds while E[y^2] << 1 (see check_calculus)")
        gf = 1.0
      else:
        gf = HOMOGENEOUS_GAINS[layer.kind][0]
      if not s["sym"] and layer.kind != "identity" and layer.kind != "linear":
        notes.append(f"layer {path}{i}: {layer.kind} applied to a non-symmetric input (e.g. a residual sum of "
                     "ReLU outputs); the gain 1/2 assumes a symmetric pre-activation")
      r_out, _ = _act_corr(layer.kind, s["r"])
      sig = dict(s, sq=gf * s["sq"], r=r_out, sym=layer.kind in ("identity", "linear", "tanh") and s["sym"])
      tape.append((layer, s, sig, None))
    elif isinstance(layer, Scale):
      sig = dict(s, sq=layer.a ** 2 * s["sq"])
      tape.append((layer, s, sig, None))
    elif isinstance(layer, Dropout):
      m = layer.keep * (1 / layer.keep ** 2 if layer.rescale else 1.0)
      sig = dict(s, sq=m * s["sq"], r=layer.keep * s["r"])
      tape.append((layer, s, sig, None))
    elif isinstance(layer, AvgPool):
      window = _tuple(layer.window, "window")
      k, r = math.prod(window), s["r"]
      gain = (1 + (k - 1) * r) / k
      sig = dict(s, spatial=tuple(a // b for a, b in zip(s["spatial"], window)), sq=gain * s["sq"],
                 r=r / gain if gain > 0 else r)
      tape.append((layer, s, sig, None))
    elif isinstance(layer, Flatten):
      sig = dict(s, n=s["n"] * rho, spatial=())
      tape.append((layer, s, sig, None))
    elif isinstance(layer, Residual):
      f_out, sub = _fwd(layer.branch, dict(s), f"{path}{i}.branch.", recs, notes)
      a2 = layer.a ** 2
      sq = s["sq"] + a2 * f_out["sq"]
      r = (s["sq"] * s["r"] + a2 * f_out["sq"] * f_out["r"]) / sq if sq > 0 else s["r"]
      sig = dict(s, sq=sq, r=r, sym=s["sym"] and f_out["sym"])
      tape.append((layer, s, sig, sub))
  return sig, tape


def _same_tap_fraction(spatial, kernel) -> float:
  """Fraction of (output position, tap) pairs that fall inside the input under SAME padding.

  The paper's conv rules count k taps at every position; at the border SAME padding feeds zeros, so the
  measured E[y^2] of a 2x2 conv on a 4x4 grid is 49/64 of the k-tap rule. With k_eff = k * this
  fraction: E[y^2] = k_eff n E[W^2] E[x^2], E[dx^2] = k_eff n' E[W^2] E[dy^2],
  E[dW^2] = rho (k_eff / k) E[x^2] E[dy^2]; nu is still kept and G = nu / (k n n' E[W^2]^2) still holds.
  """
  frac = 1.0
  for size, taps in zip(spatial, kernel):
    low = (taps - 1) // 2  # XLA's SAME convention: the extra padding goes after
    inside = sum(min(size, size + low - t) - max(0, low - t) for t in range(taps))
    frac *= inside / (size * taps)
  return frac


def _bwd(tape, g, recs):
  for layer, s_in, s_out, extra in reversed(tape):
    if isinstance(layer, WEIGHT_LAYERS):
      rec, info = extra, extra["info"]
      rec.update(dy_sq=g["sq"], r_dy=g["r"], below_pool=g["pooled"])
      dx = rec["k_eff"] * info.n_out * (info.rho_out / info.rho_in) * rec["w_sq"] * g["sq"]
      rec["dx_sq"] = dx
      g = dict(g, sq=dx)
    elif isinstance(layer, Act):
      gb = 1.0 if layer.kind == "tanh" else HOMOGENEOUS_GAINS[layer.kind][1]
      _, rb = _act_corr(layer.kind, s_in["r"])
      g = dict(g, sq=gb * g["sq"], r=rb * g["r"])
    elif isinstance(layer, Scale):
      g = dict(g, sq=layer.a ** 2 * g["sq"])
    elif isinstance(layer, Dropout):
      m = layer.keep * (1 / layer.keep ** 2 if layer.rescale else 1.0)
      g = dict(g, sq=m * g["sq"], r=layer.keep * g["r"])
    elif isinstance(layer, AvgPool):
      k = math.prod(_tuple(layer.window, "window"))
      g = dict(g, sq=g["sq"] / k ** 2, pooled=True)
    elif isinstance(layer, Flatten):
      pass
    elif isinstance(layer, Residual):
      a2 = layer.a ** 2
      gb = _bwd(extra, dict(g, sq=a2 * g["sq"]), recs)
      sq = g["sq"] + gb["sq"]
      r = (g["sq"] * g["r"] + gb["sq"] * gb["r"]) / sq if sq > 0 else g["r"]
      g = dict(g, sq=sq, r=r, pooled=g["pooled"] or gb["pooled"])
  return g


# ---------------------------------------------------------------------------------------------------
# Running a layer list: parameters, forward pass, and the measured side.

_CONV_DIMS = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC"), 3: ("NDHWC", "DHWIO", "NDHWC")}


def init_layers(key: jax.Array, layers, n_in: int, spatial=(), dtype=jnp.float32) -> tuple:
  """Parameters for a layer list: `mlp.Dense(w, b)` per weight layer (b = 0), a tuple per Residual,
  () for parameter-free layers. Conv kernels are (*kernel, n_in, n_out) as in flax."""
  n_in, spatial = _check_input(n_in, spatial)
  _check_layers(layers, n_in, spatial)
  return _init(key, tuple(layers), n_in, spatial, dtype)


def _init(key, layers, n, spatial, dtype):
  params = []
  for layer, k in zip(layers, jax.random.split(key, len(layers))):
    if isinstance(layer, WEIGHT_LAYERS):
      shape = kernel_shape(layer, n, len(spatial))
      w = initializers.get(layer.init)(k, shape, dtype)
      if layer.weight_sq is not None:  # a fixed E[W^2]: a normal draw of that second moment
        w = jnp.sqrt(jnp.asarray(layer.weight_sq, dtype)) * jax.random.normal(k, shape, dtype)
      params.append(mlp.Dense(w, jnp.zeros((layer.n_out,), dtype)))
      if isinstance(layer, Conv) and layer.stride == "kernel":
        spatial = tuple(a // b for a, b in zip(spatial, shape[:-2]))
      n = layer.n_out
    elif isinstance(layer, Residual):
      params.append(_init(k, tuple(layer.branch), n, spatial, dtype))
    else:
      params.append(())
      if isinstance(layer, AvgPool):
        spatial = tuple(a // b for a, b in zip(spatial, _tuple(layer.window, "window")))
      elif isinstance(layer, Flatten):
        n, spatial = n * math.prod(spatial), ()
  return tuple(params)


def _weight_op(layer, w, x):
  if isinstance(layer, Linear):
    return x @ w
  d = x.ndim - 2
  kernel = w.shape[:-2]
  strides, padding = (kernel, "VALID") if layer.stride == "kernel" else ((1,) * d, "SAME")
  return jax.lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=_CONV_DIMS[d])


def _avg_pool(x, window):
  window = _tuple(window, "window")
  dims = (1,) + window + (1,)
  return jax.lax.reduce_window(x, 0.0, jax.lax.add, dims, dims, "VALID") / math.prod(window)


class _Tape:
  """Collects weight-layer inputs/outputs and activation inputs during one forward pass."""

  def __init__(self, eps_x=None, eps_y=None):
    self.eps_x, self.eps_y = eps_x, eps_y
    self.xs, self.ys, self.acts, self.last_weight = [], [], [], None
    self.key_count = 0


def _run(params, layers, x, key, tape: _Tape):
  for p, layer in zip(params, layers):
    if isinstance(layer, WEIGHT_LAYERS):
      l = len(tape.xs)
      if tape.eps_x is not None:
        x = x + tape.eps_x[l]
      tape.xs.append(x)
      y = _weight_op(layer, p.w, x) + p.b
      if tape.eps_y is not None:
        y = y + tape.eps_y[l]
      tape.ys.append(y)
      x = y
      tape.last_weight = l
      continue
    if isinstance(layer, Act):
      tape.acts.append((tape.last_weight, layer.kind, x))
      x = mlp.get_activation(layer.kind)(x)
    elif isinstance(layer, Scale):
      x = layer.a * x
    elif isinstance(layer, Dropout):
      if key is None:
        raise ValueError("a Dropout layer needs a key")
      tape.key_count += 1
      mask = jax.random.bernoulli(jax.random.fold_in(key, tape.key_count), layer.keep, x.shape)
      x = jnp.where(mask, x / layer.keep if layer.rescale else x, 0.0)
    elif isinstance(layer, AvgPool):
      x = _avg_pool(x, layer.window)
    elif isinstance(layer, Flatten):
      x = x.reshape(x.shape[0], -1)
    elif isinstance(layer, Residual):
      f = _run(p, tuple(layer.branch), x, key, tape)
      x = x + layer.a * f
    tape.last_weight = None
  return x


def apply_layers(params, layers, x: jax.Array, key: jax.Array | None = None) -> jax.Array:
  """Forward pass of a layer list on x: (batch, *spatial, n_in). `key` is needed only for Dropout."""
  return _run(params, tuple(layers), x, key, _Tape())


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


def _pair_corr(x_B):
  """Mean over example pairs b != b' of E[x_b x_b'] / E[x^2] (per-entry, uncentered)."""
  B = x_B.shape[0]
  f = x_B.reshape(B, -1)
  s = jnp.sum(f, axis=0)
  total = jnp.sum(s * s) - jnp.sum(f * f)
  return jnp.where(B > 1, total / jnp.maximum(B * (B - 1), 1) / jnp.maximum(jnp.mean(f * f) * f.shape[1], 1e-30),
                   0.0)


def measure(params, layers, x: jax.Array, key: jax.Array | None = None, *, loss_fn: Callable | None = None,
            projection: str = "independent", dy_out_sq: float = 1.0) -> Measurement:
  """Measured moments from one forward/backward pass (`jax.vjp`) on the batch x: (B, *spatial, n_in).

  The loss is `loss_fn(out) -> (B,)` per-example losses when given, else a random projection
  sum_b <v_b, out_b> with v ~ N(0, dy_out_sq): independent per example (`projection="independent"`)
  or one v shared by the batch (`"shared"`). Per-example gradients are what the paper's batch-1 calculus
  describes; the minibatch-mean gradient (of the mean loss) adds cross-example terms E[x_b x_b'] E[dy_b dy_b']
  that the ReLU's non-zero mean makes positive for every layer but the first. `key` draws the projection
  and the dropout masks. Jit-able with `layers`, `loss_fn` and `projection` static.
  """
  layers = tuple(layers)
  if projection not in ("independent", "shared"):
    raise ValueError(f"projection must be 'independent' or 'shared', got {projection!r}")
  if key is None:
    if loss_fn is None or any(isinstance(l, Dropout) for l in _flat_layers(layers)):
      raise ValueError("measure needs a key for the random projection and for dropout masks")
    key = jax.random.PRNGKey(0)
  return _measure(params, layers, x, key, loss_fn, projection, dy_out_sq)


@functools.partial(jax.jit, static_argnums=(1, 4, 5))
def _measure(params, layers, x, key, loss_fn, projection, dy_out_sq) -> Measurement:
  k_proj, k_drop = jax.random.split(key)
  B = x.shape[0]
  probe = _Tape()
  out = _run(params, layers, x, k_drop, probe)
  eps_x = [jnp.zeros_like(v) for v in probe.xs]
  eps_y = [jnp.zeros_like(v) for v in probe.ys]

  def f(ex, ey):
    return _run(params, layers, x, k_drop, _Tape(ex, ey))

  if loss_fn is None:
    v_shape = out.shape if projection == "independent" else (1,) + out.shape[1:]
    v = jnp.sqrt(jnp.asarray(dy_out_sq, out.dtype)) * jax.random.normal(k_proj, v_shape, out.dtype)
    _, vjp_fn = jax.vjp(f, eps_x, eps_y)
    dxs, dys = vjp_fn(jnp.broadcast_to(v, out.shape))
  else:
    dxs, dys = jax.grad(lambda ex, ey: jnp.sum(loss_fn(f(ex, ey))), argnums=(0, 1))(eps_x, eps_y)

  wl = [l for l in _flat_layers(layers) if isinstance(l, WEIGHT_LAYERS)]
  ms = lambda a: jnp.mean(jnp.square(a))
  x_sq = jnp.stack([ms(v) for v in probe.xs])
  y_sq = jnp.stack([ms(v) for v in probe.ys])
  dx_sq = jnp.stack([ms(v) for v in dxs])
  dy_sq = jnp.stack([ms(v) for v in dys])
  weights = [p.w for p in _flat_params(params, layers)]
  w_sq = jnp.stack([ms(w) for w in weights])
  n_rho = jnp.asarray([math.prod(v.shape[1:]) for v in probe.xs], x_sq.dtype)
  dW_ex, dW_b, db_ex, db_b = [], [], [], []
  for layer, w, xl, dyl in zip(wl, weights, probe.xs, dys):
    if isinstance(layer, Linear) and xl.ndim == 2:  # dW_b = x_b dy_b^T: its mean square factorises
      dW_ex.append(jnp.mean(jnp.mean(xl * xl, 1) * jnp.mean(dyl * dyl, 1)))
    else:
      g_b = jax.vmap(lambda xb, db: jax.vjp(lambda w_: _weight_op(layer, w_, xb[None]), w)[1](db[None])[0])(xl, dyl)
      dW_ex.append(ms(g_b))
    dW_b.append(ms(jax.vjp(lambda w_: _weight_op(layer, w_, xl), w)[1](dyl / B)[0]))
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
                     out_sq=ms(out), out_std=jnp.std(out), x0_corr=_pair_corr(x), batch_size=B)


def _flat_layers(layers):
  for layer in layers:
    if isinstance(layer, Residual):
      yield from _flat_layers(tuple(layer.branch))
    else:
      yield layer


def _flat_params(params, layers):
  for p, layer in zip(params, layers):
    if isinstance(layer, Residual):
      yield from _flat_params(p, tuple(layer.branch))
    elif isinstance(layer, WEIGHT_LAYERS):
      yield p


def mlp_as_layers(params: mlp.Params, activation: str = "relu") -> tuple:
  """(layers, params) for `measure` from a `jscale.mlp` parameter tuple (weights and biases as they are)."""
  widths = mlp.widths_of(params)
  layers = mlp_layers(widths, [_PLACEHOLDER] * (len(widths) - 1), activation)
  it = iter(params)
  return layers, tuple(next(it) if isinstance(l, Linear) else () for l in layers)


def measure_mlp(params: mlp.Params, x: jax.Array, key: jax.Array | None = None, activation: str = "relu",
                **kwargs) -> Measurement:
  """`measure` for a `jscale.mlp` network (x: (B, n_0)); kwargs as in `measure`."""
  layers, lparams = mlp_as_layers(params, activation)
  return measure(lparams, layers, x, key, **kwargs)


# ---------------------------------------------------------------------------------------------------
# Design helpers.


def geometric_weight_sq(widths: Sequence[int], c: float = 2.0, kernel_taps: Sequence[int] | None = None) -> np.ndarray:
  """E[W_l^2] = c / sqrt(k_l n_l n_{l+1}) per layer: the geometric init, G_l = nu / c^2 for every l."""
  widths = mlp.check_widths(widths)
  if not (c > 0 and math.isfinite(c)):
    raise ValueError(f"c must be finite and > 0, got {c!r}")
  k = np.ones(len(widths) - 1) if kernel_taps is None else np.asarray(kernel_taps, np.float64)
  if k.shape != (len(widths) - 1,) or np.any(k < 1):
    raise ValueError(f"kernel_taps needs {len(widths) - 1} entries >= 1, got {kernel_taps!r}")
  n = np.asarray(widths, np.float64)
  return c / np.sqrt(k * n[:-1] * n[1:])


def geometric_output_sq(widths: Sequence[int], c: float = 2.0, x0_sq: float = 1.0) -> float:
  """Telescoping output moment of a geometric-init ReLU MLP: c^L / 2^(L-1) sqrt(n_0 / n_L) E[x_0^2]."""
  widths = mlp.check_widths(widths)
  L = len(widths) - 1
  return c ** L / 2 ** (L - 1) * math.sqrt(widths[0] / widths[-1]) * x0_sq


def output_multiplier(out: jax.Array, target_std: float = 0.05) -> jax.Array:
  """The fixed scalar that brings the outputs measured on one batch to std `target_std` (paper App. H)."""
  if not target_std > 0:
    raise ValueError(f"target_std must be > 0, got {target_std!r}")
  return target_std / jnp.std(out)


def bias_balance_input_scale(x0_sq, n_0: int, k: int = 1):
  """Multiplier s on the inputs so that E[(s x_0)^2] = 1 / sqrt(k n_0): first-layer weights and biases
  (a weight on a constant-1 input) then have equal scale."""
  if n_0 <= 0 or k <= 0:
    raise ValueError(f"n_0 and k must be positive, got n_0={n_0!r}, k={k!r}")
  return jnp.sqrt(1.0 / math.sqrt(k * n_0) / jnp.asarray(x0_sq))


class Preconditioning(NamedTuple):
  ratio: np.ndarray   # G_l / median_l G_l
  verdicts: tuple     # per layer: "balanced" (within 2x), "mild" (10x), "poor" (100x), "severe"
  score: float        # max_l |log10(G_l / median G)|: 0 for a perfectly preconditioned network


def preconditioning(G) -> Preconditioning:
  """How far each layer's G_l is from the network's median: the paper's preconditioning criterion."""
  G = np.asarray(G, np.float64)
  if G.ndim != 1 or G.size == 0:
    raise ValueError(f"G must be a non-empty 1-d array, got shape {G.shape}")
  if np.any(~np.isfinite(G)) or np.any(G <= 0):
    return Preconditioning(np.full(G.shape, np.nan), ("undefined",) * G.size, float("inf"))
  ratio = G / np.median(G)
  dev = np.abs(np.log10(ratio))
  verdicts = tuple("balanced" if d <= math.log10(2) else "mild" if d <= 1 else "poor" if d <= 2 else "severe"
                   for d in dev)
  return Preconditioning(ratio, verdicts, float(dev.max()))


class CalculusCheck(NamedTuple):
  ok: bool
  nu_spread: float  # max nu / min nu over the weight layers (1 when nu is kept)
  reason: str


def check_calculus(nu, tol: float = 0.5) -> CalculusCheck:
  """Flags a network whose measured nu_l is not the same across layers (tanh saturating, max-pool, ...):
  there the calculus does not apply. `tol` is the allowed relative spread of nu (set it from the
  Monte-Carlo error of the measurement; the default 50% is far above the error at width >= 64)."""
  nu = np.asarray(nu, np.float64)
  if nu.size == 0 or np.any(~np.isfinite(nu)) or np.any(nu <= 0):
    return CalculusCheck(False, float("nan"), "nu is zero or not finite: no signal propagates")
  spread = float(nu.max() / nu.min())
  if spread > 1 + tol:
    return CalculusCheck(False, spread, f"nu varies {spread:.3g}x across layers: outside the calculus "
                         "(a non-homogeneous activation out of its linear regime, or another nu-breaking layer)")
  return CalculusCheck(True, spread, "nu is kept across layers")


def _num(v):
  v = float(v)
  return v if math.isfinite(v) else None


def report(widths: Sequence[int], init: Any, x: jax.Array, key: jax.Array, *, activation: str = "relu",
           weight_scale: float = 1.0, target_std: float = 0.05, c: float = 2.0) -> dict:
  """Predicted vs measured calculus of one MLP on the batch x (already feature-scaled), as a plain dict.

  The first layer's weights are divided by `weight_scale` (the question seed's weight_scale_factor).
  This is what `scripts/calculus.py` prints; every number is JSON-ready (nan -> None).
  """
  widths = mlp.check_widths(widths)
  if x.ndim != 2 or x.shape[1] != widths[0]:
    raise ValueError(f"x must have shape (batch, {widths[0]}), got {x.shape}")
  if not (weight_scale > 0 and math.isfinite(weight_scale)):
    raise ValueError(f"weight_scale must be finite and > 0, got {weight_scale!r}")
  L = len(widths) - 1
  base = initializers.get(init)
  inits = [initializers.scaled(base, 1.0 / weight_scale) if weight_scale != 1 else base] + [base] * (L - 1)
  layers = mlp_layers(widths, inits, activation)
  k_init, k_meas = jax.random.split(key)
  params = init_layers(k_init, layers, widths[0])
  # Placeholder inits in the static layer list: one compilation serves every initializer.
  run_layers = mlp_layers(widths, [_PLACEHOLDER] * L, activation)
  meas = measure(params, run_layers, x, k_meas)
  x0_sq = float(jnp.mean(jnp.square(x)))
  x0_corr = float(meas.x0_corr)
  pred = predict(layers, widths[0], x0_sq=x0_sq, batch_size=x.shape[0], x0_corr=x0_corr)
  geo_w = geometric_weight_sq(widths, c)
  geo_G = float(predict_dense(widths, geo_w, x0_sq, activation=activation).G[0]) if activation != "tanh" else None
  pc_pred, pc_meas = preconditioning(pred.moments.G), preconditioning(meas.moments.G)
  check = check_calculus(meas.moments.nu)
  pm, mm = pred.moments, meas.moments
  rows = []
  for l, info in enumerate(pred.layers):
    rows.append(dict(
        layer=l + 1, fan_in=info.fan_in, fan_out=info.fan_out, init=inits[l].name,
        weight_var=info.weight_var, weight_sq_meas=_num(mm.weight_sq[l]),
        x_sq_pred=_num(pm.x_sq[l]), x_sq_meas=_num(mm.x_sq[l]),
        dx_sq_pred=_num(pm.dx_sq[l]), dx_sq_meas=_num(mm.dx_sq[l]),
        nu_pred=_num(pm.nu[l]), nu_meas=_num(mm.nu[l]),
        G_pred=_num(pm.G[l]), G_meas=_num(mm.G[l]),
        G_batch_pred=_num(pred.G_batch[l]), G_batch_meas=_num(meas.G_batch[l]),
        G_over_median=_num(pc_meas.ratio[l]), verdict=pc_meas.verdicts[l],
        saturation=_num(meas.saturation[l]), dead=_num(meas.dead[l]),
        bias_balance_pred=_num(pred.bias_balance[l])))
  out_mult = float(target_std / meas.out_std)
  return dict(
      widths=list(widths), init=base.name, activation=activation, weight_scale=weight_scale,
      batch_size=int(x.shape[0]), x0_sq=x0_sq, x0_corr=x0_corr,
      layers=rows,
      output=dict(out_sq_pred=_num(pred.out_sq), out_sq_meas=_num(meas.out_sq), out_std_meas=_num(meas.out_std)),
      preconditioning=dict(score_pred=_num(pc_pred.score), score_meas=_num(pc_meas.score),
                           G1_over_rest_meas=_num(mm.G[0] / np.median(np.asarray(mm.G[1:]))) if L > 1 else None),
      calculus_check=dict(ok=check.ok, nu_spread=_num(check.nu_spread), reason=check.reason),
      recommendations=dict(
          output_multiplier=_num(out_mult), target_logit_std=target_std,
          input_scale_for_bias_balance=_num(bias_balance_input_scale(x0_sq, widths[0])),
          x0_sq_for_bias_balance=1.0 / math.sqrt(widths[0]),
          geometric_c=c, geometric_weight_sq=[float(v) for v in geo_w],
          geometric_G_pred=geo_G),
      notes=list(pred.notes))

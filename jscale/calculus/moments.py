"""Second moments and their one propagation through a dense stack (docs/calculus.md).

The elementary rules (rho = 1 positions per example unless a caller says otherwise):
  weight layer  E[y^2] = k n_in E[W^2] E[x^2],          E[Delta x^2] = k n_out (rho_out / rho_in) E[W^2] E[Delta y^2]
  activation    E[act(y)^2] = g_f E[y^2],               E[Delta y^2] = g_b E[Delta x^2]
`weight_forward_sq` / `weight_backward_sq` and `gains` are those rules; `predict_dense` and
`dense_moments` chain them through a bias-free MLP, and the layer rules of `layers.py` use the same ones.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jscale import initializers, mlp


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
LEAKY_SLOPE = 0.01
HOMOGENEOUS_GAINS = {
    "relu": (0.5, 0.5),
    "leaky_relu": ((1 + LEAKY_SLOPE ** 2) / 2, (1 + LEAKY_SLOPE ** 2) / 2),
    "identity": (1.0, 1.0),
    "linear": (1.0, 1.0),
}
# Every activation a layer list may hold; tanh only in its linear regime (see `gains`).
ACT_KINDS = tuple(HOMOGENEOUS_GAINS) + ("tanh",)
# E[act(y)]^2 / E[y^2] for y ~ N(0, q): the squared mean the std leaves out (0 for odd activations).
_MEAN_SQ_GAIN = {"relu": 1.0 / (2.0 * np.pi), "leaky_relu": (1 - LEAKY_SLOPE) ** 2 / (2.0 * np.pi)}


def check_activation(activation) -> str:
  """`activation` if the calculus's rules hold for it (a positively homogeneous one), else ValueError."""
  if activation == "tanh":
    raise ValueError("activation 'tanh' is not positively homogeneous, so the calculus's propagation rules "
                     "do not hold for it (it does not keep nu outside its linear regime); measure it with "
                     "`measure_mlp` and see `check_calculus`")
  if not isinstance(activation, str) or activation not in HOMOGENEOUS_GAINS:
    raise ValueError(f"unknown activation {activation!r}; the calculus covers {', '.join(HOMOGENEOUS_GAINS)}")
  return activation


def gains(kind: str) -> tuple[float, float]:
  """(forward, backward) gain of an activation in ACT_KINDS; tanh gets its linear regime (1, 1)."""
  return (1.0, 1.0) if kind == "tanh" else HOMOGENEOUS_GAINS[kind]


def weight_forward_sq(x_sq, w_sq, n_in, k=1.0):
  """E[y^2] = k n_in E[W^2] E[x^2] of a zero-mean weight layer (k kernel taps)."""
  return k * n_in * w_sq * x_sq


def weight_backward_sq(dy_sq, w_sq, n_out, k=1.0, rho_ratio=1.0):
  """E[Delta x^2] = k n_out (rho_out / rho_in) E[W^2] E[Delta y^2] of a zero-mean weight layer."""
  return k * n_out * rho_ratio * w_sq * dy_sq


def _propagate(widths, weight_sq, x0_sq, dy_out_sq, activation, xp) -> Moments:
  """The one dense-stack propagation; xp = jnp (traceable) or np (float64)."""
  widths = mlp.check_widths(widths)
  gf, gb = HOMOGENEOUS_GAINS[check_activation(activation)]
  n_layers = len(widths) - 1
  weight_sq = xp.asarray(weight_sq, dtype=xp.result_type(float))
  if weight_sq.shape != (n_layers,):
    raise ValueError(f"weight_sq needs one entry per weight layer ({n_layers} for widths {widths}), "
                     f"got shape {weight_sq.shape}")
  x_sq, y_sq = [], []
  x = xp.asarray(x0_sq, weight_sq.dtype)
  for l in range(n_layers):
    x_sq.append(x)
    y_sq.append(weight_forward_sq(x, weight_sq[l], widths[l]))
    x = gf * y_sq[-1]
  dx_sq, dy_sq = [None] * n_layers, [None] * n_layers
  dy = xp.asarray(dy_out_sq, weight_sq.dtype)
  for l in reversed(range(n_layers)):
    dy_sq[l] = dy
    dx_sq[l] = weight_backward_sq(dy, weight_sq[l], widths[l + 1])
    dy = gb * dx_sq[l]
  x_sq, y_sq, dx_sq, dy_sq = (xp.stack(v) for v in (x_sq, y_sq, dx_sq, dy_sq))
  n_in = xp.asarray(widths[:-1], weight_sq.dtype)
  with np.errstate(divide="ignore", invalid="ignore"):
    G = x_sq * dy_sq / weight_sq
  return Moments(x_sq=x_sq, y_sq=y_sq, dx_sq=dx_sq, dy_sq=dy_sq, nu=n_in * x_sq * dx_sq, G=G, weight_sq=weight_sq)


def predict_dense(widths: Sequence[int], weight_sq, x0_sq=1.0, dy_out_sq=1.0,
                  activation: str = "relu") -> Moments:
  """Predicted moments of a bias-free dense MLP, from the propagation rules (no sampling).

  widths = (n_0, ..., n_L); `weight_sq` has L entries E[W_l^2]; `x0_sq` = E[x_0^2] of the input;
  `dy_out_sq` = E[Delta y_{L-1}^2] of the gradient at the logits (1 for a unit random projection).
  The activation sits between layers, the last layer is linear. Rules (docs/calculus.md, rho = k = 1):
    E[y_l^2] = n_l E[W_l^2] E[x_l^2],  E[Delta x_l^2] = n_{l+1} E[W_l^2] E[Delta y_l^2],
    E[x_{l+1}^2] = g E[y_l^2],  E[Delta y_l^2] = g E[Delta x_{l+1}^2]  (g = 1/2 for relu),
    G_l = E[x_l^2] E[Delta y_l^2] / E[W_l^2].
  `weight_sq`, `x0_sq` and `dy_out_sq` may be traced (jit / vmap over them); widths and activation are static.
  A zero E[W_l^2] gives G_l = inf (or nan): the calculus has nothing to say about a zero layer.
  """
  return _propagate(widths, weight_sq, x0_sq, dy_out_sq, activation, jnp)


def dense_moments(widths: Sequence[int], weight_sq, x0_sq=1.0, dy_out_sq=1.0,
                  activation: str = "relu") -> Moments:
  """`predict_dense` in numpy float64 (not traceable): the same propagation, for analytic callers."""
  return _propagate(widths, weight_sq, x0_sq, dy_out_sq, activation, np)


def per_layer(init, n_layers: int, what: str = "init") -> list:
  """One initializer spec per weight layer: `init` repeated, or a list / tuple of n_layers of them."""
  inits = list(init) if isinstance(init, (list, tuple)) else [init] * n_layers
  if len(inits) != n_layers:
    raise ValueError(f"{what}: got {len(inits)} entries for {n_layers} weight layers")
  return inits


def init_weight_sq(widths: Sequence[int], init, what: str = "init") -> np.ndarray:
  """E[W_l^2] of each dense layer (n_l, n_{l+1}) as designed by `init` (a spec, an Initializer, or one
  per layer), float64 of shape (L,)."""
  widths = mlp.check_widths(widths)
  inits = per_layer(init, len(widths) - 1, what)
  return np.array([float(initializers.get(s).second_moment((widths[l], widths[l + 1])))
                   for l, s in enumerate(inits)], np.float64)


def activation_std(widths: Sequence[int], weight_sq, x0_sq=1.0, activation: str = "relu") -> np.ndarray:
  """Predicted std of act(y_l) per weight layer l (the activation after every layer, zero-mean Gaussian
  pre-activations): sqrt(E[y_l^2] (g_f - E[act]^2 / E[y^2])), e.g. relu sqrt(E[y^2] (1/2 - 1/(2 pi))).
  tanh is predicted in its linear regime (the identity rules), which fails once units saturate."""
  kind = "identity" if activation == "tanh" else activation
  y_sq = dense_moments(widths, weight_sq, x0_sq, activation=kind).y_sq
  return np.sqrt(y_sq * (HOMOGENEOUS_GAINS[kind][0] - _MEAN_SQ_GAIN.get(kind, 0.0)))

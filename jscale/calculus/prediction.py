"""`predict`: analytic second moments, nu and G of a layer list, from the propagation rules."""
from __future__ import annotations

import math
from typing import Any, NamedTuple, Sequence

import numpy as np

from jscale import checks, mlp
from jscale.calculus.layers import Act, Linear
from jscale.calculus.moments import ACT_KINDS, Moments, per_layer
from jscale.calculus.signals import Backward, LayerSignal
from jscale.calculus.stack import backward_stack, check_input, check_stack, forward_stack


def mlp_layers(widths: Sequence[int], init: Any = "he_normal", activation: str = "relu") -> tuple:
  """The layer list of `jscale.mlp` with these widths: Linear, Act, ..., Linear (linear output)."""
  widths = mlp.check_widths(widths)
  inits = per_layer(init, len(widths) - 1)
  if activation not in ACT_KINDS:
    raise ValueError(f"unknown activation {activation!r}; valid: {', '.join(ACT_KINDS)}")
  layers = []
  for l, n in enumerate(widths[1:]):
    if l:
      layers.append(Act(activation))
    layers.append(Linear(n, inits[l]))
  return tuple(layers)


class LayerPrediction(NamedTuple):
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
            x0_symmetric: bool = True) -> LayerPrediction:
  """Predicted (analytic) second moments of a layer list, from the propagation rules (docs/calculus.md).

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
  n_in, spatial = check_input(n_in, spatial)
  check_stack(layers, n_in, spatial)
  B = checks.positive_int(batch_size, "batch_size")
  for name, v in (("x0_sq", x0_sq), ("dy_out_sq", dy_out_sq)):
    if not (v >= 0 and math.isfinite(v)):
      raise ValueError(f"{name} must be finite and >= 0, got {v!r}")
  for name, v in (("x0_corr", x0_corr), ("dy_out_corr", dy_out_corr)):
    if not -1 <= v <= 1:
      raise ValueError(f"{name} must be in [-1, 1], got {v!r}")
  fwd = forward_stack(tuple(layers), LayerSignal(n=n_in, spatial=spatial, sq=float(x0_sq), r=float(x0_corr),
                                                 sym=bool(x0_symmetric)))
  back = backward_stack(fwd.tape, Backward(sq=float(dy_out_sq), r=float(dy_out_corr), pooled=False))
  info = tuple(r.info for r in fwd.records)
  f = lambda records, field: np.array([getattr(r, field) for r in records], dtype=np.float64)  # noqa: E731
  x_sq, y_sq, w_sq = f(fwd.records, "x_sq"), f(fwd.records, "y_sq"), f(fwd.records, "w_sq")
  dx_sq, dy_sq = f(back.records, "dx_sq"), f(back.records, "dy_sq")
  rho_in = np.array([i.rho_in for i in info], np.float64)
  rho_out = np.array([i.rho_out for i in info], np.float64)
  n_l = np.array([i.n_in for i in info], np.float64)
  k = np.array([i.k for i in info], np.float64)
  with np.errstate(divide="ignore", invalid="ignore"):
    dW_ex = rho_out * f(fwd.records, "k_eff") / k * x_sq * dy_sq
    dW_batch = dW_ex * (1 / B + (1 - 1 / B) * f(fwd.records, "r_x") * f(back.records, "r_dy"))
    moments = Moments(x_sq=x_sq, y_sq=y_sq, dx_sq=dx_sq, dy_sq=dy_sq, nu=n_l * rho_in * x_sq * dx_sq,
                      G=dW_ex / w_sq, weight_sq=w_sq)
    G_batch = dW_batch / w_sq
  notes = fwd.notes
  if any(r.below_pool for r in back.records):
    notes += ("weight layers below an AvgPool: the spatial gradient correlation pooling creates is not "
              "tracked, so their E[dW^2] and G are approximate",)
  return LayerPrediction(moments=moments, layers=info, db_sq=rho_out * dy_sq, bias_balance=k * n_l * x_sq ** 2,
                         dW_sq_batch=dW_batch, G_batch=G_batch, out_sq=fwd.out.sq, in_dx_sq=back.grad.sq,
                         exact=not notes, notes=tuple(dict.fromkeys(notes)))

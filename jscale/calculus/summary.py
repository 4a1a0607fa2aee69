"""`mlp_summary`: predicted vs measured calculus of one MLP as a typed, JSON-ready record (`jscale calculus`
prints it). Field order is the JSON key order (records.py)."""
from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jscale import initializers, mlp
from jscale.calculus.design import bias_balance_input_scale, check_calculus, geometric_weight_sq, preconditioning
from jscale.calculus.measurement import measure
from jscale.calculus.moments import predict_dense
from jscale.calculus.network import PLACEHOLDER_INIT, init_layers
from jscale.calculus.prediction import mlp_layers, predict
from jscale.calculus.records import CalculusCheckRow, Record, finite_or_none as num


@dataclasses.dataclass(frozen=True)
class MlpLayerRow(Record):
  """One weight layer, l = 1..L."""
  layer: int
  fan_in: int
  fan_out: int
  init: str                 # the layer's initializer (the first one divided by weight_scale)
  weight_var: float         # designed Var(W)
  weight_sq_meas: float | None
  x_sq_pred: float | None
  x_sq_meas: float | None
  dx_sq_pred: float | None
  dx_sq_meas: float | None
  nu_pred: float | None
  nu_meas: float | None
  G_pred: float | None
  G_meas: float | None
  G_batch_pred: float | None
  G_batch_meas: float | None
  G_over_median: float | None   # measured
  verdict: str                  # preconditioning verdict, measured
  saturation: float | None      # of the activation after the layer (None for the last)
  dead: float | None
  bias_balance_pred: float | None


@dataclasses.dataclass(frozen=True)
class MlpOutput(Record):
  out_sq_pred: float | None
  out_sq_meas: float | None
  out_std_meas: float | None


@dataclasses.dataclass(frozen=True)
class MlpPreconditioning(Record):
  score_pred: float | None      # max |log10(G / median G)|
  score_meas: float | None
  G1_over_rest_meas: float | None  # G_1 / median(G_2..G_L); None for one layer


@dataclasses.dataclass(frozen=True)
class MlpRecommendations(Record):
  output_multiplier: float | None
  target_logit_std: float
  input_scale_for_bias_balance: float | None
  x0_sq_for_bias_balance: float
  geometric_c: float
  geometric_weight_sq: tuple
  geometric_G_pred: float | None   # None for tanh


@dataclasses.dataclass(frozen=True)
class MlpSummary(Record):
  widths: tuple
  init: str
  activation: str
  weight_scale: float
  batch_size: int
  x0_sq: float
  x0_corr: float
  layers: tuple                  # MlpLayerRow per weight layer
  output: MlpOutput
  preconditioning: MlpPreconditioning
  calculus_check: CalculusCheckRow
  recommendations: MlpRecommendations
  notes: tuple

  def to_json(self, indent: int | None = 1) -> str:
    return json.dumps(self.to_dict(), indent=indent)


def mlp_summary(widths: Sequence[int], init: Any, x: jax.Array, key: jax.Array, *, activation: str = "relu",
                weight_scale: float = 1.0, target_std: float = 0.05, c: float = 2.0) -> MlpSummary:
  """Predicted vs measured calculus of one MLP on the batch x (already feature-scaled).

  The first layer's weights are divided by `weight_scale` (the question seed's weight_scale_factor).
  This is what `jscale calculus` prints; every number is JSON-ready (nan -> None).
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
  run_layers = mlp_layers(widths, [PLACEHOLDER_INIT] * L, activation)
  meas = measure(params, run_layers, x, k_meas)
  x0_sq = float(jnp.mean(jnp.square(x)))
  x0_corr = float(meas.x0_corr)
  pred = predict(layers, widths[0], x0_sq=x0_sq, batch_size=x.shape[0], x0_corr=x0_corr)
  geo_w = geometric_weight_sq(widths, c)
  geo_G = float(predict_dense(widths, geo_w, x0_sq, activation=activation).G[0]) if activation != "tanh" else None
  pc_pred, pc_meas = preconditioning(pred.moments.G), preconditioning(meas.moments.G)
  pm, mm = pred.moments, meas.moments
  rows = tuple(MlpLayerRow(
      layer=l + 1, fan_in=info.fan_in, fan_out=info.fan_out, init=inits[l].name,
      weight_var=info.weight_var, weight_sq_meas=num(mm.weight_sq[l]),
      x_sq_pred=num(pm.x_sq[l]), x_sq_meas=num(mm.x_sq[l]),
      dx_sq_pred=num(pm.dx_sq[l]), dx_sq_meas=num(mm.dx_sq[l]),
      nu_pred=num(pm.nu[l]), nu_meas=num(mm.nu[l]),
      G_pred=num(pm.G[l]), G_meas=num(mm.G[l]),
      G_batch_pred=num(pred.G_batch[l]), G_batch_meas=num(meas.G_batch[l]),
      G_over_median=num(pc_meas.ratio[l]), verdict=pc_meas.verdicts[l],
      saturation=num(meas.saturation[l]), dead=num(meas.dead[l]),
      bias_balance_pred=num(pred.bias_balance[l])) for l, info in enumerate(pred.layers))
  out_mult = float(target_std / meas.out_std)
  return MlpSummary(
      widths=tuple(widths), init=base.name, activation=activation, weight_scale=weight_scale,
      batch_size=int(x.shape[0]), x0_sq=x0_sq, x0_corr=x0_corr,
      layers=rows,
      output=MlpOutput(out_sq_pred=num(pred.out_sq), out_sq_meas=num(meas.out_sq), out_std_meas=num(meas.out_std)),
      preconditioning=MlpPreconditioning(
          score_pred=num(pc_pred.score), score_meas=num(pc_meas.score),
          G1_over_rest_meas=num(mm.G[0] / np.median(np.asarray(mm.G[1:]))) if L > 1 else None),
      calculus_check=CalculusCheckRow.of(check_calculus(meas.moments.nu)),
      recommendations=MlpRecommendations(
          output_multiplier=num(out_mult), target_logit_std=target_std,
          input_scale_for_bias_balance=num(bias_balance_input_scale(x0_sq, widths[0])),
          x0_sq_for_bias_balance=1.0 / math.sqrt(widths[0]),
          geometric_c=c, geometric_weight_sq=tuple(float(v) for v in geo_w),
          geometric_G_pred=geo_G),
      notes=tuple(pred.notes))

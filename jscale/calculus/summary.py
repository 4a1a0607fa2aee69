"""`report`: predicted vs measured calculus of one MLP as a JSON-ready dict (`scripts/calculus.py` prints it)."""
from __future__ import annotations

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
  run_layers = mlp_layers(widths, [PLACEHOLDER_INIT] * L, activation)
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

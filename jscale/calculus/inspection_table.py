"""`inspect`'s table: one row per parameter leaf and one per recognised activation, the output and the
verdict's recommendations (`Inspection.table()`; `jscale calculus` prints it). `cell` is the calculus tables'
one number format (the MLP table of jscale.cli.calculus uses it too).

`render` reads fields by name (`rep["layers"]`), so it prints an `Inspection` and its JSON form
(`json.loads(res.to_json())`) alike."""
from __future__ import annotations

import math


def cell(v, width=9) -> str:
  """v right-aligned in `width` characters: '-' for None, 4 significant digits, e-notation far from 1."""
  if v is None:
    return "-".rjust(width)
  if isinstance(v, str):
    return v.rjust(width)
  if v != 0 and (abs(v) >= 1e4 or abs(v) < 1e-3):
    return f"{v:.2e}".rjust(width)
  return f"{v:.4g}".rjust(width)


LAYER_COLUMNS = [("kind", "kind", 6), ("fan_in", "fan_in", 6), ("fan_out", "fan_out", 7), ("k", "taps", 3),
                 ("E[W^2]", "weight_sq", 9), ("x2 pred", "x_sq_pred", 9), ("x2 meas", "x_sq_meas", 9),
                 ("dy2 pred", "dy_sq_pred", 9), ("dy2 meas", "dy_sq_meas", 9), ("G pred", "G_pred", 9),
                 ("G meas", "G_meas", 9), ("Gb pred", "G_batch_pred", 9), ("Gb meas", "G_batch_meas", 9),
                 ("G/med", "G_over_median", 8), ("verdict", "verdict", 8)]
ACT_COLUMNS = [("kind", "kind", 10), ("x2 pred", "x_sq_pred", 9), ("x2 meas", "x_sq_meas", 9),
               ("dx2 pred", "dx_sq_pred", 9), ("dx2 meas", "dx_sq_meas", 9), ("nu pred", "nu_pred", 9),
               ("nu meas", "nu_meas", 9)]


def render(rep: dict, title: str = "") -> str:
  width = max([len(r["path"]) for r in rep["layers"]] + [4])
  lines = [title] if title else []
  lines.append(f"batch {rep['batch_size']}  E[x0^2] {rep['x0_sq']:.4g}  loss {rep['loss']}")
  lines.append("path".ljust(width) + "  " + "  ".join(h.rjust(w) for h, _, w in LAYER_COLUMNS))
  for r in rep["layers"]:
    lines.append(r["path"].ljust(width) + "  " + "  ".join(cell(r[k], w) for _, k, w in LAYER_COLUMNS))
  if rep["activations"]:
    lines.append("activations:")
    lines.append("  #  " + "  ".join(h.rjust(w) for h, _, w in ACT_COLUMNS))
    for a in rep["activations"]:
      lines.append(f"{a['index']:>3}  " + "  ".join(cell(a[k], w) for _, k, w in ACT_COLUMNS))
  o, v = rep["output"], rep["verdict"]
  lines.append(f"output E[y^2]: pred {cell(o['out_sq_pred'], 0)}  meas {cell(o['out_sq_meas'], 0)}  "
               f"(logit std {cell(o['out_std_meas'], 0)})")
  lines.append(f"preconditioning score max|log10(G/median)| over dense/conv/scalar leaves: pred "
               f"{cell(v['preconditioning_score_pred'], 0)}  meas {cell(v['preconditioning_score_meas'], 0)}")
  chk = v["calculus_check"]
  if chk:
    lines.append(f"calculus check: {'ok' if chk['ok'] else 'OUTSIDE THE CALCULUS'} -- {chk['reason']} "
                 f"(measured nu spread {cell(chk['nu_spread'], 0)}x across activations, reported, not judged)")
  lines.append("recommendations:")
  if v["output_multiplier"] is not None:
    lines.append(f"  output multiplier {cell(v['output_multiplier'], 0)} gives logit std {v['target_logit_std']:g} "
                 "on this batch (fixed, untrained)")
  if v["input_scale_for_bias_balance"] is not None:
    lines.append(f"  input scale {cell(v['input_scale_for_bias_balance'], 0)} gives E[x0^2] = 1/sqrt(fan_in) = "
                 f"{v['x0_sq_for_bias_balance']:.4g} (first-layer weight/bias balance; now {rep['x0_sq']:.4g})")
  uneven = [f for f in v["equalising_multipliers"] if abs(math.log10(f["G_over_median"])) > math.log10(2)]
  for f in uneven:
    lines.append(f"  {f['path']}: G is {cell(f['G_over_median'], 0)}x the median; init std x "
                 f"{cell(f['init_std_multiplier'], 0)} and a fixed scalar {cell(f['fixed_scalar_after'], 0)} after "
                 "the layer make it the median (forward pass unchanged)")
  if not uneven and v["equalising_multipliers"]:
    lines.append("  G is within 2x of the median for every weight leaf: no multiplier needed")
  for why, where in v["reasons"].items():
    lines.append(f"  no prediction for {', '.join(where)}: {why}")
  for n in rep["notes"]:
    lines.append(f"  note: {n}")
  return "\n".join(lines)

"""`inspect`'s answer from the rules' pass (propagation.py) and the measured pass (inspection_measure.py): one
row per parameter leaf, one per recognised activation, the output's moments and the verdict."""
from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import numpy as np

from jscale.calculus.correlation import relu_gate_coupling
from jscale.calculus.design import CalculusCheck, bias_balance_input_scale, preconditioning
from jscale.calculus.inspection_measure import Measured
from jscale.calculus.inspection_records import (WEIGHT_KINDS, ActivationRow, EqualisingMultiplier, Inspection,
                                                LeafRow, OutputMoments, Verdict)
from jscale.calculus.propagation import Propagated
from jscale.calculus.signals import cross_position
from jscale.calculus.records import CalculusCheckRow, finite_or_none as num


class Leaves(NamedTuple):
  """The float parameter leaves, in tree order."""
  paths: tuple
  shapes: tuple
  w_sq: tuple          # E[W^2] of each as given


def assemble(prop: Propagated, meas: Measured, leaves: Leaves, *, batch_size: int, x0_sq: float,
             target_std: float, loss_name: str, cross: dict | None = None) -> Inspection:
  uses = {}
  for u in prop.uses:
    uses.setdefault(u.leaf, []).append(u)
  notes = list(dict.fromkeys(prop.notes))
  rows = []
  for n in range(len(leaves.paths)):
    row, row_notes = leaf_row(n, tuple(uses.get(n, ())), prop, meas, leaves, batch_size=batch_size, cross=cross)
    rows.append(row)
    notes += row_notes
  acts = activation_rows(prop, meas)
  first = next((u for u in prop.uses if u.in_id == prop.graph.x_id and u.kind in ("dense", "conv")), None)
  verdict, rows = judge(rows, acts, first_fan_in=first.fan_in if first else None, x0_sq=x0_sq,
                        out_std=meas.out_std, target_std=target_std)
  output = OutputMoments(out_sq_meas=num(meas.out_sq), out_std_meas=num(meas.out_std), out_sq_pred=output_pred(prop))
  return Inspection(layers=rows, activations=acts, output=output, verdict=verdict, notes=tuple(notes),
                    batch_size=batch_size, x0_sq=x0_sq, loss=loss_name)


def leaf_row(n: int, uses: tuple, prop: Propagated, meas: Measured, leaves: Leaves, *,
             batch_size: int, cross: dict | None = None) -> tuple[LeafRow, tuple]:
  """Leaf n's row (without the verdict's columns) and the notes it adds; `cross`: the minibatch cross term
  per use (pair_law.py) in place of r_x r_dy, where it has one."""
  B, w_sq, path, notes = batch_size, leaves.w_sq[n], leaves.paths[n], []
  g_ex, g_b = float(meas.ex_sq[n]), float(meas.batch_sq[n])
  cols = dict(fan_in=None, fan_out=None, taps=None, x_sq_pred=None, x_sq_meas=None, dy_sq_meas=None,
              grad_sq_pred=None, dy_sq_pred=None, G_pred=None, G_batch_pred=None)
  if uses:
    u0 = uses[0]
    cols.update(fan_in=u0.fan_in, fan_out=u0.fan_out, taps=u0.taps, dy_sq_meas=num(meas.c_sq.get(u0.out_id)))
    if u0.kind != "bias":
      cols.update(x_sq_pred=num(u0.x_sig.sq), x_sq_meas=num(meas.v_sq.get(u0.in_id)))
    if len(uses) > 1:
      notes.append(f"{path} is used by {len(uses)} operations: its predicted E[dW^2] adds theirs "
                   "(cross terms dropped)")
  why = leaf_reason(n, uses, prop)
  if uses and not why:
    if any(u.g is None for u in uses):
      why = "its output does not reach the loss"
    else:
      dW = sum(u.rho * u.x_sig.sq * u.g.sq * same_example_factor(u) * (u.example_scale or 1.0) for u in uses)
      # the cross-example correlation: the class-pair law's where given (`cross`), else the product of means
      rr = [None if cross is None else cross.get((u.leaf, u.in_id, u.out_id)) for u in uses]
      dWb = sum(u.rho * u.x_sig.sq * u.g.sq * batch_factor(u, B, c) for u, c in zip(uses, rr))
      cols.update(grad_sq_pred=num(dW), dy_sq_pred=num(uses[0].g.sq))
      if w_sq > 0:
        cols.update(G_pred=num(dW / w_sq), G_batch_pred=num(dWb / w_sq))
      else:
        why = "E[W^2] = 0 (a zero-initialised leaf): G is undefined"
      if any(u.g.pooled for u in uses):
        notes.append(f"{path}: below an average pooling with overlapping windows; the spatial gradient "
                     "correlation it creates is tracked as if the windows tiled the input, so its G is approximate")
  row = LeafRow(path=path, shape=tuple(leaves.shapes[n]), kind=uses[0].kind if uses else "other",
                op=uses[0].op if uses else None, weight_sq=num(w_sq), grad_sq_meas=num(g_ex),
                G_meas=num(g_ex / w_sq) if w_sq > 0 else None, G_batch_meas=num(g_b / w_sq) if w_sq > 0 else None,
                reason=why, **cols)
  return row, tuple(notes)


def position_factor(u) -> float:
  """With the correlations rp between positions tracked (tokens), a leaf shared by rho positions sums rho
  correlated terms: E[dW^2] = rho E[x^2] E[Delta^2] (1 + (rho - 1) rp_x rp_Delta)."""
  if u.kind not in ("dense", "bias", "other"):   # convolutions: neighbouring positions are not tracked
    return 1.0
  if u.position_factor is not None and u.kind == "dense" and u.g is not None and u.g.rp is not None:
    return u.position_factor   # a block's own (attention's projections: x_t and dK_t are dependent)
  x_rp = 1.0 if u.kind == "bias" else u.x_sig.rp  # a bias's input is the constant 1 at every position
  if x_rp is None or u.g.rp is None or u.rho <= 1:
    return 1.0
  # a smooth activation right above couples each position's gradient to its own input (elementwise.gate_coupling)
  gate = u.g.rp_gate / u.fan_in if u.kind == "dense" and u.g.rp_gate is not None and u.fan_in else 0.0
  return 1 + (u.rho - 1) * (x_rp * u.g.rp + gate)


def tokens_tracked(u) -> bool:
  """Token correlations (rp, attention blocks) and spatial ones (sp, average pools) are two accounts of the
  same position pairs: where rp is tracked it is used, elsewhere the pooling account."""
  return position_factor(u) != 1.0


def same_example_factor(u) -> float:
  """E[dW^2] / (rho E[x^2] E[Delta^2]) for one example: 1 plus its position pairs."""
  return position_factor(u) if tokens_tracked(u) else 1 + position_pairs(u)


def batch_factor(u, B: int, cross: float | None) -> float:
  """The same for a minibatch of B examples: the same-example part / B plus the cross-example pairs, whose
  correlation E[x x'] E[dy dy'] / (E[x^2] E[dy^2]) is `cross` (None: the rules' r_x r_dy).

  With tokens tracked, two examples' terms at the same position correlate by r_x r_dy and at two positions by
  rc_x rc_dy (`signals.cross_position`: a position embedding is in r_x, not in rc_x); a given `cross` (the
  class-pair law) keeps the product form."""
  if tokens_tracked(u):
    if cross is None and u.batch_cross is not None and u.x_sig.sq * u.g.sq > 0:
      return position_factor(u) / B + (1 - 1 / B) * u.batch_cross / (u.rho * u.x_sig.sq * u.g.sq)
    if cross is None:
      x_rc = 1.0 if u.kind == "bias" else cross_position(u.x_sig)
      g_rc = cross_position(u.g)
      x_r = 1.0 if u.kind == "bias" else u.x_sig.r
      return position_factor(u) / B + (1 - 1 / B) * (x_r * u.g.r + (u.rho - 1) * x_rc * g_rc)
    return position_factor(u) * (1 / B + (1 - 1 / B) * cross)
  cross = u.x_sig.r * u.g.r if cross is None else cross
  return (1 + position_pairs(u)) * (u.example_scale or 1.0) / B + (1 - 1 / B) * cross * (1 + u.g.sp)


def position_pairs(u) -> float:
  """sum over the other positions p' of one example of E[x_p x_p' dy_p dy_p'] / (E[x^2] E[dy^2]): the terms
  of a shared weight's gradient that the leading order drops. Positions share their gradient below an average
  pooling (g.sp); a ReLU gate right above the layer couples each position's gradient to its own patch
  (`relu_gate_coupling`), elsewhere the patches' correlation x.r multiplies the gradient's."""
  if u.kind in ("dense", "conv") and u.g.sp_gate is not None:
    return relu_gate_coupling(u.x_sig.r, u.fan_in) * u.g.sp_gate
  return u.x_sig.r * u.g.sp


def leaf_reason(n: int, uses: tuple, prop: Propagated) -> str | None:
  """Why leaf n has no prediction (None when it has one)."""
  if uses:
    for u in uses:
      if u.x_sig.why:
        return u.x_sig.why
      if u.g is not None and u.g.why:
        return u.g.why
    return prop.leaf_why.get(n) if n in prop.leaf_why else None
  return prop.leaf_why.get(n, "not used by any layer the calculus recognises")


def activation_rows(prop: Propagated, meas: Measured) -> tuple:
  rows = []
  for a in prop.acts:
    f_in, f_out, g_out = prop.fwd.get(a.in_id), prop.fwd.get(a.out_id), prop.bwd.get(a.out_id)
    shape = prop.graph.avals[a.out_id].shape[1:]
    size = math.prod(shape)
    x_m, dx_m = meas.v_sq.get(a.out_id), meas.c_sq.get(a.out_id)
    x_p = f_out.sq if f_out else None
    dx_p = g_out.sq if g_out else None
    rows.append(ActivationRow(
        index=len(rows), kind=a.kind, shape=tuple(shape), y_sq_pred=num(f_in.sq if f_in else None),
        y_sq_meas=num(meas.v_sq.get(a.in_id)), x_sq_pred=num(x_p), x_sq_meas=num(x_m), dx_sq_pred=num(dx_p),
        dx_sq_meas=num(dx_m),
        nu_pred=num(size * x_p * dx_p) if x_p is not None and dx_p is not None else None,
        nu_meas=num(size * x_m * dx_m) if x_m is not None and dx_m is not None else None,
        reason=(f_out.why if f_out else None) or (g_out.why if g_out else None)))
  return tuple(rows)


def output_pred(prop: Propagated) -> float | None:
  """Predicted E[out^2] over all outputs, None when any output is unknown."""
  outs = [a for a in prop.graph.out_atoms if isinstance(a, int)]
  sqs = [prop.fwd[a].sq if a in prop.fwd else None for a in outs]
  sizes = [math.prod(prop.graph.avals[a].shape) for a in outs]
  if any(s is None for s in sqs):
    return None
  return num(sum(s * n for s, n in zip(sqs, sizes)) / sum(sizes))


def judge(rows: list, acts: tuple, *, first_fan_in: int | None, x0_sq: float, out_std,
          target_std: float) -> tuple[Verdict, tuple]:
  """The verdict, and the rows with its columns (G over the median, the preconditioning verdict) filled."""
  w = [i for i, r in enumerate(rows) if r.kind in WEIGHT_KINDS and r.G_meas and r.G_meas > 0]
  G = [rows[i].G_meas for i in w]
  pc_m = preconditioning(G) if w else None
  have_pred = [i for i in w if rows[i].G_pred]
  pc_p = (preconditioning([rows[i].G_pred for i in have_pred]) if have_pred and len(have_pred) == len(w)
          else None)
  med = float(np.median(G)) if w else None
  rows, fixes = list(rows), []
  for j, i in enumerate(w):
    m = (rows[i].G_meas / med) ** 0.25
    rows[i] = dataclasses.replace(rows[i], G_over_median=num(rows[i].G_meas / med), verdict=pc_m.verdicts[j])
    fixes.append(EqualisingMultiplier(path=rows[i].path, G_over_median=num(rows[i].G_meas / med),
                                      init_std_multiplier=num(m), fixed_scalar_after=num(1 / m)))
  chk = rules_check(rows, acts)
  reasons = {}
  for r in rows:
    if r.reason:
      reasons.setdefault(r.reason, []).append(r.path)
  verdict = Verdict(
      preconditioning_score_meas=num(pc_m.score) if pc_m else None,
      preconditioning_score_pred=num(pc_p.score) if pc_p else None,
      G_median_meas=num(med) if med else None,
      equalising_multipliers=tuple(fixes),
      output_multiplier=num(target_std / out_std) if out_std > 0 else None, target_logit_std=target_std,
      input_scale_for_bias_balance=(num(bias_balance_input_scale(x0_sq, first_fan_in))
                                    if first_fan_in is not None and x0_sq > 0 else None),
      x0_sq_for_bias_balance=num(1 / math.sqrt(first_fan_in)) if first_fan_in is not None else None,
      calculus_check=CalculusCheckRow.of(chk),
      reasons={k: tuple(v) for k, v in reasons.items()})
  return verdict, tuple(rows)


# Predicted G may be this far from the measurement (either way) before the check calls the network outside the
# calculus: the leading order's own error on nets the rules cover is within 2x (README's LeNet at fan-in 4-120,
# the ResNet under the four schemes, the avg-pool LeNets of docs/calculus.md), so 4x is a failure of the rules.
G_RATIO_MAX = 4.0
# Reasons that say nothing about the rules: the leaf has no G, or no gradient, whatever the network.
_NOT_RULES = ("E[W^2] = 0", "does not reach the loss", "not used by any layer")


def rules_check(rows, acts) -> CalculusCheck:
  """Is the network inside the calculus? Every operation on the activation path has a rule (no unpredicted
  activation or leaf, zero-initialised leaves aside) and every weight leaf's predicted G is within
  G_RATIO_MAX of its measurement. nu is reported, not judged: positions, pooling and residual sums make it
  vary across layers inside the calculus (the rules predict nu_pred per activation)."""
  nus = [a.nu_meas for a in acts if a.nu_meas]
  spread = max(nus) / min(nus) if nus and min(nus) > 0 else float("nan")
  missing = {}
  for r in list(acts) + [r for r in rows if r.reason and not any(k in r.reason for k in _NOT_RULES)]:
    if r.reason:
      missing.setdefault(r.reason, []).append(getattr(r, "path", None) or f"activation {r.index}")
  if missing:
    why, where = next(iter(missing.items()))
    return CalculusCheck(False, spread, f"no rule for {', '.join(where[:3])}: {why}")
  pairs = [(r.path, r.G_pred / r.G_meas) for r in rows
           if r.kind in WEIGHT_KINDS and r.G_pred and r.G_meas and r.G_pred > 0 and r.G_meas > 0]
  if not pairs:
    return CalculusCheck(False, spread, "no weight leaf has both a predicted and a measured G")
  path, worst = max(pairs, key=lambda p: abs(math.log(p[1])))
  off = max(worst, 1 / worst)
  if off > G_RATIO_MAX:
    return CalculusCheck(False, spread, f"every operation has a rule, but predicted G is {off:.3g}x off the "
                         f"measurement at {path} (more than {G_RATIO_MAX:g}x): the rules' assumptions fail here")
  return CalculusCheck(True, spread, f"every operation has a rule; predicted G within {off:.3g}x of the "
                       f"measurement for every weight leaf (worst: {path})")

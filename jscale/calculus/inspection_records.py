"""What `inspect` answers: `Inspection` and its rows, typed (records.py: field order is the JSON key order).

Every number is a plain float or None (no prediction, or not finite), so `to_json()` needs no conversion.
Definitions of the columns: inspection.py's docstring and docs/calculus.md.
"""
from __future__ import annotations

import dataclasses
import json

from jscale.calculus.inspection_table import render
from jscale.calculus.records import CalculusCheckRow, Record

# The leaves whose G the verdict compares: weight layers and learnable scalars (not biases, not other
# elementwise multipliers).
WEIGHT_KINDS = ("dense", "conv", "scalar")


@dataclasses.dataclass(frozen=True)
class LeafRow(Record):
  """One parameter leaf."""
  path: str                 # "params/Dense_0/kernel", "0/w", ...
  shape: tuple
  kind: str                 # "dense", "conv", "bias", "scalar", "other" (what its first use is)
  op: str | None            # the primitive of its first use
  fan_in: int | None
  fan_out: int | None
  taps: int | None
  weight_sq: float | None   # E[W^2] of the leaf as given
  grad_sq_meas: float | None  # mean over examples of E[dW_b^2]
  G_meas: float | None
  G_batch_meas: float | None
  grad_sq_pred: float | None
  G_pred: float | None
  G_batch_pred: float | None
  x_sq_pred: float | None   # E[x^2] at its input (weights and multipliers)
  x_sq_meas: float | None
  dy_sq_pred: float | None  # E[Delta y^2] at its output
  dy_sq_meas: float | None
  reason: str | None        # why there is no prediction
  G_over_median: float | None = None  # weight leaves only (WEIGHT_KINDS with G_meas > 0)
  verdict: str | None = None          # preconditioning verdict, the same leaves


@dataclasses.dataclass(frozen=True)
class ActivationRow(Record):
  """One recognised activation: y is its input, x its output, dx the gradient at x."""
  index: int
  kind: str
  shape: tuple              # per example
  y_sq_pred: float | None
  y_sq_meas: float | None
  x_sq_pred: float | None
  x_sq_meas: float | None
  dx_sq_pred: float | None
  dx_sq_meas: float | None
  nu_pred: float | None
  nu_meas: float | None
  reason: str | None


@dataclasses.dataclass(frozen=True)
class OutputMoments(Record):
  out_sq_meas: float | None
  out_std_meas: float | None
  out_sq_pred: float | None


@dataclasses.dataclass(frozen=True)
class EqualisingMultiplier(Record):
  """An init-std multiplier and the fixed scalar after the layer that undoes it: together they bring the
  leaf's G to the median and leave the forward pass unchanged."""
  path: str
  G_over_median: float | None
  init_std_multiplier: float | None
  fixed_scalar_after: float | None


@dataclasses.dataclass(frozen=True)
class Verdict(Record):
  preconditioning_score_meas: float | None  # max |log10(G / median G)| over the WEIGHT_KINDS leaves
  preconditioning_score_pred: float | None  # the same from G_pred, when every such leaf has one
  G_median_meas: float | None
  equalising_multipliers: tuple             # EqualisingMultiplier per weight leaf
  output_multiplier: float | None           # the fixed scalar that gives the outputs std target_logit_std
  target_logit_std: float
  input_scale_for_bias_balance: float | None  # gives E[x_0^2] = 1/sqrt(fan_in) at the first layer
  x0_sq_for_bias_balance: float | None
  calculus_check: CalculusCheckRow          # inspection_assembly.rules_check
  reasons: dict                             # why there is no prediction -> the leaves' paths


@dataclasses.dataclass(frozen=True)
class Inspection(Record):
  """What `inspect` found."""
  layers: tuple        # LeafRow per float parameter leaf, in tree order
  activations: tuple   # ActivationRow per recognised activation, in graph order
  output: OutputMoments
  verdict: Verdict
  notes: tuple
  batch_size: int
  x0_sq: float
  loss: str            # "random projection" or the loss function's name

  def to_json(self, indent: int | None = 1) -> str:
    return json.dumps(self.to_dict(), indent=indent)

  def table(self) -> str:
    return render(self)

"""The scaling calculus (Defazio & Bottou): predicted and measured second moments, nu and G.

Derivations: docs/calculus.md. One idea per module; every public name is re-exported here, so
`from jscale import calculus; calculus.X` is the way to use it.

  moments      `Moments`, activation gains, the elementary rules and their one propagation through a
               dense stack (`predict_dense`, `dense_moments`, `activation_std`, `init_weight_sq`)
  correlation  the correlation between examples: `pair_corr` measures it, arc-cosine maps carry it
  signals      `Forward`, `Backward`, `LayerSignal`: what the rules hand from one operation to the next
  stack        the `Layer` interface (`Step`, `BackStep`) and the loops that chain layer rules
  weights      `Linear`, `Conv`: weight layers as rule objects
  layers       `Act`, `Scale`, `Dropout`, `AvgPool`, `Flatten`, `Residual` (and re-exports the weight layers)
  prediction   `predict` of a layer list, `LayerPrediction`, `mlp_layers`
  network      `init_layers`, `apply_layers`, `mlp_as_layers`
  measurement  `measure`, `measure_mlp`, `Measurement`, `gradient_to_weight_ratio`, `mlp_bytes`
  design       geometric init, output multiplier, bias balance, preconditioning, `check_calculus`,
               `feature_weight_G`
  records      `Record`: the typed JSON-ready answers' base (attribute access; `to_dict` is the JSON form)
  summary      `mlp_summary`: predicted vs measured of one MLP, an `MlpSummary` (printed by `jscale calculus`)
  inspection   `inspect` of any JAX / Flax model, an `Inspection` of `LeafRow`s, `ActivationRow`s and a
               `Verdict`; tracing, propagation, rules, inspection_measure, inspection_assembly,
               inspection_records and inspection_table are its parts
  prescribe    `prescribe`: per-leaf learning-rate multipliers (standard, μP, equal-G) for SGD and Adam, a
               `Prescription` of `LeafPrescription`s; `predicted_drift` of the optimal learning rate across widths
               (from each layer's own step) and `response_drift` (from the network's response at one layer);
               `normalised` scales equal-G by that response (`first_step_response`, a JVP)
  update_response  `first_step`: a ReLU MLP's activations after its first SGD / Adam step, predicted (the cross
               term 2E[h0 . dh] and E[dh^2] through the layers, a `Response`); `unit_response`: its first-order
               relative change per unit learning rate
  strided_update  SGD's first update of a strided conv (or dense) ReLU stack over (example, position) pairs,
               with the gradient's component along each example's own activation (`StridedStack`,
               `strided_update_rms`)
  strided_response  the activations after the first SGD / Adam step of the same stacks over (example, position)
               pairs (`strided_first_step`, `strided_first_steps`): update_response's NTK with tokens, and the
               cross term accumulated along each example's own activation over the layers below
  relu_flips   one ReLU unit's mask-flip correction relu(y + d) - relu(y) - 1[y > 0] d after a step d, its
               moments in closed form (`relu_flips.moments`; not in the coordinate check)
  activation_maps  any elementwise activation's moment maps by Gauss-Hermite quadrature (`maps`), and a
               stack's moments over depth with C(0), C'(1) and a verdict (`depth_profile`)
  blocks       several jaxpr equations read as one layer by `inspect`: elementwise (any activation),
               normalisation (LayerNorm / RMSNorm), attention (softmax attention)
  cli          `jscale calculus` / scripts/calculus.py
"""
from jscale.calculus.correlation import act_corr, pair_corr, relu_corr
from jscale.calculus.design import (CalculusCheck, Preconditioning, bias_balance_input_scale, check_calculus,
                                    feature_weight_G, geometric_output_sq, geometric_weight_sq, output_multiplier,
                                    preconditioning)
from jscale.calculus.layers import Act, AvgPool, Dropout, Flatten, Residual, Scale
from jscale.calculus.measurement import Measurement, gradient_to_weight_ratio, measure, measure_mlp, mlp_bytes
from jscale.calculus.moments import (ACT_KINDS, HOMOGENEOUS_GAINS, LEAKY_SLOPE, Moments, activation_std,
                                     check_activation, dense_moments, gains, init_weight_sq, predict_dense,
                                     weight_backward_sq, weight_forward_sq)
from jscale.calculus.network import PLACEHOLDER_INIT, apply_layers, init_layers, mlp_as_layers
from jscale.calculus.prediction import LayerPrediction, mlp_layers, predict
from jscale.calculus.records import CalculusCheckRow, Record
from jscale.calculus.signals import Backward, Forward, LayerSignal
from jscale.calculus.stack import BackStep, Layer, Step, flat_layers, flat_params
from jscale.calculus.summary import MlpLayerRow, MlpSummary, mlp_summary
from jscale.calculus.weights import WEIGHT_LAYERS, Conv, LayerInfo, Linear, kernel_shape, same_tap_fraction
from jscale.calculus.inspection import inspect
from jscale.calculus.inspection_measure import projection_loss
from jscale.calculus.inspection_records import (WEIGHT_KINDS, ActivationRow, Inspection, LeafRow, OutputMoments,
                                                Verdict)
from jscale.calculus.prescribe import (RESPONSE_AT, LeafPrescription, Prescription, first_step_response,
                                       from_inspection, normalised, predicted_drift, prescribe, response_at,
                                       response_drift, response_se, update_to_output)
from jscale.calculus.strided_update import Stack as StridedStack, update_rms as strided_update_rms
from jscale.calculus.update_response import Response, first_step, unit_response


# strided_response (with relu_flips) imports scipy.stats and scipy.special: ~0.7 CPU s of the ~2.2 s of an
# `import jscale` under load, paid by every interpreter (the tests start dozens: refusals, README code, scripts).
# Its two names load on first use; `from jscale.calculus import strided_response` imports it as before.
_LAZY = {"strided_first_step": "first_step", "strided_first_steps": "first_steps"}


def __getattr__(name):
  if name in _LAZY:
    from jscale.calculus import strided_response
    return getattr(strided_response, _LAZY[name])
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

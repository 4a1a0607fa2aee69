"""The scaling calculus (Defazio & Bottou): predicted and measured second moments, nu and G.

Derivations: docs/calculus.md. One idea per module; every public name is re-exported here, so
`from jscale import calculus; calculus.X` is the way to use it.

  moments      `Moments`, activation gains, the elementary rules and their one propagation through a
               dense stack (`predict_dense`, `dense_moments`, `activation_std`, `init_weight_sq`)
  correlation  arc-cosine maps of the correlation between examples (batch effects, pooling)
  stack        the `Layer` interface and the loops that chain layer rules
  weights      `Linear`, `Conv`: weight layers as rule objects
  layers       `Act`, `Scale`, `Dropout`, `AvgPool`, `Flatten`, `Residual` (and re-exports the weight layers)
  prediction   `predict` of a layer list, `Prediction`, `mlp_layers`
  network      `init_layers`, `apply_layers`, `mlp_as_layers`
  measurement  `measure`, `measure_mlp`, `Measurement`, `gradient_to_weight_ratio`
  design       geometric init, output multiplier, bias balance, preconditioning, `check_calculus`,
               `feature_weight_G`
  summary      `report`: predicted vs measured as a JSON-ready dict (printed by scripts/calculus.py)
"""
from jscale.calculus.correlation import act_corr, relu_corr
from jscale.calculus.design import (CalculusCheck, Preconditioning, bias_balance_input_scale, check_calculus,
                                    feature_weight_G, geometric_output_sq, geometric_weight_sq, output_multiplier,
                                    preconditioning)
from jscale.calculus.layers import Act, AvgPool, Dropout, Flatten, Residual, Scale
from jscale.calculus.measurement import Measurement, gradient_to_weight_ratio, measure, measure_mlp
from jscale.calculus.moments import (ACT_KINDS, HOMOGENEOUS_GAINS, LEAKY_SLOPE, Moments, activation_std,
                                     check_activation, dense_moments, gains, init_weight_sq, predict_dense,
                                     weight_backward_sq, weight_forward_sq)
from jscale.calculus.network import PLACEHOLDER_INIT, apply_layers, init_layers, mlp_as_layers
from jscale.calculus.prediction import Prediction, mlp_layers, predict
from jscale.calculus.stack import Layer, flat_layers, flat_params
from jscale.calculus.summary import report
from jscale.calculus.weights import WEIGHT_LAYERS, Conv, LayerInfo, Linear, kernel_shape, same_tap_fraction

_flat_params = flat_params  # the old private name (tests/test_calculus.py)
from jscale.calculus.inspection import Inspection, inspect, projection_loss
from jscale.calculus.memory import available_bytes, check_bytes, mlp_bytes

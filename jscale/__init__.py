"""jscale: weight initialization and the scaling calculus for ReLU networks, in JAX.

Importing jscale has no global side effect: the float32 matmul precision policy (`jscale.precision`) is applied by
jscale's own entry points, scoped, or by you.

  jscale.init_mlp / apply_mlp / Dense             the pure-function MLP (`jscale.mlp`)
  jscale.initializers, jscale.get_initializer     every initializer, with its designed moments
  jscale.make_train, TrainSpec, hparams           a pure `train(key, hparams, data)` for sweeps (`jscale.train`)
  jscale.models, jscale.datasets                  the networks (`Model`) and the data sets
  jscale.calculus                                 the scaling calculus; `jscale.inspect_model` is `calculus.inspect`
  jscale.sweeps                                   vmapped sweeps over grids (jscale.theory: exact Hessian blocks)
"""
from jscale import calculus, datasets, initializers, mlp, models, precision, sweeps  # noqa: F401
from jscale.calculus import inspect as inspect_model  # noqa: F401  (not `inspect`: that is the stdlib's name)
from jscale.initializers import Initializer, get as get_initializer  # noqa: F401
from jscale.mlp import Dense, apply_mlp, init_mlp  # noqa: F401
from jscale.train import HParams, Metrics, TrainSpec, hparams, make_train, stack_hparams  # noqa: F401

__version__ = "0.1.0"

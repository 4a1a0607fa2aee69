"""jscale: weight initialization and the scaling calculus for ReLU networks, in JAX."""
from jscale import initializers, mlp, precision
from jscale.calculus import inspect
from jscale.initializers import Initializer, get as get_initializer
from jscale.mlp import Dense, apply_mlp, init_mlp

__version__ = "0.1.0"

precision.apply_default()  # float32 matmuls at "highest": CPU, GPU and TPU agree (jscale/precision.py)

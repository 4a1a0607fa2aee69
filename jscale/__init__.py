"""jscale: weight initialization and the scaling calculus for ReLU networks, in JAX."""
from jscale import initializers, mlp
from jscale.initializers import Initializer, get as get_initializer
from jscale.mlp import Dense, apply_mlp, init_mlp

__version__ = "0.1.0"

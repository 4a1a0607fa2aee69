"""The registered experiments: one small module each, imported here so `jscale.sweeps.names()` sees them.

To add one: write `jscale/sweeps/experiments/NAME.py` defining `EXPERIMENT = register(Experiment(...))`
with a `quick` and a `full` grid and a docstring showing the command that runs it, then import it below.
An experiment that is not a training sweep of the engine's shape registers a `CustomExperiment` (its own
run function writing the `jscale.report` results protocol), as `activations` and `symmetry` do.
Import order is the order `scripts/sweep.py` runs them in.
"""
from jscale.sweeps.experiments import sigma  # noqa: F401
from jscale.sweeps.experiments import feature_weight  # noqa: F401
from jscale.sweeps.experiments import init_schemes  # noqa: F401
from jscale.sweeps.experiments import activations  # noqa: F401
from jscale.sweeps.experiments import symmetry  # noqa: F401
from jscale.sweeps.experiments import hessian  # noqa: F401

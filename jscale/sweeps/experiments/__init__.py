"""The registered experiments: one small module each, imported here so `jscale.sweeps.names()` sees them.

To add one: write `jscale/sweeps/experiments/NAME.py` defining `EXPERIMENT = register(Experiment(...))`
with a `quick` and a `full` grid and a docstring showing the command that runs it, then import it below.
"""
from jscale.sweeps.experiments import sigma  # noqa: F401

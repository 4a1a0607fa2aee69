"""The tutorial's sigma sweep: its config (`config.py`) and report section (`section.py`)."""
from jscale import sweeps
from jscale.experiments.sigma import config, section

ENTRY = sweeps.register(sweeps.Entry("sigma", config.make_experiment, section.build, config.__doc__))

"""The init_schemes experiment: its config (`config.py`) and report section (`section.py`)."""
from jscale import sweeps
from jscale.experiments.init_schemes import config, section

ENTRY = sweeps.register(sweeps.Entry("init_schemes", config.make_experiment, section.build, config.__doc__))

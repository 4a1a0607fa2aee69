"""The feature_weight experiment: its config (`config.py`) and report section (`section.py`)."""
from jscale import sweeps
from jscale.experiments.feature_weight import config, section

ENTRY = sweeps.register(sweeps.Entry("feature_weight", config.make_experiment, section.build, config.__doc__))

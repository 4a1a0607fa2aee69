"""The activations experiment: its config (`config.py`), run code (`run.py`) and report section (`section.py`)."""
from jscale import sweeps
from jscale.experiments.activations import config, section

ENTRY = sweeps.register(sweeps.Entry("activations", config.make_experiment, section.build, config.__doc__))

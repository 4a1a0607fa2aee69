"""The symmetry experiment: its config (`config.py`), run code (`run.py`) and report section (`section.py`)."""
from jscale import sweeps
from jscale.experiments.symmetry import config, section

ENTRY = sweeps.register(sweeps.Entry("symmetry", config.make_experiment, section.build, config.__doc__))

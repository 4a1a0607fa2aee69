"""The resnet experiment: its config (`config.py`), run code (`run.py`) and report section (`section.py`)."""
from jscale import sweeps
from jscale.experiments.resnet import config, section

ENTRY = sweeps.register(sweeps.Entry("resnet", config.make_experiment, section.build, config.__doc__))

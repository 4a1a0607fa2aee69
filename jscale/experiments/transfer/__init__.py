"""The transfer experiment: learning-rate transfer across width under standard, μP and equal-G
parametrizations: its config (`config.py`), run code (`run.py`), statistics (`analysis.py`) and report
section (`section.py`)."""
from jscale import sweeps
from jscale.experiments.transfer import config, section

ENTRY = sweeps.register(sweeps.Entry("transfer", config.make_experiment, section.build, config.__doc__))

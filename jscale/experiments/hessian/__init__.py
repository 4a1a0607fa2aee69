"""The hessian experiment: config (`config.py`), run code (`run.py`), figures (`figures.py`), section (`section.py`)."""
from jscale import sweeps
from jscale.experiments.hessian import config, section

ENTRY = sweeps.register(sweeps.Entry("hessian", config.make_experiment, section.build, config.__doc__))

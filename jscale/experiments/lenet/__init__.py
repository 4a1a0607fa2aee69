"""The lenet experiment: the tutorial's sigma protocol and the paper's init schemes on the strided LeNet (a
transfer test): its config (`config.py`) and report section (`section.py`)."""
from jscale import sweeps
from jscale.experiments.lenet import config, section

ENTRY = sweeps.register(sweeps.Entry("lenet", config.make_experiment, section.build, config.__doc__))

"""The convnet_lr experiment: the paper's Section 10 (Figure 3) learning-rate protocol on a strided convnet with
mixed kernel sizes: its config (`config.py`) and report section (`section.py`)."""
from jscale import sweeps
from jscale.experiments.convnet_lr import config, section

ENTRY = sweeps.register(sweeps.Entry("convnet_lr", config.make_experiment, section.build, config.__doc__))

"""The hessian experiment: the paper's Figures 1-2, written once for every network family.

config (`config.py`, the grids), typed settings (`settings.py`), the family interface (`family.py`) and the
families (`mlp_family.py`, `lenet_family.py`), the rounds driver (`rounds.py`), records and resume files
(`records.py`), summaries (`summary.py`), heat maps (`heatmaps.py`), the big MLP's matrix-free diagonal
(`large_diagonal.py`), run code (`run.py`), figures (`figures.py`), section (`section.py`). The mathematics they
measure and predict is `jscale.theory`.
"""
from jscale import sweeps
from jscale.experiments.hessian import config, section

ENTRY = sweeps.register(sweeps.Entry("hessian", config.make_experiment, section.build, config.__doc__))

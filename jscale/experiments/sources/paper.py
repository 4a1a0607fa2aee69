"""The scaling-calculus paper's Section 9 table (docs/sources.md, "The scaling-calculus paper").

Aaron Defazio and Léon Bottou, *Beyond Folklore: A Scaling Calculus for the Design and Initialization of ReLU
Networks*, arXiv:1906.04267; journal version *A scaling calculus for the design and initialization of ReLU
networks*, Neural Computing and Applications, 2022, doi:10.1007/s00521-022-07308-z. Section 9: a 3-layer ReLU
MLP on 26 LIBSVM data sets, each data set's losses divided by its worst init's, then averaged.
"""
from typing import NamedTuple


class PaperRow(NamedTuple):
  avg_normalised_loss: float
  worst_count: int
  best_count: int


# Section 9's table over PAPER_N_DATASETS LIBSVM data sets, by the paper's scheme names (jscale.initializers
# aliases: the same rules as jscale.initializers.SCHEMES, where arithmetic is keyed "xavier").
PAPER_INIT_TABLE: dict[str, PaperRow] = {
    "arithmetic": PaperRow(0.90, 14, 3),
    "fan_in": PaperRow(0.84, 3, 5),
    "fan_out": PaperRow(0.88, 9, 12),
    "geometric": PaperRow(0.81, 0, 6),
}
PAPER_N_DATASETS = 26
PAPER_SCHEMES = tuple(PAPER_INIT_TABLE)   # the paper's four schemes, in its table's order

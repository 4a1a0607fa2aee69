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

# Section 10 (AlexNet on CIFAR-10, Figure 3): 40 seeds per init; geometric is a "statistically significant
# improvement" over arithmetic and fan-in, over fan-out "only at mid-iterations" (the p threshold was lost from
# jscale's copy). Figure 3 gives curves, not numbers.
PAPER_ALEXNET_SEEDS = 40

# Section 11 (unnormalised pre-activation ResNet-50 on ImageNet, 5 seeds): top-1 test accuracy in percent, (mean,
# standard error); the output-scale sweep found 0.05 best (the swept values are not stated).
PAPER_RESNET_TOP1 = {"geometric": (76.18, 0.04), "rescalenet": (76.13, 0.03)}
PAPER_RESNET_SEEDS = 5
PAPER_BEST_OUTPUT_SCALE = 0.05
PAPER_RESNET50_BLOCKS = 16   # ResNet-50's bottleneck blocks (3 + 4 + 6 + 3)

"""`convnet_lr`: the paper's Section 10 (Figure 3) protocol at laptop scale -- four init schemes on a strided
convnet with mixed kernel sizes, each at its best learning rate of a power-of-two grid, training-loss curves and
paired tests (docs/sources.md, "The convnet learning-rate test").

The paper: AlexNet (kernels 11, 5, 3 and linear; max pooling replaced by striding) on CIFAR-10, outputs scaled by
a fixed scalar to a fixed std on one batch at initialisation, a power-of-two learning-rate sweep, 40 seeds per
init; geometric init is a "statistically significant improvement" over arithmetic and fan-in, over fan-out only
at mid-iterations. Its appendix (the optimizer, schedule, output std, grid bounds) is not in jscale's copy.

Here: the strided convnet (stride = kernel, no pooling, ReLU; `jscale.models` "lenet" with three convs) with
kernels 4x4/8, 3x3/16, 2x2/32 and two linear layers (32 -> 32 -> 10), on 24 x 24 images: scikit-learn's 8x8
digits with each pixel repeated 3 x 3, z-scored (offline, the default; 70/30 split, every seed its own split), or
CIFAR-10's central 24 x 24 crop through TFDS (`--option data=cifar10`, a 5000-image training subset, z-scored).
Logits scaled to std 0.05 on the first minibatch (`output_std`, the value the paper recommends in Section 7),
SGD with momentum 0.9 and weight decay 5e-4 (CIFAR-10's standard practice), batch 64, EPOCHS epochs, zero biases.
The curves are the mean minibatch training loss of every epoch ("iterations": early = epoch 1, mid = the
middle epoch, final = the last).

Seeds: every (scheme, lr) cell runs the same seeds (paired: the same data split and minibatch order per seed).
The first SELECT_SEEDS seeds choose each scheme's learning rate (the median final loss, the paper's Section 9
rule); the remaining seeds are judged at that learning rate only -- the selection never sees the judged seeds.

  python scripts/sweep.py --experiment convnet_lr --grid quick   # 4 schemes x 3 lrs x 6 seeds
  python scripts/sweep.py --experiment convnet_lr --grid full    # 4 schemes x 7 lrs x 40 seeds
  python scripts/sweep.py --experiment convnet_lr --grid full --option data=cifar10   # TFDS, when prepared
"""
from __future__ import annotations

from typing import Sequence

from jscale.experiments.sources.paper import PAPER_SCHEMES
from jscale.sweeps import Experiment, product

EPOCHS = 6
BATCH_SIZE = 64
OUTPUT_STD = 0.05
SELECT_SEEDS = 10          # seeds 0..9 choose the lr; the rest are judged
# Learning rates: powers of two. Development runs (base_seed 1000, 4 seeds, 2^-5..2^3; never the judged seeds) put
# the best median final loss at 2^-4 (arithmetic), 2^-3 (fan-out), 2^-2 (fan-in), 2^-1 (geometric), and every
# scheme's runs diverge or stall at chance from 2^1 up: the full grid 2^-6..2^0 holds each best with a neighbour
# on either side.
QUICK_LRS = tuple(2.0 ** k for k in (-4, -2, 0))
FULL_LRS = tuple(2.0 ** k for k in range(-6, 1))
CHANNELS = (8, 16, 32)
KERNELS = ((4, 4), (3, 3), (2, 2))
HIDDEN = (32,)
IMAGE = (24, 24, 1)
# data name -> (loader, options, image shape)
DATA = {
    "digits": ("digits_raw", {"standardize": True, "upsample": 3}, (24, 24, 1)),
    "cifar10": ("cifar10", {"standardize": True, "crop": 24, "n_train": 5000}, (24, 24, 3)),
}


def make_experiment(data: str = "digits", quick_seeds: int = 6, full_seeds: int = 40, epochs: int = EPOCHS,
                    quick_lrs: Sequence[float] = QUICK_LRS, full_lrs: Sequence[float] = FULL_LRS) -> Experiment:
  """data: "digits" (offline, the default) or "cifar10" (TFDS; prepare it first, see jscale.datasets.cifar10)."""
  if data not in DATA:
    raise ValueError(f"convnet_lr: data must be one of {', '.join(DATA)}, got {data!r}")
  for n, what in ((quick_seeds, "quick_seeds"), (full_seeds, "full_seeds")):
    if not isinstance(n, int) or n <= SELECT_SEEDS // 5:
      raise ValueError(f"convnet_lr: {what} must be an int > {SELECT_SEEDS // 5}, got {n!r}")
  loader, options, image = DATA[data]

  def grid(lrs, n_seeds):
    return product(init=PAPER_SCHEMES, lr=tuple(lrs), seed=range(n_seeds))

  return Experiment(
      name="convnet_lr", doc=__doc__, data=loader, data_options=options,
      model="lenet", model_options={"image": image, "channels": CHANNELS, "kernels": KERNELS, "hidden": HIDDEN},
      kernel_init="geometric", bias_init="zeros", output_std=OUTPUT_STD,
      optimizer="momentum", momentum=0.9, weight_decay=5e-4, epochs=epochs, batch_size=BATCH_SIZE,
      grids={"quick": grid(quick_lrs, quick_seeds), "full": grid(full_lrs, full_seeds)},
      summary_by=("init", "lr"))


def select_seeds(n_seeds: int) -> int:
  """How many of the first seeds choose the learning rate: SELECT_SEEDS on a full grid, a third on a small one
  (at least 2, leaving at least 2 judged)."""
  return SELECT_SEEDS if n_seeds >= 2 * SELECT_SEEDS else max(2, n_seeds // 3)

"""`init_schemes`: arithmetic (Xavier), fan-in, fan-out and geometric init compared as in the scaling-calculus
paper's Section 9 table (docs/sources.md, the scaling-calculus paper, Section 9 and Appendix H).

MLP with 3 weight layers, inner widths 384 and 64, ReLU; LayerNorm on the inputs; logits fixed to std
0.05 on the first minibatch (`output_std`); weight decay 1e-5; 5 epochs. Per (data set, init): a
power-of-2 learning-rate grid x seeds; the report takes the median over seeds of the training loss after
5 epochs (a pass over the training split after the 5th), the best lr by that median, divides each data set's
losses by its worst init's and averages. The paper does not state the optimizer or batch size: plain SGD,
batch 32 here. Init names (`sources.paper.PAPER_SCHEMES`) are `jscale.initializers` aliases: arithmetic =
glorot_normal, fan_in = he_normal, fan_out = he_normal:fan_out, geometric = geometric:c=2.

Data: every offline multi-class set (scikit-learn's iris, wine, digits, breast cancer; 70/30 split) and
two moons -- NOT the paper's 26 LIBSVM sets. Every seed redraws its data: its own 70/30 split of each
set (and its own two-moons sample), plus its own initialization and minibatch order (data_seed follows
the seed; `make_experiment(data_seed=k)` pins one draw). Features are z-scored with training-split statistics before
the input LayerNorm (LIBSVM's sets come pre-scaled; a per-example LayerNorm over raw units would be
dominated by the largest-unit feature). Two moons has 2 features, and LayerNorm over 2 features maps every
input to +-(1, -1): the net sees one bit, sign(x1 - x2), so on it every init ends near the same loss
(the report flags it; it stays in the average because the protocol says "every data set"). Add LIBSVM-format
files (the paper's sets, from the LIBSVM site) with `--libsvm PATH` (repeatable) on scripts/sweep.py, the
option `libsvm` of `make_experiment`; each file becomes a data set `libsvm:PATH` of the grid. The option is
recorded in config.json, so a resume uses the same files.

  python scripts/sweep.py --experiment init_schemes --grid quick    # 5 sets x 4 inits x 2^-2..2^4 (4) x 2 seeds
  python scripts/sweep.py --experiment init_schemes --grid full     # 5 sets x 4 inits x 2^-6..2^5 x 10 seeds
  python scripts/sweep.py --experiment init_schemes --grid full --libsvm ~/libsvm/dna.scale --libsvm ~/libsvm/usps
"""
from __future__ import annotations

import os
from typing import Sequence

from jscale.experiments.sources.paper import PAPER_SCHEMES
from jscale.sweeps import Experiment, product

OFFLINE_DATASETS = ("iris", "wine", "digits_raw", "breast_cancer", "two_moons")
# With logits fixed to std 0.05 and z-scored inputs, SGD's best lr here is large (2^0..2^4 measured).
QUICK_LRS = tuple(2.0 ** k for k in (-2, 0, 2, 4))
FULL_LRS = tuple(2.0 ** k for k in range(-6, 6))


def make_experiment(libsvm: Sequence[str] = (), *, datasets: Sequence[str] = OFFLINE_DATASETS,
                    quick_seeds: int = 2, full_seeds: int = 10, quick_lrs: Sequence[float] = QUICK_LRS,
                    full_lrs: Sequence[float] = FULL_LRS, epochs: int = 5, batch_size: int = 32,
                    data_seed: int | None = None) -> Experiment:
  """The experiment over `datasets` plus one `libsvm:PATH` data set per LIBSVM file in `libsvm`.
  data_seed: None (each seed draws its own split) or an int pinning one draw."""
  if isinstance(libsvm, str):
    libsvm = (libsvm,)
  for p in libsvm:
    if not os.path.isfile(os.path.expanduser(p)):
      raise ValueError(f"init_schemes: no such LIBSVM file {p!r}")
  sets = tuple(datasets) + tuple(f"libsvm:{os.path.abspath(os.path.expanduser(p))}" for p in libsvm)

  def grid(lrs, n_seeds):
    return product(dataset=sets, init=PAPER_SCHEMES, lr=tuple(lrs), seed=range(n_seeds))

  return Experiment(
      name="init_schemes", doc=__doc__, data=sets[0], data_options={"standardize": True},
      data_seed=data_seed,
      hidden=(384, 64), activation="relu", input_layernorm=True, output_std=0.05,
      kernel_init="geometric", bias_init="zeros", optimizer="sgd", weight_decay=1e-5, train_pass=True,
      epochs=epochs, batch_size=batch_size,
      grids={"quick": grid(quick_lrs, quick_seeds), "full": grid(full_lrs, full_seeds)},
      summary_by=("dataset", "init", "lr"))

"""`hessian`: the paper's Figures 1 and 2, the calculus's Hessian-block predictions against exact blocks.

Figure 1: predicted / exact average squared singular value of every diagonal weight block over sampled
setups (depth 3-6, widths 8-128, fan-in / fan-out / Xavier / geometric, random input and loss), at batch 1
and at a minibatch, with and without the cross-example correction (`jscale.theory.predict`). The exact
side is an expectation over draws (`jscale.theory.pairs`: same-example and two-example terms, control
variates, per-layer programs on padded shapes); the full grid draws until each setup's exact blocks have
at most 5% relative standard error (or the draw cap), writing each setup as it finishes, so a killed run
resumes. Figure 2: exact `jax.hessian` block heat maps on a fixed 24-96-12-48-8 net. The quick grid is a
smoke-sized version.

The paper's own network is added beside the MLPs (`lenet_family.py`): for Figure 1 issue 20's varied strided
LeNets (1-3 convs with kernel = stride 2-4 and 4-32 channels, 0-2 dense hidden layers of 16-128 units, 10
outputs, one-channel N(0, 1) or U[0, 1] images, the four schemes, both losses; exact expectation from pairs
of examples, to <= 5% relative SE, every setup in shared slot shapes, `jscale.theory.lenet_slots`), against
the full-order prediction and the paper's leading-order form, pooled and per layer position; for Figure 2
the exact `jax.hessian` kernel-block heat maps of a fixed 8x8x1, 2x2-conv, 4-8 / 32-16 LeNet per init scheme
plus the diagonal's max/min with standard errors at batch 1 and at the minibatch. Each family's Figure 1 is
also run on fewer setups of a held-out seed (`holdout_seed`, `holdout_setups`, `lenet_*`), a seed no
development of the full-order prediction used, and reported beside the development seed.

  python scripts/sweep.py --experiment hessian --grid quick
  python scripts/sweep.py --experiment hessian --grid full
"""
from jscale.experiments.hessian import run
from jscale.experiments.hessian.settings import HessianSettings
from jscale.sweeps import CustomExperiment


def make_experiment() -> CustomExperiment:
  """The experiment; its grids are checked here (`HessianSettings.from_grid`), before anything runs."""
  exp = CustomExperiment(
      name="hessian",
      doc=__doc__,
      run=run.run,
      grids={
          "quick": {"setups": 1, "batch": 16, "draws": 8, "examples": 4, "target_rel_se": None, "max_draws": 8,
                    "seed": 0, "fig2_draws": 0, "fig2_minibatch": 32, "lenet_setups": 1, "lenet_draws": 4,
                    "lenet_max_draws": 4, "lenet_examples": 3, "lenet_channels": (2, 4), "lenet_hidden": (4, 16),
                    "lenet_varied": True, "holdout_seed": 5, "holdout_setups": 1, "lenet_holdout_seed": 2,
                    "lenet_holdout_setups": 1},
          "full": {"setups": 100, "batch": 1024, "draws": 256, "examples": 8, "target_rel_se": 0.05,
                   "max_draws": 1024, "seed": 0, "fig2_draws": 8, "fig2_minibatch": 128, "lenet_setups": 20,
                   "lenet_varied": True, "lenet_draws": 128, "lenet_max_draws": 4096, "lenet_examples": 4,
                   "lenet_fig2_draws": 4,
                   "lenet_fig2_minibatch": 64, "lenet_evenness_draws": 1024,
                   # Figure 1 again on setups no development used (docs/calculus.md, "Full order"): MLP seed 5 (the
                   # couplings' guard was judged there; seed 4's factor SEs were looked at while building it), LeNet
                   # seed 2 (no correction since its first judgement was developed or looked at on it).
                   "holdout_seed": 5, "holdout_setups": 12, "lenet_holdout_seed": 2, "lenet_holdout_setups": 6},
      },
  )
  for grid in exp.grids.values():
    HessianSettings.from_grid(grid)
  return exp

"""`hessian`: the paper's Figures 1 and 2, the calculus's Hessian-block predictions against exact blocks.

Figure 1: predicted / exact average squared singular value of every diagonal weight block over sampled
setups (depth 3-6, widths 8-128, fan-in / fan-out / Xavier / geometric, random input and loss), at batch 1
and at a minibatch, with and without the cross-example correction (`jscale.theory.predict`). The exact
side is an expectation over draws (`jscale.theory.pairs`: same-example and two-example terms, control
variates, per-layer programs on padded shapes); the full grid draws until each setup's exact blocks have
at most 5% relative standard error (or the draw cap), writing each setup as it finishes, so a killed run
resumes. Figure 2: exact `jax.hessian` block heat maps on a fixed 24-96-12-48-8 net. The quick grid is a
smoke-sized version.

  python scripts/sweep.py --experiment hessian --grid quick
  python scripts/sweep.py --experiment hessian --grid full
"""
from jscale.experiments.hessian import run
from jscale.sweeps import CustomExperiment


def make_experiment() -> CustomExperiment:
  return CustomExperiment(
      name="hessian",
      doc=__doc__,
      run=run.run,
      grids={
          "quick": {"setups": 1, "batch": 16, "draws": 8, "examples": 4, "target_rel_se": None, "max_draws": 8,
                    "seed": 0, "fig2_draws": 0, "fig2_minibatch": 32},
          "full": {"setups": 100, "batch": 1024, "draws": 256, "examples": 8, "target_rel_se": 0.05,
                   "max_draws": 1024, "seed": 0, "fig2_draws": 8, "fig2_minibatch": 128},
      },
  )

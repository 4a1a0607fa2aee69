"""`hessian`: the paper's Figures 1 and 2, the calculus's Hessian-block predictions against exact blocks.

Figure 1: predicted / exact average squared singular value of every diagonal weight block over sampled
setups (depth 3-6, widths 8-128, fan-in / fan-out / Xavier / geometric, random input and loss), at batch 1
and at a minibatch, with and without the cross-example correction (`jscale.theory.predict`). Figure 2:
exact `jax.hessian` block heat maps on a fixed 24-96-12-48-8 net. The quick grid is a smoke-sized
version (compiling one Hessian per sampled width pattern dominates its cost); the full grid is the
paper's 100 setups at batch 1024 (about half an hour on a 2-core CPU).

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
          "quick": {"setups": 2, "batch": 16, "draws": 2, "seed": 0, "fig2_draws": 0, "fig2_minibatch": 32},
          "full": {"setups": 100, "batch": 1024, "draws": 4, "seed": 0, "fig2_draws": 8, "fig2_minibatch": 128},
      },
  )

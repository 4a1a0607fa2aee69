"""`symmetry`: zeros and constant init never break hidden-unit symmetry (the explainers' claim), measured.

Two moons (n=2000, noise 0.2, z-scored, 70/30 split), MLP 2-64-64-2 ReLU, plain SGD lr 0.1, batch 64,
every init in `run.INITS` (zeros, constant 0.1, He, Glorot) trained for each seed (vmapped):
the largest difference between any two hidden units' incoming weights after every step, test accuracy
beside chance (majority class) and a linear classifier (logistic regression). Not a sweep of the
engine's shape (it tracks the per-step unit spread), so it is a `CustomExperiment`.

  python scripts/sweep.py --experiment symmetry --grid quick    # 300 SGD steps, seeds 0-2
  python scripts/sweep.py --experiment symmetry --grid full     # 2000 SGD steps, seeds 0-9
"""
from jscale.experiments.symmetry import run
from jscale.sweeps import CustomExperiment


def make_experiment() -> CustomExperiment:
  return CustomExperiment(
      name="symmetry",
      doc=__doc__,
      run=run.experiment,
      grids={
          "quick": {"seeds": (0, 1, 2), "steps": 300, "lr": 0.1, "batch_size": 64},
          "full": {"seeds": tuple(range(10)), "steps": 2000, "lr": 0.1, "batch_size": 64},
      },
  )

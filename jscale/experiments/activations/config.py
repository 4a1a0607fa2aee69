"""`activations`: per-layer activations at initialisation (docs/sources.md: the initialization-strategies explainer
and the weights-initialization blog), measured and predicted. Forward only, no training.

A 10-layer, 500-unit tanh net and ReLU net (zero biases, unit-Gaussian inputs) under N(0, 0.01^2),
N(0, 0.1^2), LeCun, Xavier, He and geometric: per-layer histograms, saturation, and each layer's std
against depth beside the std the scaling calculus predicts (`run.py` beside this file). Not a training sweep,
so it is a `CustomExperiment` whose run function writes its own results.

  python scripts/sweep.py --experiment activations --grid quick   # 10 x 500, 256 inputs, 2 nets per scheme
  python scripts/sweep.py --experiment activations --grid full    # 10 x 500, 500 inputs, 8 nets per scheme
"""
from jscale.experiments.activations import run
from jscale.sweeps import CustomExperiment


def make_experiment() -> CustomExperiment:
  return CustomExperiment(
      name="activations",
      doc=__doc__,
      run=run.experiment,
      grids={
          "quick": {"seed": 0, "replicates": 2, "depth": 10, "width": 500, "n_samples": 256},
          "full": {"seed": 0, "replicates": 8, "depth": 10, "width": 500, "n_samples": 500},
      },
  )

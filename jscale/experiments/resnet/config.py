"""`resnet`: the paper's Section 11 at laptop scale -- its unnormalised pre-activation ResNet block with the
calculus's fixed scalars against He init without scalars, fixed residual scaling (RescaleNet-style) and a
LayerNorm baseline, at 2, 4, 8 and 16 blocks, and an output-scale sweep (docs/sources.md, "The ResNet transfer
test"; the training loop and the schemes: `run.py`).

The paper: ResNet-50 (16 bottleneck blocks) on ImageNet, SGD momentum 0.9, weight decay 1e-4, lr 0.1, batch
256, the 30-60-90 schedule over 90 epochs, RescaleNet's dropout; 76.18 (SE 0.04) top-1 over 5 seeds against
RescaleNet's 76.13 (SE 0.03), and an output-scale sweep with 0.05 best. Here: scikit-learn's 8x8 digits
(z-scored, 70/30 split, every seed its own split), stem conv 2x2/8 (stride 2), D bottleneck blocks 8 -> 4 -> 8
channels on the 4x4 grid, dense head; batch BATCH_SIZE, EPOCHS epochs, the lr decayed x0.1 for the last quarter;
the output-scale sweep on the geometric net of 2 blocks. So the
verdicts are transfer tests: does the claim carry over to a small ResNet on digits?

  python scripts/sweep.py --experiment resnet --grid quick   # 4 schemes x 2 blocks x 3 seeds; 2 output scales
  python scripts/sweep.py --experiment resnet --grid full    # 4 schemes x depths 2-16 x 8 seeds; 7 output scales
"""
from jscale.experiments.resnet import run
from jscale.experiments.sources.paper import PAPER_BEST_OUTPUT_SCALE
from jscale.sweeps import CustomExperiment

EPOCHS = 4
BATCH_SIZE = 64    # 128 cost about the same CPU time (compilation dominates) and trained the nets less
OUTPUT_SCALES = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


def make_experiment() -> CustomExperiment:
  return CustomExperiment(
      name="resnet", doc=__doc__, run=run.experiment,
      grids={
          "quick": {"depths": (2,), "seeds": (0, 1, 2), "scheme_scale": PAPER_BEST_OUTPUT_SCALE, "sweep_depth": 2,
                    "output_scales": (0.05, 1.0), "epochs": 2, "batch_size": BATCH_SIZE},
          "full": {"depths": (2, 4, 8, 16), "seeds": tuple(range(8)), "scheme_scale": PAPER_BEST_OUTPUT_SCALE,
                   "sweep_depth": 2, "output_scales": OUTPUT_SCALES, "epochs": EPOCHS,
                   "batch_size": BATCH_SIZE},
      })

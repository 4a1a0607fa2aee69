"""`lenet`: the tutorial's sigma protocol and the paper's four init schemes on the paper's strided LeNet -- a
transfer test (docs/sources.md, "lenet").

The sources' numbers are for MLPs: the tutorial's Table 1 for a 2-64-64-2 MLP on two moons, the paper's
Section 9 table for a 3-layer MLP on 26 LIBSVM sets. Here the network is the LeNet of the paper's Figures 1-2
(stride = kernel, no max pooling; conv 2x2/6 -> conv 2x2/16 -> dense 120 -> 84 -> 10, ReLU; `jscale.models`)
on scikit-learn's 8x8 handwritten digits as 8x8x1 images, z-scored with training-split statistics, 70/30
split (data_seed follows the seed: every seed its own split, init and minibatch order). Tutorial protocol:
Adam lr 1e-3, zero biases, full batch and minibatch 32 (the quick grid: 32 only), test accuracy after the last
epoch. The tutorial ran
200 epochs; here every configuration runs EPOCHS = 20 (a LeNet epoch costs ~10x a moons MLP epoch, and the
main job's CPU budget is fixed), so full batch takes only 20 Adam steps: its accuracy measures early
training, not a converged net.

Cells (a zipped block `init+sigma`): the tutorial's W ~ N(0, sigma^2) on every kernel ("normal:1" at
init_scale sigma), and the paper's four schemes at their own scale (sigma = 1: arithmetic = Glorot, fan_in
= He, fan_out = He fan-out, geometric c = 2; `sources.paper.PAPER_SCHEMES`, the same rules as
`jscale.initializers.SCHEMES`). The schemes' training loss after the last epoch (a pass over the training
split, `train_pass_loss`) is normalised by the worst scheme's for the same seed (same data draw and key), the
paper's normalisation; the per-kernel G at initialisation (full batch, epoch 1: the exact gradient at the
initial weights) says which scheme gives the most even G.

  python scripts/sweep.py --experiment lenet --grid quick   # batch 32 x 8 cells x 2 seeds: 16 configs
  python scripts/sweep.py --experiment lenet --grid full    # 2 batch modes x 10 cells x 8 seeds: 160 configs
  python scripts/sweep.py --experiment lenet --grid full --option data=fashion_mnist   # TFDS, when prepared
"""
from __future__ import annotations

from jscale.experiments.sources.paper import PAPER_SCHEMES
from jscale.experiments.sources.tutorial import TUTORIAL_INIT, TUTORIAL_SIGMAS
from jscale.sweeps import Experiment, product, zipped

# Full grid: the tutorial's sigmas and two between them (0.03; 0.2 is near He's std for the dense layers).
FULL_SIGMAS = (0.01, 0.03, 0.1, 0.2, 0.5, 1.0)
EPOCHS = 20
# Each batch size is its own compiled program (~20 s of XLA compile on a 2-core CPU), so the quick grid runs
# minibatch 32 only; the full grid adds full batch.
QUICK_BATCH_SIZES = (32,)
FULL_BATCH_SIZES = (None, 32)
# Data: name -> (loader options, the LeNet's image shape, input_scale). Digits are z-scored by the loader;
# Fashion-MNIST comes as raw 0..255 pixels (its loader does not standardise), scaled by 1/255.
DATA = {
    "digits": ("digits_raw", {"standardize": True}, (8, 8, 1), 1.0),
    "fashion_mnist": ("fashion_mnist", {}, (28, 28, 1), 1.0 / 255.0),
}
DATA_ALIASES = {"digits_raw": "digits", "fmnist": "fashion_mnist"}


def cells(sigmas) -> dict:
  """The zipped init+sigma block: the tutorial's init at each sigma, then each scheme at its own scale."""
  return {"init": (TUTORIAL_INIT,) * len(sigmas) + PAPER_SCHEMES, "sigma": tuple(sigmas) + (1.0,) * len(PAPER_SCHEMES)}


def make_experiment(data: str = "digits", data_seed: int | None = None, quick_seeds: int = 2,
                    full_seeds: int = 8, epochs: int = EPOCHS) -> Experiment:
  """data: "digits" (offline, the default) or "fashion_mnist" (TFDS; prepare it first, see jscale.datasets);
  data_seed: None (each seed draws its own split) or an int pinning one draw."""
  if DATA_ALIASES.get(data, data) not in DATA:
    raise ValueError(f"lenet: data must be one of {', '.join(DATA)}, got {data!r}")
  loader, options, image, input_scale = DATA[DATA_ALIASES.get(data, data)]

  def grid(batch_sizes, sigmas, n_seeds):
    return product(batch_size=batch_sizes) * zipped(**cells(sigmas)) * product(seed=range(n_seeds))

  return Experiment(
      name="lenet", doc=__doc__,
      data=loader, data_options=options, data_seed=data_seed,
      model="lenet", model_options={"image": image}, input_scale=input_scale,
      kernel_init=TUTORIAL_INIT, bias_init="zeros", optimizer="adam", lr=1e-3, epochs=epochs, batch_size=None,
      train_pass=True,
      g_ratio_steps="all",   # Table 3's minibatch G is "the mean over epoch 1's minibatch steps"
      grids={"quick": grid(QUICK_BATCH_SIZES, TUTORIAL_SIGMAS, quick_seeds),
             "full": grid(FULL_BATCH_SIZES, FULL_SIGMAS, full_seeds)},
      summary_by=("batch_size", "init", "sigma"),
  )

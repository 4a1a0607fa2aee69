"""`feature_weight`: feature scaling vs first-layer weight scaling (docs/sources.md, "The feature-vs-weight-scaling
question"; its scale factor: `jscale.experiments.sources.question`).

The question: inputs divided by feature_scale f, first-layer Glorot-normal weights divided by weight_scale
w; (f, w) = (255, 1) converges fast, (1, 255) barely, although both give the same first forward pass.
MLP [input]-300-100-10 ReLU, softmax, Glorot normal, zero biases, SGD lr 0.1, batch 32, 2 epochs; the
validation accuracy after each epoch over the (f, w) grid, beside the calculus's layer-1 G ratio.

Engine semantics (checked in the tests): the engine MULTIPLIES inputs by
`input_scale` and layer l's kernel by `layer_scale.<l>`, so the grid's axes are input_scale = 1/f and
layer_scale.0 = 1/w (the `feature_scale` alias would set input_scale = f, the opposite of the question).

Data: Fashion-MNIST (55000 train / 5000 validation, raw pixels 0..255, 784 inputs) through
`jscale.datasets.fashion_mnist` when TFDS has it prepared (TFDS_DATA_DIR or ~/tensorflow_datasets);
otherwise, offline, scikit-learn's 8x8 digits rescaled to raw pixel range 0..255 (64 inputs, so the net
is 64-300-100-10; 70/30 split). The option `data` (`scripts/sweep.py --option data=digits_raw`)
forces one; the default "auto" picks when the experiment is planned, never at import. The report names
the data used.

Data per seed: with digits_raw every seed redraws the 70/30 split (data_seed follows the seed) besides
its initialization and minibatch order. Fashion-MNIST's split is fixed (TFDS's train split cut in stored
order; the loader's seed changes nothing), so there the data seed is pinned to 0 and the seeds vary the
initialization and the minibatch order only. `make_experiment(data_seed=k)` pins any data set's draw.

  python scripts/sweep.py --experiment feature_weight --grid quick   # {1, 255}^2 x 2 seeds
  python scripts/sweep.py --experiment feature_weight --grid full    # 7 x 7 log-spaced 1..255 x 5 seeds
"""
from jscale import datasets
from jscale.experiments.sources.question import QUESTION_SCALE
from jscale.sweeps import Experiment, log_spaced, product

QUICK_SCALES = (1.0, QUESTION_SCALE)
FULL_SCALES = log_spaced(1.0, QUESTION_SCALE, 7)
DATA_CHOICES = ("auto", "digits_raw", "fashion_mnist")


def scale_grid(scales, seeds):
  """(f, w) over `scales` x seeds, as the engine's multipliers 1/f and 1/w."""
  inv = tuple(1.0 / s for s in scales)
  return product(input_scale=inv, **{"layer_scale.0": inv}, seed=seeds)


def make_experiment(data: str = "auto", data_seed: int | None = None) -> Experiment:
  """data: "fashion_mnist", "digits_raw", or "auto" (Fashion-MNIST when TFDS has it prepared).
  data_seed: None (digits_raw: each seed draws its own split; Fashion-MNIST: 0, its split is fixed) or an
  int pinning one draw."""
  if data not in DATA_CHOICES:
    raise ValueError(f"feature_weight: option data must be one of {', '.join(DATA_CHOICES)}, got {data!r}")
  if data == "auto":
    data = "fashion_mnist" if datasets.fashion_mnist_prepared() else "digits_raw"
  if data_seed is None and data == "fashion_mnist":
    data_seed = 0  # a fixed split: following the seed would load the same arrays once per seed
  return Experiment(
      name="feature_weight",
      doc=__doc__,
      data=data, data_options={"n_val": 5000} if data == "fashion_mnist" else {}, data_seed=data_seed,
      hidden=(300, 100), activation="relu", kernel_init="glorot_normal", bias_init="zeros",
      optimizer="sgd", lr=0.1, epochs=2, batch_size=32,
      g_ratio_steps="all",   # the report's measured G_1 is the epoch's mean over its minibatch steps
      grids={
          "quick": scale_grid(QUICK_SCALES, range(2)),
          "full": scale_grid(FULL_SCALES, range(5)),
      },
      summary_by=("input_scale", "layer_scale.0"),
  )

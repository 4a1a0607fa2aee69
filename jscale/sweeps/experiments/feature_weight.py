"""`feature_weight`: feature scaling vs first-layer weight scaling (seeds/feature-vs-weight-scaling-question.txt).

The question: inputs divided by feature_scale f, first-layer Glorot-normal weights divided by weight_scale
w; (f, w) = (255, 1) converges fast, (1, 255) barely, although both give the same first forward pass.
MLP [input]-300-100-10 ReLU, softmax, Glorot normal, zero biases, SGD lr 0.1, batch 32, 2 epochs; the
validation accuracy after each epoch over the (f, w) grid, beside the calculus's layer-1 G ratio.

Engine semantics (checked in tests/test_repro_experiments.py): the engine MULTIPLIES inputs by
`input_scale` and layer l's kernel by `layer_scale.<l>`, so the grid's axes are input_scale = 1/f and
layer_scale.0 = 1/w (the `feature_scale` alias would set input_scale = f, the opposite of the question).

Data: Fashion-MNIST (55000 train / 5000 validation, raw pixels 0..255, 784 inputs) through
`jscale.datasets.fashion_mnist` when TFDS has it prepared (TFDS_DATA_DIR or ~/tensorflow_datasets);
otherwise, offline, scikit-learn's 8x8 digits rescaled to raw pixel range 0..255 (64 inputs, so the net
is 64-300-100-10; 70/30 split). `JSCALE_FEATURE_WEIGHT_DATA=digits_raw|fashion_mnist` forces one. The
report names the data used.

  python scripts/sweep.py --experiment feature_weight --grid quick   # {1, 255}^2 x 2 seeds
  python scripts/sweep.py --experiment feature_weight --grid full    # 7 x 7 log-spaced 1..255 x 5 seeds
"""
import os

from jscale.sweeps.experiment import Experiment, log_spaced, product, register

QUICK_SCALES = (1.0, 255.0)
FULL_SCALES = log_spaced(1.0, 255.0, 7)


def fashion_mnist_prepared(data_dir: str | None = None) -> bool:
  """True when TFDS's data_dir holds a prepared fashion_mnist (cheap: looks for the folder only)."""
  data_dir = data_dir or os.environ.get("TFDS_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")
  d = os.path.join(data_dir, "fashion_mnist")
  return os.path.isdir(d) and any(os.scandir(d))


def choose_data() -> str:
  forced = os.environ.get("JSCALE_FEATURE_WEIGHT_DATA")
  if forced:
    if forced not in ("digits_raw", "fashion_mnist"):
      raise ValueError(f"JSCALE_FEATURE_WEIGHT_DATA must be digits_raw or fashion_mnist, got {forced!r}")
    return forced
  return "fashion_mnist" if fashion_mnist_prepared() else "digits_raw"


def scale_grid(scales, seeds) -> "product":
  """(f, w) over `scales` x seeds, as the engine's multipliers 1/f and 1/w."""
  inv = tuple(1.0 / s for s in scales)
  return product(input_scale=inv, **{"layer_scale.0": inv}, seed=seeds)


DATA = choose_data()

EXPERIMENT = register(Experiment(
    name="feature_weight",
    doc=__doc__,
    data=DATA, data_options={"n_val": 5000} if DATA == "fashion_mnist" else {}, data_seed=0,
    hidden=(300, 100), activation="relu", kernel_init="glorot_normal", bias_init="zeros",
    optimizer="sgd", lr=0.1, epochs=2, batch_size=32,
    grids={
        "quick": scale_grid(QUICK_SCALES, range(2)),
        "full": scale_grid(FULL_SCALES, range(5)),
    },
    summary_by=("input_scale", "layer_scale.0"),
))

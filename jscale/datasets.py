"""Real data sets as numpy arrays, one uniform loader signature, deterministic splits.

Every loader returns a `Dataset` NamedTuple (x_train, y_train, x_test, y_test, num_classes, name, source):
x is float32 of shape (N, D), y is int32 class indices 0..C-1, `source` says where the numbers came from
and how they were split. Loaders take keyword arguments only besides their data-defining ones, and all
accept `seed` (the split's seed, and the sampling seed for synthetic data), so `get(name, **kw)` can
drive any of them from a sweep config:

  get("iris")                          # scikit-learn's bundled copy, stratified 70/30, seed 0
  get("two_moons", n=2000, noise=0.2, seed=3)
  get("digits_raw")                    # 8x8 digits at raw pixel range 0..255: offline Fashion-MNIST stand-in
  get("fashion_mnist")                 # TFDS; raises DataUnavailableError with instructions if not prepared
  get("libsvm", path="dna.scale")      # or get("libsvm:dna.scale")
  to_device(ds)                        # `Data`: the jnp arrays `jscale.train`'s `train(key, hparams, data)` reads
  fingerprint(ds)                      # short content hash, stored in a run's config.json

Nothing here downloads anything unless asked (`fashion_mnist(download=True)`). Features are returned as
the source stores them (raw pixels stay 0..255: the feature-scaling experiment needs the raw scale), except
`two_moons`, which z-scores by default as the tutorial does. `standardize=True` (every loader but
fashion_mnist) or `zscore(ds)` standardises with training-split statistics.
"""
from __future__ import annotations

import hashlib
import inspect
import math
import os
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jscale import checks, data_checks


class Dataset(NamedTuple):
  x_train: np.ndarray  # (N_train, D) float32
  y_train: np.ndarray  # (N_train,) int32 in 0..num_classes-1
  x_test: np.ndarray   # (N_test, D) float32 (the held-out split: validation or test, see `source`)
  y_test: np.ndarray   # (N_test,) int32
  num_classes: int
  name: str
  source: str          # provenance: origin of the data, preprocessing and the split


class DataUnavailableError(RuntimeError):
  """The data set is not on this machine and downloading was not requested."""


def _check_fraction(test_fraction):
  checks.in_range(test_fraction, "test_fraction", 0.0, 1.0, hi_open=True)


def _check_seed(seed):
  # scikit-learn's random_state (the splits, make_moons) takes 0 <= seed < 2**32.
  checks.int_in_range(seed, "seed", 0, 2**32, hi_text="2**32")


def _check_flag(name: str, value):
  if not isinstance(value, (bool, np.bool_)):
    raise ValueError(f"{name} must be True or False, got {value!r}")


def _check_dataset(ds, what: str):
  if not isinstance(ds, Dataset):
    raise TypeError(f"{what} expects a jscale.datasets.Dataset (from datasets.get(name)), got {type(ds).__name__}")


def split(x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int, *, stratify: bool = True):
  """Deterministic train/test split: stratified by class (falls back to a seeded shuffle when a class is
  too small to stratify). `test_fraction == 0` gives an empty test split (training-loss protocols)."""
  _check_fraction(test_fraction)
  _check_seed(seed)
  x, y = np.asarray(x), np.asarray(y)
  if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or (len(y) and y.min() < 0):
    raise ValueError(f"split: y must be a 1-D array of class indices >= 0, got {y.dtype} of shape {y.shape}")
  if len(x) != len(y):
    raise ValueError(f"split: x has {len(x)} rows but y has {len(y)} labels")
  n = len(y)
  if test_fraction == 0:
    return x, y, x[:0], y[:0]
  n_test = math.ceil(test_fraction * n)  # scikit-learn's rounding for a float test_size
  if n_test < 1 or n - n_test < 1:
    raise ValueError(f"test_fraction={test_fraction} of {n} examples leaves {n - n_test} for training and {n_test} "
                     "for testing; both need at least one")
  from sklearn.model_selection import train_test_split
  counts = np.bincount(y)
  n_classes = int(np.sum(counts > 0))
  # Stratifying needs 2 examples per class and a class's worth of examples in each split.
  strat = y if (stratify and counts[counts > 0].min() >= 2 and min(n_test, n - n_test) >= n_classes) else None
  idx_train, idx_test = train_test_split(np.arange(n), test_size=test_fraction, random_state=int(seed),
                                         shuffle=True, stratify=strat)
  return x[idx_train], y[idx_train], x[idx_test], y[idx_test]


def remap_labels(*ys: np.ndarray) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
  """Map arbitrary labels (e.g. LIBSVM's -1/+1 or 1..C) to 0..C-1 jointly over all arrays given.
  Returns the remapped arrays and the sorted original label values (index = new label)."""
  classes = np.unique(np.concatenate([np.asarray(y).ravel() for y in ys]))
  return tuple(np.searchsorted(classes, y).astype(np.int32) for y in ys), classes


def _finish(x, y, test_fraction, seed, name, source, num_classes=None) -> Dataset:
  x = np.asarray(x, np.float32)
  y = np.asarray(y, np.int32)
  xtr, ytr, xte, yte = split(x, y, test_fraction, seed)
  pct = round(100 * (1 - test_fraction))
  source = f"{source}; stratified {pct}/{100 - pct} train/test split, seed {seed}"
  return Dataset(xtr, ytr, xte, yte, int(num_classes or (y.max() + 1)), name, source)


def _maybe_zscore(ds: Dataset, standardize: bool) -> Dataset:
  _check_flag("standardize", standardize)
  return zscore(ds) if standardize else ds


def zscore(ds: Dataset, eps: float = 1e-8) -> Dataset:
  """Standardise every feature with the training split's mean and std (no test-set leakage)."""
  mu = ds.x_train.mean(0)
  sd = ds.x_train.std(0) + eps
  return ds._replace(x_train=((ds.x_train - mu) / sd).astype(np.float32),
                     x_test=((ds.x_test - mu) / sd).astype(np.float32),
                     source=ds.source + "; z-scored with training-split mean and std")


# ---------------------------------------------------------------------------------------------------
# Bundled with scikit-learn (always offline).


def iris(*, seed: int = 0, test_fraction: float = 0.3, standardize: bool = False) -> Dataset:
  from sklearn.datasets import load_iris
  d = load_iris()
  return _maybe_zscore(_finish(d.data, d.target, test_fraction, seed, "iris",
                               "scikit-learn load_iris (UCI Iris, Fisher 1936): 150 x 4, 3 classes"), standardize)


def wine(*, seed: int = 0, test_fraction: float = 0.3, standardize: bool = False) -> Dataset:
  from sklearn.datasets import load_wine
  d = load_wine()
  return _maybe_zscore(_finish(d.data, d.target, test_fraction, seed, "wine",
                               "scikit-learn load_wine (UCI Wine): 178 x 13, 3 classes, raw feature units"),
                       standardize)


def breast_cancer(*, seed: int = 0, test_fraction: float = 0.3, standardize: bool = False) -> Dataset:
  from sklearn.datasets import load_breast_cancer
  d = load_breast_cancer()
  return _maybe_zscore(_finish(d.data, d.target, test_fraction, seed, "breast_cancer",
                               "scikit-learn load_breast_cancer (UCI WDBC): 569 x 30, 2 classes, raw feature units"),
                       standardize)


def upsample_images(x: np.ndarray, side: int, factor: int) -> np.ndarray:
  """Flat rows of side x side one-channel images, each pixel repeated factor x factor (nearest neighbour)."""
  img = np.asarray(x).reshape(len(x), side, side)
  return np.repeat(np.repeat(img, factor, axis=1), factor, axis=2).reshape(len(x), -1)


def digits_raw(*, seed: int = 0, test_fraction: float = 0.3, standardize: bool = False,
               upsample: int = 1) -> Dataset:
  """scikit-learn's 8x8 handwritten digits (1797 x 64), pixels rescaled from 0..16 to raw range 0..255.

  The offline stand-in for Fashion-MNIST in the feature-scaling experiment: real images at the raw
  pixel scale the question feeds its network (the 0..16 grey levels become 0, 15.9, ..., 255).
  `upsample`: each pixel repeated upsample x upsample times (rows of (8 upsample)^2 features), so a strided
  convnet with kernels that do not divide 8 (4, 3, 2 on 24 x 24) runs on them.
  """
  checks.int_in_range(upsample, "digits_raw: upsample", 1, 33)
  from sklearn.datasets import load_digits
  d = load_digits()
  x = upsample_images(d.data, 8, upsample) if upsample > 1 else d.data
  side = 8 * upsample
  return _maybe_zscore(_finish(x * (255.0 / 16.0), d.target, test_fraction, seed, "digits_raw",
                               f"scikit-learn load_digits (UCI optdigits 8x8): 1797 x {side * side}, 10 classes, "
                               "pixels x 255/16 to raw range 0..255"
                               + (f", each pixel repeated {upsample} x {upsample}" if upsample > 1 else "")),
                       standardize)


def two_moons(n: int = 2000, noise: float = 0.2, *, seed: int = 0, test_fraction: float = 0.3,
              standardize: bool = True) -> Dataset:
  """The tutorial's data: `sklearn.datasets.make_moons(n, noise, random_state=seed)`, z-scored (with the
  training split's statistics), 70/30 split. The tutorial does not state its noise; 0.2 is the usual value."""
  checks.int_at_least(n, "two_moons: n", 4)
  checks.finite_real(noise, "two_moons: noise", minimum=0)
  _check_seed(seed)
  _check_fraction(test_fraction)
  _check_flag("standardize", standardize)
  from sklearn.datasets import make_moons
  x, y = make_moons(n_samples=int(n), noise=float(noise), random_state=int(seed))
  ds = _finish(x, y, test_fraction, seed, "two_moons",
               f"scikit-learn make_moons(n_samples={n}, noise={noise}, random_state={seed})", num_classes=2)
  return zscore(ds) if standardize else ds


# ---------------------------------------------------------------------------------------------------
# Files and TFDS.


def _read_svmlight(load, path: str, **kw):
  """sklearn's reader, with the file named in its errors (a malformed line, a bad index, an empty file)."""
  try:
    return load(path, **kw)
  except (ValueError, OSError) as e:
    raise ValueError(f"libsvm: cannot read {path!r} as a LIBSVM file: {e}") from None


def _check_classes(classes: np.ndarray, path: str) -> None:
  if len(classes) < 2:
    raise ValueError(f"libsvm: {path!r} has {len(classes)} class ({classes.tolist()}); a classifier needs "
                     "at least 2 (with one, the loss is identically zero)")


def libsvm(path: str | os.PathLike, *, seed: int = 0, test_fraction: float = 0.3,
           test_path: str | os.PathLike | None = None, n_features: int | None = None,
           standardize: bool = False) -> Dataset:
  """A LIBSVM-format file (the paper's 26 data sets are in this format), via
  `sklearn.datasets.load_svmlight_file`. Labels are remapped to 0..C-1 (sorted original values); features
  become a dense float32 array. With `test_path` the given test file is the test split (sharing the label
  map and feature count) and `test_fraction` is ignored; otherwise the file is split as the others are."""
  from sklearn.datasets import load_svmlight_file
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise ValueError(f"libsvm: no such file {path!r}")
  x, y = _read_svmlight(load_svmlight_file, path, n_features=n_features)
  name = os.path.basename(path)
  if test_path is None:
    (y,), classes = remap_labels(y)
    _check_classes(classes, path)
    return _maybe_zscore(_finish(x.toarray(), y, test_fraction, seed, name,
                   f"LIBSVM file {path}: {x.shape[0]} x {x.shape[1]}, {len(classes)} classes "
                   f"(labels {classes.tolist()} -> 0..{len(classes) - 1})", num_classes=len(classes)), standardize)
  test_path = os.fspath(test_path)
  if not os.path.isfile(test_path):
    raise ValueError(f"libsvm: no such test file {test_path!r}")
  xt, yt = _read_svmlight(load_svmlight_file, test_path, n_features=x.shape[1])
  (y, yt), classes = remap_labels(y, yt)
  _check_classes(classes, path)
  return _maybe_zscore(Dataset(
      x.toarray().astype(np.float32), y, xt.toarray().astype(np.float32), yt, len(classes), name,
      f"LIBSVM files {path} (train, {x.shape[0]} rows) and {test_path} (test, {xt.shape[0]} rows), "
      f"{x.shape[1]} features, labels {classes.tolist()} -> 0..{len(classes) - 1}"), standardize)


_FMNIST_HELP = """Fashion-MNIST is not prepared in TFDS's data_dir ({data_dir}) in the array_record format
that `tfds.data_source` reads, and this loader never downloads unless asked. To get it, on a machine with
internet access, run once:

    python -c "import jscale.datasets as d; d.fashion_mnist(download=True)"

(equivalently `tfds.builder("fashion_mnist", file_format="array_record").download_and_prepare()`). To use a
copy prepared elsewhere, copy its `fashion_mnist/` folder into a directory and pass `data_dir=` or set the
TFDS_DATA_DIR environment variable to it. Offline, use `digits_raw()` (real images at raw pixel range 0..255)
instead. Underlying error: {err}"""


def fashion_mnist_prepared(data_dir: str | None = None) -> bool:
  """True when TFDS's data_dir holds a prepared fashion_mnist (cheap: looks for the folder only)."""
  data_dir = data_dir or os.environ.get("TFDS_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")
  d = os.path.join(data_dir, "fashion_mnist")
  return os.path.isdir(d) and any(os.scandir(d))


def fashion_mnist(*, seed: int = 0, n_val: int = 5000, eval_split: str = "val", data_dir: str | None = None,
                  download: bool = False) -> Dataset:
  """Fashion-MNIST through `tfds.data_source("fashion_mnist")`, as the question uses it.

  Pixels stay raw (0..255, float32), flattened to 784. With `eval_split="val"` (the question's protocol)
  the official train split is cut into its first N - n_val examples (55000) for training and its last
  n_val (5000) for validation, in the stored order (the question slices `X_opt[:55000]`), so `seed` does
  not change the split; `eval_split="test"` keeps all 60000 for training and returns the official test set.
  Raises `DataUnavailableError` with instructions when the data is not prepared and `download` is False.
  """
  _check_seed(seed)
  if eval_split not in ("val", "test"):
    raise ValueError(f"fashion_mnist: eval_split must be 'val' or 'test', got {eval_split!r}")
  checks.positive_int(n_val, "fashion_mnist: n_val")
  import tensorflow_datasets as tfds
  data_dir = data_dir or os.environ.get("TFDS_DATA_DIR")
  try:
    train, test = tfds.data_source("fashion_mnist", split=["train", "test"], data_dir=data_dir,
                                   download=download)
    if not len(train):
      raise ValueError("the train split is empty")
  except Exception as e:  # tfds raises assorted types (NotImplementedError, AssertionError, OSError...)
    where = data_dir or os.path.expanduser("~/tensorflow_datasets")
    raise DataUnavailableError(_FMNIST_HELP.format(data_dir=where, err=f"{type(e).__name__}: {e}")) from e

  def arrays(src):
    x = np.stack([np.asarray(src[i]["image"]) for i in range(len(src))]).reshape(len(src), -1)
    y = np.asarray([int(src[i]["label"]) for i in range(len(src))], np.int32)
    return x.astype(np.float32), y

  x, y = arrays(train)
  if eval_split == "test":
    xte, yte = arrays(test)
    how = f"official splits: train {len(y)}, test {len(yte)}"
  else:
    if n_val >= len(y):
      raise ValueError(f"fashion_mnist: n_val={n_val} leaves no training data out of {len(y)} examples")
    x, y, xte, yte = x[:-n_val], y[:-n_val], x[-n_val:], y[-n_val:]
    how = f"train split cut in stored order: first {len(y)} train, last {len(yte)} validation"
  return Dataset(x, y, xte, yte, 10, "fashion_mnist",
                 f"TFDS fashion_mnist via tfds.data_source (data_dir={data_dir or 'default'}); raw pixels "
                 f"0..255 flattened to 784; {how}")


def center_crop(x: np.ndarray, crop: int) -> np.ndarray:
  """(N, H, W, C) images cut to their central crop x crop."""
  h, w = x.shape[1:3]
  if not 1 <= crop <= min(h, w):
    raise ValueError(f"crop {crop} must be in [1, {min(h, w)}] for images of {h} x {w}")
  top, left = (h - crop) // 2, (w - crop) // 2
  return x[:, top:top + crop, left:left + crop]


def cifar10(*, seed: int = 0, crop: int = 32, n_train: int | None = None, standardize: bool = False,
            data_dir: str | None = None, download: bool = False) -> Dataset:
  """CIFAR-10 through `tfds.data_source("cifar10")`: the official train and test splits, images cut to their
  central `crop` x `crop` (24: the classic CIFAR-10 crop, which strided kernels 4, 3, 2 divide), pixels
  scaled to [0, 1] and flattened (H, W, C order); `standardize` z-scores them. `n_train`: keep the first n_train training images (a
  laptop-sized subset; None keeps all). `seed` does not change the split (accepted for the uniform signature).
  Raises `DataUnavailableError` when the data is not prepared and `download` is False."""
  _check_seed(seed)
  checks.int_in_range(crop, "cifar10: crop", 1, 33)
  if n_train is not None:
    checks.positive_int(n_train, "cifar10: n_train")
  import tensorflow_datasets as tfds
  data_dir = data_dir or os.environ.get("TFDS_DATA_DIR")
  try:
    train, test = tfds.data_source("cifar10", split=["train", "test"], data_dir=data_dir, download=download)
    if not len(train):
      raise ValueError("the train split is empty")
  except Exception as e:  # tfds raises assorted types (NotImplementedError, AssertionError, OSError...)
    where = data_dir or os.path.expanduser("~/tensorflow_datasets")
    raise DataUnavailableError(
        f"CIFAR-10 is not prepared in TFDS's data_dir ({where}) ({type(e).__name__}: {e}). Prepare it once, "
        "online: python -c \"import jscale.datasets as d; d.cifar10(download=True)\"") from e

  def arrays(src, n):
    n = len(src) if n is None else min(n, len(src))
    x = np.stack([np.asarray(src[i]["image"]) for i in range(n)]).astype(np.float32) / 255.0
    y = np.asarray([int(src[i]["label"]) for i in range(n)], np.int32)
    return center_crop(x, crop).reshape(n, -1), y

  x, y = arrays(train, n_train)
  xte, yte = arrays(test, None)
  return _maybe_zscore(Dataset(
      x, y, xte, yte, 10, "cifar10",
      f"TFDS cifar10 via tfds.data_source (data_dir={data_dir or 'default'}); official splits, train {len(y)}, "
      f"test {len(yte)}; central {crop} x {crop} crop, pixels / 255, flattened HWC"), standardize)


# ---------------------------------------------------------------------------------------------------
# Registry.

LOADERS: dict[str, Callable[..., Dataset]] = {
    "iris": iris,
    "wine": wine,
    "breast_cancer": breast_cancer,
    "digits_raw": digits_raw,
    "two_moons": two_moons,
    "fashion_mnist": fashion_mnist,
    "cifar10": cifar10,
    "libsvm": libsvm,
}
_ALIASES = {"digits": "digits_raw", "moons": "two_moons", "fmnist": "fashion_mnist"}
# The offline real multi-class sets of the init-scheme comparison (plus two_moons, synthetic).
OFFLINE_REAL = ("iris", "wine", "digits_raw", "breast_cancer")


def names() -> list[str]:
  return sorted(LOADERS) + sorted(_ALIASES)


def get(name: str, **kw) -> Dataset:
  """Load a data set by name with the loader's keyword arguments; "libsvm:PATH" is short for
  `get("libsvm", path=PATH)`. See `names()`."""
  if not isinstance(name, str) or not name:
    raise ValueError(f"data set name must be a non-empty string, got {name!r}; valid: {', '.join(names())}")
  base, sep, arg = name.partition(":")
  base = _ALIASES.get(base.strip().lower(), base.strip().lower())
  if base not in LOADERS:
    raise ValueError(f"unknown data set {name!r}; valid names: {', '.join(names())} "
                     "(and 'libsvm:PATH' for a LIBSVM-format file)")
  if sep:
    if base != "libsvm":
      raise ValueError(f"only 'libsvm:PATH' takes an argument in the name, got {name!r}")
    kw = {"path": arg, **kw}
  loader = LOADERS[base]
  try:
    inspect.signature(loader).bind(**kw)
  except TypeError as e:  # an unknown or missing keyword
    raise ValueError(f"bad arguments for data set {base!r} (signature {base}{inspect.signature(loader)}): "
                     f"{e}") from None
  return loader(**kw)


class Data(NamedTuple):
  """What `train(key, hparams, data)` reads. Shared by every configuration of a sweep (never vmapped)."""
  x_train: jax.Array  # (N, D) float32
  y_train: jax.Array  # (N,) int32
  x_test: jax.Array   # (M, D) float32; M may be 0 (training-loss-only protocols)
  y_test: jax.Array   # (M,) int32


def to_device(ds: Dataset, dtype=jnp.float32) -> Data:
  _check_dataset(ds, "to_device")
  data = Data(jnp.asarray(ds.x_train, dtype), jnp.asarray(ds.y_train, jnp.int32),
              jnp.asarray(ds.x_test, dtype), jnp.asarray(ds.y_test, jnp.int32))
  checks.positive_int(ds.num_classes, "num_classes", context=f" (data set {ds.name!r})")
  data_checks.check_values(data, ds.num_classes, what=f"data set {ds.name!r}",
                           outputs=f"; its num_classes is {ds.num_classes}")
  return data


def fingerprint(ds: Dataset) -> str:
  """sha256 prefix of the arrays: a resumed run checks its data did not change underneath it."""
  _check_dataset(ds, "fingerprint")
  h = hashlib.sha256()
  for a in (ds.x_train, ds.y_train, ds.x_test, ds.y_test):
    a = np.ascontiguousarray(a)
    h.update(str((a.dtype, a.shape)).encode())
    h.update(a.tobytes())
  return h.hexdigest()[:16]

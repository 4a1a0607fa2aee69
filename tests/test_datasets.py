"""Data sets: shapes, splits against the bundled sources, LIBSVM files, the TFDS path (mocked, offline)."""
import os
import tempfile

from absl.testing import parameterized
import numpy as np
import tensorflow_datasets as tfds

from jscale import datasets


def _rows_sorted(x):
  return x[np.lexsort(x.T[::-1])]


class SklearnSetsTest(parameterized.TestCase):

  @parameterized.parameters(("iris", 150, 4, 3), ("wine", 178, 13, 3), ("breast_cancer", 569, 30, 2),
                            ("digits_raw", 1797, 64, 10))
  def test_shapes_split_and_content(self, name, n, d, c):
    ds = datasets.get(name, seed=3)
    self.assertEqual((ds.num_classes, ds.name), (c, name))
    self.assertEqual(ds.x_train.shape[1], d)
    self.assertEqual(len(ds.y_train) + len(ds.y_test), n)
    self.assertEqual(ds.x_train.dtype, np.float32)
    self.assertEqual(ds.y_train.dtype, np.int32)
    # 30% test, rounded up by scikit-learn.
    self.assertEqual(len(ds.y_test), int(np.ceil(0.3 * n)))
    # Stratified: each class's test share is within one example of 30%.
    tot = np.bincount(np.concatenate([ds.y_train, ds.y_test]), minlength=c)
    np.testing.assert_array_less(np.abs(np.bincount(ds.y_test, minlength=c) - 0.3 * tot), 1.0 + 1e-9)
    # Train + test is exactly the bundled data (as a multiset of rows), independent of the split.
    from sklearn import datasets as skd
    loader = {"iris": skd.load_iris, "wine": skd.load_wine, "breast_cancer": skd.load_breast_cancer,
              "digits_raw": skd.load_digits}[name]
    raw = loader().data * (255.0 / 16.0 if name == "digits_raw" else 1.0)
    np.testing.assert_allclose(_rows_sorted(np.concatenate([ds.x_train, ds.x_test]).astype(np.float64)),
                               _rows_sorted(raw.astype(np.float32).astype(np.float64)), rtol=0, atol=0)
    self.assertIn("seed 3", ds.source)

  def test_digits_raw_pixel_range(self):
    ds = datasets.digits_raw()
    x = np.concatenate([ds.x_train, ds.x_test])
    self.assertEqual((x.min(), x.max()), (0.0, 255.0))
    # 17 grey levels 0..16 map to multiples of 255/16 (float32 rounding ~1e-5 relative).
    np.testing.assert_allclose(x / (255.0 / 16.0), np.round(x / (255.0 / 16.0)), atol=1e-4)

  def test_split_deterministic_and_seeded(self):
    a, b, c = datasets.wine(seed=1), datasets.wine(seed=1), datasets.wine(seed=2)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    self.assertFalse(np.array_equal(a.x_train, c.x_train))

  def test_no_test_split(self):
    ds = datasets.iris(test_fraction=0.0)
    self.assertEqual((len(ds.y_train), len(ds.y_test)), (150, 0))
    self.assertEqual(ds.x_test.shape, (0, 4))

  def test_two_moons(self):
    ds = datasets.two_moons(n=1000, noise=0.1, seed=4)
    self.assertEqual((len(ds.y_train), len(ds.y_test)), (700, 300))
    # z-scored with the training split's statistics: float32 rounding only.
    np.testing.assert_allclose(ds.x_train.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(ds.x_train.std(0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(np.bincount(ds.y_test), [150, 150])  # balanced, stratified
    raw = datasets.two_moons(n=1000, noise=0.1, seed=4, standardize=False)
    from sklearn.datasets import make_moons
    x, _ = make_moons(1000, noise=0.1, random_state=4)
    np.testing.assert_allclose(_rows_sorted(np.concatenate([raw.x_train, raw.x_test]).astype(np.float64)),
                               _rows_sorted(x.astype(np.float32).astype(np.float64)), rtol=0, atol=0)

  @parameterized.parameters(({"test_fraction": 1.0},), ({"test_fraction": -0.1},), ({"seed": -1},),
                            ({"seed": 1.5},))
  def test_bad_arguments(self, kw):
    with self.assertRaises(ValueError):
      datasets.iris(**kw)


class LibsvmTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.dir = tempfile.mkdtemp()
    # Labels 7, -1, 3 (arbitrary, as in LIBSVM files), 1-based sparse feature indices.
    rows = ["7 1:0.5 3:2", "-1 2:1", "3 1:1 2:1 3:1", "7 3:-4", "-1 1:2", "3 2:0.25"] * 2
    self.train = os.path.join(self.dir, "tiny.libsvm")
    with open(self.train, "w") as f:
      f.write("\n".join(rows) + "\n")
    self.test = os.path.join(self.dir, "tiny.t")
    with open(self.test, "w") as f:
      f.write("3 1:9\n-1 3:8\n")
    self.dense = np.array([[0.5, 0, 2], [0, 1, 0], [1, 1, 1], [0, 0, -4], [2, 0, 0], [0, 0.25, 0]] * 2)
    self.labels = np.array([2, 0, 1, 2, 0, 1] * 2)  # sorted originals -1, 3, 7 -> 0, 1, 2

  def test_split_file(self):
    ds = datasets.get(f"libsvm:{self.train}", test_fraction=0.5, seed=0)
    self.assertEqual((ds.num_classes, ds.name), (3, "tiny.libsvm"))
    x = np.concatenate([ds.x_train, ds.x_test])
    y = np.concatenate([ds.y_train, ds.y_test])
    self.assertEqual(x.dtype, np.float32)
    # Same rows with the same remapped labels as the hand-written dense matrix.
    got = sorted(zip(map(tuple, x.tolist()), y.tolist()))
    want = sorted(zip(map(tuple, self.dense.tolist()), self.labels.tolist()))
    self.assertEqual(got, want)
    np.testing.assert_array_equal(np.bincount(ds.y_test), [2, 2, 2])  # stratified half

  def test_train_and_test_files(self):
    ds = datasets.libsvm(self.train, test_path=self.test)
    np.testing.assert_array_equal(ds.x_train, self.dense)
    np.testing.assert_array_equal(ds.y_train, self.labels)
    np.testing.assert_array_equal(ds.x_test, [[9, 0, 0], [0, 0, 8]])
    np.testing.assert_array_equal(ds.y_test, [1, 0])

  def test_missing_file(self):
    with self.assertRaisesRegex(ValueError, "no such file"):
      datasets.get("libsvm", path=os.path.join(self.dir, "nope"))

  @parameterized.parameters(("7 1:0.5\nnot a line at all\n",), ("1 0:3\n",), ("",))
  def test_malformed_file_named_in_the_error(self, text):
    bad = os.path.join(self.dir, "bad.svm")
    with open(bad, "w") as f:
      f.write(text)
    with self.assertRaisesRegex(ValueError, "bad.svm"):
      datasets.get(f"libsvm:{bad}")

  def test_one_class_file_refused(self):
    one = os.path.join(self.dir, "one.svm")
    with open(one, "w") as f:
      f.write("1 1:0.5\n1 2:1\n1 1:2\n")
    with self.assertRaisesRegex(ValueError, "at least 2"):
      datasets.get(f"libsvm:{one}")


class RegistryTest(parameterized.TestCase):

  def test_unknown_lists_names(self):
    with self.assertRaisesRegex(ValueError, "iris.*two_moons"):
      datasets.get("mnist_v9")

  def test_bad_keyword(self):
    with self.assertRaisesRegex(ValueError, "unexpected keyword"):
      datasets.get("iris", noise=0.1)

  def test_aliases(self):
    np.testing.assert_array_equal(datasets.get("digits").x_test, datasets.digits_raw().x_test)
    np.testing.assert_array_equal(datasets.get("moons", n=100).y_train, datasets.two_moons(n=100).y_train)


class FashionMnistTest(parameterized.TestCase):

  def test_mocked_data_source(self):
    with tfds.testing.mock_data(num_examples=12):
      ds = datasets.fashion_mnist(n_val=4)
      ref = tfds.data_source("fashion_mnist", split="train")  # independent read of the same mock
      ref_x = np.stack([np.asarray(ref[i]["image"]).reshape(-1) for i in range(12)]).astype(np.float32)
      ref_y = np.array([int(ref[i]["label"]) for i in range(12)])
      test = datasets.fashion_mnist(eval_split="test")
    self.assertEqual(ds.x_train.shape, (8, 784))
    self.assertEqual(ds.x_test.shape, (4, 784))
    self.assertEqual(ds.x_train.dtype, np.float32)
    np.testing.assert_array_equal(ds.x_train, ref_x[:8])   # the question slices X[:55000] in order
    np.testing.assert_array_equal(ds.x_test, ref_x[8:])
    np.testing.assert_array_equal(ds.y_train, ref_y[:8])
    self.assertGreater(ds.x_train.max(), 1.0)              # raw pixels, not rescaled
    self.assertLessEqual(ds.x_train.max(), 255.0)
    self.assertEqual((test.x_train.shape[0], test.num_classes), (12, 10))

  def test_unavailable_offline_says_how(self):
    empty = tempfile.mkdtemp()
    with self.assertRaises(datasets.DataUnavailableError) as cm:
      datasets.fashion_mnist(data_dir=empty)
    msg = str(cm.exception)
    for needle in ("download=True", "TFDS_DATA_DIR", "data_dir", "digits_raw"):
      self.assertIn(needle, msg)
    self.assertEqual(os.listdir(empty), [])  # nothing downloaded or written

  def test_bad_split(self):
    with self.assertRaisesRegex(ValueError, "eval_split"):
      datasets.fashion_mnist(eval_split="validation")


class ImagesTest(parameterized.TestCase):

  def test_upsampled_digits_repeat_every_pixel(self):
    small, big = datasets.digits_raw(seed=3), datasets.digits_raw(seed=3, upsample=3)
    self.assertEqual(big.x_train.shape, (small.x_train.shape[0], 576))
    img, up = small.x_train[0].reshape(8, 8), big.x_train[0].reshape(24, 24)
    for i, j in ((0, 0), (2, 5), (7, 7)):
      np.testing.assert_array_equal(up[3 * i:3 * i + 3, 3 * j:3 * j + 3], img[i, j])
    with self.assertRaisesRegex(ValueError, "upsample"):
      datasets.digits_raw(upsample=0)

  def test_center_crop(self):
    x = np.arange(2 * 32 * 32 * 3).reshape(2, 32, 32, 3)
    np.testing.assert_array_equal(datasets.center_crop(x, 24), x[:, 4:28, 4:28])
    with self.assertRaisesRegex(ValueError, "crop"):
      datasets.center_crop(x, 33)

  def test_cifar10_mock_and_offline_error(self):
    with tfds.testing.mock_data(num_examples=5):
      ds = datasets.cifar10(crop=24)
      ref = tfds.data_source("cifar10", split="train")
      first = np.asarray(ref[0]["image"]).astype(np.float32)[4:28, 4:28].reshape(-1) / 255.0
    np.testing.assert_allclose(ds.x_train[0], first)
    self.assertEqual((ds.x_train.shape, ds.num_classes), ((5, 24 * 24 * 3), 10))
    with self.assertRaises(datasets.DataUnavailableError):
      datasets.cifar10(data_dir=tempfile.mkdtemp())

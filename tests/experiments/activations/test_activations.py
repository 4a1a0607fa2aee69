"""Per-layer activations at init (the explainers' experiment) against closed forms and numpy."""
import math
import tempfile

import jax
import numpy as np
from absl.testing import absltest, parameterized
from scipy import stats

from jscale import sweeps
from jscale.experiments.activations import run as activations

WIDTH, DEPTH = 500, 10
RELU_STD_FACTOR = 0.5 - 1.0 / (2.0 * math.pi)  # Var(relu(y)) / q for y ~ N(0, q), closed form


def _stats(act, init, seeds, n_samples=200):
  return [activations.activation_stats(jax.random.key(s), act, init, depth=DEPTH, width=WIDTH,
                                       n_samples=n_samples) for s in seeds]


class ReluTest(parameterized.TestCase):

  def test_he_std_stable_across_depth(self):
    # He: n E[W^2] = 2, so E[y_l^2] = 2 at every layer and the relu output std is sqrt(2 * factor).
    closed = math.sqrt(2.0 * RELU_STD_FACTOR)
    runs = _stats("relu", "he_normal", range(8))
    geo = np.exp(np.mean([np.log(r.std) for r in runs], 0))
    # One net's log second moment wanders ~sqrt(5 L / n) ~ 0.32 at L=10, n=500 (finite width: 1/n per
    # layer, shared by all inputs since they share W), i.e. ~16% in std at depth 10 (measured max 34%
    # over 20 single nets). Averaging 8 independent nets cuts that to ~6%; 15% is ~2.5 sigma, while the
    # next-closest scheme (LeCun) is off by 2^(l/2): 41% at layer 1, 97% at layer 10.
    np.testing.assert_allclose(geo, closed, rtol=0.15)
    self.assertBetween(geo[-1] / geo[0], 0.85, 1.15)
    np.testing.assert_allclose(runs[0].predicted_std, closed, rtol=1e-6)  # the calculus, exactly

  def test_small_normal_shrinks_by_predicted_factor(self):
    # N(0, 0.01^2): each layer multiplies E[y^2] by n sigma^2 / 2, the std by sqrt(500 * 1e-4 / 2).
    factor = math.sqrt(WIDTH * 1e-4 / 2)
    runs = _stats("relu", "normal:0.01", range(4))
    ratios = np.concatenate([r.std[1:] / r.std[:-1] for r in runs])
    # Per-layer ratio noise ~ sqrt(5/n)/2 ~ 5% (measured max 12% over 20 nets); the geometric mean
    # of 36 ratios has ~1% error: 4% tolerance.
    np.testing.assert_allclose(np.exp(np.mean(np.log(ratios))), factor, rtol=0.04)
    # Predicted std, closed form: q_l = (n sigma^2)^(l+1) / 2^l.
    q = np.array([(WIDTH * 1e-4) ** (l + 1) / 2 ** l for l in range(DEPTH)])
    np.testing.assert_allclose(runs[0].predicted_std, np.sqrt(q * RELU_STD_FACTOR), rtol=1e-6)
    np.testing.assert_allclose(runs[0].linear_std, runs[0].predicted_std, rtol=1e-12)  # relu: one rule

  def test_half_of_relu_outputs_are_zero(self):
    r = _stats("relu", "lecun_normal", [0])[0]
    # 200 x 500 outputs per layer, but units share W: the zero fraction per layer varies ~1/sqrt(500).
    np.testing.assert_allclose(r.saturation_frac, 0.5, atol=0.05)


class TanhTest(parameterized.TestCase):

  def test_large_init_saturates(self):
    # N(0, 1): q_1 = n E[W^2] E[x0^2] = 500, so P(|tanh y| > 0.99) = P(|z| > atanh(0.99) / sqrt(500)).
    r = _stats("tanh", "normal:1.0", [0])[0]
    closed = 2 * stats.norm.sf(math.atanh(0.99) / math.sqrt(500.0))
    # W's draw moves q_1 by ~sqrt(2/n) ~ 6%, the threshold by 3%, the probability by ~0.003.
    self.assertAlmostEqual(r.saturation_frac[0], closed, delta=0.01)
    self.assertTrue(np.all(r.saturation_frac > 0.85))  # stays saturated at every layer
    # The linear regime is useless here: std sqrt(500)^l against measured < 1.
    self.assertGreater(r.linear_std[-1] / r.std[-1], 1e10)

  def test_n01_saturates_and_linear_prediction_fails(self):
    r = _stats("tanh", "normal:0.1", [0])[0]
    self.assertGreater(r.saturation_frac[0], 0.15)   # closed form 2 P(z > 2.647/sqrt(5)) = 0.236
    self.assertGreater(r.linear_std[-1] / r.std[-1], 100.0)
    self.assertTrue(np.all(r.std < 1.0))

  def test_quadrature_prediction_follows_saturation(self):
    # The calculus's quadrature rule against 6 independent 10 x 500 nets: each layer's std moves ~sqrt(2/n)
    # ~ 6% per net with W's draw (saturated tanh damps it, so less), the mean of 6 nets ~3% at one layer;
    # 8% is ~2.5 sigma. The linear regime is off by > 100x on the same nets (test above).
    runs = _stats("tanh", "normal:0.1", range(6))
    geo = np.exp(np.mean([np.log(r.std) for r in runs], 0))
    np.testing.assert_allclose(geo, runs[0].predicted_std, rtol=0.08)

  def test_quadrature_first_layer_closed_form(self):
    # The rule's layer 1: pre-activation N(0, q), q = n sigma^2 E[x0^2] = 5, std sqrt(E[tanh(sqrt(5) z)^2]),
    # against scipy's adaptive integration (an independent reference; the rule uses 100 Gauss-Hermite nodes in
    # float32, whose error on tanh^2 (poles 0.70 from the real axis at this scale) is ~1.5e-5 here: 1e-4).
    from scipy import integrate
    q = WIDTH * 0.01
    ref = integrate.quad(lambda z: math.tanh(math.sqrt(q) * z) ** 2 * stats.norm.pdf(z), -12, 12)[0]
    got = activations.predicted_std("tanh", [0.01] * 3, WIDTH)
    self.assertAlmostEqual(got[0], math.sqrt(ref), delta=1e-4)
    self.assertGreater(got[1], 0.0)

  def test_small_init_linear_regime_holds(self):
    r = _stats("tanh", "normal:0.01", [0])[0]
    # Linear regime tanh(y) ~ y: tanh at pre-activation std 0.22 loses ~2q = 10% of the second moment at
    # layer 1 (~5% of std), less deeper; W noise adds ~3%/layer: 12% tolerance. Never saturated.
    np.testing.assert_array_equal(r.saturation_frac, 0.0)
    np.testing.assert_allclose(r.std, r.predicted_std, rtol=0.06)  # quadrature: W noise only
    np.testing.assert_allclose(r.std, r.linear_std, rtol=0.12)


class HistogramTest(parameterized.TestCase):

  @parameterized.parameters("relu", "tanh")
  def test_counts_match_numpy(self, act):
    key = jax.random.key(3)
    r = activations.activation_stats(key, act, "he_normal", depth=3, width=40, n_samples=30)
    xs = np.asarray(activations.layer_activations(key, act, "he_normal", depth=3, width=40, n_samples=30),
                    np.float64).reshape(3, -1)
    for l in range(3):
      v = xs[l][xs[l] > 0] if act == "relu" else xs[l]
      self.assertEqual(r.counts[l].sum(), v.size)  # every counted value lands in a bin
      np.testing.assert_array_equal(r.counts[l], np.histogram(v, r.bin_edges)[0])  # none outside here
      np.testing.assert_allclose(r.std[l], v.std() if act == "tanh" else xs[l].std(), rtol=1e-6)

  def test_validation(self):
    with self.assertRaisesRegex(ValueError, "activation"):
      activations.activation_stats(jax.random.key(0), "sigmoid", "he_normal")
    with self.assertRaisesRegex(ValueError, "depth"):
      activations.activation_stats(jax.random.key(0), "relu", "he_normal", depth=0)
    with self.assertRaisesRegex(ValueError, "unknown initializer"):
      activations.activation_stats(jax.random.key(0), "relu", "nope")

  def test_experiment_writes_protocol(self):
    d = tempfile.mkdtemp()
    activations.experiment(d, seed=1, replicates=2, depth=3, width=16, n_samples=8,
                           schemes={"He": "he_normal", "N(0,0.1^2)": "normal:0.1"})
    r = sweeps.load(d)
    self.assertEqual(r.metric("counts", "activation", "scheme", "layer", "bin").shape[:3], (2, 2, 3))
    std = r.metric("std", "replicate", "activation", "scheme", "layer")
    self.assertEqual(std.shape, (2, 2, 2, 3))
    self.assertFalse(np.allclose(std[0], std[1]))  # the replicates are independent draws
    self.assertEqual(r.axis("scheme"), ["He", "N(0,0.1^2)"])


if __name__ == "__main__":
  absltest.main()

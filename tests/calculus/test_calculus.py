"""Tests of the scaling calculus: predictions against closed forms and against measurement.

  python -m pytest tests/calculus/test_calculus.py -q

Monte-Carlo error model used for every tolerance below. With zero-mean weights the per-unit second
moment of a layer's output fluctuates, across units of one network draw, mainly through the non-zero
mean of ReLU inputs: E_x[y_j^2] contains (w_j . E[x])^2, a chi^2(1) variable carrying a fraction r <= 0.5
of the moment (r = uncentered correlation between examples, 1/pi after one ReLU, ~0.49 after two).
Averaging over m output units gives a relative s.d. of about r sqrt(2/m) per layer hop; the batch and
weight-draw terms (sqrt(2/(B m)), sqrt(2/(n m))) are smaller. Quantities reached through H hops add
these in quadrature, and averaging over S independent networks divides by sqrt(S).
"""
from __future__ import annotations

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from jscale import calculus, initializers, mlp


def mc_rel_sd(min_width, hops, seeds, r=0.5):
  """Relative s.d. of a seed-averaged measured moment (module docstring)."""
  return math.sqrt(hops) * r * math.sqrt(2.0 / min_width) / math.sqrt(seeds)


PATTERNS = {"wide_narrow": (256, 128, 96, 64), "narrow_wide": (64, 96, 128, 256),
            "bottleneck": (192, 64, 192, 64)}
# One member per initializer family (the scale rules of a family differ only by a constant).
FAMILIES = ("normal:0.05", "uniform:0.1", "truncated_normal:0.05", "lecun_normal", "glorot_normal",
            "glorot_uniform", "he_normal", "he_normal:fan_out", "geometric",
            "geometric:c=1.5,distribution=uniform", "orthogonal:1.4")
SEEDS, BATCH = 8, 128


@functools.partial(jax.jit, static_argnames="activation")
def _measure_seeds(params, x, keys, activation="relu"):
  return jax.vmap(lambda p, k: calculus.measure_mlp(p, x, k, activation=activation), in_axes=(0, 0))(
      params, keys)


@functools.lru_cache(maxsize=None)
def measured(widths, init, activation="relu", x0_sq=1.0, seed=0):
  """Measurement of SEEDS independent networks (vmapped), returned as a Measurement of (SEEDS, L) arrays."""
  key = jax.random.PRNGKey(seed)
  k_x, k_p, k_m = jax.random.split(key, 3)
  x = math.sqrt(x0_sq) * jax.random.normal(k_x, (BATCH, widths[0]))
  params = jax.vmap(lambda k: mlp.init_mlp(k, widths, init))(jax.random.split(k_p, SEEDS))
  return jax.device_get(_measure_seeds(params, x, jax.random.split(k_m, SEEDS), activation=activation))


def weight_sq(widths, init):
  return [initializers.get(init).second_moment((a, b)) for a, b in zip(widths[:-1], widths[1:])]


class PredictDenseTest(chex.TestCase):

  def test_closed_forms(self):
    widths = (50, 200, 80, 10)
    n = np.asarray(widths, float)
    # He fan-in keeps E[x^2] through a ReLU: x_l = x_0 for every l; fan-out keeps E[dx^2].
    m = calculus.predict_dense(widths, 2 / n[:-1], x0_sq=0.7, dy_out_sq=3.0)
    np.testing.assert_allclose(m.x_sq, 0.7, rtol=1e-6)  # float32 rounding
    m = calculus.predict_dense(widths, 2 / n[1:], x0_sq=0.7, dy_out_sq=3.0)
    np.testing.assert_allclose(m.dx_sq, 2 * 3.0, rtol=1e-6)
    # Geometric: G_l = nu / c^2 for every layer and the telescoping output moment.
    c = 1.5
    m = calculus.predict_dense(widths, c / np.sqrt(n[:-1] * n[1:]), x0_sq=0.7)
    np.testing.assert_allclose(m.G, m.nu / c ** 2, rtol=1e-5)
    np.testing.assert_allclose(m.y_sq[-1], c ** 3 / 4 * math.sqrt(50 / 10) * 0.7, rtol=1e-5)
    np.testing.assert_allclose(m.nu, m.nu[0], rtol=1e-5)

  def test_jit_and_vmap_over_weight_sq(self):
    f = jax.jit(jax.vmap(lambda w: calculus.predict_dense((8, 16, 4), w).G))
    w = jnp.array([[0.1, 0.2], [0.3, 0.4]])
    chex.assert_shape(f(w), (2, 2))
    np.testing.assert_allclose(f(w)[1], calculus.predict_dense((8, 16, 4), w[1]).G, rtol=1e-6)

  def test_rich_predict_agrees_with_predict_dense(self):
    widths = (30, 70, 20, 5)
    for init in ("he_normal", "geometric", "glorot_uniform"):
      p = calculus.predict(calculus.mlp_layers(widths, init), 30, x0_sq=0.3, dy_out_sq=2.0)
      d = calculus.predict_dense(widths, weight_sq(widths, init), 0.3, 2.0)
      chex.assert_trees_all_close(tuple(p.moments), tuple(np.asarray(v) for v in d), rtol=1e-5)

  def test_bad_input(self):
    for widths in ((10,), (), (10, 0, 3), (10, -2), (10, 2.5)):
      with self.assertRaises(ValueError):
        calculus.predict_dense(widths, [1.0] * max(len(widths) - 1, 1))
    with self.assertRaisesRegex(ValueError, "unknown activation"):
      calculus.predict_dense((4, 4), [1.0], activation="swish")
    with self.assertRaisesRegex(ValueError, "not positively homogeneous"):
      calculus.predict_dense((4, 4), [1.0], activation="tanh")
    with self.assertRaisesRegex(ValueError, "one entry per weight layer"):
      calculus.predict_dense((4, 4, 4), [1.0])
    with self.assertRaisesRegex(ValueError, "unknown activation"):
      calculus.mlp_layers((4, 4), activation="gelu")
    with self.assertRaises(ValueError):
      calculus.mlp_layers((4,))
    with self.assertRaisesRegex(ValueError, "divisible"):
      calculus.predict((calculus.Conv(4, (3, 3)),), 2, (8, 8))
    with self.assertRaisesRegex(ValueError, "keep the shape"):
      calculus.predict((calculus.Residual((calculus.Linear(3),)),), 4)
    with self.assertRaisesRegex(ValueError, "not a calculus layer"):
      calculus.predict(("relu",), 4)
    with self.assertRaisesRegex(ValueError, "batch_size"):
      calculus.predict((calculus.Linear(3),), 4, batch_size=0)


class DenseHelpersTest(chex.TestCase):
  """The float64 twin of predict_dense and the one-line helpers built on it."""

  def test_dense_moments_is_predict_dense_in_float64(self):
    widths = (30, 70, 20, 5)
    for act in ("relu", "leaky_relu", "identity"):
      w = calculus.init_weight_sq(widths, "glorot_normal")
      d = calculus.dense_moments(widths, w, 0.3, 2.0, act)
      self.assertEqual(d.G.dtype, np.float64)
      chex.assert_trees_all_close(tuple(d), tuple(np.asarray(v, np.float64) for v in
                                                  calculus.predict_dense(widths, w, 0.3, 2.0, act)), rtol=1e-5)
    with self.assertRaisesRegex(ValueError, "not positively homogeneous"):
      calculus.dense_moments((4, 4), [1.0], activation="tanh")

  def test_init_weight_sq(self):
    widths = (30, 70, 20)
    np.testing.assert_allclose(calculus.init_weight_sq(widths, "he_normal"), [2 / 30, 2 / 70])
    np.testing.assert_allclose(calculus.init_weight_sq(widths, ["normal:0.1", "glorot_normal"]),
                               [0.01, 2 / 90])
    with self.assertRaisesRegex(ValueError, "kernel_init: got 1 entries"):
      calculus.init_weight_sq(widths, ["he_normal"], what="kernel_init")

  def test_activation_std_closed_forms(self):
    # Square width-n net, n E[W^2] = a: E[y_l^2] = a^(l+1) g^l x0 with g the forward gain.
    n, a, x0 = 40, 3.0, 0.7
    q = lambda g: np.array([a ** (l + 1) * g ** l * x0 for l in range(5)])
    std = calculus.activation_std((n,) * 6, [a / n] * 5, x0, "relu")
    np.testing.assert_allclose(std, np.sqrt(q(0.5) * (0.5 - 1 / (2 * np.pi))), rtol=1e-12)
    std = calculus.activation_std((n,) * 6, [a / n] * 5, x0, "tanh")  # linear regime: the identity rules
    np.testing.assert_allclose(std, np.sqrt(q(1.0)), rtol=1e-12)

  def test_feature_weight_G_closed_form(self):
    widths, x0 = (784, 300, 100, 10), 7000.0
    g = calculus.feature_weight_G(widths, [1.0, 255.0], [1.0, 255.0], x0, "glorot_normal")
    chex.assert_shape(g, (2, 2, 3))
    w = [2.0 / (a + b) for a, b in zip(widths[:-1], widths[1:])]
    dy0 = 0.5 * 100 * w[1] * 0.5 * 10 * w[2]
    for i, ws in enumerate([1.0, 255.0]):
      for j, fs in enumerate([1.0, 255.0]):
        np.testing.assert_allclose(g[i, j, 0], (x0 / fs ** 2) * dy0 / (w[0] / ws ** 2), rtol=1e-12)
    np.testing.assert_allclose(g[1, 0, 0] / g[0, 1, 0], 255.0 ** 4, rtol=1e-12)

  def test_a_new_layer_type_is_one_class(self):
    """A layer written outside the package plugs into predict, init_layers and apply_layers."""

    class Negate(calculus.Layer):
      def forward(self, s, here):
        return s

      def backward(self, g, s_in, extra):
        return g

      def apply(self, p, x, key, probe):
        return -x

    layers = (calculus.Linear(6), Negate(), calculus.Act(), calculus.Linear(3))
    p = calculus.predict(layers, 4)
    ref = calculus.predict(calculus.mlp_layers((4, 6, 3)), 4)
    chex.assert_trees_all_close(tuple(p.moments), tuple(ref.moments))
    params = calculus.init_layers(jax.random.PRNGKey(0), layers, 4)
    x = jnp.ones((2, 4))
    y = calculus.apply_layers(params, layers, x)
    w0, w1 = params[0].w, params[3].w
    np.testing.assert_allclose(y, jax.nn.relu(-(x @ w0)) @ w1, rtol=1e-6)


class MeasuredVsPredictedTest(parameterized.TestCase):

  @parameterized.parameters(*PATTERNS)
  def test_every_family(self, pattern):
    widths = PATTERNS[pattern]
    # 3 s.d. of the seed-averaged estimate; the deepest quantity crosses 3 forward + 3 backward hops.
    tol = 3 * mc_rel_sd(min(widths), hops=6, seeds=SEEDS)
    for init in FAMILIES:
      m = measured(widths, init)
      p = calculus.predict_dense(widths, weight_sq(widths, init))
      for field in ("x_sq", "y_sq", "dx_sq", "dy_sq", "nu", "G"):
        got = np.mean(getattr(m.moments, field), axis=0)
        np.testing.assert_allclose(got, getattr(p, field), rtol=tol, err_msg=f"{pattern} {init} {field}")

  @parameterized.parameters(*PATTERNS)
  def test_nu_constant_across_layers(self, pattern):
    widths = PATTERNS[pattern]
    tol = 3 * mc_rel_sd(min(widths), hops=6, seeds=SEEDS)
    for init in FAMILIES:
      nu = np.mean(measured(widths, init).moments.nu, axis=0)
      self.assertLess(nu.max() / nu.min() - 1, 2 * tol, f"{pattern} {init}: nu = {nu}")
      self.assertTrue(calculus.check_calculus(nu).ok)

  @parameterized.parameters(*PATTERNS)
  def test_G_patterns(self, pattern):
    widths = PATTERNS[pattern]
    n = np.asarray(widths, float)
    # CV over the layers of seed-averaged G (normalised by the predicted pattern): each entry has the
    # relative s.d. below, so the CV of 3 such entries stays under 2 s.d. with overwhelming probability.
    bound = 2 * mc_rel_sd(min(widths), hops=6, seeds=SEEDS)
    shapes = {"geometric": np.ones(3), "he_normal": n[:-1] / n[1:], "he_normal:fan_out": n[1:] / n[:-1],
              "glorot_normal": (n[:-1] + n[1:]) ** 2 / (4 * n[:-1] * n[1:])}
    for init, shape in shapes.items():
      G = np.mean(measured(widths, init).moments.G, axis=0)
      ratio = G / shape
      cv = ratio.std() / ratio.mean()
      self.assertLess(cv, bound, f"{pattern} {init}: G = {G}, pattern {shape}")
      if init != "geometric" and np.ptp(np.log(shape)) > np.log(2):
        # the pattern is real: without it G would not be constant
        self.assertGreater(G.std() / G.mean(), bound)

  def test_telescoping_output_moment(self):
    widths = PATTERNS["wide_narrow"]  # (256, 128, 96, 64): sqrt(n_0 / n_L) = 2, L = 3
    # Output reached through 3 forward hops of >= 64 units.
    tol = 3 * mc_rel_sd(64, hops=3, seeds=SEEDS)
    for c, x0_sq in ((2.0, 1.0), (1.5, 0.5)):
      m = measured(widths, "geometric" if c == 2.0 else f"geometric:c={c}", x0_sq=x0_sq)
      want = calculus.geometric_output_sq(widths, c, x0_sq)
      self.assertAlmostEqual(want, c ** 3 / 4 * 2.0 * x0_sq, places=12)  # the closed form itself
      self.assertAlmostEqual(float(np.mean(m.out_sq)) / want, 1.0, delta=tol)

  def test_tanh_saturating_is_flagged(self):
    widths = (128, 128, 128, 128)
    # N(0, 1) weights on width 128: pre-activations have E[y^2] ~ 128, tanh is saturated.
    sat = measured(widths, "normal:1.0", activation="tanh")
    self.assertGreater(float(np.mean(sat.saturation[:, 0])), 0.5)
    check = calculus.check_calculus(np.mean(sat.moments.nu, axis=0))
    self.assertFalse(check.ok, check)
    # Near its linear regime (E[y^2] ~ 0.01) tanh keeps nu like the identity and passes.
    lin = measured(widths, "normal:0.01", activation="tanh")
    self.assertTrue(calculus.check_calculus(np.mean(lin.moments.nu, axis=0)).ok)
    p = calculus.predict(calculus.mlp_layers(widths, "normal:1.0", "tanh"), 128)
    self.assertFalse(p.exact)
    self.assertIn("tanh", p.notes[0])


class MeasureAgainstAutodiffTest(chex.TestCase):
  """`measure`'s bookkeeping against plain jax.grad / per-example vmap(grad): exact up to float32."""

  def _check(self, layers, n_in, spatial, x):
    key = jax.random.PRNGKey(3)
    params = calculus.init_layers(key, layers, n_in, spatial)
    m = calculus.measure(params, layers, x, jax.random.PRNGKey(4), loss_fn=lambda out: jnp.sum(out ** 2, -1) / 2)

    def loss(p, xb):
      return jnp.sum(calculus.apply_layers(p, layers, xb) ** 2) / 2

    ws = lambda g: [leaf.w for leaf in calculus.flat_params(g, layers)]
    g_batch = jax.jit(jax.grad(lambda p: loss(p, x) / x.shape[0]))(params)
    g_ex = jax.jit(jax.vmap(lambda xb: jax.grad(loss)(params, xb[None])))(x)
    w_sq = np.array([np.mean(np.square(w)) for w in ws(params)])
    # float32 sums of a few thousand terms: 1e-4 relative
    np.testing.assert_allclose(m.dW_sq_batch, [np.mean(np.square(g)) for g in ws(g_batch)], rtol=1e-4)
    np.testing.assert_allclose(m.dW_sq_example, [np.mean(np.square(g)) for g in ws(g_ex)], rtol=1e-4)
    np.testing.assert_allclose(m.G_batch, np.array([np.mean(np.square(g)) for g in ws(g_batch)]) / w_sq,
                               rtol=1e-4)

  def test_mlp(self):
    layers = calculus.mlp_layers((12, 20, 7, 3), "he_normal")
    self._check(layers, 12, (), jax.random.normal(jax.random.PRNGKey(0), (9, 12)))

  def test_conv_pool_residual(self):
    layers = (calculus.Conv(6, (2, 2), init="geometric"), calculus.Act(), calculus.AvgPool((2, 2)),
              calculus.Residual((calculus.Conv(6, (3, 3), "same"), calculus.Act(), calculus.Linear(6)), 0.5),
              calculus.Flatten(), calculus.Linear(4))
    self._check(layers, 3, (4, 4), jax.random.normal(jax.random.PRNGKey(0), (3, 4, 4, 3)))

  def test_gradient_to_weight_ratio(self):
    params = mlp.init_mlp(jax.random.PRNGKey(0), (5, 6, 2))
    grads = jax.tree.map(lambda p: 2 * p, params)
    np.testing.assert_allclose(calculus.gradient_to_weight_ratio(params, grads), [4.0, 4.0], rtol=1e-6)


class RichLayersTest(chex.TestCase):

  def _mean_measured(self, layers, n_in, spatial, batch, seeds=4):
    out = []
    for s in range(seeds):
      k = jax.random.PRNGKey(s)
      x = jax.random.normal(jax.random.fold_in(k, 2), (batch,) + spatial + (n_in,))
      out.append(calculus.measure(calculus.init_layers(k, layers, n_in, spatial), layers, x,
                                  jax.random.fold_in(k, 1)))
    return jax.tree.map(lambda *v: np.mean(np.stack(v), 0), *out)

  def test_conv_same_residual_dropout_scale_pool(self):
    C = calculus
    layers = (C.Conv(64, (2, 2), init="geometric"), C.Act(), C.Conv(64, (2, 2), stride="same"), C.Act(),
              C.Residual((C.Linear(64), C.Act(), C.Dropout(0.8), C.Linear(64)), a=0.5), C.Scale(0.7),
              C.AvgPool((2, 2)), C.Flatten(), C.Linear(32, "glorot_normal"))
    p = C.predict(layers, 16, (8, 8))
    m = self._mean_measured(layers, 16, (8, 8), batch=16)
    # >= 64 channels share each weight row; 4 networks; up to 5 forward + 5 backward hops.
    tol = 3 * mc_rel_sd(64, hops=10, seeds=4)
    for field in ("x_sq", "y_sq", "dx_sq", "dy_sq"):
      np.testing.assert_allclose(getattr(m.moments, field), getattr(p.moments, field), rtol=tol, err_msg=field)
    # G: exact for the first layer (zero-mean inputs) and the layer above the pool. Layers 1-3 sit below the
    # AvgPool, whose backward pass makes the k gradients of a pooling block equal; with correlated (ReLU)
    # inputs that adds cross-position terms to E[dW^2] the calculus does not track. The prediction says
    # so, and the measured G there is larger (x1.4 to x2.5 at seed 0..3).
    np.testing.assert_allclose(m.moments.G[[0, 4]], p.moments.G[[0, 4]], rtol=tol)
    self.assertFalse(p.exact)
    self.assertTrue(np.all(m.moments.G[1:4] > p.moments.G[1:4]))
    # The residual branch sees a^2 of the gradient: its nu is a^2 s / (1 + a^2 s) of the trunk's.
    self.assertLess(p.moments.nu[3], p.moments.nu[0])
    # The paper's pooling rule E[x^2]/k assumes uncorrelated entries; after ReLUs (r >= 1/pi) it undershoots
    # the measured pooled moment by 1 + 3 r >= 1.95.
    paper = C.predict(layers[:6], 16, (8, 8)).out_sq / 4
    self.assertGreater(m.moments.x_sq[4] / paper, 1.7)


class BatchEffectTest(chex.TestCase):

  def test_minibatch_vs_per_example(self):
    widths, B, S = (128, 128, 128, 128), 32, 4
    layers = calculus.mlp_layers(widths, "geometric")
    x = jax.random.normal(jax.random.PRNGKey(0), (B, 128))
    ms = [calculus.measure(calculus.init_layers(jax.random.PRNGKey(s), layers, 128), layers, x,
                           jax.random.PRNGKey(10 + s), projection="shared") for s in range(S)]
    Gb = np.mean([m.G_batch for m in ms], 0)
    p = calculus.predict(layers, 128, batch_size=B, dy_out_corr=1.0)
    # Shared projection: cross-example terms r_x r_dy survive for every layer but the first (r_x = 0).
    tol = 3 * mc_rel_sd(128, hops=6, seeds=S, r=1.0)
    np.testing.assert_allclose(Gb, p.G_batch, rtol=tol)
    self.assertLess(Gb[0] * 3, Gb[2])
    np.testing.assert_allclose(p.G_batch[0], p.moments.G[0] / B, rtol=1e-12)


class PairCorrTest(chex.TestCase):
  """The one pair-correlation helper, in its three roundings."""

  def test_closed_form_and_the_three_forms_agree(self):
    B, n = 16, 40
    shared = jax.random.normal(jax.random.PRNGKey(0), (1, n))
    noise = jax.random.normal(jax.random.PRNGKey(1), (B, n))
    v = shared + noise  # E[v_b v_b'] / E[v^2] = 1/2 in expectation
    f = np.asarray(v, np.float64)
    want = np.mean([f[a] @ f[b] for a in range(B) for b in range(B) if a != b]) / np.mean(f * f) / n
    self.assertAlmostEqual(calculus.pair_corr(v), want, places=12)
    # float32 sums of B n = 640 terms: 1e-5 relative
    self.assertAlmostEqual(float(jax.jit(lambda u: calculus.pair_corr(u, traced=True))(v)), want, delta=1e-5)
    self.assertAlmostEqual(float(jax.jit(lambda u: calculus.pair_corr(u, pairs_first=True))(v)), want, delta=1e-5)
    self.assertAlmostEqual(want, 0.5, delta=0.15)

  def test_one_example_or_zeros(self):
    self.assertEqual(calculus.pair_corr(np.ones((1, 5))), 0.0)
    self.assertEqual(calculus.pair_corr(np.zeros((4, 5))), 0.0)
    self.assertEqual(float(calculus.pair_corr(jnp.zeros((4, 5)), traced=True)), 0.0)
    self.assertEqual(float(calculus.pair_corr(jnp.ones((1, 5)), pairs_first=True)), 0.0)

  def test_measure_reports_it_for_the_inputs(self):
    x = jax.random.normal(jax.random.PRNGKey(0), (16, 12)) + 0.5
    params = mlp.init_mlp(jax.random.PRNGKey(1), (12, 8, 3))
    got = float(calculus.measure_mlp(params, x).x0_corr)
    self.assertAlmostEqual(got, float(jax.jit(lambda u: calculus.pair_corr(u, pairs_first=True))(x)), delta=1e-6)


class DesignHelpersTest(chex.TestCase):

  def test_geometric_weight_sq(self):
    widths = (784, 300, 100, 10)
    got = calculus.geometric_weight_sq(widths, 2.0)
    for l, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
      w = jax.nn.initializers.variance_scaling(2.0, "fan_geo_avg", "normal")(jax.random.PRNGKey(l), (a, b))
      # dense layers: same as jax's fan_geo_avg; sample of a*b >= 1000 entries: 5 s.d. = 5 sqrt(2/1000)
      self.assertAlmostEqual(float(jnp.mean(w ** 2)) / got[l], 1.0, delta=5 * math.sqrt(2 / 1000))
    k = calculus.geometric_weight_sq((4, 8), 2.0, kernel_taps=[9])
    self.assertAlmostEqual(k[0], 2 / math.sqrt(9 * 4 * 8))
    self.assertAlmostEqual(calculus.geometric_output_sq((64, 32, 16), 2.0, 1.0), 4 / 2 * 2)

  def test_output_multiplier_and_input_scale(self):
    out = 3.0 * jax.random.normal(jax.random.PRNGKey(0), (64, 10))
    a = calculus.output_multiplier(out)
    self.assertAlmostEqual(float(jnp.std(a * out)), 0.05, places=5)
    s = calculus.bias_balance_input_scale(2.0, 784)
    self.assertAlmostEqual(float(s ** 2 * 2.0), 1 / 28, places=6)
    with self.assertRaises(ValueError):
      calculus.output_multiplier(out, 0.0)

  def test_preconditioning(self):
    pc = calculus.preconditioning([1.0, 1.5, 30.0, 0.001])
    self.assertEqual(pc.verdicts, ("balanced", "balanced", "poor", "severe"))
    self.assertAlmostEqual(pc.score, 3.0969, places=3)  # |log10(0.001 / 1.25)|
    self.assertEqual(calculus.preconditioning([2.0, 2.0]).score, 0.0)


def test_lazily_loaded_names_are_strided_responses_own():
  """`calculus.strided_first_step(s)` load strided_response (scipy) on first use, not at `import jscale`; an
  unknown name still raises AttributeError (hasattr, `from ... import` of a missing name rely on it)."""
  from jscale.calculus import strided_response
  assert calculus.strided_first_step is strided_response.first_step
  assert calculus.strided_first_steps is strided_response.first_steps
  assert not hasattr(calculus, "strided_first_stepz")


if __name__ == "__main__":
  pytest.main([__file__, "-q"])

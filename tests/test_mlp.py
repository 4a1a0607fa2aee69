"""Pure MLP: shapes, jit equivalence, a numpy reference forward pass, validation, flax interop."""
from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np

from jscale import flax_interop, initializers, mlp

WIDTHS = (7, 32, 16, 3)


def numpy_forward(params, x, activation):
  """Independent reference: plain numpy, float64."""
  acts = {"relu": lambda v: np.maximum(v, 0), "tanh": np.tanh, "identity": lambda v: v,
          "leaky_relu": lambda v: np.where(v >= 0, v, 0.01 * v)}
  h = np.asarray(x, np.float64)
  for l, layer in enumerate(params):
    h = h @ np.asarray(layer.w, np.float64) + np.asarray(layer.b, np.float64)
    if l < len(params) - 1:
      h = acts[activation](h)
  return h


class ApplyTest(chex.TestCase, parameterized.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters("relu", "tanh", "leaky_relu", "identity")
  def test_matches_numpy_reference(self, activation):
    params = mlp.init_mlp(jax.random.key(0), WIDTHS, "glorot_normal", "normal:0.1")
    x_BxD = jax.random.normal(jax.random.key(1), (5, WIDTHS[0]))
    y_BxC = self.variant(lambda p, x: mlp.apply_mlp(p, x, activation))(params, x_BxD)
    chex.assert_shape(y_BxC, (5, WIDTHS[-1]))
    # float32 matmuls of depth <= 32 against float64: relative error ~1e-6.
    np.testing.assert_allclose(y_BxC, numpy_forward(params, x_BxD, activation), rtol=1e-5, atol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  def test_trace(self):
    params = mlp.init_mlp(jax.random.key(0), WIDTHS)
    x_BxD = jax.random.normal(jax.random.key(1), (4, WIDTHS[0]))
    y, trace = self.variant(lambda p, x: mlp.apply_mlp(p, x, return_trace=True))(params, x_BxD)
    self.assertLen(trace.inputs, 3)
    for l, (x_l, y_l) in enumerate(zip(trace.inputs, trace.preacts)):
      chex.assert_shape(x_l, (4, WIDTHS[l]))
      chex.assert_shape(y_l, (4, WIDTHS[l + 1]))
    np.testing.assert_allclose(trace.inputs[1], jnp.maximum(trace.preacts[0], 0), rtol=1e-6)
    np.testing.assert_array_equal(trace.preacts[-1], y)

  def test_input_and_output_scale_and_layernorm(self):
    params = mlp.init_mlp(jax.random.key(0), WIDTHS, bias_init="normal:0.1")
    x = 3.0 + 2.0 * jax.random.normal(jax.random.key(1), (6, WIDTHS[0]))
    base = mlp.apply_mlp(params, x)
    np.testing.assert_allclose(mlp.apply_mlp(params, x, output_scale=0.5), 0.5 * base, rtol=1e-6)
    np.testing.assert_allclose(mlp.apply_mlp(params, x / 255.0, input_scale=255.0), base, rtol=1e-4, atol=1e-5)
    _, trace = mlp.apply_mlp(params, x, input_layernorm=True, return_trace=True)
    x0 = np.asarray(trace.inputs[0], np.float64)
    np.testing.assert_allclose(x0.mean(-1), 0.0, atol=1e-5)
    np.testing.assert_allclose(x0.std(-1), 1.0, atol=1e-4)  # eps=1e-6 against unit variance

  def test_per_layer_initializers(self):
    params = mlp.init_mlp(jax.random.key(0), (4, 5, 6), ["zeros", "constant:2"], ["constant:1", "zeros"])
    np.testing.assert_array_equal(params[0].w, 0.0)
    np.testing.assert_array_equal(params[1].w, 2.0)
    np.testing.assert_array_equal(params[0].b, 1.0)
    chex.assert_shape(params[0].b, (5,))

  def test_keys_not_reused_across_layers(self):
    params = mlp.init_mlp(jax.random.key(0), (8, 8, 8, 8), "normal:1")
    self.assertFalse(np.allclose(params[0].w, params[1].w))
    self.assertFalse(np.allclose(params[1].w, params[2].w))


class ValidationTest(parameterized.TestCase):

  @parameterized.parameters(((),), ((5,),), ((5, 0, 3),), ((5, -2, 3),), ((5, 2.5, 3),), (None,))
  def test_bad_widths(self, widths):
    with self.assertRaisesRegex(ValueError, "widths"):
      mlp.init_mlp(jax.random.key(0), widths)

  def test_mismatched_input(self):
    params = mlp.init_mlp(jax.random.key(0), WIDTHS)
    with self.assertRaisesRegex(ValueError, "expects 7"):
      mlp.apply_mlp(params, jnp.ones((2, 8)))

  def test_bad_inputs_and_params_refused_clearly(self):
    params = mlp.init_mlp(jax.random.key(0), WIDTHS)
    with self.assertRaisesRegex(ValueError, "feature axis"):
      mlp.apply_mlp(params, 1.0)
    with self.assertRaisesRegex(ValueError, "do not chain"):
      mlp.apply_mlp((params[0], params[2]), jnp.ones((2, 7)))
    with self.assertRaisesRegex(ValueError, "non-empty tuple"):
      mlp.apply_mlp((), jnp.ones((2, 7)))
    with self.assertRaisesRegex(ValueError, "bias has"):
      mlp.apply_mlp((mlp.Dense(params[0].w, jnp.ones(3)),), jnp.ones((2, 7)))
    # A nested list is an array-like input, converted, not refused.
    np.testing.assert_allclose(mlp.apply_mlp(params, np.ones((2, 7)).tolist()),
                               mlp.apply_mlp(params, jnp.ones((2, 7))))

  def test_bad_activation_and_init(self):
    params = mlp.init_mlp(jax.random.key(0), WIDTHS)
    with self.assertRaisesRegex(ValueError, "unknown activation"):
      mlp.apply_mlp(params, jnp.ones((2, 7)), "swishy")
    with self.assertRaisesRegex(ValueError, "sigma must be"):
      mlp.init_mlp(jax.random.key(0), WIDTHS, "normal:-1")
    with self.assertRaisesRegex(ValueError, "3 weight layers"):
      mlp.init_mlp(jax.random.key(0), WIDTHS, ["he_normal", "he_normal"])


class FlaxInteropTest(parameterized.TestCase):

  def test_flax_module_equals_apply_mlp(self):
    params = mlp.init_mlp(jax.random.key(0), WIDTHS, "geometric", "normal:0.1")
    module = flax_interop.FlaxMLP(widths=WIDTHS[1:], kernel_init="geometric")
    x = jax.random.normal(jax.random.key(2), (5, WIDTHS[0]))
    # Same parameters, same maths: identical up to float32 op ordering.
    chex.assert_trees_all_close(module.apply(flax_interop.to_flax(params), x), mlp.apply_mlp(params, x),
                                rtol=1e-6, atol=1e-6)
    chex.assert_trees_all_equal(flax_interop.from_flax(flax_interop.to_flax(params)), params)

  def test_jscale_initializer_as_flax_kernel_init(self):
    import flax.linen as nn
    init = initializers.get("he_normal:fan_out")
    dense = nn.Dense(512, kernel_init=init)
    variables = dense.init(jax.random.key(0), jnp.ones((1, 1024)))
    w = np.asarray(variables["params"]["kernel"], np.float64)
    # 524288 normal samples: sd of the sample variance is sqrt(2/n) = 0.2% relative; allow 5 sd.
    self.assertAlmostEqual(w.var() / (2 / 512), 1.0, delta=5 * np.sqrt(2 / w.size))

  def test_flax_module_init_moments(self):
    module = flax_interop.FlaxMLP(widths=(256, 10), kernel_init="geometric", bias_init="normal:0.5")
    variables = module.init(jax.random.key(0), jnp.ones((1, 1024)))
    params = flax_interop.from_flax(variables)
    w0 = np.asarray(params[0].w, np.float64)
    expected = 2 / np.sqrt(1024 * 256)
    self.assertAlmostEqual(w0.var() / expected, 1.0, delta=5 * np.sqrt(2 / w0.size))
    b0 = np.asarray(params[0].b, np.float64)
    # 256 bias samples of N(0, 0.25): sd of the sample variance ~ 0.25 * sqrt(2/256) ~ 0.022; 5 sd.
    self.assertAlmostEqual(b0.var(), 0.25, delta=5 * 0.25 * np.sqrt(2 / 256))



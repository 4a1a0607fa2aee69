"""Initializers: sample moments against the E[W^2] table of docs/calculus.md, and against jax.nn.initializers."""
import math

from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np

from jscale import initializers as I

SHAPES = {"square": (256, 256), "wide": (64, 1024), "tall": (1024, 64), "conv3x3": (3, 3, 64, 128)}


def table_variance(name, shape):
  """The initializer table of docs/calculus.md, written out independently of jscale.initializers."""
  *spatial, n_in, n_out = shape
  k = math.prod(spatial)
  fan_in, fan_out = k * n_in, k * n_out
  return {
      "normal:0.1": 0.01, "truncated_normal:0.3": 0.09, "uniform:0.05": 0.05**2 / 3,
      "lecun_normal": 1 / fan_in, "lecun_uniform": 1 / fan_in,
      "glorot_normal": 2 / (fan_in + fan_out), "glorot_uniform": 2 / (fan_in + fan_out),
      "he_normal": 2 / fan_in, "he_uniform": 2 / fan_in,
      "he_normal:fan_out": 2 / fan_out, "he_uniform:fan_out": 2 / fan_out,
      "geometric": 2 / math.sqrt(k * n_in * n_out), "geometric:c=1.5": 1.5 / math.sqrt(k * n_in * n_out),
      "geometric:distribution=uniform": 2 / math.sqrt(k * n_in * n_out),
      # The source table writes gain^2 / max(fan_in, fan_out); for conv kernels, flattened to (k n_in, n_out)
      # before orthogonalising, the exact value is gain^2 / max(k n_in, n_out) (equal for dense layers).
      "orthogonal:1.7": 1.7**2 / max(fan_in, n_out),
  }[name]


# Excess kurtosis of each law sets the Monte-Carlo spread of a sample variance:
# sd(s^2) / sigma^2 = sqrt((kurtosis - 1) / n); normal kurtosis 3, uniform 1.8, normal truncated at 2: ~2.37.
KURTOSIS = {"uniform": 1.8, "truncated": 2.37}


def kurtosis_of(name):
  for key, value in KURTOSIS.items():
    if key in name:
      return value
  return 3.0


class MomentsTest(parameterized.TestCase):

  @parameterized.product(
      name=["normal:0.1", "truncated_normal:0.3", "uniform:0.05", "lecun_normal", "lecun_uniform",
            "glorot_normal", "glorot_uniform", "he_normal", "he_uniform", "he_normal:fan_out",
            "he_uniform:fan_out", "geometric", "geometric:c=1.5", "geometric:distribution=uniform"],
      shape=list(SHAPES))
  def test_sample_moments_match_table(self, name, shape):
    shape = SHAPES[shape]
    init = I.get(name)
    expected_var = table_variance(name, shape)
    self.assertAlmostEqual(init.variance(shape), expected_var, delta=1e-12 * expected_var)
    w = np.asarray(init(jax.random.key(42), shape), np.float64)
    n = w.size
    # 5 Monte-Carlo standard errors: a false alarm has probability ~6e-7 per check.
    se_var = expected_var * math.sqrt((kurtosis_of(name) - 1) / n)
    self.assertLess(abs(w.var() - expected_var), 5 * se_var, f"{name} {shape}: var {w.var()} vs {expected_var}")
    self.assertLess(abs(w.mean()), 5 * math.sqrt(expected_var / n))

  @parameterized.parameters(list(SHAPES))
  def test_orthogonal(self, shape):
    shape = SHAPES[shape]
    gain = 1.7
    w = I.get(f"orthogonal:{gain}")(jax.random.key(0), shape)
    chex.assert_shape(w, shape)
    mat = np.asarray(w, np.float64).reshape(-1, shape[-1])
    gram = mat.T @ mat if mat.shape[0] >= mat.shape[1] else mat @ mat.T
    # float32 QR: entries of Q^T Q are exact to ~1e-6 relative.
    np.testing.assert_allclose(gram, gain**2 * np.eye(len(gram)), atol=1e-4 * gain**2)
    # Orthonormal columns fix the sum of squares exactly, so the second moment has no sampling error.
    self.assertAlmostEqual(np.mean(mat**2), table_variance(f"orthogonal:{gain}", shape), delta=1e-5)

  def test_zeros_and_constant_are_exactly_constant(self):
    for shape in SHAPES.values():
      np.testing.assert_array_equal(I.zeros()(jax.random.key(0), shape), np.zeros(shape))
      np.testing.assert_array_equal(I.get("constant:0.25")(jax.random.key(1), shape), np.full(shape, 0.25))
    self.assertEqual(I.get("constant:0.25").second_moment((4, 4)), 0.0625)

  def test_scaled_moments(self):
    init = I.scaled(I.get("glorot_normal"), 1 / 255)
    shape = (784, 300)
    self.assertAlmostEqual(init.variance(shape), 2 / (784 + 300) / 255**2)
    base = I.get("glorot_normal")(jax.random.key(3), shape)
    np.testing.assert_allclose(init(jax.random.key(3), shape), base / 255, rtol=1e-6)


class DeterminismAndDtypeTest(parameterized.TestCase):

  @parameterized.parameters("normal:0.1", "he_uniform", "orthogonal", "geometric", "truncated_normal:1")
  def test_same_key_same_array_different_key_different(self, name):
    init = I.get(name)
    a = init(jax.random.key(7), (32, 16))
    b = init(jax.random.key(7), (32, 16))
    c = init(jax.random.key(8), (32, 16))
    np.testing.assert_array_equal(a, b)
    self.assertGreater(float(jnp.abs(a - c).max()), 0.0)

  @parameterized.product(name=["normal:0.1", "glorot_uniform", "orthogonal", "zeros", "constant:2",
                               "geometric", "truncated_normal:0.5"],
                         dtype=[jnp.float32, jnp.bfloat16, jnp.float16])
  def test_dtype_respected(self, name, dtype):
    w = I.get(name)(jax.random.key(0), (8, 4), dtype)
    self.assertEqual(w.dtype, dtype)

  def test_works_under_jit_and_as_flax_kernel_init(self):
    init = I.get("geometric")
    w = jax.jit(init, static_argnums=(1, 2))(jax.random.key(0), (16, 8), jnp.float32)
    np.testing.assert_allclose(w, init(jax.random.key(0), (16, 8)), rtol=1e-6)


class AgainstJaxInitializersTest(parameterized.TestCase):
  """Where definitions overlap, jax's own variance_scaling must give the same draws from the same key."""

  @parameterized.product(
      pair=[("lecun_normal", (1.0, "fan_in", "normal")), ("lecun_uniform", (1.0, "fan_in", "uniform")),
            ("glorot_normal", (1.0, "fan_avg", "normal")), ("glorot_uniform", (1.0, "fan_avg", "uniform")),
            ("he_normal", (2.0, "fan_in", "normal")), ("he_uniform", (2.0, "fan_in", "uniform")),
            ("he_normal:fan_out", (2.0, "fan_out", "normal")),
            ("geometric", (2.0, "fan_geo_avg", "normal")),
            ("geometric:c=0.5,distribution=truncated_normal", (0.5, "fan_geo_avg", "truncated_normal"))],
      shape=[(256, 256), (64, 1024), (3, 3, 64, 128)])
  def test_same_draws(self, pair, shape):
    name, (scale, mode, dist) = pair
    ours = I.get(name)(jax.random.key(5), shape)
    theirs = jax.nn.initializers.variance_scaling(scale, mode, dist)(jax.random.key(5), shape)
    if name.startswith("geometric") and len(shape) > 2:
      # Documented difference: geometric variance scales with 1/sqrt(k), fan_geo_avg with 1/k, so the
      # std ratio is k^(1/4).
      k = math.prod(shape[:-2])
      theirs = theirs * k**0.25
    # Same key, same law: only float32 rounding of the scale factor separates the two.
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-7)

  def test_orthogonal_matches_jax_gram(self):
    # jax's orthogonal uses another QR convention, so compare invariants: the same Gram matrix.
    theirs = np.asarray(jax.nn.initializers.orthogonal(scale=2.0)(jax.random.key(0), (64, 32)))
    ours = np.asarray(I.get("orthogonal:2")(jax.random.key(0), (64, 32)))
    np.testing.assert_allclose(ours.T @ ours, theirs.T @ theirs, atol=1e-4)


class RegistryTest(parameterized.TestCase):

  def test_specs(self):
    self.assertEqual(I.get("normal:0.1").variance((3, 3)), 0.1**2)
    self.assertEqual(I.get("normal:sigma=0.2").variance((3, 3)), 0.2**2)
    self.assertEqual(I.get("xavier_normal").variance((10, 30)), I.get("glorot_normal").variance((10, 30)))
    self.assertEqual(I.get("kaiming_uniform:fan_out").variance((10, 30)), 2 / 30)
    self.assertEqual(I.get("geometric:c=3").variance((4, 9)), 3 / 6)
    self.assertEqual(I.weight_variance("he_normal", (50, 7)), 2 / 50)

  @parameterized.parameters(
      ("no_such_init", "valid names"), ("normal:-0.1", "sigma must be"), ("normal:nan", "sigma must be"),
      ("he_normal:fan_avg", "mode must be"), ("normal:0.1,0.2", "too many"), ("glorot_normal:gain=2", "takes"),
      ("", "non-empty"), ("uniform:abc", "bad parameters|must be"), ("geometric:distribution=cauchy", "distribution"))
  def test_bad_specs_raise_clear_errors(self, spec, pattern):
    with self.assertRaisesRegex(ValueError, pattern):
      I.get(spec)

  def test_missing_required_parameter(self):
    with self.assertRaisesRegex(ValueError, "constant:value="):
      I.get("constant")

  def test_bad_shape(self):
    with self.assertRaisesRegex(ValueError, "positive"):
      I.fans((0, 5))
    with self.assertRaisesRegex(ValueError, "positive ints"):
      I.fans((2.5, 3))

  @parameterized.parameters("geometric:c=0", "constant:nan", "constant:inf", "constant:-inf")
  def test_degenerate_specs_refused(self, spec):
    with self.assertRaisesRegex(ValueError, "must be"):
      I.get(spec)

  @parameterized.parameters("he_normal", "he_normal:fan_out", "glorot_uniform", "lecun_normal", "geometric",
                            "orthogonal:1.5", "truncated_normal:0.3")
  def test_bias_shapes_are_the_mlp_convention(self, spec):
    # A 1-D shape (n,) is a bias: the moments of the (1, n) shape that jscale.mlp draws biases with, and
    # sampled at that variance (n = 4000 entries: relative SE of the sample variance ~ sqrt(2 / 4000) = 2.2%,
    # so 5 SE = 11%; orthogonal is a scaled unit vector, exact).
    init = I.get(spec)
    self.assertEqual(init.variance((4000,)), init.variance((1, 4000)))
    b = np.asarray(init(jax.random.key(3), (4000,)), np.float64)
    chex.assert_shape(b, (4000,))
    np.testing.assert_allclose(np.mean(b * b), init.second_moment((4000,)), rtol=0.11)

  def test_flax_bias_init(self):
    import flax.linen as nn
    layer = nn.Dense(7, kernel_init=I.get("geometric:c=2"), bias_init=I.get("he_normal"))
    v = layer.init(jax.random.key(0), np.ones((2, 3), np.float32))
    chex.assert_shape(v["params"]["bias"], (7,))
    self.assertGreater(float(np.abs(v["params"]["bias"]).sum()), 0.0)

  def test_every_registered_name_builds_and_samples(self):
    needs_argument = {"constant": "constant:0.5", "normal": "normal:0.1", "uniform": "uniform:0.1",
                      "truncated_normal": "truncated_normal:0.1"}
    for name in I.names():
      init = I.get(needs_argument.get(name, name))
      w = init(jax.random.key(0), (6, 5))
      chex.assert_shape(w, (6, 5))
      chex.assert_tree_all_finite(w)


class DrawOnceTest(parameterized.TestCase):
  """`normal_scales` / `draw_scaled_normals`: a sweep's kernels drawn by one random program, as each alone."""

  @parameterized.named_parameters(("flat", [(2, 64), (64, 64), (64, 2)]),     # 3 x 4096 <= 4 x 4352: one draw
                                  ("unequal", [(512, 512), (2, 3), (3, 2)]))  # 3 x 262144 > 4 x total: per kernel
  def test_equals_drawing_each_kernel(self, shapes):
    inits = [I.get("he_normal"), I.get("glorot_normal"), I.get("normal:0.3")]
    stds = I.normal_scales([inits], shapes)[0]
    keys = list(jax.random.split(jax.random.PRNGKey(4), len(shapes)))
    got = jax.jit(lambda ks: I.draw_scaled_normals(ks, shapes, stds))(keys)
    for g, ini, k, s in zip(got, inits, keys, shapes):
      # The same normals times the same float32 std; 1e-6 leaves room for XLA fusing the product differently.
      np.testing.assert_allclose(g, ini(k, s), rtol=1e-6, atol=1e-7)

  def test_mixed_dtypes_draw_each_kernel_in_its_own(self):
    shapes, dtypes = [(4, 8), (8, 4)], [jnp.float32, jnp.bfloat16]
    keys = list(jax.random.split(jax.random.PRNGKey(1), 2))
    got = I.draw_scaled_normals(keys, shapes, np.array([0.5, 2.0], np.float32), dtypes)
    for g, k, s, d, std in zip(got, keys, shapes, dtypes, (0.5, 2.0)):
      self.assertEqual(g.dtype, d)
      np.testing.assert_array_equal(g, jnp.asarray(std, d) * jax.random.normal(k, s, d))

  def test_one_random_program_for_every_kernel(self):
    shapes = [(2, 64), (64, 64), (64, 2)]
    stds = np.ones(3, np.float32)
    keys = list(jax.random.split(jax.random.PRNGKey(0), 3))
    text = str(jax.make_jaxpr(lambda ks: I.draw_scaled_normals(ks, shapes, stds))(keys))
    # float32 Threefry keys: each kernel's entries hashed by the unrolled Threefry (jscale.kernel_normals), no
    # random_bits (JAX's threefry primitive: a rolled loop on XLA:CPU and a compile per shape).
    self.assertEqual((text.count("random_bits"), text.count("erf_inv")), (0, 3))
    text = str(jax.make_jaxpr(lambda ks: I.draw_scaled_normals(ks, shapes, stds, jnp.bfloat16))(keys))
    self.assertEqual(text.count("random_bits"), 1)   # another dtype: the vmapped flat draw

  def test_scales_are_the_stds_and_none_outside_the_normal_family(self):
    shapes = [(8, 32), (32, 4)]
    cands = [[I.get("he_normal")] * 2, [I.get("geometric:c=2")] * 2, [I.get("normal:0.1"), I.get("zeros")]]
    s = I.normal_scales(cands, shapes)
    want = [[math.sqrt(I.get(c).variance(sh)) for sh in shapes] for c in ("he_normal", "geometric:c=2")]
    np.testing.assert_allclose(s[:2], want, rtol=1e-6)
    np.testing.assert_allclose(s[2], [0.1, 0.0], atol=1e-7)
    for other in ("he_uniform", "truncated_normal:1", "orthogonal", "constant:0.5"):
      self.assertIsNone(I.normal_scales([[I.get("he_normal")] * 2, [I.get(other)] * 2], shapes), other)

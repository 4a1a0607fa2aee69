"""jscale.kernel_normals: several kernels' normals from an unrolled Threefry, bitwise jax.random.normal's (an independent
reference: JAX's own threefry primitive and its normal transform)."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import parameterized

from jscale import kernel_normals as C

SHAPE_SETS = {"mlp784": [(784, 300), (300, 100), (100, 10)], "moons": [(2, 64), (64, 64), (64, 2)],
              "one": [(5, 7)], "vectors_and_3d": [(3,), (4, 5, 6), (1, 1)]}


class KernelNormalsTest(chex.TestCase):

  @chex.variants(with_jit=True)
  @parameterized.named_parameters(*SHAPE_SETS.items())
  def test_bitwise_jax_random_normal(self, shapes):
    self._check_bitwise(shapes)

  @chex.variants(without_jit=True)
  def test_bitwise_jax_random_normal_op_by_op(self):
    # Op by op, every shape set took ~20 CPU s of the default suite (each unrolled Threefry op dispatched and
    # compiled alone); the arithmetic is the jitted test's integer arithmetic, so one set checks the eager path.
    self._check_bitwise(SHAPE_SETS["one"])

  def _check_bitwise(self, shapes):
    for make_keys in (lambda: jax.random.split(jax.random.key(7), len(shapes)),        # typed keys
                      lambda: jax.random.split(jax.random.PRNGKey(11), len(shapes))):  # raw uint32 pairs
      keys = list(make_keys())
      self.assertTrue(C.usable(keys, [jnp.float32] * len(keys)))
      got = self.variant(lambda ks: C.kernel_normals(ks, shapes))(keys)
      for g, k, s in zip(got, keys, shapes):
        chex.assert_shape(g, s)
        np.testing.assert_array_equal(np.asarray(g), np.asarray(jax.random.normal(k, s, jnp.float32)))

  def test_bitwise_under_vmap(self):
    """A sweep draws inside vmap / lax.map over configurations: each configuration's numbers are its own."""
    shapes = SHAPE_SETS["moons"]
    keys = jax.random.split(jax.random.key(3), (4, len(shapes)))
    got = jax.jit(jax.vmap(lambda ks: C.kernel_normals(list(ks), shapes)))(keys)
    for c in range(4):
      for l, s in enumerate(shapes):
        np.testing.assert_array_equal(np.asarray(got[l][c]), np.asarray(jax.random.normal(keys[c, l], s)))

  def test_not_usable_outside_float32_threefry(self):
    keys = list(jax.random.split(jax.random.key(0), 2))
    self.assertFalse(C.usable(keys, [jnp.float32, jnp.bfloat16]))
    self.assertFalse(C.usable(list(jax.random.split(jax.random.key(0, impl="rbg"), 2)), [jnp.float32] * 2))

  def test_threefry_known_answer(self):
    """The Threefry-2x32 test vector of Salmon et al. (Random123's kat_vectors, 20 rounds): key (0x13198a2e,
    0x03707344), counter (0x243f6a88, 0x85a308d3) -> (0xc4923a9c, 0x483df7a0)."""
    out = C.threefry2x32(*(jnp.asarray(v, jnp.uint32) for v in (0x13198a2e, 0x03707344, 0x243f6a88, 0x85a308d3)))
    self.assertEqual([int(o) for o in out], [0xc4923a9c, 0x483df7a0])

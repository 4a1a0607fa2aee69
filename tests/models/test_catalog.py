"""The named models: the MLP as a `Model` draws exactly what `jscale.mlp.init_mlp` draws (its traced initializer
choice included), and counts its FLOPs analytically."""
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized

from jscale import mlp, models


class MlpModelTest(parameterized.TestCase):
  """`models.mlp(widths).make_draw(candidates)(key, index)` is `init_mlp` with candidate `index`, under jit and vmap."""

  @parameterized.named_parameters(("all_normal", ("he_normal", "glorot_normal", "normal:0.5")),
                                  ("with_uniform", ("he_uniform", "geometric:c=2")))
  def test_traced_choice_equals_init_mlp(self, cands):
    widths, key = (3, 16, 8, 2), jax.random.PRNGKey(2)
    draw = models.mlp(widths, "relu", "normal:0.1").make_draw(cands)
    got = jax.jit(jax.vmap(draw, in_axes=(None, 0)))(key, jnp.arange(len(cands)))
    for i, spec in enumerate(cands):
      want = mlp.init_mlp(key, widths, spec, "normal:0.1")
      for layer_got, layer_want in zip(got, want):
        # The same normals and stds; 1e-6 leaves room for XLA fusing the products differently under jit.
        np.testing.assert_allclose(layer_got.w[i], layer_want.w, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(layer_got.b[i], layer_want.b, rtol=1e-6, atol=1e-7)

  def test_refuses_bad_candidates(self):
    net = models.mlp((2, 3))
    with self.assertRaisesRegex(ValueError, "at least one"):
      net.make_draw(())
    with self.assertRaisesRegex(ValueError, "unknown initializer"):
      net.make_draw(("not_an_init",))

  def test_same_widths_same_object_and_apply_is_apply_mlp(self):
    net = models.mlp((4, 8, 3))
    self.assertIs(net, models.mlp([4, 8, 3]))   # memoized: a sweep reuses its compiled programs
    params = mlp.init_mlp(jax.random.PRNGKey(0), (4, 8, 3))
    x = jax.random.normal(jax.random.PRNGKey(1), (5, 4))
    logits, hidden = net.forward(params, x, 0.5, 2.0)
    want, trace = mlp.apply_mlp(params, x, input_scale=0.5, output_scale=2.0, return_trace=True)
    np.testing.assert_array_equal(logits, want)
    self.assertLen(hidden, 1)
    np.testing.assert_array_equal(hidden[0], trace.inputs[1])
    self.assertEqual(net.kernel_shapes, [(4, 8), (8, 3)])

  def test_flops_are_the_matmuls(self):
    # forward 2 * (4*8 + 8*3) = 112; backward dW for both layers (112) + dX for the second (48)
    net = models.mlp((4, 8, 3))
    self.assertEqual((net.forward_flops(), net.backward_flops()), (112.0, 160.0))


if __name__ == "__main__":
  absltest.main()

"""`conv_pairs._round` draws its weights and images flat (`_flat_draw`, which compiles several times faster):
the same numbers as the shaped draws it replaced, so the evenness rounds keep their draws."""
import chex
import jax
import numpy as np
import pytest

from jscale.theory import conv_pairs


@pytest.mark.slow
class FlatDrawTest(chex.TestCase):

  def test_flat_draws_are_the_shaped_draws_bit_for_bit(self):
    """Bitwise, as inside a round (jitted, vmapped over the round's keys): every padded kernel shape of the
    evenness LeNet's padded config and the images, both input laws."""
    padded = conv_pairs.PAD_CONFIGS[1]
    shapes = list(padded.kernel_shapes().values()) + [(4,) + tuple(padded.image)]
    keys = jax.random.split(jax.random.PRNGKey(3), 8)
    for sample in (jax.random.normal, jax.random.uniform):
      for shape in shapes:
        want = jax.jit(jax.vmap(lambda k: sample(k, shape)))(keys)
        got = jax.jit(jax.vmap(lambda k: conv_pairs._flat_draw(sample, k, shape)))(keys)
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))

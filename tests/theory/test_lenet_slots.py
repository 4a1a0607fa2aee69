"""`jscale.theory.lenet_slots`: LeNets of different shapes computed in one slot shape give the values of the
LeNet in its own shape on the same draws (float64 to 1e-9, float32 rounds to 1e-4), with one compiled program."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jscale.initializers import SCHEMES
from jscale.models import lenet
from jscale.theory import conv_pairs, losses, predict_conv
from jscale.theory import lenet_slots as ls

# 1-3 convs, kernels 2-4 (3 at the second conv too), 0-2 hidden layers, so that every slot holds a conv, the
# flatten + dense0 and a plain dense layer in one of them.
CONFIGS = (lenet.LeNetConfig((6, 6, 1), (3,), ((2, 2),), (), 10),
           lenet.LeNetConfig((12, 12, 1), (2, 3), ((4, 4), (3, 3)), (5,), 10),
           lenet.LeNetConfig((8, 8, 1), (2, 3, 2), ((2, 2), (2, 2), (2, 2)), (4, 6), 10),
           lenet.LeNetConfig((9, 9, 1), (4, 2), ((3, 3), (3, 3)), (7, 3), 10))
SHAPES = ls.union([ls.own_shapes(c) for c in CONFIGS])


def _draw_args(config, scheme, loss, input_kind, shapes=SHAPES, dtype=jnp.float32):
  lay = ls.layout(shapes, config)
  stds = np.zeros(len(shapes.slots))
  stds[:len(config.kernel_shapes())] = np.sqrt(predict_conv.weight_sq(config, SCHEMES[scheme]))
  return ls._Draw(jax.tree.map(jnp.asarray, lay), jnp.asarray(stds, dtype), jnp.asarray(float(loss == "xent"), dtype),
                  jnp.asarray(float(input_kind == "uniform01"), dtype))


def _quadratic_factor(seed, dtype=jnp.float32):
  return jnp.asarray(losses.quadratic_factor(losses.random_quadratic(jax.random.PRNGKey(seed), 10, dtype)), dtype)


class LayoutTest(chex.TestCase):

  def test_first_slot_gathers_the_convs_patches(self):
    """The first slot's index table applied to a numbered image gives `conv_pairs._patches` (an independent
    reshape), zeros in the padding."""
    for config in CONFIGS:
      lay = ls.layout(SHAPES, config)
      image = np.arange(1, np.prod(config.image) + 1, dtype=np.float64)
      flat = np.concatenate([image, np.zeros(SHAPES.pixels - image.size + 1)])  # + the zero padding reads
      got = flat[lay.index[0]]
      want = np.asarray(conv_pairs._patches(jnp.asarray(image.reshape(config.image)), config.kernels[0]))
      np.testing.assert_array_equal(got[:want.shape[0], :want.shape[1]], want)
      self.assertEqual(np.count_nonzero(got), want.size)  # every pixel once per patch, nothing else

  def test_slots_hold_the_union_and_refuse_what_does_not_fit(self):
    for config in CONFIGS:
      self.assertTrue(ls.fits(SHAPES, config))
    self.assertEqual(len(SHAPES.slots), 6)  # the deepest: 3 convs, 2 hidden dense layers and the output
    wide = lenet.LeNetConfig((6, 6, 1), (64,), ((2, 2),), (), 10)
    self.assertFalse(ls.fits(SHAPES, wide))
    with self.assertRaisesRegex(ValueError, r"LeNet c64 h.*does not fit the slots"):
      ls.layout(SHAPES, wide)
    few = SHAPES.with_normals(10)
    self.assertEqual(ls.smallest([few, SHAPES], CONFIGS[0]), SHAPES)  # 36 kernel entries: not in 10 normals
    with self.assertRaisesRegex(ValueError, "does not fit"):
      ls.smallest([few], CONFIGS[0])
    with self.assertRaisesRegex(ValueError, "needs about"):
      ls.exact_round(CONFIGS[0], SCHEMES["fan_in"], "quadratic", jax.random.PRNGKey(0), draws=10 ** 6, examples=4,
                     a_q=jnp.eye(10), shapes=SHAPES)
    with self.assertRaisesRegex(ValueError, "not a normal initializer"):
      ls.exact_round(CONFIGS[0], "he_uniform", "quadratic", jax.random.PRNGKey(0), draws=2, examples=2,
                     a_q=jnp.eye(10), shapes=SHAPES)


class ExactTest(chex.TestCase):

  def test_one_padded_lenet_equals_its_own_shape_float64(self):
    """The default suite's value check (the slow tests below take every structure): a one-conv LeNet placed in
    the slots of a two-conv one and itself (padded positions, patches, channels, two slots past its output),
    logits and pair statistics against the LeNet in its own shape, both through autodiff (`_gather`'s
    hand-written transpose included). float64: 1e-9 relative."""
    config, shapes = CONFIGS[0], ls.union([ls.own_shapes(c) for c in CONFIGS[:2]])
    with jax.enable_x64(True):
      d = _draw_args(config, "geometric", "xent", "normal", shapes, jnp.float64)
      weights, x = ls.draw(shapes, d, 2, jax.random.PRNGKey(5), jnp.float64)
      f, out = jax.jit(ls.pair_stats, static_argnums=(0, 4))(shapes, d.lay, weights, x, "xent", jnp.eye(10))
      params, images = ls.unpadded(config, weights, x)
      np.testing.assert_allclose(out, lenet.apply_lenet(params, images), rtol=1e-9)
      want = jax.jit(conv_pairs.lenet_pair_stats, static_argnums=2)(params, images, "xent", jnp.eye(10))
      self.assertTrue(bool(jnp.all(jnp.max(want[:, 0], axis=(1, 2)) > 0)))
      np.testing.assert_allclose(f[:len(want)], want, rtol=1e-9)
      np.testing.assert_array_equal(f[len(want):], 0.0)

  @pytest.mark.slow
  def test_slots_equal_the_lenet_in_its_own_shape_float64(self):
    """Same weights and images: the slot form's logits and pair statistics against `apply_lenet` and
    `conv_pairs.lenet_pair_stats` of the LeNet in its own shape, both losses, both input laws. float64: the
    two sum the same products in other orders, so 1e-9 relative separates equal from a missing term."""
    with jax.enable_x64(True):
      a_q = _quadratic_factor(1, jnp.float64)
      stats = jax.jit(ls.pair_stats, static_argnums=0)
      for i, (config, scheme, loss, kind) in enumerate(zip(
          CONFIGS, ("fan_in", "geometric", "xavier", "fan_out"), ("quadratic", "xent", "xent", "quadratic"),
          ("normal", "uniform01", "normal", "uniform01"))):
        d = _draw_args(config, scheme, loss, kind, dtype=jnp.float64)
        weights, x = ls.draw(SHAPES, d, 3, jax.random.PRNGKey(i), jnp.float64)
        f, out = stats(SHAPES, d.lay, weights, x, d.xent, a_q)
        params, images = ls.unpadded(config, weights, x)
        self.assertEqual(images.shape, (3,) + config.image)
        if kind == "uniform01":
          self.assertGreaterEqual(float(images.min()), 0.0)
        np.testing.assert_allclose(out, lenet.apply_lenet(params, images), rtol=1e-9, atol=1e-12)
        want = conv_pairs.lenet_pair_stats(params, images, loss, a_q)
        depth = len(config.kernel_shapes())
        self.assertTrue(bool(jnp.all(jnp.max(want[:, 0], axis=(1, 2)) > 0)))  # no layer compared on zeros alone
        np.testing.assert_allclose(f[:depth], want, rtol=1e-9, err_msg=str(config))
        np.testing.assert_array_equal(f[depth:], 0.0)  # the slots past the output layer count for nothing

  @pytest.mark.slow  # compiles a round and four reference LeNets (tests/experiments/hessian counts the programs)
  def test_exact_rounds_of_different_lenets_share_one_program_and_equal_their_own_shape(self):
    """`exact_round` on LeNets of four structures: at most one compiled round (the slot shapes, examples and
    draws are the same; none if an earlier test compiled it), and each round's first draw recomputed in the
    LeNet's own shape from the same key. float32 (the round's precision): 1e-4 relative covers the reordered
    sums; the pair means subtract the diagonal from the full sum, so their rounding is relative to the
    same-example means (1e-5 of those)."""
    a_q = _quadratic_factor(2)
    before = ls.compiled_programs()
    for i, config in enumerate(CONFIGS):
      loss, kind = ("quadratic", "xent")[i % 2], ("normal", "uniform01")[i // 2]
      key = jax.random.PRNGKey(10 + i)
      st, probs = ls.exact_round(config, SCHEMES["fan_in"], loss, key, draws=3, examples=3, a_q=a_q,
                                 input_kind=kind, shapes=SHAPES)
      chex.assert_shape(st, (3, len(config.kernel_shapes()), 4))
      chex.assert_shape(probs, (3, 3, 10))
      d = _draw_args(config, "fan_in", loss, kind)
      weights, x = ls.draw(SHAPES, d, 3, jax.random.split(key, 3)[0])
      params, images = ls.unpadded(config, weights, x)
      f = np.asarray(conv_pairs.lenet_pair_stats(params, images, loss, a_q), np.float64)
      dm = np.einsum("lkee->lk", f) / 3
      pm = (f.sum(axis=(2, 3)) - 3 * dm) / 6
      want = np.stack([dm[:, 0], pm[:, 0], dm[:, 1], pm[:, 1]], -1)
      scale = np.repeat(np.stack([dm[:, 0], dm[:, 1]], -1), 2, axis=-1)  # each field's same-example mean
      self.assertTrue(np.all(np.abs(st[0] - want) <= 1e-4 * np.abs(want) + 1e-5 * scale), (config, st[0], want))
      self.assertTrue(np.all(want[:, 0] > 0))
      np.testing.assert_allclose(probs[0], jax.nn.softmax(lenet.apply_lenet(params, images)), rtol=1e-5, atol=1e-7)
    self.assertLessEqual(ls.compiled_programs() - before, 1)


class LossSampleTest(chex.TestCase):

  @pytest.mark.slow   # 9 s cold; test_one_program_for_every_lenet stays in the default suite
  def test_slot_gains_are_the_lenets_own_on_the_same_draws(self):
    """`loss_sample`'s per-draw probabilities and forward / backward gains, computed in the union's slots, equal
    `gains.lenet_gains` and the softmax of `apply_lenet` on the LeNet's own parameters from the same draw (float32:
    1e-4 relative, a few roundings of sums over at most a few hundred terms)."""
    from jscale.theory import gains
    for i, config in enumerate(CONFIGS):
      d = _draw_args(config, "geometric", "xent", "normal")
      key = jax.random.PRNGKey(100 + i)
      weights, x = ls.draw(SHAPES, d, 3, key)
      params, images = ls.unpadded(config, weights, x)
      g_ref, k_ref = gains.lenet_gains(params, images)
      p_ref = jax.nn.softmax(lenet.apply_lenet(params, images), axis=-1)
      probs, g, k = ls._gains_round(SHAPES, 3, d, key[None])
      depth = len(config.kernel_shapes())
      # An example whose units all died below a layer has an exactly-zero pre-activation there: the slots'
      # jax.nn.relu (as the exact side) gives it slope 0, `gains`' jnp.maximum splits the tie (slope 1/2).
      # Compare the examples alive at every layer; there must be some.
      alive = np.all(np.asarray(g_ref) > 0, axis=1)
      self.assertGreater(int(alive.sum()), 0)
      np.testing.assert_allclose(np.asarray(g)[0, :, :depth], g_ref, rtol=1e-4)
      np.testing.assert_allclose(np.asarray(k)[0, alive, :depth], np.asarray(k_ref)[alive], rtol=1e-4)
      np.testing.assert_allclose(np.asarray(probs)[0], p_ref, rtol=1e-4, atol=1e-7)

  def test_one_program_for_every_lenet(self):
    before = ls._gains_round._cache_size()
    for config in CONFIGS:
      out = ls.loss_sample(config, SCHEMES["fan_in"], "normal", jax.random.PRNGKey(0), draws=2, examples=3,
                           shapes=SHAPES)
      chex.assert_shape(out[1], (2, 3, len(config.kernel_shapes())))
    self.assertLessEqual(ls._gains_round._cache_size() - before, 1)

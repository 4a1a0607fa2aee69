"""Average pooling in the strided LeNet (issue 20): the model (`LeNetConfig.pools`), its exact side in the LeNet's
own shape and in the shared slots (`lenet_slots`: the pool a 0/1 matrix over positions), the full-order
predictor's pooled points (`full_order.pool_points`) and backward map, and the varied family's pooled draws."""
import json
import os

import chex
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

from jscale.calculus import layers as calc_layers
from jscale.experiments.hessian import lenet_family as lf
from jscale.initializers import SCHEMES
from jscale.models import lenet
from jscale.theory import conv_pairs, full_order, gains, losses, predict_conv
from jscale.theory import hessian as hs
from jscale.theory import lenet_slots as ls

# A pool after the first conv, after the second, after the only conv (flatten reads 1x1), window 3.
POOLED = (lenet.LeNetConfig((8, 8, 1), (3, 2), ((2, 2), (2, 2)), (5,), 10, pools=(2, 1)),
          lenet.LeNetConfig((8, 8, 1), (2, 3), ((2, 2), (2, 2)), (), 10, pools=(1, 2)),
          lenet.LeNetConfig((8, 8, 1), (3,), ((4, 4),), (4, 6), 10, pools=(2,)),
          lenet.LeNetConfig((12, 12, 1), (2,), ((2, 2),), (4,), 10, pools=(3,)))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _slot_args(config, shapes, scheme, dtype):
  lay = ls.layout(shapes, config)
  stds = np.zeros(len(shapes.slots))
  stds[:len(config.kernel_shapes())] = np.sqrt(predict_conv.weight_sq(config, SCHEMES[scheme]))
  return ls._Draw(jax.tree.map(jnp.asarray, lay), jnp.asarray(stds, dtype), jnp.asarray(1.0, dtype),
                  jnp.asarray(0.0, dtype))


class ModelTest(chex.TestCase):

  def test_pooled_lenet_is_the_calculus_avgpool_between_its_layers(self):
    """`apply_lenet` with pools against the layers run by hand with `jscale.calculus`'s AvgPool (lax.reduce_window,
    an independent implementation); float32 1e-6."""
    config = POOLED[0]
    params = lenet.init_lenet(jax.random.PRNGKey(0), config)
    x = jax.random.normal(jax.random.PRNGKey(1), (3, 8, 8, 1))
    h = x
    for name, q in zip(("conv0", "conv1"), config.pools):
      w = params[name]["kernel"]
      h = jax.nn.relu(jax.lax.conv_general_dilated(h, w, w.shape[:2], "VALID",
                                                   dimension_numbers=("NHWC", "HWIO", "NHWC")))
      h = calc_layers.AvgPool((q, q)).apply(None, h, None, None) if q > 1 else h
    h = jax.nn.relu(h.reshape(3, -1) @ params["dense0"]["kernel"]) @ params["dense1"]["kernel"]
    np.testing.assert_allclose(lenet.apply_lenet(params, x, pools=config.pools), h, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(lenet.LeNet(config).apply({"params": params}, x), h, rtol=1e-6, atol=1e-6)
    chex.assert_shape(params["dense0"]["kernel"], (2 * 1 * 1, 5))  # 8 -> 4 -> pool 2 -> conv 1x1: 2 channels

  def test_bad_pools_are_refused(self):
    with self.assertRaisesRegex(ValueError, "one window >= 1 per conv"):
      lenet.LeNetConfig((8, 8, 1), (3, 2), ((2, 2), (2, 2)), (), 10, pools=(2,)).check()
    with self.assertRaisesRegex(ValueError, "average pool 3x3 needs its output grid"):
      lenet.LeNetConfig((8, 8, 1), (3,), ((2, 2),), (), 10, pools=(3,)).check()


class ExactTest(chex.TestCase):

  @pytest.mark.slow  # 30 s on a loaded 2-core machine (a float64 Jacobian program); the model test stays default
  def test_pooled_slots_equal_the_lenet_in_its_own_shape_float64(self):
    """A pooled LeNet and an unpooled one in one union of slots: logits and pair statistics against `apply_lenet`
    and `conv_pairs.lenet_pair_stats` with the pools, in the LeNet's own shape (float64: 1e-9 relative to each
    layer's largest entry; examples dead below a layer give exact zeros on both sides)."""
    plain = lenet.LeNetConfig((8, 8, 1), (3, 2), ((2, 2), (2, 2)), (5,), 10)
    shapes = ls.union([ls.own_shapes(POOLED[0]), ls.own_shapes(plain)])
    self.assertEqual(shapes, ls.own_shapes(plain))  # the pooled LeNet fits its unpooled twin's slots
    with jax.enable_x64(True):
      for config in (POOLED[0], plain):
        d = _slot_args(config, shapes, "fan_in", jnp.float64)
        weights, x = ls.draw(shapes, d, 3, jax.random.PRNGKey(4), jnp.float64)
        f, out = jax.jit(ls.pair_stats, static_argnums=(0, 4))(shapes, d.lay, weights, x, "xent", jnp.eye(10))
        params, images = ls.unpadded(config, weights, x)
        np.testing.assert_allclose(out, lenet.apply_lenet(params, images, pools=config.pools), rtol=1e-9)
        want = conv_pairs.lenet_pair_stats(params, images, "xent", jnp.eye(10), pools=config.pools)
        scale = np.max(np.abs(want), axis=(2, 3), keepdims=True)
        self.assertTrue(np.all(scale > 0))
        np.testing.assert_allclose(f[:len(want)], want, rtol=0, atol=1e-9 * float(np.max(scale)))

  @pytest.mark.slow
  def test_every_pooled_structure_in_slots_float64(self):
    """The four pooled structures in one union (pools after the first, second and only conv; window 3)."""
    shapes = ls.union([ls.own_shapes(c) for c in POOLED])
    a_q = jnp.asarray(losses.quadratic_factor(losses.random_quadratic(jax.random.PRNGKey(1), 10, jnp.float64)))
    with jax.enable_x64(True):
      stats = jax.jit(ls.pair_stats, static_argnums=0)
      for i, config in enumerate(POOLED):
        d = _slot_args(config, shapes, ("fan_in", "geometric")[i % 2], jnp.float64)
        weights, x = ls.draw(shapes, d, 3, jax.random.PRNGKey(10 + i), jnp.float64)
        f, out = stats(shapes, d.lay, weights, x, jnp.asarray(float(i % 2)), a_q)
        params, images = ls.unpadded(config, weights, x)
        np.testing.assert_allclose(out, lenet.apply_lenet(params, images, pools=config.pools), rtol=1e-9, atol=1e-12)
        want = conv_pairs.lenet_pair_stats(params, images, ("quadratic", "xent")[i % 2], a_q, pools=config.pools)
        np.testing.assert_allclose(f[:len(want)], want, rtol=0, atol=1e-9 * float(jnp.max(jnp.abs(want))),
                                   err_msg=str(config))
        g, k = gains.lenet_gains(params, images, config.pools)
        self.assertEqual(g.shape, (3, len(want)))
        # the forward gain of the layer above a pool is the pooled map's squared norm
        h = lenet.apply_lenet(params, images, pools=config.pools, return_hidden=True)[1]
        np.testing.assert_allclose(g[:, 1], np.sum(np.asarray(h[0]).reshape(3, -1) ** 2, -1), rtol=1e-9)

  @pytest.mark.slow
  def test_pooled_position_form_equals_the_full_parameter_jacobian(self):
    """`conv_pairs.lenet_pair_stats` with a pool against `hessian.factor_pairs` of the full parameter Jacobian of
    `apply_lenet` with the pool (`hessian.leaf_factors`, independent of the position form); float64 1e-9."""
    config = POOLED[0]
    with jax.enable_x64(True):
      p = lenet.init_lenet(jax.random.PRNGKey(1), config, "glorot_normal", dtype=jnp.float64)
      x = jax.random.normal(jax.random.PRNGKey(2), (4, 8, 8, 1), jnp.float64)
      a = jnp.asarray(losses.quadratic_factor(losses.random_quadratic(jax.random.PRNGKey(3), 10, jnp.float64)))
      apply = lambda params, xs: lenet.apply_lenet(params, xs, pools=config.pools)
      us = dict(zip(hs.leaf_names(p), hs.leaf_factors(apply, p, x, "quadratic", a)))
      f = conv_pairs.lenet_pair_stats(p, x, "quadratic", a, pools=config.pools)
      for l, name in enumerate(predict_conv.weight_layers(config)):
        np.testing.assert_allclose(f[l, 0], hs.factor_pairs(us[f"{name}/kernel"]), rtol=1e-9)
        np.testing.assert_allclose(f[l, 1], hs.factor_pairs(us[f"{name}/bias"]), rtol=1e-9)


def _conv_points(n, k, draws, seed=0):
  """Monte Carlo of one conv layer's ReLU outputs (k-pixel N(0, 1) patches, n channels, He weights), two examples
  of a 2x2 pool each: per draw the point statistics (s, r, d, p2, t) of one point per example and the same of the
  pooled points."""
  rng = np.random.default_rng(seed)
  w = rng.normal(0, np.sqrt(2.0 / k), (draws, k, n))
  h = np.maximum(np.einsum("depk,dkn->depn", rng.normal(size=(draws, 2, 4, k)), w), 0.0)
  stats = lambda a, b: np.stack([np.sum(a * a, -1), np.sum(a * a, -1) ** 2, np.sum(a * b, -1),
                                 np.sum(a * b, -1) ** 2, np.sum(a * a, -1) * np.sum(b * b, -1)], -1)
  z = h.mean(2)
  return stats(h[:, 0, 0], h[:, 1, 0]), stats(z[:, 0], z[:, 1])


def test_pooled_points_against_monte_carlo():
  """`pool_points` from the Monte-Carlo point statistics against the pooled points' own. 40k draws: relative SE of
  the difference <= 1% (printed in the message). s' and d' are identities (4 SE); t' 4 SE + 3%; E|z|^4 and E (z.z')^2 rest on
  the four-point model (the shared-point moment u, `shared_moment`): 4 SE + 7% (measured at 200k draws, 4-16
  channels: -2 to -6% and 0 to +4%). The cosine at its mean in place of u is 10-18% low on E (z.z')^2: the test
  tells them apart."""
  for n, k in ((4, 4), (16, 4), (8, 9)):
    pt, pz = _conv_points(n, k, 40000, seed=n + k)
    m, mz = pt.mean(0), pz.mean(0)
    se = np.hypot(pt.std(0), pz.std(0)) / np.sqrt(len(pz))  # both sides' MC error (of the point stats fed in too)
    st = full_order.PointStats(*m)
    got = np.array(full_order.pool_points(st, 2)[:5])
    tol = 4 * se + np.array([0.0, 0.07, 0.0, 0.07, 0.03]) * mz
    assert np.all(np.abs(got - mz) <= tol), (n, k, got / mz, se / mz)
    mean_cosine = st._replace(u=(st.d / st.s) ** 2 * st.t)  # the cosine-at-its-mean model
    assert full_order.pool_points(mean_cosine, 2).p2 < 0.93 * mz[3], (n, k)


def test_pool_window_one_and_the_backward_map():
  st = full_order.PointStats(2.0, 5.0, 0.5, 1.0, 4.5)
  assert full_order.pool_points(st, 1) == st
  layers = full_order.lenet_layers(POOLED[0])
  assert [(l.kernel, l.grid, l.pool) for l in layers] == [((2, 2), (4, 4), 2), ((2, 2), (1, 1), 1),
                                                           ((1, 1), (1, 1), 1), ((1, 1), (1, 1), 1)]
  par, tap = full_order._parents(layers[0], layers[1])
  # conv0's 4x4 grid pools to 2x2, which conv1 (2x2 kernel) reads whole: one parent, a pooled point's tap
  assert par.tolist() == [0] * 16
  assert tap.tolist() == [0, 0, 1, 1, 0, 0, 1, 1, 2, 2, 3, 3, 2, 2, 3, 3]


class FamilyTest(chex.TestCase):

  def test_pooled_draws_keep_the_other_fields_of_the_stored_runs(self):
    """`sample_varied` draws pools from a stream of its own: the setups of the stored seed-2 run (drawn before the
    family had pooling) are today's, pools apart, and a pooled setup's image and first grid are unchanged."""
    with open(os.path.join(ROOT, "results", "hessian", "full_order", "lenet_seed2.json")) as f:
      stored = [r for r in json.load(f)["records"] if r["batch"] == 1]
    fam = lf.LeNetFamily(varied=True)
    for rec, setup in zip(stored, fam.sample_setups(len(stored), 2)):
      got = fam.setup_json(setup)
      self.assertEqual({k: got[k] for k in rec if k in got and k != "pools"},
                       {k: rec[k] for k in rec if k in got and k != "pools"})
    setups = fam.sample_setups(400, 0)
    pooled = [s for s in setups if s.pools]
    self.assertGreater(len(pooled), 40)
    for s in pooled:
      self.assertEqual(sorted(s.pools)[-1], lf.POOL_WINDOW)
      self.assertTrue(any(ls.fits(x, s.config()) for x in lf.varied_slot_shapes()), s)
      self.assertEqual(fam.setup_from_json(json.loads(json.dumps(fam.setup_json(s)))), s)
    self.assertEqual({len(s.channels) for s in pooled}, {1, 2})  # three convs leave no room under 16 positions

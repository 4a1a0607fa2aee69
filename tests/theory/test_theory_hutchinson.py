"""Hutchinson estimates of tr(H_ll^2)/d against exact jax.hessian blocks."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jscale import mlp
from jscale.theory import hessian as hs
from jscale.theory import hutchinson, losses


class HutchinsonTest(chex.TestCase):

  def test_diagonal_block_is_exact_with_zero_stderr(self):
    """Rademacher probes on a diagonal block: ||H v||^2 = sum_i H_ii^2 for every v, so no variance.
    Linear regression on X = I_4: H_ww = X^T X / 4 = I / 4, tr(H^2) / d = 1/16."""
    params = (mlp.Dense(jnp.ones((4, 1)), jnp.zeros((1,))),)
    loss = losses.make_loss("quadratic", "identity")
    est = hutchinson.block_sq_sv(loss, params, (jnp.eye(4), jnp.zeros((4, 1)), jnp.eye(1)), 0,
                                 jax.random.PRNGKey(0), num_probes=8)
    self.assertAlmostEqual(float(est.mean), 1 / 16, places=6)
    self.assertAlmostEqual(float(est.stderr), 0.0, places=6)

  @pytest.mark.slow
  def test_within_three_standard_errors_vmapped_over_setups(self):
    """Two ReLU setups (same shapes, different draws) in one vmapped call; every weight and bias block
    within 3 standard errors of the exact value (a 3-SE band fails ~0.3% of the time per block for a
    Gaussian error; seeds are fixed, so the test is deterministic)."""
    widths, batch, kind, n_setups, probes = (5, 8, 6, 3), 4, "xent", 2, 128
    with jax.enable_x64(True):
      def draw(k):
        k = jax.random.split(k, 4)
        p = mlp.init_mlp(k[0], widths, "he_normal", "normal:0.1", dtype=jnp.float64)
        x = jax.random.normal(k[1], (batch, widths[0]), jnp.float64)
        return p, (x, losses.random_targets(k[2], kind, batch, widths[-1], jnp.float64), jnp.eye(widths[-1]))
      keys = jax.random.split(jax.random.PRNGKey(42), n_setups)
      params_s, args_s = jax.vmap(draw)(keys)
      loss = losses.make_loss(kind)
      probe_keys = jax.random.split(jax.random.PRNGKey(7), n_setups)
      est_w, est_b = hutchinson.hutchinson_setups(loss, params_s, args_s, probe_keys, probes)
      chex.assert_shape(est_w.mean, (n_setups, len(widths) - 1))
      for s in range(n_setups):
        p, a = jax.tree.map(lambda v: v[s], (params_s, args_s))
        exact = hs.diagonal_from_blocks(hs.blocks(hs.hessian(loss, p, *a, x64=True), p), p)
        for est, ex in ((est_w, exact.weight), (est_b, exact.bias)):
          err = np.abs(np.asarray(est.mean[s]) - np.asarray(ex))
          self.assertTrue(np.all(np.asarray(est.stderr[s]) > 0))
          self.assertTrue(np.all(err <= 3 * np.asarray(est.stderr[s])), (s, err, est.stderr[s]))
          # and the estimator is informative: SE well below the value itself
          self.assertTrue(np.all(np.asarray(est.stderr[s]) < 0.3 * np.asarray(ex)))

  def test_bad_probe_count(self):
    params = (mlp.Dense(jnp.ones((2, 1)), jnp.zeros((1,))),)
    with self.assertRaisesRegex(ValueError, "num_probes"):
      hutchinson.block_sq_sv(losses.make_loss("quadratic", "identity"), params,
                             (jnp.eye(2), jnp.zeros((2, 1)), jnp.eye(1)), 0, jax.random.PRNGKey(0), num_probes=1)


class LeafIndexTest(chex.TestCase):

  def test_out_of_range_index_is_refused_with_the_valid_range(self):
    params = (mlp.Dense(jnp.ones((2, 1)), jnp.zeros((1,))),)
    args = (jnp.eye(2), jnp.zeros((2, 1)), jnp.eye(1))
    loss = losses.make_loss("quadratic", "identity")
    for bad in (2, -1, 7):
      with self.assertRaisesRegex(ValueError, rf"leaf index {bad} is out of range.*0\.\.1"):
        hutchinson.block_sq_sv(loss, params, args, bad, jax.random.PRNGKey(0), num_probes=4)
    with self.assertRaisesRegex(TypeError, "leaf index must be an int"):
      hutchinson.block_hvp(loss, params, args, "w0")

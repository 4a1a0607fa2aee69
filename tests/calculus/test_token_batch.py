"""Token correlations in the minibatch G (#21): the third correlation rc (two examples at two positions) and
the position factor of a weight whose output gradient depends on its input (attention's projections)."""
from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jscale import calculus
from jscale.calculus.attention import _position_factor
from jscale.calculus.correlation import cross_position_corr


def _token_model(params, x):
  """One-hot tokens -> token + position embedding -> dense -> ReLU -> mean over tokens -> head."""
  h = x @ params["tokens"] + params["positions"]
  h = jax.nn.relu(h @ params["w"])
  return jnp.mean(h, axis=1) @ params["head"]


class CrossPositionTest(chex.TestCase):

  def test_cross_position_corr_equals_a_loop_over_pairs(self):
    rng = np.random.default_rng(0)
    B, T, D = 5, 4, 3
    # a per-position part shared by the examples, a per-example part shared by the positions, and noise
    v = rng.normal(size=(1, T, D)) + 0.5 * rng.normal(size=(B, 1, D)) + rng.normal(size=(B, T, D)) + 0.3
    ms = np.mean(v * v)
    pairs = [v[b, t] @ v[c, s] for b in range(B) for c in range(B) for t in range(T) for s in range(T)
             if b != c and t != s]
    # the same sums in another order: float64 rounding only
    np.testing.assert_allclose(cross_position_corr(v), np.mean(pairs) / (D * ms), rtol=1e-12)
    self.assertIsNone(cross_position_corr(v[:, 0]))

  def test_position_factor_of_independent_gradients_is_the_product_form(self):
    # x_t and d_t independent, each with a component shared by the T positions: 1 + (T - 1) rp_x rp_d
    rng = np.random.default_rng(1)
    n, T, a, c, rp_x, rp_d = 4000, 6, 8, 5, 0.5, 0.3
    x = math.sqrt(rp_x) * rng.normal(size=(n, 1, a)) + math.sqrt(1 - rp_x) * rng.normal(size=(n, T, a))
    d = math.sqrt(rp_d) * rng.normal(size=(n, 1, c)) + math.sqrt(1 - rp_d) * rng.normal(size=(n, T, c))
    # per draw the sum has ~T^2 a c terms; over 4000 draws the s.e. of the ratio is ~0.01: 4 s.e.
    self.assertAlmostEqual(_position_factor(x, d), 1 + (T - 1) * rp_x * rp_d, delta=0.05)

  def test_minibatch_G_of_a_position_embedded_token_model(self):
    """Examples share the position embedding at the same position only, one-hot tokens coincide as often at
    two positions as at one (r = rp = rc = 1/V, where the product form had rc = 1/V^2), and the loss has a
    shared part (correlation ~1/2 between examples' output gradients), so the minibatch G is mostly its cross
    term. The product form predicted the token embedding's G_batch at 0.29-0.33 of the measured."""
    V, T, D, B, n_out = 16, 8, 128, 64, 10
    logs = {}
    for seed in (7, 8):
      ks = jax.random.split(jax.random.PRNGKey(seed), 8)
      params = {"tokens": jax.random.normal(ks[0], (V, D)), "positions": jax.random.normal(ks[1], (T, D)),
                "w": jax.random.normal(ks[2], (D, D)) * math.sqrt(2 / D),
                "head": jax.random.normal(ks[3], (D, n_out)) / math.sqrt(D)}
      x = jax.nn.one_hot(jax.random.randint(ks[4], (B, T), 0, V), V)
      v = jax.random.normal(ks[5], (1, n_out)) + jax.random.normal(ks[6], (B, n_out))
      res = calculus.inspect(_token_model, params, x, loss=lambda out, v=v: jnp.sum(out * v, axis=-1))
      for r in res.layers:
        logs.setdefault(r.path, []).append(math.log(r.G_batch_pred / r.G_batch_meas))
    for path, ls in logs.items():
      # one batch's ratio scatters by 10-20% per leaf (width 128, 64 examples, one shared loss direction);
      # over two draws the geometric mean must be inside the band [0.8, 1.25]
      self.assertTrue(0.8 <= math.exp(np.mean(ls)) <= 1.25, (path, np.exp(ls)))

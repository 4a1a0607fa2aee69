"""Each example's own scale (#21, example_scale.py): the covariance of an example's input and backward norms in
a kernel's G, and the per-example Jensen terms. References: finite differences of activation_maps.offset_moments
(another quadrature path), Monte Carlo over examples, and the network's own per-example gradients as inspect
measures them (E_b[|x_b|^2 |dy_b|^2] / (E[x^2] E[dy^2]) read from its rows)."""
from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jscale import calculus
from jscale.calculus import activation_maps as am
from jscale.calculus import example_scale as es


def _mlp(act, widths, seed, batch):
  ks = jax.random.split(jax.random.PRNGKey(seed), len(widths))
  p = [jax.random.normal(k, (a, b)) * math.sqrt(2 / a) for k, a, b in zip(ks[:-1], widths[:-1], widths[1:])]
  x = jax.random.normal(ks[-1], (batch, widths[0]))

  def net(p, x):
    for w in p[:-1]:
      x = act(x @ w)
    return x @ p[-1]
  return net, p, x


def _factors(res):
  """Per dense kernel: predicted and measured E_b[|x_b|^2 |dy_b|^2] / (E[x^2] E[dy^2])."""
  out = []
  for r in res.layers:
    if r.kind == "dense":
      out.append((r.grad_sq_pred / (r.x_sq_pred * r.dy_sq_pred), r.grad_sq_meas / (r.x_sq_meas * r.dy_sq_meas)))
  return np.array(out)


class ResponseTest(chex.TestCase):

  def test_elasticities_match_finite_differences(self):
    # gamma, beta by Stein's identity against central differences of offset_moments in log q (spread moving,
    # offsets held), at another order (48 nodes): agreement to 1e-3 (the difference's O(h^2) error at h = 0.01)
    m = np.linspace(-0.8, 1.2, 21)
    for phi in (jax.nn.silu, jax.nn.gelu, jnp.tanh):
      q = 1.4
      r = es.response(phi, m, q, 64)
      h = 0.01
      mm = float(np.mean(m * m))

      def mom(qq):
        # offset_moments takes the spread as q - mean(m^2): moving q moves the spread only
        return am.offset_moments(phi, m, qq, order=48)
      up, dn, mid = mom(q * math.exp(h)), mom(q * math.exp(-h)), mom(q)
      gamma = (math.log(up.fwd_sq) - math.log(dn.fwd_sq)) / (2 * h)
      beta = (math.log(up.bwd_sq) - math.log(dn.bwd_sq)) / (2 * h)
      self.assertAlmostEqual(r.gamma, gamma, delta=1e-3)
      self.assertAlmostEqual(r.beta, beta, delta=1e-3)
      # the curvature in q: F(q (1 + k)) + F(q (1 - k)) - 2 F(q) = F'' (q k)^2 to O(k^4); k = 0.05 keeps the
      # float32 evaluation's rounding (~1e-7 of F) well below the difference (~1e-4 of F)
      k = 0.05
      pl, mi = mom(q * (1 + k)), mom(q * (1 - k))
      for got, a, b, c in ((r.curv_f, pl.fwd_sq, mi.fwd_sq, mid.fwd_sq), (r.curv_b, pl.bwd_sq, mi.bwd_sq, mid.bwd_sq)):
        self.assertAlmostEqual(got, (a + b - 2 * c) / (2 * k * k * c), delta=0.01 + 0.02 * abs(got))
      self.assertGreater(mm, 0)

  def test_relu_has_no_response(self):
    # positively homogeneous, no offsets: E[phi'^2] does not follow the scale (beta 0), E[phi^2] is linear (1)
    r = es.response(jax.nn.relu, np.zeros(8), 2.0, 64)
    # (float32 evaluation of phi: 1e-7)
    self.assertAlmostEqual(r.beta, 0.0, delta=1e-6)
    self.assertAlmostEqual(r.gamma, 1.0, delta=1e-6)
    self.assertIsNone(es.kernel_factor(0.3, 0.0))

  def test_fresh_term_against_monte_carlo(self):
    # n = 64 units at offsets m, each example's units drawn at one common spread: the variance over examples of
    # log mean_j phi(y_bj)^2 left after regressing it on log mean_j y_bj^2 is `fresh`. 4000 examples: the
    # variance's s.e. is sqrt(2 / 4000) = 2.2% relative; tolerance 10% (4.5 s.e.)
    rng = np.random.default_rng(0)
    n, B, q = 64, 4000, 1.5
    m = rng.normal(0, 0.5, n)
    s = math.sqrt(q - float(np.mean(m * m)))
    y = m[None, :] + s * rng.standard_normal((B, n))
    for phi in (jax.nn.silu, jnp.tanh):
      v, _ = am.value_and_slope(phi, y.reshape(-1))
      lf = np.log(np.mean(v.reshape(B, n) ** 2, axis=1))
      ly = np.log(np.mean(y * y, axis=1))
      c = np.cov(lf, ly)
      resid = c[0, 0] - c[0, 1] ** 2 / c[1, 1]
      r = es.response(phi, m, q, n)
      np.testing.assert_allclose(r.fresh, resid, rtol=0.10)


class KernelFactorTest(chex.TestCase):

  def test_silu_mlp_kernels_covary_as_predicted(self):
    # He SiLU MLP 64 -> 64 x3 -> 10, batch 256, 4 draws: the measured log factor of kernels 2-3 is 0.05-0.09
    # (the rules' E[x^2] E[dy^2] alone: 0); predicted within 0.04 of it on average over the draws (its s.e.
    # over 4 draws ~0.01; the prediction's own excess on dev draws 1200-1215 was +0.01 ... +0.02)
    pred, meas = [], []
    for seed in range(4):
      net, p, x = _mlp(jax.nn.silu, (64, 64, 64, 64, 10), seed, 256)
      f = np.log(_factors(calculus.inspect(net, p, x)))
      pred.append(f[:, 0])
      meas.append(f[:, 1])
    pred, meas = np.mean(pred, axis=0), np.mean(meas, axis=0)
    self.assertGreater(meas[1], 0.03)
    np.testing.assert_allclose(pred[:3], meas[:3], atol=0.04)

  def test_relu_mlp_keeps_the_product(self):
    # ReLU's gradient does not follow the example's scale: no factor, the rules' product as before
    net, p, x = _mlp(jax.nn.relu, (32, 32, 32, 10), 0, 64)
    f = _factors(calculus.inspect(net, p, x))
    np.testing.assert_allclose(f[:, 0], 1.0, rtol=1e-12)

  @pytest.mark.slow
  def test_tanh_mlp_kernels_anticovary(self):
    # tanh: E[phi'^2] shrinks with the scale, the factor is below 1 at the first kernel (data norms, -0.02)
    pred, meas = [], []
    for seed in range(6):
      net, p, x = _mlp(jnp.tanh, (64, 64, 64, 64, 10), seed, 256)
      f = np.log(_factors(calculus.inspect(net, p, x)))
      pred.append(f[:, 0])
      meas.append(f[:, 1])
    pred, meas = np.mean(pred, axis=0), np.mean(meas, axis=0)
    self.assertLess(meas[0], -0.01)
    np.testing.assert_allclose(pred[:3], meas[:3], atol=0.015)


def test_one_node_grid_serves_all_three_readers():
  """elementwise.activation_rule builds the offsets' node grid once and hands it to offset_moments, response and
  unit_coupling.slopes: each must return exactly (bitwise) what it computes from its own grid, which holds only
  while the three share the spread and the order."""
  from jscale.calculus import unit_coupling as uc
  assert es.ORDER == uc.ORDER
  m = 0.3 * np.random.default_rng(0).standard_normal(64)
  q = 1.1
  for phi in (jax.nn.gelu, jnp.tanh):
    nodes = am.offset_nodes(phi, m, am.offset_spread(m, q), es.ORDER)
    a, b = am.offset_moments(phi, m, q), am.offset_moments(phi, m, q, nodes=nodes)
    np.testing.assert_array_equal(a.mean, b.mean)
    assert (a.fwd_sq, a.bwd_sq) == (b.fwd_sq, b.bwd_sq)
    assert es.response(phi, m, q, 64) == es.response(phi, m, q, 64, nodes=nodes)
    assert uc.slopes(phi, m, q) == uc.slopes(phi, m, q, nodes=nodes)

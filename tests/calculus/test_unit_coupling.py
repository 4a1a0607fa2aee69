"""A smooth activation's slopes and the dense kernels beside it (#21, unit_coupling.py): (a) each unit's spread
follows its own column, which carries its gradient back; (b) each unit's own value moves the slopes above that
its gradient comes back through. References: Monte Carlo over Gaussian examples for one draw of the kernels,
and inspect's wiring on a SiLU MLP."""
from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jscale import calculus
from jscale.calculus import activation_maps as am
from jscale.calculus import unit_coupling as uc


class ColumnFactorTest(chex.TestCase):

  def test_against_monte_carlo(self):
    # fan-in 8 (columns' |W_k|^2 spread by sqrt(2/8): the factor is ~1.1, at width 64 ~1.005), 64 units, one
    # draw of W, 40000 Gaussian examples with a mean. The measured factor mean(|W_k|^2 E_b[phi'^2]) / (mean
    # |W|^2 mean E_b[phi'^2]) has Monte Carlo s.e. ~5e-4 in log (per unit 1/sqrt(40000) relative, over 64
    # units and the column spread); tolerance 0.15 of the effect (about 10 s.e.): without the rule it is 1
    rng = np.random.default_rng(0)
    n_in, n_out, B = 8, 64, 40000
    W = rng.normal(0, math.sqrt(2 / n_in), (n_in, n_out))
    mu = rng.normal(0, 0.3, n_in)
    x = mu + rng.standard_normal((B, n_in))
    y = x @ W
    for phi in (jax.nn.silu, jnp.tanh):
      _, d = am.value_and_slope(phi, y.reshape(-1))
      C = np.mean(d.reshape(y.shape) ** 2, axis=0)
      col = np.sum(W * W, axis=0)
      meas = math.log(np.mean(col * C) / (np.mean(col) * np.mean(C)))
      pred = math.log(uc.column_factor(phi, mu @ W, float(np.mean(y * y)), col))
      self.assertGreater(abs(meas), 0.02)
      self.assertAlmostEqual(pred, meas, delta=0.15 * abs(meas))


class ValueCouplingTest(chex.TestCase):

  def test_against_monte_carlo(self):
    # 32 units h = phi(y) (per-unit offsets, spread 1.2) feed two SiLU / tanh layers of 32 units above (He
    # kernels), whose top gradient c is independent Gaussian; dx comes back through both. log E[phi'(y)^2 dx^2]
    # / (E[phi'(y)^2] E[dx^2]) over examples and units is, without the rule, 0; measured +0.04 (SiLU), +0.02
    # (tanh). Predicted: R (the adjacent kernel's 4th moment times kappa of the layer above, plus the chain's
    # second step) times Cov(phi'^2, phi^2) / E[phi'^2]. One draw of the kernels adds a first-order term
    # (W^3, mean 0 over draws: s.d. ~0.015 per draw), so the mean over 8 draws (3000 examples each) is
    # compared: tolerance 3 s.e. of that mean (from the draws' spread) plus 25% of the prediction (second order
    # in h W ~ 0.25; the chain's third step and beyond are left out)
    n, B = 32, 3000
    for phi in (jax.nn.silu, jnp.tanh):
      meas, pred = [], []
      for seed in range(8):
        rng = np.random.default_rng(seed)
        m = rng.normal(0, 0.4, n)
        y = m + math.sqrt(1.2) * rng.standard_normal((B, n))
        h, d = am.value_and_slope(phi, y.reshape(-1))
        h, d = h.reshape(y.shape), d.reshape(y.shape)
        Ws = [rng.normal(0, math.sqrt(2 / n), (n, n)) for _ in range(2)]
        ys, slope, x = [], [], h
        for W in Ws:
          ys.append(x @ W)
          v, s = am.value_and_slope(phi, ys[-1].reshape(-1))
          x, _ = v.reshape(ys[-1].shape), slope.append(s.reshape(ys[-1].shape))
        g = rng.standard_normal((B, n))
        for W, s in zip(Ws[::-1], slope[::-1]):
          g = (s * g) @ W.T
        meas.append(math.log(np.mean(d ** 2 * g ** 2) / (np.mean(d ** 2) * np.mean(g ** 2))))
        sl = [uc.slopes(phi, yy.mean(axis=0), float(np.mean(yy * yy))) for yy in ys]
        w2 = float(np.mean(Ws[0] ** 2))
        k2, _ = uc.chain_step((sl[0].C * w2, sl[0].pp2 * w2), n * float(np.mean(Ws[1] ** 2)), sl[1])
        R = uc.kernel_ratio(Ws[0]) * sl[0].kappa + k2
        own = uc.slopes(phi, m, float(np.mean(y * y)))
        pred.append(math.log1p(R * own.cov))
      se = np.std(meas, ddof=1) / math.sqrt(len(meas))
      self.assertAlmostEqual(np.mean(pred), np.mean(meas), delta=3 * se + 0.25 * abs(np.mean(pred)))
      self.assertGreater(abs(np.mean(meas)), 3 * se + 0.25 * abs(np.mean(pred)))   # the rule is needed


class WiringTest(chex.TestCase):

  def test_silu_mlp_takes_both_couplings(self):
    # He SiLU MLP 16 -> 16 x3 -> 4 (narrow: the couplings are ~1/width): the predicted gradient at the first
    # SiLU's output over the second SiLU's input gradient is the rules' dense factor times the columns' factor
    # (a), and the first SiLU's input gradient over its output gradient is its E[phi'^2] times (b) times the
    # example-scale factor; here checked through their effect: the backward at the first activation's output
    # moves by more than 1% against the rules without the couplings, the last one's not at all (no activation
    # above it; its own kernel's factor acts below it)
    ks = jax.random.split(jax.random.PRNGKey(3), 5)
    widths = (16, 16, 16, 16, 4)
    p = [jax.random.normal(k, (a, b)) * math.sqrt(2 / a) for k, a, b in zip(ks[:-1], widths[:-1], widths[1:])]
    x = jax.random.normal(ks[-1], (64, 16))

    def net(p, x):
      for w in p[:-1]:
        x = jax.nn.silu(x @ w)
      return x @ p[-1]

    def dx_pred(off):
      from jscale.calculus import elementwise
      saved = elementwise._unit_couplings
      if off:
        elementwise._unit_couplings = lambda *a, **k: None
      try:
        return [a.dx_sq_pred for a in calculus.inspect(net, p, x).activations]
      finally:
        elementwise._unit_couplings = saved

    on, off = np.array(dx_pred(False)), np.array(dx_pred(True))
    self.assertGreater(abs(math.log(on[0] / off[0])), 0.01)
    np.testing.assert_array_equal(on[-1], off[-1])   # nothing above the last activation: (b) is 1, (a) its own

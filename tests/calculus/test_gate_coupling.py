"""A smooth activation's slopes couple two token positions' gradients to their own inputs (#21,
elementwise.gate_coupling): the dense kernel right below a GELU sums E[(x_t . x_t') phi'(y_t) phi'(y_t')] over
position pairs, which is the product form rho E[phi' phi'] plus a 1/fan-in term. Reference: Monte Carlo of
one unit on Gaussian token pairs, written apart from the engine (numpy draws, jax.grad of the activation)."""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jscale.calculus import activation_maps as am
from jscale.calculus.elementwise import gate_coupling
from jscale.calculus.inspection_assembly import position_factor

import test_draw_mean  # tests/calculus: the token GELU model and its propagation

N_FEAT, RHO, Q, SAMPLES = 4, 0.3, 1.5, 400_000


def _slope(y):
  return np.asarray(jax.vmap(jax.grad(lambda v: jax.nn.gelu(v, approximate=True)))(jnp.asarray(y, jnp.float32)),
                    np.float64)


class GateCouplingTest(chex.TestCase):

  def test_pair_term_matches_monte_carlo(self):
    # one unit w of squared norm Q (x has unit entries) on token pairs of per-feature correlation RHO, n = 4
    # features so the 1/n term is large; the Monte Carlo mean of (x.x') phi'(y) phi'(y') / (n E[phi'^2]) has a
    # standard error from its sample s.d. / sqrt(400k): the rule must sit within 4 s.e., the product form
    # rho E[phi' phi'] / E[phi'^2] alone must not (the test fails without the coupling)
    rng = np.random.default_rng(0)
    s = rng.standard_normal((SAMPLES, N_FEAT))
    x = np.sqrt(RHO) * s + np.sqrt(1 - RHO) * rng.standard_normal((SAMPLES, N_FEAT))
    x2 = np.sqrt(RHO) * s + np.sqrt(1 - RHO) * rng.standard_normal((SAMPLES, N_FEAT))
    w = rng.standard_normal((SAMPLES, N_FEAT))
    w *= np.sqrt(Q) / np.linalg.norm(w, axis=1, keepdims=True)
    y, y2 = np.sum(w * x, 1), np.sum(w * x2, 1)
    phi = lambda v: jax.nn.gelu(v, approximate=True)  # noqa: E731
    m = am.maps(phi, Q, RHO)
    terms = np.sum(x * x2, 1) * _slope(y) * _slope(y2) / (N_FEAT * m.bwd_sq)
    mc, se = terms.mean(), terms.std() / np.sqrt(SAMPLES)
    product = RHO * m.bwd_corr
    rule = product + gate_coupling(phi, Q, RHO, m) / N_FEAT
    self.assertLess(abs(rule - mc), 4 * se, f"rule {rule:.4f} vs Monte Carlo {mc:.4f} +- {se:.4f}")
    self.assertGreater(abs(product - mc), 4 * se, f"product form {product:.4f} vs {mc:.4f} +- {se:.4f}")

  def test_dense_kernel_below_the_gelu_takes_it(self):
    # the token model: w0 feeds the GELU (its pair term gains rp_gate / fan_in), w1 and the head do not
    fn, leaves, x = test_draw_mean._setup(0)
    _, _, prop = test_draw_mean._propagate(fn, leaves, x, with_mean=True)
    uses = {u.fan_in * 1000 + u.fan_out: u for u in prop.uses if u.kind == "dense" and u.g is not None}
    w0 = uses[test_draw_mean.D * 1000 + test_draw_mean.F]
    w1 = uses[test_draw_mean.F * 1000 + test_draw_mean.D]
    self.assertIsNone(w1.g.rp_gate)
    self.assertGreater(w0.g.rp_gate, 0.0)
    product = 1 + (w0.rho - 1) * w0.x_sig.rp * w0.g.rp
    np.testing.assert_allclose(position_factor(w0) - product, (w0.rho - 1) * w0.g.rp_gate / w0.fan_in,
                               rtol=1e-12)

"""Tests of jscale.calculus.activation_maps: any activation's moment maps by Gauss-Hermite quadrature.

References: the ReLU / leaky-ReLU closed forms (arc-cosine kernels, rules.pwl_corr); DeepMind's `dks` package
(an independent implementation: scipy fixed-order Gauss-Legendre on [-10, 10] and dblquad, derivatives by
autograd), when installed (the `test` extra); and, always, scipy's adaptive `quad` written here apart from the
engine; Monte Carlo for ELU and sigmoid pair maps.

Tolerances: smooth activations converge spectrally under Gauss-Hermite, so the engine and an adaptive or
different-order quadrature agree to ~1e-6 relative (we allow 1e-4 for float32 evaluation of phi; 1e-3 where
a derivative is a narrow peak at the node spacing, tanh'^2 at q = 4). At a kink
(ReLU) the quadrature converges slowly: at ORDER = 100 the pair maps were measured within 3.5% of the closed
forms (we allow 5%), the one-point moments within 1e-6. Monte Carlo: 4 standard errors of the sample mean.
"""
from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, special

from jscale.calculus import activation_maps as am
from jscale.calculus.correlation import relu_corr
from jscale.calculus.rules import pwl_corr

# Written apart from the engine (numpy / scipy, not jax): the activations and their derivatives.
REF = {
    "gelu": (lambda y: y * (1 + special.erf(y / math.sqrt(2))) / 2,
             lambda y: (1 + special.erf(y / math.sqrt(2))) / 2 + y * np.exp(-y * y / 2) / math.sqrt(2 * math.pi)),
    "silu": (lambda y: y * special.expit(y), lambda y: special.expit(y) * (1 + y * (1 - special.expit(y)))),
    "tanh": (np.tanh, lambda y: 1 - np.tanh(y) ** 2),
    "softplus": (lambda y: np.logaddexp(y, 0), special.expit),
    "sigmoid": (special.expit, lambda y: special.expit(y) * (1 - special.expit(y))),
    "elu": (lambda y: np.where(y > 0, y, np.expm1(np.minimum(y, 0))), lambda y: np.where(y > 0, 1.0, np.exp(y))),
}


def gauss(f, q):
  """E[f(y)], y ~ N(0, q), by adaptive quadrature."""
  s = math.sqrt(q)
  return integrate.quad(lambda z: f(s * z) * math.exp(-z * z / 2) / math.sqrt(2 * math.pi), -12, 12,
                        limit=200, epsabs=1e-12)[0]


def gauss2(f, g, q, rho):
  """E[f(y) g(y')] for (y, y') ~ N(0, q [[1, rho], [rho, 1]]), by adaptive 2-d quadrature."""
  s, c = math.sqrt(q), math.sqrt(1 - rho * rho)
  return integrate.dblquad(lambda z2, z1: f(s * z1) * g(s * (rho * z1 + c * z2)) * math.exp(-(z1 * z1 + z2 * z2) / 2)
                           / (2 * math.pi), -9, 9, -9, 9, epsabs=1e-10)[0]


class ClosedFormTest(chex.TestCase):

  def test_relu_matches_the_arc_cosine_closed_forms(self):
    for q in (0.5, 2.0):
      for rho in (0.0, 0.3, 0.9):
        m = am.maps(am.get("relu"), q, rho)
        np.testing.assert_allclose([m.fwd_sq, m.bwd_sq, m.mean], [q / 2, 0.5, math.sqrt(q / (2 * math.pi))],
                                   rtol=5e-3)  # the mean: a kink in phi itself, ~0.4% at ORDER 100
        np.testing.assert_allclose(m.fwd_sq, q / 2, rtol=1e-6)
        np.testing.assert_allclose(m.fwd_corr, relu_corr(rho), rtol=0.05)
        np.testing.assert_allclose(m.bwd_pair, (math.pi - math.acos(rho)) / (2 * math.pi), rtol=0.05)
        self.assertFalse(m.odd)

  def test_leaky_relu_matches_the_piecewise_linear_rules(self):
    a = 0.1
    for rho in (0.0, 0.5):
      m = am.maps(am.get(f"leaky_relu:{a}"), 1.5, rho)
      fwd, bwd = pwl_corr(1.0, a, rho)
      np.testing.assert_allclose([m.fwd_sq, m.bwd_sq], [1.5 * (1 + a * a) / 2, (1 + a * a) / 2], rtol=1e-6)
      np.testing.assert_allclose([m.fwd_corr, m.bwd_corr], [fwd, bwd], rtol=0.05)

  def test_identity_is_exact(self):
    m = am.maps(am.get("identity"), 3.0, 0.4)
    np.testing.assert_allclose([m.fwd_sq, m.bwd_sq, m.fwd_corr, m.bwd_corr], [3.0, 1.0, 0.4, 1.0], rtol=1e-6)
    self.assertTrue(m.odd)


class QuadratureReferenceTest(chex.TestCase):
  """Against scipy's adaptive quadrature (written here, not the engine)."""

  def test_one_point_moments_of_smooth_activations(self):
    for name, (f, df) in REF.items():
      for q in (0.3, 1.0, 4.0):
        m = am.maps(am.get(name), q, 0.0)
        want = [gauss(f, q), gauss(lambda y: f(y) ** 2, q), gauss(lambda y: df(y) ** 2, q)]
        # tanh'(y)^2 at q = 4 is a narrow peak for 100 nodes (3e-4 off); ELU's derivative has a kink at 0, so
        # E[phi'^2] converges like ReLU's pair maps (1.1% at q = 4); the rest agree to ~1e-6
        rtol = 1e-3 if name != "elu" else 2e-2
        np.testing.assert_allclose([m.mean, m.fwd_sq, m.bwd_sq], want, rtol=rtol, atol=1e-7, err_msg=f"{name} q={q}")

  @pytest.mark.slow
  def test_pair_maps_of_smooth_activations(self):
    for name in ("gelu", "tanh", "softplus"):
      f, df = REF[name]
      m = am.maps(am.get(name), 2.0, 0.6)
      np.testing.assert_allclose([m.fwd_pair, m.bwd_pair], [gauss2(f, f, 2.0, 0.6), gauss2(df, df, 2.0, 0.6)],
                                 rtol=1e-4, err_msg=name)

  def test_monte_carlo_pair_maps(self):
    n = 400_000
    rng = np.random.default_rng(7)
    z1, z2 = rng.standard_normal((2, n))
    q, rho = 1.7, -0.4
    y1, y2 = math.sqrt(q) * z1, math.sqrt(q) * (rho * z1 + math.sqrt(1 - rho * rho) * z2)
    for name in ("elu", "sigmoid"):
      f, df = REF[name]
      m = am.maps(am.get(name), q, rho)
      for got, samples in ((m.fwd_pair, f(y1) * f(y2)), (m.bwd_pair, df(y1) * df(y2))):
        se = samples.std() / math.sqrt(n)
        self.assertLess(abs(got - samples.mean()), 4 * se, f"{name}: {got} vs {samples.mean()} +- {se}")


class DksReferenceTest(chex.TestCase):
  """DeepMind's dks (DKS/TAT) local C maps: an independent implementation (numpy + autograd)."""

  def setUp(self):
    super().setUp()
    self.dks = pytest.importorskip("dks.base.activation_transform")
    self.acts = pytest.importorskip("dks.base.activation_getter")

  @pytest.mark.slow
  def test_q_and_c_maps_match_dks(self):
    names = {"gelu": "gelu_exact", "gelu_tanh": "gelu", "silu": "swish", "tanh": "tanh", "softplus": "softplus"}
    for ours, theirs in names.items():
      phi = self.acts.get_activation_function(theirs)
      for q in (0.5, 2.0):
        phi_q = (lambda p, s: lambda x: p(s * x))(phi, math.sqrt(q))  # dks works at q = 1
        q_out = self.dks._estimate_gaussian_mean(lambda x: phi_q(x) ** 2)
        m0 = am.maps(am.get(ours), q, 0.0)
        np.testing.assert_allclose(m0.fwd_sq, q_out, rtol=1e-4, err_msg=ours)
        # C(0) and the slope C'(1) = q E[phi'^2] / E[phi^2] (Price's theorem)
        np.testing.assert_allclose(m0.fwd_corr, self.dks._calc_c_map(phi_q, c=0.0, q_output=q_out), rtol=1e-4,
                                   atol=1e-7, err_msg=ours)
        np.testing.assert_allclose(q * m0.bwd_sq / m0.fwd_sq, self.dks._calc_c_slope(phi_q, c=1.0, q_output=q_out),
                                   rtol=1e-4, err_msg=ours)
      phi_1 = phi
      mh = am.maps(am.get(ours), 1.0, 0.5)
      np.testing.assert_allclose(mh.fwd_corr, self.dks._calc_c_map(phi_1, c=0.5), rtol=1e-4, err_msg=ours)


class DepthAndNamesTest(chex.TestCase):

  def test_relu_he_depth_profile_is_the_closed_form(self):
    prof = am.depth_profile(am.get("relu"), 20, weight_gain=2.0)
    np.testing.assert_allclose(prof.q, 1.0, rtol=1e-6)       # He keeps E[y^2] exactly
    np.testing.assert_allclose(prof.grad, 1.0, rtol=1e-6)    # and the gradient (2 * 1/2 per layer)
    np.testing.assert_allclose(prof.c_slope_1, 1.0, rtol=1e-6)
    one = am.depth_profile(am.get("relu"), 1, weight_gain=2.0)
    np.testing.assert_allclose(one.c0, relu_corr(0.0), rtol=0.02)   # 1/pi, up to the kink's quadrature error
    self.assertIn("C(0)", am.depth_profile(am.get("relu"), 50).verdict)  # deep ReLU nets map inputs together

  def test_he_scaled_gelu_vanishes_and_tanh_at_gain_2_is_chaotic(self):
    gelu = am.depth_profile(am.get("gelu"), 50, weight_gain=2.0)
    self.assertLess(gelu.q[-1], 1e-3)                # GELU ~ y/2 near 0: gain 2 * 1/4 per layer
    self.assertIn("forward second moment", gelu.verdict)
    tanh = am.depth_profile(am.get("tanh"), 50, weight_gain=2.0)
    self.assertGreater(tanh.c_slope_1, 10)
    self.assertIn("chaotic", tanh.verdict)
    self.assertEqual(am.depth_profile(am.get("tanh"), 10, weight_gain=1.0, q0=0.01).verdict.split(";")[0][:6],
                     "stable")

  def test_identify_references_are_the_named_activations(self):
    # identify compares with float64 numpy references: each must be its jax form (float32: ~1e-7 relative) at
    # identify's own tolerance (rtol 1e-5, atol 1e-6), and no other reference may match it there (identify
    # names the first match); a wrong constant in a reference fails here
    got = jax.jit(lambda y: [f(y) for f in am.NAMED.values()])(np.asarray(am._IDENTIFY_GRID, np.float32))
    refs = am._named_values()
    for name, v in zip(am.NAMED, got):
      v = np.asarray(v, np.float64)
      np.testing.assert_allclose(v, refs[name], rtol=1e-5, atol=1e-6, err_msg=name)
      self.assertEqual([n for n, r in refs.items() if np.allclose(v, r, rtol=1e-5, atol=1e-6)], [name])

  def test_identify_and_bad_input(self):
    self.assertEqual(am.identify(lambda y: y * jax.nn.sigmoid(y)), "silu")
    self.assertEqual(am.identify(lambda y: jax.nn.gelu(y, approximate=False)), "gelu")
    self.assertIsNone(am.identify(lambda y: jnp.sin(y)))
    with self.assertRaisesRegex(ValueError, "unknown activation"):
      am.get("swoosh")
    with self.assertRaisesRegex(ValueError, "q must be"):
      am.maps(jnp.tanh, -1.0)
    with self.assertRaisesRegex(ValueError, "depth"):
      am.depth_profile(jnp.tanh, 0)


class BlockEvaluationTest(chex.TestCase):
  """`value_and_slope` evaluates phi in blocks of CHUNK points (one compiled program per primitive for every
  grid size): the values and slopes must be those of one evaluation of the whole grid, bit for bit (the stored
  inspect results depend on it), for an activation recovered from a jaxpr as inspect recovers it."""

  def test_blocks_give_the_whole_grid_bits(self):
    from jscale.calculus.elementwise import ELEMENTWISE, phi_of
    from jscale.calculus.tracing import flatten
    y = np.random.default_rng(0).normal(size=am.CHUNK + 37) * 2.0   # two blocks, the second padded
    for name in ("gelu_tanh", "silu"):
      f = am.get(name)
      g = flatten(lambda l, x: f(x), [], jnp.zeros((2, 3), jnp.float32))
      phi = phi_of(g, [i for i, e in enumerate(g.eqns) if e.name in ELEMENTWISE], g.x_id, g.out_atoms[0],
                   g.consts.get)
      for fn in (phi, f):
        v, d = am.value_and_slope(fn, y)
        y32 = jnp.asarray(y, jnp.float32)
        v_ref, d_ref = jax.jvp(fn, (y32,), (jnp.ones_like(y32),))
        np.testing.assert_array_equal(v, np.asarray(v_ref, np.float64), err_msg=name)
        np.testing.assert_array_equal(d, np.asarray(d_ref, np.float64), err_msg=name)
        np.testing.assert_array_equal(am.values(fn, y), np.asarray(v_ref, np.float64), err_msg=name)

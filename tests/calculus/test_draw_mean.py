"""The draw's own mean (#21, draw_mean.py): each value's batch mean carried with the leaves as drawn, and the
dense layers' shared correlations conditioned on it. References: the network itself evaluated on the batch
(tracing.evaluate) and the measured pair correlations (correlation.pair_corr / cross_position_corr)."""
from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

from jscale import calculus
from jscale.calculus import activation_maps as am
from jscale.calculus import draw_mean
from jscale.calculus.correlation import cross_position_corr, pair_corr, position_corr
from jscale.calculus.rules import Predictor
from jscale.calculus.signals import Backward, Forward
from jscale.calculus.tracing import classify, evaluate, flatten

import token_gelu_model  # tests/calculus: the model both draw tests trace

B, T, V, D, F = 64, 6, 8, 16, 32


def _setup(seed):
  k = jax.random.split(jax.random.PRNGKey(seed), 6)
  p = {"tokens": jax.random.normal(k[0], (V, D)), "positions": jax.random.normal(k[1], (T, D)),
       "w0": jax.random.normal(k[2], (D, F)) / np.sqrt(D), "w1": jax.random.normal(k[3], (F, D)) / np.sqrt(F),
       "head": jax.random.normal(k[4], (D, 3)) / np.sqrt(D)}
  x = jax.nn.one_hot(jax.random.randint(k[5], (B, T), 0, V), V)
  leaves, treedef = jax.tree_util.tree_flatten(p)
  fn = lambda ls, x_: token_gelu_model.apply(jax.tree_util.tree_unflatten(treedef, ls), x_)  # noqa: E731
  return fn, leaves, x


def _propagate(fn, leaves, x, *, with_mean: bool, x_mean=None):
  graph = flatten(fn, leaves, x)
  tags = classify(graph)
  xn = np.asarray(x, np.float64)
  x_sig = Forward(float(np.mean(xn * xn)), pair_corr(xn), False, None, position_corr(xn), None,
                  cross_position_corr(xn))
  pred = Predictor(graph, tags, const_vals={}, leaf_sq=[float(jnp.mean(l * l)) for l in leaves], x_sig=x_sig,
                   leaf_vals=[np.asarray(l) for l in leaves] if with_mean else None,
                   x_mean=(xn.mean(0) if x_mean is None else x_mean) if with_mean else None)
  out = next(a for a in graph.out_atoms if isinstance(a, int))
  prop = pred.run({out: Backward(1.0, 0.0)})
  return graph, pred, prop


class DrawMeanTest(chex.TestCase):

  def test_means_are_exact_through_linear_operations(self):
    # up to the GELU every operation is linear: the carried mean is the batch mean of the values (f32 rounding)
    fn, leaves, x = _setup(0)
    graph, pred, prop = _propagate(fn, leaves, x, with_mean=True)
    first = next(u.out_id for u in prop.uses if u.kind == "dense" and u.fan_out == F)
    _, vals = evaluate(graph, leaves, x, keep=[first])
    np.testing.assert_allclose(pred.mean[first], np.asarray(vals[first], np.float64).mean(0), rtol=1e-5,
                               atol=1e-5)

  def test_conditioned_correlations_match_the_measured_ones(self):
    self._check_conditioned(1)

  @pytest.mark.slow
  def test_conditioned_correlations_on_more_draws(self):
    for seed in (2, 3):
      self._check_conditioned(seed)

  def _check_conditioned(self, seed):
      # after the GELU the shared part is the GELU's mean through this draw's w1: the conditioned r and rc at
      # w1's output match the measured pair correlations (sampling error of the batch mean ~ 1/B = 0.016); the
      # expectation over weight draws misses them by more on these draws (the test fails without the mean)
      fn, leaves, x = _setup(seed)
      xm = draw_mean.input_mean(np.asarray(x, np.float64))
      graph, _, prop = _propagate(fn, leaves, x, with_mean=True, x_mean=xm)
      _, _, prop0 = _propagate(fn, leaves, x, with_mean=False)
      out = next(u.out_id for u in prop.uses if u.kind == "dense" and u.fan_in == F)
      _, vals = evaluate(graph, leaves, x, keep=[out])
      v = np.asarray(vals[out], np.float64)
      r_meas, rc_meas = pair_corr(v), cross_position_corr(v)
      err = abs(prop.fwd[out].r - r_meas) + abs(prop.fwd[out].rc - rc_meas)
      err0 = abs(prop0.fwd[out].r - r_meas) + abs(prop0.fwd[out].rc - rc_meas)
      self.assertLess(err, 0.05, f"seed {seed}: r {prop.fwd[out].r:.3f} vs {r_meas:.3f}, rc "
                      f"{prop.fwd[out].rc:.3f} vs {rc_meas:.3f}")
      self.assertLess(err, err0, f"seed {seed}: conditioned {err:.3f}, expectation {err0:.3f}")
      np.testing.assert_allclose(prop.fwd[out].sq, np.mean(v * v), rtol=0.1)

  def test_input_mean_leaves_out_each_example_with_itself(self):
    # E[xbar^2] = mu^2 + var / B: the unbiased square has mean mu^2 over batches (here mu = 0: 0 +- 1/B)
    rng = np.random.default_rng(0)
    sq = [np.mean(draw_mean.input_mean(rng.normal(size=(32, 50))) ** 2) for _ in range(20)]
    raw = [np.mean(rng.normal(size=(32, 50)).mean(0) ** 2) for _ in range(20)]
    self.assertLess(np.mean(sq), 0.3 / 32)      # clipped at 0 per entry: a small positive bias remains
    np.testing.assert_allclose(np.mean(raw), 1 / 32, rtol=0.15)  # the raw mean's 1/B, 10 s.e. from the above

  def test_position_split_keeps_the_tokens_common_mean(self):
    # i.i.d. uniform one-hot tokens (batch 128, 16 positions, vocabulary 32): the population mean 1/32 is common to
    # the positions and the noise is spread over them. One factor for the whole mean shrinks the common part by
    # B / (B + V - 1) = 0.80 in energy; POSITION_SPLIT shrinks it by its own noise only (the mean over positions
    # of 16 x 128 tokens: its energy 1.00 of 1/32^2 with s.d. 0.003 over batches, 6 batches here; 0.1 is half the
    # one factor's loss, so the check fails without the split), and the positions' departures, pure noise here, to
    # near nothing
    rng = np.random.default_rng(0)
    common, dev = {}, {}
    for split in (False, True):
      draw_mean.POSITION_SPLIT = split
      try:
        ms = [draw_mean.input_mean(np.eye(32)[rng.integers(0, 32, (128, 16))]) for _ in range(6)]
      finally:
        draw_mean.POSITION_SPLIT = False
      common[split] = np.mean([np.mean(m.mean(0) ** 2) * 32 ** 2 for m in ms])
      dev[split] = np.mean([np.mean((m - m.mean(0)) ** 2) / np.mean(m ** 2) for m in ms])
    np.testing.assert_allclose(common[True], 1.0, atol=0.1)
    np.testing.assert_allclose(common[False], 128 / 159, atol=0.05)
    self.assertLess(dev[True], 0.5 * dev[False])

  def test_example_spread_gives_each_unit_its_own_gelu_mean(self):
    # EXAMPLE_SPREAD: units at zero mean whose spreads s_j differ (0.5 ... 1.5, as a drawn kernel's columns do, more
    # widely); E[gelu(s z)] = s^2 / sqrt(2 pi (1 + s^2)) (exact GELU) per unit. From 2048 carried examples each
    # unit's variance is within ~3% (sqrt(2 / 2048)), so 0.1 relative is > 3 s.e.; one spread for all the units
    # (without the examples) is off by a factor ~3 at s = 0.5
    rng = np.random.default_rng(0)
    s = np.linspace(0.5, 1.5, 16)
    ex = rng.normal(size=(2048, 16)) * s
    ex -= ex.mean(0)
    sq = float(np.mean(s * s))
    phi = lambda y: 0.5 * y * (1 + special.erf(y / np.sqrt(2)))   # on the host: no compiled program
    exact = s * s / np.sqrt(2 * np.pi * (1 + s * s))
    own = draw_mean.activation_mean(phi, np.zeros(16), sq, ex=ex)
    one = draw_mean.activation_mean(phi, np.zeros(16), sq)
    np.testing.assert_allclose(own, exact, rtol=0.1)
    self.assertGreater(one[0] / exact[0], 2.0)
    # the rule's rest on top where the examples hold less than sq; scaled down where they hold more
    np.testing.assert_allclose(np.mean(draw_mean.example_spread(ex * 0.5, sq)), sq, rtol=1e-9)
    np.testing.assert_allclose(np.mean(draw_mean.example_spread(ex * 2.0, sq)), sq, rtol=1e-9)

  def test_cov_to_shared_moves_the_covariance_energy_out_of_the_examples_part(self):
    # attention_own.OUT_SPLIT = "cov": the W_o output conditioned on the mean with the weights-values covariance must
    # keep the per-example part the mean without it left (the Gaussian model's E[o^2] already holds the
    # covariance's energy there), so E[y^2], rp are the no-covariance ones, r and rc the new mean's; float64
    # arithmetic only (1e-12)
    rng = np.random.default_rng(0)
    o, oc = rng.standard_normal((6, 8)) * 0.5, rng.standard_normal((6, 8)) * 0.3
    sig = Forward(2.0, 0.2, False, None, 0.5, 0.0, 0.15)
    moved = draw_mean.cov_to_shared(sig, o, oc)
    self.assertEqual(moved.sq, sig.sq)
    self.assertGreater(moved.r, sig.r)
    before = draw_mean.condition(sig, o.reshape(-1), 8)
    after = draw_mean.condition(moved, (o + oc).reshape(-1), 8)
    twice = draw_mean.condition(sig, (o + oc).reshape(-1), 8)   # MEAN_COV alone: the energy counted twice
    np.testing.assert_allclose(after.sq, before.sq, rtol=1e-12)
    np.testing.assert_allclose(after.rp, before.rp, rtol=1e-12)
    np.testing.assert_allclose(after.sq * after.r, np.mean((o + oc) ** 2), rtol=1e-12)
    self.assertGreater(abs(twice.sq - before.sq), 0.05 * before.sq)
    self.assertIs(draw_mean.cov_to_shared(sig, o, None), sig)

  def test_examples_to_shared_keeps_the_own_models_spread_past_the_condition(self):
    # attention_own.OUT_SPLIT = "own": the attention output's per-example part is the own model's examples' spread
    # around their mean (examples_energy), E[o^2] kept; conditioning on the draw's mean m then gives |m|^2 + that
    # spread, whatever the Gaussian model's r was (float64 arithmetic, 1e-12)
    from jscale.calculus import attention_own
    rng = np.random.default_rng(1)
    P = rng.dirichlet(np.ones(5), size=(40, 2, 5))            # (n, heads, T, T)
    V = rng.standard_normal((40, 5, 2, 3)) + rng.standard_normal((1, 5, 2, 3))
    f = attention_own.Forward(None, None, None, V, P, None, 0.0)
    o = np.einsum("nhqk,nkhd->nqhd", P, V)
    e = attention_own.examples_energy(f)
    np.testing.assert_allclose(e, np.mean((o - o.mean(0)) ** 2), rtol=1e-12)
    sig = Forward(2.0 * float(np.mean(o * o)), 0.1, False, None, 0.4, 0.0, 0.05)
    moved = draw_mean.examples_to_shared(sig, e)
    self.assertEqual(moved.sq, sig.sq)
    m = o.mean(0).reshape(-1)
    np.testing.assert_allclose(draw_mean.condition(moved, m, 6).sq, float(np.mean(m * m)) + e, rtol=1e-12)
    self.assertGreater(draw_mean.condition(sig, m, 6).sq, 1.2 * (float(np.mean(m * m)) + e))   # without it


class OffsetMomentsTest(chex.TestCase):
  """An activation's moments at one draw's per-entry offsets (activation_maps.offset_moments, used by
  elementwise.activation_rule)."""

  def test_relu_offsets_match_the_closed_form(self):
    # y ~ N(m, s^2): E relu = m Phi + s phi, E relu^2 = (m^2 + s^2) Phi + m s phi, E relu'^2 = Phi (at m / s).
    # 32 nodes at a kink: quadrature error ~ 32^-1.5 of the scale, so 1% (exact would be 1e-12 for a smooth phi)
    m = np.linspace(-1.5, 2.0, 15)
    q = 2.5
    got = am.offset_moments(jax.nn.relu, m, q)
    s = np.sqrt(q - np.mean(m * m))
    a = m / s
    cdf = np.array([0.5 * (1 + math.erf(t / math.sqrt(2))) for t in a])
    pdf = np.exp(-a * a / 2) / math.sqrt(2 * math.pi)
    np.testing.assert_allclose(got.mean, m * cdf + s * pdf, atol=0.01 * s)
    np.testing.assert_allclose(got.fwd_sq, np.mean((m * m + s * s) * cdf + m * s * pdf), rtol=0.01)
    np.testing.assert_allclose(got.bwd_sq, np.mean(cdf), atol=0.01)
    self.assertEqual(a.shape, got.mean.shape)

  @pytest.mark.slow
  def test_gelu_mlp_draws_wander_less_at_their_offsets(self):
    # He-normal GELU MLP 64 -> 64 x 5, batch 512 of N(0, 1) inputs, 6 draws: at the 4th GELU the expectation
    # over weight draws misses each draw's E[phi^2] by 0.21 in log (r.m.s. over these draws), the rule at the
    # draw's carried offsets by 0.08 (what is left: each unit's own spread, the centred part's wander). The
    # batch's own sampling error of E[phi^2] is ~0.01 in log at B = 512.
    def net(p, x):
      for w in p[:-1]:
        x = jax.nn.gelu(x @ w)
      return x @ p[-1]
    errs, errs0 = [], []
    for seed in range(6):
      ks = jax.random.split(jax.random.PRNGKey(seed), 6)
      p = [jax.random.normal(k, (64, 64)) * np.sqrt(2 / 64) for k in ks[:5]]
      x = jax.random.normal(ks[5], (512, 64))
      res = calculus.inspect(net, p, x)
      last = res.activations[-1]
      errs.append(np.log(last.x_sq_pred / last.x_sq_meas))
      # the expectation over weight draws, the same chain: q -> 64 E[W^2] E[phi(sqrt(q) z)^2]
      sq = float(jnp.mean(x * x))
      for w in p[:-1]:
        sq = am.maps(jax.nn.gelu, 64 * float(jnp.mean(w * w)) * sq).fwd_sq
      errs0.append(np.log(sq / last.x_sq_meas))
    rms, rms0 = np.sqrt(np.mean(np.square(errs))), np.sqrt(np.mean(np.square(errs0)))
    self.assertLess(rms, 0.1, errs)
    self.assertLess(rms, 0.6 * rms0, (errs, errs0))

"""The calculus's prediction of diagonal-block average squared singular values, refereed by exact blocks."""
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jscale import mlp
from jscale.initializers import SCHEMES
from jscale.theory import hessian as hs
from jscale.theory import inputs, losses, predict

WIDTHS = (24, 40, 32, 48, 16)
BATCH = 64
DRAWS = 16


def _problem(key, widths, scheme, kind, batch):
  """One draw of (zero-bias params, inputs of law `kind`, quadratic-loss targets)."""
  kp, kx, kt = jax.random.split(key, 3)
  params = mlp.init_mlp(kp, widths, SCHEMES[scheme], "zeros", jnp.float32)
  x = inputs.sample_inputs(kx, kind, batch, widths[0], jnp.float32)
  return params, x, losses.random_targets(kt, "quadratic", batch, widths[-1], jnp.float32)


@functools.lru_cache(maxsize=None)
def _measured():
  """Exact (Kronecker-form) diagonals for 4 schemes x 2 input laws x DRAWS draws, quadratic loss, and the
  predictions. One compiled function: schemes differ only in the weights' scale, inputs in the law."""
  q = np.asarray(losses.random_quadratic(jax.random.PRNGKey(11), WIDTHS[-1]))
  fn = jax.jit(jax.vmap(lambda p, x, t: hs.diagonal_sq_sv("quadratic", p, x, t, q)))
  out = []
  for si, scheme in enumerate(SCHEMES):
    for ii, kind in enumerate(inputs.KINDS):
      keys = jax.random.split(jax.random.PRNGKey(100 * si + ii), DRAWS)
      ps, xs, ts = jax.vmap(lambda k: _problem(k, WIDTHS, scheme, kind, BATCH))(keys)
      d = fn(ps, xs, ts)
      ins = predict.input_stats(inputs.sample_inputs(jax.random.PRNGKey(5), kind, 4096, WIDTHS[0]))
      ls = predict.constant_loss_stats(q)
      wsq = predict.weight_second_moments(WIDTHS, SCHEMES[scheme])
      out.append(dict(
          exact1=np.mean(d.weight_batch1, 0), exactB=np.mean(d.weight, 0),
          pred1=predict.predict_sq_sv(WIDTHS, wsq, ins, ls, 1).weight,
          uncorrected=predict.predict_sq_sv(WIDTHS, wsq, ins, ls, BATCH, corrected=False).weight,
          corrected=predict.predict_sq_sv(WIDTHS, wsq, ins, ls, BATCH).weight,
          pair_cosine=predict.predict_sq_sv(WIDTHS, wsq, ins, ls, BATCH, pair_cosine=True).weight,
          exact_bias=np.mean(d.bias, 0), corrected_bias=predict.predict_sq_sv(WIDTHS, wsq, ins, ls, BATCH).bias))
  return out


class PredictTest(chex.TestCase):

  def test_single_layer_closed_form(self):
    """L = 1: s = (1/B^2) sum_bb' (x_b.x_b')^2 tr(Q^2) / (n_0 n_1) exactly; for x ~ N(0, I) its mean is
    [(n^2 + 2n)/B + (1 - 1/B) n] tr(Q^2) / (n_0 n_1). Monte Carlo over 4000 batches; tolerance 4 SE."""
    n0, n1, b, reps = 6, 3, 4, 4000
    q = losses.random_quadratic(jax.random.PRNGKey(0), n1)
    params = mlp.init_mlp(jax.random.PRNGKey(1), (n0, n1))
    xs = jax.random.normal(jax.random.PRNGKey(2), (reps, b, n0))
    s = jax.jit(jax.vmap(lambda x: hs.diagonal_sq_sv("quadratic", params, x, jnp.zeros((b, n1)), q).weight[0]))(xs)
    s = np.asarray(s, np.float64)
    trq2 = float(np.sum(np.asarray(q, np.float64) ** 2))
    want = ((n0 ** 2 + 2 * n0) / b + (1 - 1 / b) * n0) * trq2 / (n0 * n1)
    pred = predict.predict_sq_sv((n0, n1), [1.0], predict.gaussian_input_stats(n0), predict.constant_loss_stats(q), b)
    self.assertAlmostEqual(float(pred.weight[0]), want, delta=1e-9 * want)
    self.assertLess(abs(s.mean() - want), 4 * s.std() / np.sqrt(reps))

  def test_wide_limit_is_the_papers_nu_g_form(self):
    """At width 1e5 the O(n_L / n) terms vanish and the recursion must equal nu_l G_l tr(H^2)/(tr H)^2
    built from jscale.calculus.predict_dense (an independent code path); 1e-3 >> n_L / n = 4e-5."""
    widths = (50_000, 100_000, 70_000, 4)
    h = np.asarray(losses.random_quadratic(jax.random.PRNGKey(3), 4), np.float64)
    for scheme in SCHEMES.values():
      wsq = predict.weight_second_moments(widths, scheme)
      ins, ls = predict.gaussian_input_stats(widths[0]), predict.constant_loss_stats(h)
      full = predict.predict_sq_sv(widths, wsq, ins, ls, 1)
      lead = predict.predict_leading(widths, wsq, ins, ls, 1)
      np.testing.assert_allclose(full.weight, lead.weight, rtol=1e-3)
      np.testing.assert_allclose(full.bias, lead.bias, rtol=1e-3)

  @pytest.mark.slow   # 16 draws x 8 setups of exact blocks; the full order's tests cover predict_sq_sv
  def test_batch1_median_ratio_band(self):
    """Batch 1 (each example's own Hessian, 16 draws x 64 examples): median predicted / exact over the
    32 weight blocks of 8 setups within [0.8, 1.25]; measured median 1.0x (see the lead's note)."""
    r = np.concatenate([m["pred1"] / m["exact1"] for m in _measured()])
    self.assertBetween(float(np.median(r)), 0.8, 1.25)

  @pytest.mark.slow   # the same exact blocks as above
  def test_minibatch_correction_beats_batch1_model(self):
    """Batch 64: the batch-1 model s(1)/B misses the uncentred cross-example terms by ~1-2 decades;
    the corrected prediction's median |log10 ratio| must be below 0.15 (a factor 1.4) and at least
    0.7 decades (5x) better than the batch-1 model's."""
    ms = _measured()
    err = lambda key: np.median(np.abs(np.log10(np.concatenate([m[key] / m["exactB"] for m in ms]))))
    corrected, uncorrected = err("corrected"), err("uncorrected")
    self.assertLess(corrected, 0.15)
    self.assertGreater(uncorrected - corrected, 0.7)
    rb = np.concatenate([m["corrected_bias"] / m["exact_bias"] for m in ms])
    self.assertBetween(float(np.median(rb)), 0.7, 1.4)

  @pytest.mark.slow  # 7 s; the default suite was over 5 minutes
  def test_pair_cosine_median_ratio(self):
    """Averaging the cross term over the pair cosine's spread (quadratic loss, widths 16-48, batch 64):
    median predicted / exact over the 32 blocks within [0.94, 1.06]. Measured 0.996 with it, 0.930 without;
    each block's exact value has ~10-20% relative SE at 16 draws, the median of 32 about 4% (fixed keys)."""
    r = np.concatenate([m["pair_cosine"] / m["exactB"] for m in _measured()])
    self.assertBetween(float(np.median(r)), 0.94, 1.06)
    self.assertLess(np.median(np.abs(np.log10(r))), 0.15)

  def test_cosine_step_matches_monte_carlo(self):
    """`cosine_step`'s O(1/n) moments of one ReLU layer against 20000 Monte-Carlo layers of n units.
    Tolerances: mean 0.005 (its SE is 6e-4); variance and covariances 10% (MC relative SE ~1-2% plus the
    neglected O(1/n) relative terms, measured 3-6% at n = 32-64)."""
    rng = np.random.default_rng(0)
    for rho, n in ((0.6, 64), (0.3, 32)):
      u = rng.standard_normal((20000, n))
      v = rho * u + np.sqrt(1 - rho ** 2) * rng.standard_normal((20000, n))
      ru, rv = np.maximum(u, 0), np.maximum(v, 0)
      cos = (ru * rv).sum(1) / np.sqrt((ru ** 2).sum(1) * (rv ** 2).sum(1))
      both = ((u > 0) & (v > 0)).sum(1)
      dd = (u > 0).sum(1) * (v > 0).sum(1)
      p, mean, var, cov_e, cov_d = predict.cosine_step(rho, n)
      self.assertAlmostEqual(p, both.mean() / n, delta=0.005)
      self.assertAlmostEqual(mean, cos.mean(), delta=0.005)
      np.testing.assert_allclose([var, cov_e, cov_d], [cos.var(), np.cov(both, cos)[0, 1], np.cov(dd, cos)[0, 1]],
                                 rtol=0.1)

  def test_bad_input(self):
    ins, ls = predict.gaussian_input_stats(3), predict.constant_loss_stats(np.eye(2))
    with self.assertRaisesRegex(ValueError, "ReLU"):
      predict.predict_sq_sv((3, 4, 2), [1.0, 1.0], ins, ls, 1, activation="tanh")
    with self.assertRaisesRegex(ValueError, "weight_sq"):
      predict.predict_sq_sv((3, 4, 2), [1.0], ins, ls, 1)
    with self.assertRaisesRegex(ValueError, "batch_size"):
      predict.predict_sq_sv((3, 4, 2), [1.0, 1.0], ins, ls, 0)

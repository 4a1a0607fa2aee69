"""The report's statistics: the t interval against a printed table, intervals cut at a metric's range, the
single-run prediction interval's coverage, and verdicts against a source's number."""
import json
import math
import re

import numpy as np
from absl.testing import absltest, parameterized

from jscale.report import stats


class MeanCiTest(parameterized.TestCase):

  def test_against_t_table(self):
    # t_{0.975, 3} = 3.182446 from a printed t table; s = sqrt(5/3) for [1, 2, 3, 4].
    ci = stats.mean_ci95(np.array([[1.0, 10.0], [2.0, 10.0], [3.0, 10.0], [4.0, 10.0]]), axis=0)
    half = 3.182446 * math.sqrt(5.0 / 3.0) / 2.0
    np.testing.assert_allclose(ci.mean, [2.5, 10.0])
    np.testing.assert_allclose(ci.half, [half, 0.0], rtol=1e-6)
    np.testing.assert_allclose(ci.lo, [2.5 - half, 10.0], rtol=1e-6)
    self.assertEqual(ci.n, 4)

  def test_prediction_interval_against_t_table(self):
    # One new run: mean +- t_{0.975, 3} s sqrt(1 + 1/4); for the mean of 26 new runs: sqrt(1/4 + 1/26).
    s = math.sqrt(5.0 / 3.0)
    np.testing.assert_allclose(stats.prediction_interval([1.0, 2.0, 3.0, 4.0]),
                               [2.5 - 3.182446 * s * math.sqrt(1.25), 2.5 + 3.182446 * s * math.sqrt(1.25)],
                               rtol=1e-6)
    lo, hi = stats.prediction_interval([1.0, 2.0, 3.0, 4.0], n_future=26)
    np.testing.assert_allclose(hi - 2.5, 3.182446 * s * math.sqrt(0.25 + 1 / 26), rtol=1e-6)

  def test_one_sample_has_no_interval(self):
    ci = stats.mean_ci95([[0.3, 0.4]], axis=0)
    self.assertTrue(np.all(np.isnan(ci.half)))
    np.testing.assert_array_equal(ci.mean, [0.3, 0.4])
    self.assertTrue(np.all(np.isnan(stats.prediction_interval([0.3, np.nan]))))

  @parameterized.parameters(([0.99, 1.0],), ([1.0, 1.0, 0.2],), ([0.0, 0.01],), ([0.0, 1.0],))
  def test_bounded_intervals_stay_in_range(self, samples):
    # Adversarial: few seeds piled against a bound, where an additive t interval leaves [0, 1] (the issue's
    # 0.8574 [0.6221, 1.0927]).
    free = stats.mean_ci95(samples, 0)
    self.assertTrue(free.lo < 0 or free.hi > 1)        # without bounds the interval does leave the range
    ci = stats.mean_ci95(samples, 0, stats.UNIT)
    pi = stats.prediction_interval(samples, stats.UNIT)
    fin = stats.finite_mean_ci95(np.array(samples + [np.nan])[:, None], 0, stats.UNIT)
    for lo, hi in ((ci.lo, ci.hi), pi, (fin.lo[0], fin.hi[0])):
      self.assertTrue(0.0 <= lo <= hi <= 1.0, (samples, lo, hi))
    self.assertTrue(ci.lo <= ci.mean <= ci.hi)
    lo, hi = map(float, re.findall(r"\[([0-9.]+), ([0-9.]+)\]", stats.ci_text(samples, bounds=stats.UNIT))[0])
    self.assertTrue(0.0 <= lo and hi <= 1.0)
    with self.assertRaisesRegex(ValueError, "bounds"):
      stats.mean_ci95(samples, 0, (1.0, 0.0))

  @parameterized.parameters(3, 8, 32)
  def test_prediction_interval_covers_95_percent_of_new_runs(self, n):
    # 2000 simulated experiments: n runs give the interval, one more run is the "source". Under normal
    # outcomes the coverage is exactly 95%; its Monte-Carlo SE is sqrt(0.95 * 0.05 / 2000) = 0.0049, so
    # +-3 SE = +-0.0146. The mean's CI, used by the old verdicts, covers a new run far less often
    # (P(|T_{n-1}| < t_{0.975, n-1} / sqrt(n + 1)): 0.84 at n = 3, 0.54 at 8, 0.28 at 32), which is what
    # made more seeds mean "does not reproduce".
    rng = np.random.default_rng(n)
    trials, se = 2000, math.sqrt(0.95 * 0.05 / 2000)
    x = rng.normal(0.9, 0.02, (trials, n))
    new = rng.normal(0.9, 0.02, trials)
    pis = np.array([stats.prediction_interval(row) for row in x])
    cover = np.mean((pis[:, 0] <= new) & (new <= pis[:, 1]))
    self.assertAlmostEqual(cover, 0.95, delta=3 * se)
    ci = stats.mean_ci95(x, 1)
    cover_ci = np.mean((ci.lo <= new) & (new <= ci.hi))
    self.assertLess(cover_ci, 0.95 - 3 * se)

  def test_finite_mean_over_seeds_that_did_not_diverge(self):
    v = np.array([[1.0, 2.0, 3.0], [3.0, np.nan, np.nan], [5.0, 6.0, np.nan]])   # (seeds, epochs)
    ci = stats.finite_mean_ci95(v, 0)
    np.testing.assert_array_equal(ci.n, [3, 2, 1])
    np.testing.assert_allclose(ci.mean, [3.0, 4.0, 3.0])
    np.testing.assert_allclose(ci.half[:2], [stats.mean_ci95([1.0, 3.0, 5.0]).half,
                                             stats.mean_ci95([2.0, 6.0]).half])
    self.assertTrue(np.isnan(ci.half[2]))   # one finite seed: no interval


class VerdictTest(absltest.TestCase):

  def test_single_run_inside_the_spread_reproduces_though_outside_the_mean_ci(self):
    # 16 seeds around 0.93 with s ~ 0.01: the mean's CI (+-0.005) excludes 0.945, one run's interval
    # (+-0.022) holds it. The old verdict said "does not reproduce" here.
    acc = 0.93 + 0.01 * np.random.default_rng(0).standard_normal(16)
    v = stats.judge(acc, 0.945, cell={"sigma": 0.1, "batch_size": None}, metric="test_acc", bounds=stats.UNIT)
    self.assertEqual(v.verdict, "reproduces")
    self.assertFalse(v.ci95[0] <= 0.945 <= v.ci95[1])
    self.assertEqual(stats.judge(acc, 0.99, cell={}, metric="m").verdict, "does not reproduce")
    txt = stats.verdict_text(stats.judge(acc, 0.99, cell={}, metric="m"), what="x")
    self.assertIn("does not reproduce", txt)
    self.assertIn("above", txt)

  def test_transfer_kind_words_the_same_test_holds_or_not(self):
    acc = 0.93 + 0.01 * np.random.default_rng(0).standard_normal(16)
    rep = stats.judge(acc, 0.99, cell={}, metric="m")
    tr = stats.judge(acc, 0.99, cell={}, metric="m", kind=stats.TRANSFER)
    self.assertEqual((rep.kind, tr.kind), (stats.REPRODUCTION, stats.TRANSFER))
    self.assertEqual(tr.verdict, "does not hold")
    self.assertEqual(tr.single_run_95, rep.single_run_95)           # the same test, other words
    self.assertEqual(stats.judge(acc, 0.945, cell={}, metric="m", kind=stats.TRANSFER).verdict, "holds")
    self.assertEqual(tr.to_json()["kind"], "transfer")
    self.assertIn("**does not hold**", stats.verdict_text(tr, what="x"))
    with self.assertRaisesRegex(ValueError, "kind must be"):
      stats.judge(acc, 0.9, cell={}, metric="m", kind="other")

  def test_too_few_seeds_and_diverged_runs(self):
    acc = [0.9, 0.91, 0.92, 0.93, 0.94, 0.95, 0.96, np.nan, np.nan]   # 7 finite: below 8
    v = stats.judge(acc, 0.5, cell={"sigma": 1.0}, metric="test_acc")
    self.assertEqual((v.verdict, v.n_seeds, v.n_diverged), ("too few seeds", 7, 2))
    self.assertIn("too few seeds", stats.verdict_text(v, what="x"))
    self.assertIn("2 diverged", stats.verdict_text(v, what="x"))
    self.assertEqual(stats.judge(acc[:7] + [0.97], 0.5, cell={}, metric="m").verdict, "does not reproduce")

  def test_json_record(self):
    v = stats.judge([0.5] * 8 + [0.6], 0.55, cell={"sigma": 0.1, "batch_size": None}, metric="test_acc",
                    bounds=stats.UNIT)
    j = json.loads(json.dumps(v.to_json()))
    self.assertEqual(set(j), {"cell", "metric", "source", "n_seeds", "mean", "ci95", "single_run_95", "verdict",
                             "kind"})
    self.assertEqual(j["cell"], {"sigma": 0.1, "batch_size": None})
    self.assertEqual((j["n_seeds"], j["verdict"]), (9, "reproduces"))
    self.assertLen(j["ci95"], 2)
    self.assertLessEqual(j["single_run_95"][0], 0.5)


if __name__ == "__main__":
  absltest.main()

"""The hessian experiment's protocol pieces: the pair estimate against whole minibatches, the noise-removed
summary, the settings' checks, the guards of the Figure 2 entry points, and one scheme table."""
import chex
import jax
import numpy as np

from jscale import initializers
from jscale.experiments.hessian import heatmaps, lenet_family, mlp_family, rounds, summary
from jscale.experiments.hessian.large_diagonal import large_diagonal
from jscale.experiments.hessian.settings import Figure1Settings, HessianSettings
from jscale.models import lenet


class PairEstimateTest(chex.TestCase):

  def test_pair_estimate_agrees_with_whole_minibatches(self):
    """measure_setup (pairs of 4 examples, control variates) and exact_diagonal (whole minibatches of 12)
    estimate the same expectation: per block within 4 combined SE."""
    s = mlp_family.MLPSetup((6, 10, 8, 5), "xavier", "xent", "normal", 5)
    r1, rb = rounds.measure_setup(mlp_family.MLPFamily(), s, Figure1Settings(1, 12, 512, examples=4),
                                  key=jax.random.PRNGKey(0))
    d, _, _ = mlp_family.exact_diagonal(s, 12, 512, jax.random.PRNGKey(1))
    for rec, direct in ((rb, np.asarray(d.weight)), (r1, np.asarray(d.weight_batch1))):
      se = np.sqrt(rec.exact_w_se ** 2 + direct.var(0, ddof=1) / direct.shape[0])
      self.assertTrue(np.all(np.abs(rec.exact_w - direct.mean(0)) < 4 * se), (rec.exact_w, direct.mean(0), se))
      self.assertTrue(np.all(rec.rel_se < 0.3))  # informative: the band rules out a 2x error


class HostProblemTest(chex.TestCase):

  def test_host_draws_are_problems_draws_bit_for_bit(self):
    """Figure 2 draws on the host from flat draws (`host_problem`): the same float32 numbers as `problem`'s
    per-shape draws, so the heat maps are unchanged; both losses, both input laws, two schemes, two batches."""
    for loss, kind, scheme in (("quadratic", "normal", "fan_in"), ("xent", "uniform01", "geometric")):
      s = mlp_family.MLPSetup((6, 40, 3), scheme, loss, kind, 0)
      for batch in (1, 33):
        want = mlp_family.problem(jax.random.PRNGKey(7), s, batch)
        got = mlp_family.host_problem(jax.random.PRNGKey(7), s, batch)
        chex.assert_trees_all_equal(jax.tree.map(np.asarray, got), jax.tree.map(np.asarray, want))


class NoiseRemovedTest(chex.TestCase):

  def test_recovers_the_true_spread(self):
    """True log ratios N(0, 0.2^2) observed with noise of SE 0.3 (heteroscedastic 0.15-0.45): the
    noise-removed sd within 0.03 of 0.2 and p95 within 8% of exp(1.645 x 0.2) at n = 20000 (the moment
    estimator's SE of tau^2 is ~0.003 here); the raw spread is far wider."""
    rng = np.random.default_rng(0)
    n = 20000
    theta = rng.normal(0.0, 0.2, n)
    se = rng.uniform(0.15, 0.45, n)
    out = summary.noise_removed(theta + rng.normal(size=n) * se, se)
    self.assertAlmostEqual(out["sd_log_nr"], 0.2, delta=0.03)
    self.assertGreater(out["sd_log"], 0.33)
    np.testing.assert_allclose(out["p95_nr"], np.exp(1.645 * 0.2), rtol=0.08)
    np.testing.assert_allclose(out["p5_nr"], np.exp(-1.645 * 0.2), rtol=0.08)
    np.testing.assert_allclose(out["median_nr"], 1.0, atol=0.02)


class SettingsTest(chex.TestCase):

  def test_settings_are_checked_when_made(self):
    for bad, needle in (({"batch": 1}, "batch"), ({"draws": 2}, "draws"), ({"examples": 1}, "examples"),
                        ({"target_rel_se": 1.0}, "target_rel_se"), ({"max_draws": 4}, "max_draws"),
                        ({"setups": True}, "setups")):
      with self.assertRaisesRegex(ValueError, needle):
        Figure1Settings(**{**dict(setups=1, batch=4, draws=8), **bad})
    self.assertEqual(Figure1Settings(1, 4, 8).draw_cap, 128)
    self.assertEqual(Figure1Settings(1, 4, 8, max_draws=12).draw_cap, 12)

  def test_grid_keywords_are_read_into_typed_settings(self):
    grid = {"setups": 2, "batch": 16, "draws": 8, "seed": 3, "fig2_draws": 0, "fig2_minibatch": 32,
            "lenet_setups": 1, "lenet_draws": 4, "lenet_channels": [2, 4], "lenet_hidden": (4, 16)}
    s = HessianSettings.from_grid(grid)
    self.assertEqual((s.mlp.figure1.setups, s.mlp.figure1.batch, s.mlp.figure1.target_rel_se), (2, 16, 0.05))
    self.assertEqual((s.lenet.figure1.batch, s.lenet.figure1.seed, s.lenet.figure1.examples), (16, 3, 4))
    self.assertEqual((s.lenet.family.channels, s.lenet.family.hidden), ((2, 4), (4, 16)))
    self.assertEqual(s.lenet.figure2.evenness_draws, 256)
    with self.assertRaisesRegex(ValueError, "lenet_setup"):
      HessianSettings.from_grid({**grid, "lenet_setup": 1})
    with self.assertRaisesRegex(ValueError, "fig2_draws"):
      HessianSettings.from_grid({k: v for k, v in grid.items() if k != "fig2_draws"})


class GuardTest(chex.TestCase):
  """Figure 2's entry points refuse before compute, naming the estimate."""

  def test_guards(self):
    with self.assertRaisesRegex(ValueError, r"exact Hessian .*needs about .*GiB"):
      heatmaps.heatmaps(mlp_family.MLPFamily(), (3000, 2000, 10), draws=1)
    # the default LeNet's P x P Hessian (19k parameters) is refused before any compute
    with self.assertRaisesRegex(ValueError, r"exact Hessian of the LeNet .*needs about .*GiB"):
      heatmaps.heatmaps(lenet_family.LeNetFamily(), lenet.LeNetConfig(), draws=1)
    with self.assertRaisesRegex(ValueError, "unknown scheme"):
      heatmaps.heatmaps(lenet_family.LeNetFamily(), schemes=("xavier", "lecun"), draws=1)
    with self.assertRaisesRegex(ValueError, r"Hutchinson .*needs about .*GiB"):
      large_diagonal(batch=4096, num_probes=4096)
    with self.assertRaisesRegex(ValueError, r"exact_diagonal: one draw .*GiB"):
      mlp_family.exact_diagonal(mlp_family.MLPSetup((8, 128, 8), "xavier", "xent", "normal", 0), 100000, 2,
                                jax.random.PRNGKey(0))


class LayoutTest(chex.TestCase):

  def test_one_scheme_table(self):
    self.assertIs(mlp_family.SCHEMES, initializers.SCHEMES)
    self.assertIs(lenet_family.SCHEMES, initializers.SCHEMES)
    self.assertIs(heatmaps.SCHEMES, initializers.SCHEMES)

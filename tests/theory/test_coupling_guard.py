"""The direction couplings' guard (`gains.guarded`) and the grown loss sample (`gains.grown_coupling`), on
synthetic loss samples (numpy only: no program compiles)."""
import numpy as np

from jscale.theory import gains

OUT, LAYERS = 5, 3


def _synthetic(draws, examples=4, seed=0):
  """A loss sample in `gains.lenet_direction_coupling`'s layout: softmax probabilities of heavy-tailed logits,
  kernel Jacobians J (R, E, L, O, P) with M = J J^T, C = J_a J_b^T, gains g = |x|^2, k = |J|^2 / (g O)."""
  rng = np.random.default_rng(seed)
  z = rng.standard_normal((draws, examples, OUT)) * rng.lognormal(0.0, 0.3, (draws, 1, 1))
  p = np.exp(z - z.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  j = rng.standard_normal((draws, examples, LAYERS, OUT, 6)) * rng.lognormal(0.0, 0.3, (draws, examples, 1, 1, 1))
  m = np.einsum("relop,relqp->reloq", j, j)
  c = np.einsum("relop,relqp->reloq", j[:, 0::2], j[:, 1::2])
  g = rng.lognormal(0.0, 0.3, (draws, examples, LAYERS))
  k = np.einsum("reloo->rel", m) / (g * OUT)
  dots = rng.standard_normal((draws, examples // 2, LAYERS)) * np.sqrt(g[:, 0::2] * g[:, 1::2]) * 0.5
  return p, g, k, m, c, dots


def test_tiny_sample_falls_back_to_one_with_reason():
  # 16 draws x 4 examples (the sample that once read a factor of 11): the unguarded factors differ from 1, so a
  # guard that let them through would fail here; guarded, every factor below the last layer is 1 and says why.
  cp = gains.lenet_direction_coupling(*_synthetic(16))
  assert cp.draws == 16
  assert np.any(np.abs(cp.same[:-1] - 1) > 1e-3) and np.any(np.abs(cp.two[:-1] - 1) > 1e-3), cp
  g = gains.guarded(cp)
  np.testing.assert_array_equal(g.same, 1.0)
  np.testing.assert_array_equal(g.two, 1.0)
  assert len(g.notes) == 2 * (LAYERS - 1), g.notes  # the last layer's factors were 1 already
  assert all(f"16 draws < {gains.MIN_COUPLING_DRAWS}" in n for n in g.notes), g.notes
  np.testing.assert_array_equal(g.same_se, cp.same_se)  # the SEs stay as measured


def test_guard_drops_only_factors_beyond_their_se_limit():
  # Enough draws: only the factor whose log-SE exceeds the limit is set to 1; the others, and the bias factors
  # with their own SEs, are applied as measured.
  one = np.ones(3)
  cp = gains.Coupling(np.array([0.7, 2.5, 1.0]), np.array([0.8, 0.9, 1.0]), np.array([0.05, 0.4, 0.0]),
                      np.array([0.05, 0.1, 0.0]), np.array([0.9, 1.3, 1.0]), one,
                      bias_same_se=np.array([0.02, 0.3, 0.0]), bias_two_se=np.zeros(3), draws=128)
  g = gains.guarded(cp)
  np.testing.assert_array_equal(g.same, [0.7, 1.0, 1.0])
  np.testing.assert_array_equal(g.two, cp.two)
  np.testing.assert_array_equal(g.bias_same, [0.9, 1.0, 1.0])
  assert len(g.notes) == 2 and "layer 1 same: factor 2.5 (log-SE 0.40)" in g.notes[0], g.notes
  # With the LeNet's unmeasured bias factors (no SEs) the guard leaves them alone.
  g = gains.guarded(cp._replace(bias_same_se=None, bias_two_se=None))
  np.testing.assert_array_equal(g.bias_same, cp.bias_same)


def test_grown_coupling_doubles_until_the_target():
  # Rounds of 64 synthetic draws (round i from seed i); the sample doubles (1, 2, 4, 8 rounds) and stops at the
  # first size whose every log-SE is within the target, or at max_rounds.
  calls = []

  def draw(i):
    calls.append(i)
    return _synthetic(64, seed=i)

  _, cp1 = gains.grown_coupling(draw, gains.lenet_direction_coupling, np.inf, 8)
  assert calls == [0] and cp1.draws == 64
  calls.clear()
  _, cp8 = gains.grown_coupling(draw, gains.lenet_direction_coupling, 0.0, 8)
  assert calls == list(range(8)) and cp8.draws == 512
  assert cp8.max_se() < cp1.max_se()  # 8x the draws: the SE falls (~1/sqrt(8) here)
  target = 0.5 * (cp1.max_se() + cp8.max_se())
  calls.clear()
  sample, cp = gains.grown_coupling(draw, gains.lenet_direction_coupling, target, 8)
  n = len(calls)
  assert calls == list(range(n)) and n in (2, 4, 8) and cp.draws == 64 * n == sample[0].shape[0]
  assert cp.max_se() <= target
  half = gains.lenet_direction_coupling(*(np.concatenate(a) for a in zip(*[_synthetic(64, seed=i)
                                                                           for i in range(n // 2)])))
  assert half.max_se() > target  # it did not stop later than needed

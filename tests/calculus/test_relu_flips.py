"""The ReLU flip correction's closed-form moments (calculus/relu_flips.py) against a Monte Carlo of the same law:
y ~ N(0, v), d = kappa y + delta s + e (s = +-1, e ~ N(0, s2)). 2^20 samples, fixed seed; tolerance 5 standard errors of
each mean (estimated from the same samples), so a wrong term (or leaving the flips out: every E[c] is > 0 by
many SE here) fails."""
import numpy as np
import pytest

from jscale.calculus import relu_flips

N = 2 ** 20
# (v, delta, s2, kappa): the MLP's last hidden layer under equal-G Adam at width 32 (v 2.6, the bias step 0.38, the
# kernels' part 0.2, a shrink along the unit's own pre-activation); a bias step alone; a Gaussian step alone; a
# step as large as the pre-activation, growing along it
CASES = [(2.6, 0.38, 0.2, -0.1), (1.0, 0.5, 0.0, 0.0), (1.0, 0.0, 0.3, 0.0), (0.5, 1.0, 0.5, 0.3)]


@pytest.mark.parametrize("v,delta,s2,kappa", CASES)
def test_flip_moments_match_monte_carlo(v, delta, s2, kappa):
  rng = np.random.default_rng(7)
  y = rng.normal(0, np.sqrt(v), N)
  d = kappa * y + delta * rng.choice([-1.0, 1.0], N) + rng.normal(0, np.sqrt(s2), N)
  m = (y > 0).astype(float)
  c = np.maximum(y + d, 0) - np.maximum(y, 0) - m * d
  got = relu_flips.moments(v, delta, s2, kappa)
  for name, sample in (("c", c), ("c2", c * c), ("mdc", m * d * c), ("hc", np.maximum(y, 0) * c)):
    se = sample.std() / np.sqrt(N)
    assert abs(sample.mean() - float(getattr(got, name))) < 5 * se, (name, sample.mean(), getattr(got, name), se)
  assert c.mean() > 20 * c.std() / np.sqrt(N)   # the flips are there: leaving them out (0) fails
  # the unit's own E[h^2] after the step: switched-on and switched-off units cancel (module doc)
  net = np.maximum(y + d, 0) ** 2 - (np.maximum(y, 0) + m * d) ** 2
  assert abs(float(2 * (got.hc + got.mdc) + got.c2)) < 1e-9
  assert abs(net.mean()) < 5 * net.std() / np.sqrt(N)


def test_flip_moments_small_step_limit():
  # d -> 0: E[c] ~ d^2 phi(0) / 2 sqrt(v) (the second-order term), to the next order's relative d / sqrt(v)
  v, dl = 2.0, 1e-3
  got = float(relu_flips.moments(v, dl).c)
  want = dl ** 2 / np.sqrt(2 * np.pi) / (2 * np.sqrt(v))
  assert abs(got / want - 1) < 1e-2

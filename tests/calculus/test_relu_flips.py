"""The ReLU flip correction's closed-form moments (calculus/relu_flips.py) against a Monte Carlo of the same law:
y ~ N(0, v), d = kappa y + delta s + e (s = +-1, e ~ N(0, s2)). 2^20 samples, fixed seed; tolerance 5 standard errors of
each mean (estimated from the same samples), so a wrong term (or leaving the flips out: every E[c] is > 0 by
many SE here) fails."""
import numpy as np
import pytest
from scipy.special import ndtr

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


# The bias's sign step given the unit's state: the MLP's last hidden layer at width 32 under equal-G Adam (dev
# draws' v, rho, k_A, E[W^2], |gbar|^2, E|gamma - gbar|^2; docs/calculus.md, *The sign step given the unit's state*)
LAW = dict(k_a=0.0737, w2=0.0628, p=10, g_mean2=0.079, g_var=0.988, batch=128)
V, RHO, DELTA, S2, KAPPA = 2.59, 0.252, 0.383, 0.40, -0.115
M = 2 ** 18   # 5 SE of each mean, the SE from the same samples (1 / sqrt(M))


def _sample_state(rng, law=True):
  mu = rng.normal(0, np.sqrt(RHO * V), M)
  y = mu + rng.normal(0, np.sqrt((1 - RHO) * V), M)
  if not law:
    return mu, y, rng.choice([-1.0, 1.0], M)
  # the law's own generative model: s = -sign(k_A |W|^2 hbar(mu) + r), r Gaussian (relu_flips's comment)
  se = np.sqrt((1 - RHO) * V)
  q = ndtr(mu / se)
  hbar = mu * q + se * np.exp(-0.5 * (mu / se) ** 2) / np.sqrt(2 * np.pi)
  w2 = LAW["w2"] * rng.chisquare(LAW["p"], M)
  r = rng.normal(0, 1, M) * np.sqrt(w2 / LAW["p"] * (q * q * LAW["g_mean2"] + q * LAW["g_var"] / LAW["batch"]))
  return mu, y, -np.sign(LAW["k_a"] * w2 * hbar + r)


def test_sign_given_state_matches_its_monte_carlo():
  mu, _, s = _sample_state(np.random.default_rng(11))
  es, esm = relu_flips.sign_moments(V, RHO, **LAW)
  for got, sample in ((es, s), (esm, s * np.sign(mu))):
    assert abs(sample.mean() - got) < 5 * sample.std() / np.sqrt(M), (sample.mean(), got)
  assert esm < -20 * (s * np.sign(mu)).std() / np.sqrt(M)   # the state dependence is there (0 without it)


def test_unit_net_with_state_dependent_sign_matches_monte_carlo():
  rng = np.random.default_rng(12)
  law = lambda m: relu_flips.sign_given_mean(m, V, RHO, **LAW)
  got = relu_flips.state_net(V, RHO, DELTA, law, S2, KAPPA)
  for dependent in (True, False):
    mu, y, s = _sample_state(rng, dependent)
    d = KAPPA * y + DELTA * s + rng.normal(0, np.sqrt(S2), M)
    net = (y + d) ** 2 * ((y + d > 0).astype(float) - (y > 0))
    se = net.std() / np.sqrt(M)
    if dependent:
      assert abs(net.mean() - got) < 5 * se, (net.mean(), got, se)
      assert got < -10 * se   # the state-dependent sign makes the unit's own term negative: 0 would fail
    else:   # s independent of y: the term cancels (and state_net says so)
      assert abs(net.mean()) < 5 * se and abs(relu_flips.state_net(V, RHO, DELTA, None, S2, KAPPA)) < 1e-12


def test_shift_net_matches_monte_carlo():
  # y ~ N(0, v), d = mu + kappa y + e: the unit's own flip term for a mean shift common to the units, against 2^20
  # samples, 5 SE; negative by more than 10 SE for a shift down (0 without the shift, also asserted)
  rng = np.random.default_rng(13)
  n = 2 ** 20
  for v, mu, kappa, s2 in ((1.0, -0.17, -0.13, 0.18), (0.5, -0.05, 0.1, 0.3), (2.0, 0.0, -0.2, 0.2)):
    y = rng.normal(0, np.sqrt(v), n)
    d = mu + kappa * y + rng.normal(0, np.sqrt(s2), n)
    net = (y + d) ** 2 * ((y + d > 0).astype(float) - (y > 0))
    se = net.std() / np.sqrt(n)
    got = float(relu_flips.shift_net(v, mu, kappa, s2))
    assert abs(net.mean() - got) < 5 * se, (net.mean(), got, se)
    assert (got < -10 * se) if mu < 0 else abs(got) < 1e-12
  assert relu_flips.shift_net(0.0, -0.1, 0.0, 0.1) == 0.0   # a token with no pre-activation (a blank patch)


@pytest.mark.parametrize("v, mu, s2, kappa", [(1.0, -0.3, 0.2, 0.0), (2.0, -0.1, 0.05, -0.2), (0.5, 0.2, 0.1, 0.3)])
def test_shift_regression_matches_monte_carlo(v, mu, s2, kappa):
  # y ~ N(0, v), d = mu + kappa y + e: the moments behind the flip rest's regression on (h, dh) and the regression
  # (a, b) itself against 2^18 samples (docs/calculus.md, *The flips' rest as a rescale of h and dh*). Tolerance
  # 5 SE of the sample mean (the moments) and, for (a, b), 5 SE propagated through the 2 x 2 solve by the
  # delta method on the per-sample residuals (a regression's SE: sqrt(E[e^2 x^2]) / (sqrt(n) E[x^2])-type).
  n = 2 ** 18
  rng = np.random.default_rng(11)
  y = rng.standard_normal(n) * np.sqrt(v)
  d = mu + kappa * y + rng.standard_normal(n) * np.sqrt(s2)
  h, dh = np.maximum(y, 0), (y > 0) * d
  c = np.maximum(y + d, 0) - h - dh
  got = relu_flips.shift_regression(v, mu, kappa, s2)
  for g, s in zip(got, (h * c, dh * c, h * h, h * dh, dh * dh, c * c)):
    assert abs(float(g) - s.mean()) < 5 * s.std() / np.sqrt(n) + 1e-12
  X = np.stack([h, dh], 1)
  G = X.T @ X / n
  ab = np.linalg.solve(G, X.T @ c / n)
  e = c - X @ ab
  cov = np.linalg.inv(G) @ ((X * e[:, None]).T @ (X * e[:, None]) / n) @ np.linalg.inv(G) / n
  hc, dc, hh, hd, dd, _ = (float(q) for q in got)
  pred = np.linalg.solve([[hh, hd], [hd, dd]], [hc, dc])
  assert np.all(np.abs(pred - ab) < 5 * np.sqrt(np.diag(cov)))
  # the shift's sign matters: with mu > 0 only switched-on units flip, orthogonal to h and dh
  if mu > 0 and kappa >= 0:
    assert abs(float(got[0])) < 0.1 * float(got[5])


def test_half_net_is_its_laws_flip_term_and_shift_net_with_one_law():
  # relu_flips.half_net against 2^20 samples of its law (a different (mu, kappa, s2) on each side of zero), 5 SE;
  # with the same law on both sides it is shift_net's closed form (1e-9: both exact over e, the quadratures differ).
  rng = np.random.default_rng(0)
  v, on, off = 1.3, (-0.4, -0.3, 2.0), (0.1, 0.2, 0.5)
  y = rng.standard_normal(2 ** 20) * np.sqrt(v)
  side = np.where(y > 0, 0, 1)
  mu, kappa, s2 = (np.array([a, b])[side] for a, b in zip(on, off))
  u = y + mu + kappa * y + np.sqrt(s2) * rng.standard_normal(y.size)
  f = u ** 2 * ((u > 0).astype(float) - (y > 0))
  assert abs(f.mean() - relu_flips.half_net(v, on, off)) < 5 * f.std() / np.sqrt(y.size)
  np.testing.assert_allclose(relu_flips.half_net(v, on, on), relu_flips.shift_net(v, *on), rtol=1e-9)
  assert relu_flips.half_net(0.0, on, off) == 0.0

"""The tokens' own covariance (token_carry.py) and the attention model that draws from it."""
from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jscale.calculus import token_carry
from jscale.calculus.attention import GaussianAttention
from jscale.calculus.correlation import position_corr
from jscale.models.transformer import layer_norm


def aligned_tokens_reference(key, n, T, d_in, d_qk, L, rp, lsq, rp_g, fixed=None, pf_q=False):
  """Per-draw dQ's E[dQ^2] and the keys' position factor (the queries' with pf_q) by jax autodiff, written apart
  from the engine: x_t = LayerNorm(c + sqrt(rp - mean(c^2)) s + z_t L) with s ~ N(0, I) shared by the tokens, c
  a fixed vector (every draw's; 0 without `fixed`), z_t ~ N(0, I_r) each token's own, W's drawn per draw, the
  output's gradient shared with correlation rp_g."""
  ks = jax.random.split(key, 7)
  own = jnp.einsum("ntr,rd->ntd", jax.random.normal(ks[0], (n, T, L.shape[0])), L)
  c = np.zeros(d_in) if fixed is None else np.asarray(fixed)
  x = c + math.sqrt(rp - float(np.mean(c * c))) * jax.random.normal(ks[1], (n, 1, d_in)) + own
  x = layer_norm({"scale": jnp.ones(d_in), "bias": jnp.zeros(d_in)}, x)
  Q, K, V = (jnp.einsum("nti,nid->ntd", x, jax.random.normal(k, (n, d_in, d_qk)) / math.sqrt(d_in))
             for k in ks[2:5])
  G = math.sqrt(rp_g) * jax.random.normal(ks[5], (n, 1, d_qk)) + math.sqrt(1 - rp_g) * jax.random.normal(
      ks[6], (n, T, d_qk))

  def attend(q, k):
    return jnp.einsum("nqk,nkd->nqd", jax.nn.softmax(math.sqrt(lsq) * jnp.einsum("nqd,nkd->nqk", q, k), -1), V)

  _, vjp = jax.vjp(attend, Q, K)
  dQ, dK = vjp(G)
  x, Q, V, dQ, dK = (np.asarray(a, np.float64) for a in (x, Q, V, dQ, dK))
  d = dQ if pf_q else dK
  xx, dd = np.einsum("nta,nsa->nts", x, x), np.einsum("ntc,nsc->nts", d, d)
  pf_k = np.sum(xx * dd, (1, 2)) / (T * np.mean(np.sum(x * x, -1)) * np.mean(np.sum(d * d, -1)))
  return np.mean(dQ * dQ, (1, 2)), pf_k, position_corr(Q), position_corr(V)


class AlignedTokensTest(chex.TestCase):

  def test_model_with_the_tokens_covariance_matches_aligned_tokens(self):
    # each token's own part in 12 of 48 directions (the embeddings' span), LayerNorm-ed, a large shared part and
    # a gradient common to the queries (a top block): the keys' position factor and E[dQ^2] read the pairs'
    # (x_t . x_t')^2, which the alignment raises. The model given the covariance must match the reference; the
    # isotropic model must not (measured: pf_k 0.811 (0.021) reference, 0.815 with the covariance, 0.596
    # isotropic; dq_sq 0.577 (0.015), 0.576, 0.459). Tolerance 4 combined s.e. of the two Monte Carlos (the
    # reference's per-draw s.d. over its 1500 draws, the model's taken equal).
    T, d_in, d_qk, r, rp, rp_g, lsq = 12, 48, 16, 12, 0.5, 0.9, 1.0 / 16
    L = np.linalg.qr(np.random.default_rng(3).standard_normal((d_in, r)))[0].T * math.sqrt(d_in * (1 - rp) / r)
    n = 1500
    dq, pf, rp_q, rp_v = aligned_tokens_reference(jax.random.PRNGKey(0), n, T, d_in, d_qk, L, rp, lsq, rp_g)
    # the reference's own scale: E[dQ^2] per unit of E[g^2] E[V^2] E[K^2] lsq (dq_sq's)
    # (the vjp's dQ carries the logits' scale sqrt(lsq); E[K^2] = E[V^2] = E[g^2] = 1 here)
    ref = {"dq": dq.mean() / lsq, "pf": pf.mean()}
    se_ref = {"dq": dq.std() / lsq / math.sqrt(n), "pf": pf.std() / math.sqrt(n)}
    masks = np.ones((1, T, T), bool)
    kw = dict(draws=n, d_in=d_in, norm="layer_norm")
    aligned = GaussianAttention(masks, d_qk, d_qk, lsq, rp_q, rp, rp_v, rp_g, seed=1,
                                tokens=(L, np.zeros((T, d_in)), 1.0, 1 - rp, rp), **kw)
    iso = GaussianAttention(masks, d_qk, d_qk, lsq, rp_q, rp, rp_v, rp_g, seed=1, **kw)
    for name, got_a, got_i in (("dq", aligned.dq_sq, iso.dq_sq), ("pf", aligned.pf_k, iso.pf_k)):
      tol = 4 * math.sqrt(2) * se_ref[name]
      self.assertAlmostEqual(got_a, ref[name], delta=tol, msg=name)
      self.assertGreater(abs(got_i - ref[name]), tol, msg=name)

  def test_model_with_the_batch_common_shared_part(self):
    # every example's shared part is one fixed vector c (the batch's common mean; 0.6-0.7 of the shared part of
    # models.Transformer's first LayerNorm outputs), not a fresh Gaussian per example: the norm of the shared
    # part then does not fluctuate (chi-square) from example to example, and the queries' position factor and
    # E[dQ^2], which read it through the LayerNorm's fixed token length, move. The model given c must match the
    # reference; the model drawing the shared part per example must not (measured at 20000 draws: pf_q 5.95
    # (0.09) reference, 5.95 with c, 4.91 without; dq_sq 0.0339 (0.0005), 0.0341, 0.0493). Tolerance 4 combined
    # s.e. of the two Monte Carlos (the reference's per-draw s.d. over its 8000 draws, the model's taken equal).
    T, d_in, d_qk, rp, rp_g, lsq = 8, 8, 4, 0.8, 0.9, 1.0 / 4
    L = np.eye(d_in) * math.sqrt(1 - rp)
    c = np.zeros(d_in)
    c[0] = math.sqrt(rp * d_in)
    n = 8000
    dq, pf, rp_q, rp_v = aligned_tokens_reference(jax.random.PRNGKey(0), n, T, d_in, d_qk, L, rp, lsq, rp_g,
                                                  fixed=c, pf_q=True)
    ref = {"dq": dq.mean() / lsq, "pf": pf.mean()}
    se_ref = {"dq": dq.std() / lsq / math.sqrt(n), "pf": pf.std() / math.sqrt(n)}
    masks = np.ones((1, T, T), bool)
    kw = dict(draws=n, d_in=d_in, norm="layer_norm", seed=1)
    tok = (L, np.zeros((T, d_in)), 1.0, 1 - rp, rp)
    common = GaussianAttention(masks, d_qk, d_qk, lsq, rp_q, rp, rp_v, rp_g, tokens=tok + (c,), **kw)
    drawn = GaussianAttention(masks, d_qk, d_qk, lsq, rp_q, rp, rp_v, rp_g, tokens=tok, **kw)
    for name, got_c, got_d in (("dq", common.dq_sq, drawn.dq_sq), ("pf", common.pf_q, drawn.pf_q)):
      tol = 4 * math.sqrt(2) * se_ref[name]
      self.assertAlmostEqual(got_c, ref[name], delta=tol, msg=name)
      self.assertGreater(abs(got_d - ref[name]), tol, msg=name)

  def test_input_factor_is_the_one_hot_tokens_covariance(self):
    # uniform one-hot tokens of V kinds: a token's own part e_v - 1/V has covariance (I - 11^T / V) / V, rank
    # V - 1; from a batch, within the sampling error of 4096 tokens (relative ~ sqrt(V / 4096) per entry)
    V, T = 8, 16
    ids = np.random.default_rng(0).integers(0, V, (256, T))
    for points, rows in ((False, V - 1), (True, V)):   # eigenvector rows, or the V token points (rank V - 1)
      F = token_carry.input_factor(np.eye(V)[ids], points=points)
      self.assertEqual(F.shape, (rows, T, V))
      C = np.einsum("rf,rg->fg", F[:, 0], F[:, 0])
      np.testing.assert_allclose(C, (np.eye(V) - 1 / V) / V, atol=0.01)

  def test_token_weights_are_the_batch_shares(self):
    # the points' weights come back from the rows alone (their one left null vector): each token's share of the
    # batch's tokens, exactly (float64, the rows built from them)
    V, T = 8, 16
    ids = np.random.default_rng(1).integers(0, V, (64, T))
    w = token_carry.token_weights(token_carry.input_factor(np.eye(V)[ids], points=True))
    # (the points in np.unique's order of the one-hot rows: token V - 1 first)
    np.testing.assert_allclose(w, np.bincount(ids.reshape(-1), minlength=V)[::-1] / ids.size, rtol=1e-9)
    # a continuous input's eigenvector rows are no points: the activation keeps its mean slope there
    x = np.random.default_rng(2).standard_normal((64, T, 6))
    self.assertIsNone(token_carry.token_weights(token_carry.input_factor(x, points=True)))


class TokenPointsTest(chex.TestCase):

  def test_activation_maps_each_token_through_the_gelu(self):
    # y = m + p_v + r with the token's point p_v and a rest r ~ N(0, s_r^2) independent of the token: each
    # token's own part of gelu(y) is its conditional mean less the shares' average, by Monte Carlo over r
    # (written apart: jax samples, no quadrature). Points of size ~1 around m ~ 0.5 are well into the GELU's
    # curvature, so the mean slope alone (the linear carry) misses by ~0.1-0.3. N = 20000 draws of r per token:
    # s.e. of a conditional mean <= sd(gelu(y)) / sqrt(N) ~ 0.01; tolerance 5 s.e.
    V, D, N, s_r = 6, 5, 20000, 0.7
    rng = np.random.default_rng(4)
    w = rng.dirichlet(np.ones(V) * 4)
    u = rng.standard_normal((V, D))
    p = u - w @ u
    m = 0.5 + 0.3 * rng.standard_normal(D)
    sq = float(np.mean(m * m) + np.mean(w @ (p * p)) + s_r ** 2)
    r = s_r * jax.random.normal(jax.random.PRNGKey(0), (N, 1, D))
    y = jnp.asarray(m + p)[None] + r
    gy = np.asarray(jax.nn.gelu(y, approximate=False), np.float64)
    cond = gy.mean(0)
    ref = cond - w @ cond
    se = float(gy.std(0).max()) / math.sqrt(N)
    rows = np.sqrt(w)[:, None] * p
    got = token_carry.activation_points(lambda z: jax.nn.gelu(z, approximate=False), m, sq, rows, w)
    np.testing.assert_allclose(got / np.sqrt(w)[:, None], ref, atol=5 * se)
    # the mean slope over the same rest (the linear carry's map, to first order): off by far more
    z, wz = np.polynomial.hermite_e.hermegauss(40)
    d = np.asarray(jax.vmap(jax.grad(lambda v: jax.nn.gelu(v, approximate=False)))(
        jnp.asarray((m[None] + s_r * z[:, None]).reshape(-1))))
    slope = (d.reshape(40, D) * (wz / wz.sum())[:, None]).sum(0)
    self.assertGreater(float(np.max(np.abs(slope * p - ref))), 10 * se)


def test_cross_examples_adds_the_carried_deviations_dot_product(monkeypatch):
  """token_carry.cross_examples (ADD_CROSS): a residual add's E[y^2] gains 2 mean(d_a . d_b) of the two summands'
  carried example deviations, and the pairs of positions t != t' enter rp the same way (exact arithmetic: 1e-12)."""
  from jscale.calculus.signals import Forward
  rng = np.random.default_rng(0)
  a = rng.normal(size=(16, 5, 3))
  b = 0.5 * a + rng.normal(size=(16, 5, 3))
  sig = Forward(sq=4.0, r=0.25, sym=True, rp=0.1, rc=0.05)
  same = float(np.mean(a * b))
  pair = float(np.mean([np.dot(a[i, t], b[i, u]) / 3 for i in range(16) for t in range(5) for u in range(5) if t != u]))
  for mode in (True, "sq"):
    monkeypatch.setattr(token_carry, "ADD_CROSS", mode)
    out = token_carry.cross_examples(sig, a, b)
    assert abs(out.sq - (4.0 + 2 * same)) < 1e-12
    if mode is True:
      assert abs(out.rp - (4.0 * 0.1 + 2 * pair) / out.sq) < 1e-12 and abs(out.r * out.sq - 1.0) < 1e-12
    else:
      assert out.rp == 0.1 and out.r == 0.25
  assert token_carry.cross_examples(sig, a, b[:, :4]) is sig   # shapes differ: unchanged

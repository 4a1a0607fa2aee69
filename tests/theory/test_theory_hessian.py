"""Exact Hessian blocks (jax.hessian) against closed forms, symmetry and the Gauss-Newton identity."""
import functools
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from jscale import mlp
from jscale.theory import hessian as hs
from jscale.theory import losses

# float64 throughout: identities hold to rounding, so 1e-10 relative separates "equal" from "off by a
# term"; the tanh counterexamples differ at O(1) relative.
RTOL = 1e-10


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _draws(kind, widths, batch, key):
  """One program for a problem's draws: eagerly each shape's float64 normal was its own compiled program (25 in
  this file, ~14% of its compile seconds). The values are the eager draws' to 1 ulp (the scale multiplies in the
  fused program): any draw serves, the identities below hold for every problem."""
  k = jax.random.split(key, 4)
  params = mlp.init_mlp(k[0], widths, "he_normal", "normal:0.1", dtype=jnp.float64)
  x = jax.random.normal(k[1], (batch, widths[0]), jnp.float64)
  t = losses.random_targets(k[2], kind, batch, widths[-1], jnp.float64)
  return params, x, t, k[3]


def _problem(kind, widths=(5, 7, 6, 4), batch=6, seed=0, activation="relu"):
  params, x, t, kq = _draws(kind, tuple(widths), batch, jax.random.PRNGKey(seed))
  q = losses.random_quadratic(kq, widths[-1], jnp.float64)
  return params, x, t, q


def _shapes_only(kind, widths=(5, 7, 6, 4), batch=6):
  """`_problem`'s shapes as float32 zeros, for the refusals, which read shapes only: drawing the problem there
  compiled a float32 set of random programs (~1 s of the file). The shapes are read inside float64, where
  `_draws`'s float64 request is honoured: outside it JAX warned that float64 was truncated to float32."""
  with jax.enable_x64(True):
    p, x, t, _ = jax.eval_shape(lambda: _draws(kind, widths, batch, jax.random.PRNGKey(0)))
  zeros = lambda s: np.zeros(s.shape, np.float32)   # noqa: E731  (numpy: jnp.zeros compiles a program per shape)
  return jax.tree.map(zeros, p), zeros(x), zeros(t), np.zeros((widths[-1], widths[-1]), np.float32)


@functools.lru_cache(maxsize=None)
def _exact(kind, activation="relu"):
  """(params, x, t, q, blocks) in float64; cached so each (loss, activation) Hessian is computed once."""
  with jax.enable_x64(True):
    p, x, t, q = _problem(kind, activation=activation)
    # blocks jitted: eagerly, each of the L^2 reshapes compiled on its own (0.26 s -> 0.04 s)
    return p, x, t, q, jax.jit(hs.blocks)(hs.hessian(losses.make_loss(kind, activation), p, x, t, q, x64=True), p)


class ClosedFormTest(chex.TestCase):

  def test_linear_regression(self):
    """1/2 mean (x.w + c - t)^2: H_ww = X^T X / N, H_wc = mean x, H_cc = 1."""
    with jax.enable_x64(True):
      rng = np.random.default_rng(0)
      n, d = 9, 4
      xs, ts = rng.normal(size=(n, d)), rng.normal(size=(n, 1))
      params = (mlp.Dense(jnp.asarray(rng.normal(size=(d, 1))), jnp.asarray(rng.normal(size=(1,)))),)
      loss = losses.make_loss("quadratic", "identity")
      h = hs.hessian(loss, params, jnp.asarray(xs), jnp.asarray(ts), jnp.eye(1), x64=True)
      blk = hs.blocks(h, params)
      np.testing.assert_allclose(blk[0][0], xs.T @ xs / n, rtol=RTOL)
      np.testing.assert_allclose(blk[0][1][:, 0], xs.mean(0), rtol=RTOL)
      np.testing.assert_allclose(blk[1][1], [[1.0]], rtol=RTOL)
      chex.assert_shape(h[0].w[0].w, (d, 1, d, 1))

  def test_one_hidden_layer_linear_net(self):
    """out = (x W1 + b1) W2 + b2, loss 1/2 mean ||out - t||^2: every block derived by hand."""
    with jax.enable_x64(True):
      rng = np.random.default_rng(1)
      n, d, k, o = 5, 3, 4, 2
      w1, b1, w2, b2 = rng.normal(size=(d, k)), rng.normal(size=k), rng.normal(size=(k, o)), rng.normal(size=o)
      xs, ts = rng.normal(size=(n, d)), rng.normal(size=(n, o))
      params = (mlp.Dense(jnp.asarray(w1), jnp.asarray(b1)), mlp.Dense(jnp.asarray(w2), jnp.asarray(b2)))
      got = hs.dense(hs.blocks(hs.hessian(losses.make_loss("quadratic", "identity"), params, jnp.asarray(xs),
                                          jnp.asarray(ts), jnp.eye(o), x64=True), params))
      ww = w2 @ w2.T
      sizes = [d * k, k, k * o, o]
      off = np.cumsum([0] + sizes)
      want = np.zeros((off[-1], off[-1]))
      for x, t in zip(xs, ts):
        h = x @ w1 + b1
        r = h @ w2 + b2 - t
        blk = {}
        blk[0, 0] = np.kron(np.outer(x, x), ww)
        blk[0, 1] = np.kron(x[:, None], ww)
        blk[1, 1] = ww
        # d2/dW1_ia dW2_bm = x_i (h_b W2_am + delta_ab r_m)
        cross = np.einsum("b,am->abm", h, w2) + np.einsum("ab,m->abm", np.eye(k), r)
        blk[0, 2] = np.einsum("i,abm->iabm", x, cross).reshape(d * k, k * o)
        blk[0, 3] = np.einsum("i,am->iam", x, w2).reshape(d * k, o)
        blk[1, 2] = cross.reshape(k, k * o)
        blk[1, 3] = w2
        blk[2, 2] = np.kron(np.outer(h, h), np.eye(o))
        blk[2, 3] = np.kron(h[:, None], np.eye(o))
        blk[3, 3] = np.eye(o)
        for (i, j), m in blk.items():
          want[off[i]:off[i + 1], off[j]:off[j + 1]] += m / n
          if i != j:
            want[off[j]:off[j + 1], off[i]:off[i + 1]] += m.T / n
      np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)

  def test_sq_sv_closed_forms(self):
    # c I_d has every singular value c; a 3 x 5 matrix with orthonormal rows scaled by c likewise.
    self.assertAlmostEqual(float(hs.sq_sv(3.0 * jnp.eye(4))), 9.0, places=5)
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(5, 3)))
    self.assertAlmostEqual(float(hs.sq_sv(jnp.asarray(2.0 * q.T))), 4.0, places=5)


class StructureTest(chex.TestCase, parameterized.TestCase):

  @parameterized.parameters("quadratic", "xent")
  def test_symmetric(self, kind):
    with jax.enable_x64(True):
      p, x, t, q, blk = _exact(kind)
      for i in range(len(blk)):
        for j in range(len(blk)):
          np.testing.assert_allclose(blk[i][j], blk[j][i].T, rtol=RTOL, atol=1e-14)

  @parameterized.parameters("quadratic", "xent")
  def test_relu_diagonal_blocks_equal_gauss_newton(self, kind):
    with jax.enable_x64(True):
      p, x, t, q, blk = _exact(kind)
      gn = hs.gauss_newton_blocks(hs.mlp_apply(), kind, p, x, t, q)
      for i in range(len(blk)):
        scale = float(jnp.max(jnp.abs(blk[i][i])))
        self.assertGreater(scale, 0.0)
        np.testing.assert_allclose(gn[i][i], blk[i][i], rtol=0, atol=RTOL * scale)
      # Off-diagonal blocks between layers are NOT Gauss-Newton (the identity is a diagonal-block one).
      self.assertGreater(float(jnp.max(jnp.abs(blk[0][2] - gn[0][2]))), 1e-3 * float(jnp.max(jnp.abs(blk[0][2]))))

  @parameterized.parameters("quadratic", "xent")
  def test_tanh_diagonal_blocks_differ_from_gauss_newton(self, kind):
    with jax.enable_x64(True):
      p, x, t, q, blk = _exact(kind, "tanh")
      gn = hs.gauss_newton_blocks(hs.mlp_apply("tanh"), kind, p, x, t, q)
      w0 = 0  # first weight block: tanh curvature of two layers above contributes
      rel = float(jnp.max(jnp.abs(blk[w0][w0] - gn[w0][w0])) / jnp.max(jnp.abs(blk[w0][w0])))
      self.assertGreater(rel, 0.05)
      # The last layer is linear in its own weights for any activation: identity holds there.
      np.testing.assert_allclose(gn[-2][-2], blk[-2][-2], rtol=0, atol=RTOL * float(jnp.max(jnp.abs(blk[-2][-2]))))

  @parameterized.parameters("quadratic", "xent")
  def test_kronecker_diagonal_equals_exact(self, kind):
    with jax.enable_x64(True):
      p, x, t, q, blk = _exact(kind)
      want = hs.diagonal_from_blocks(blk, p)
      got = hs.diagonal_sq_sv(kind, p, x, t, q)
      np.testing.assert_allclose(got.weight, want.weight, rtol=1e-9)
      np.testing.assert_allclose(got.bias, want.bias, rtol=1e-9)

  def test_flat_sq_sv_matrix_equals_the_pytree_blocks(self):
    """The flat form sums each block's squares in another order (a product with a 0/1 indicator): float64,
    so 1e-10 separates "same matrix" from "a block misplaced or mis-normalised". Cross-entropy only (the
    default suite's budget; the form does not depend on the loss). Jitted, as its callers run it: run eagerly,
    op by op, it took 8 s of the default suite; the pytree reference jitted too (eagerly each block's sum of
    squares compiled on its own: 1.9 s -> 0.44 s, the same float64 numbers to 2e-16)."""
    kind = "xent"
    with jax.enable_x64(True):
      p, x, t, q, blk = _exact(kind)
      got = jax.jit(hs.flat_sq_sv_matrix, static_argnums=0)(losses.make_loss(kind), p, x, t, q)
      np.testing.assert_allclose(got, jax.jit(hs.sq_sv_matrix)(blk), rtol=RTOL)

  def test_kronecker_diagonal_refuses_tanh(self):
    p, x, t, q = _shapes_only("quadratic")
    with self.assertRaisesRegex(ValueError, "piecewise-linear"):
      hs.diagonal_sq_sv("quadratic", p, x, t, q, "tanh")


class MemoryTest(chex.TestCase):

  def test_too_big_raises_with_estimate(self):
    params = mlp.init_mlp(jax.random.PRNGKey(0), (300, 200, 10))
    p = 300 * 200 + 200 + 200 * 10 + 10
    self.assertEqual(hs.num_params(params), p)
    self.assertEqual(hs.hessian_bytes(params), p * p * 4)
    x = jnp.zeros((2, 300))
    with self.assertRaisesRegex(ValueError, r"needs .*GiB"):
      hs.hessian(losses.make_loss("xent"), params, x, jnp.zeros((2, 10)), jnp.eye(10))
    with self.assertRaisesRegex(ValueError, "unknown loss kind"):
      losses.make_loss("hinge")


class LayoutTest(chex.TestCase):

  def test_theory_does_not_import_matplotlib_or_an_experiment(self):
    # nor scipy.stats (jscale.calculus loads strided_response on first use: ~0.7 CPU s of every `import jscale`)
    code = ("import sys, jscale.theory; sys.exit('matplotlib' in sys.modules or 'scipy.stats' in sys.modules "
            "or any(m.startswith('jscale.experiments') for m in sys.modules))")
    self.assertEqual(subprocess.run([sys.executable, "-c", code]).returncode, 0)

  def test_no_experiment_protocol_and_no_scheme_table_in_theory(self):
    """Figures 1-2's protocol (sampled setups, rounds, records) is the hessian experiment's; the scheme table
    is `initializers.SCHEMES`, not a copy."""
    import jscale.theory
    for name in ("conv_pairs", "hessian", "hutchinson", "inputs", "losses", "pairs", "predict", "predict_conv"):
      mod = getattr(jscale.theory, name)
      for attr in ("sample_setups", "figure1", "records_json", "run_setup", "measure_all", "SCHEMES"):
        self.assertFalse(hasattr(mod, attr), f"jscale.theory.{name}.{attr}")


# ---------------------------------------------------------------------------------------------------
# Figure 1's fast exact side (jscale.theory.pairs) against diagonal_sq_sv, padding, controls.

def _pad_to(a, shape):
  return jnp.pad(a, [(0, s - n) for n, s in zip(a.shape, shape)])


class PairsTest(chex.TestCase, parameterized.TestCase):
  """float64: pair sums and diagonal_sq_sv are the same sums in another order, so 1e-10 relative
  separates "equal" from "a term missing"."""

  def _draw(self, kind, widths=(5, 9, 7, 6), batch=7, seed=0):
    p, x, t, q = _problem(kind, widths, batch, seed)
    p = tuple(mlp.Dense(layer.w, jnp.zeros_like(layer.b)) for layer in p)  # setups use zero biases
    return p, x, t, q, jnp.asarray(losses.quadratic_factor(q))

  @parameterized.parameters("quadratic", "xent")
  def test_all_pairs_of_one_minibatch_equal_diagonal_sq_sv(self, kind):
    from jscale.theory import pairs
    with jax.enable_x64(True):
      widths = (5, 9, 7, 6)
      p, x, t, q, a = self._draw(kind, widths)
      want = hs.diagonal_sq_sv(kind, p, x, t, q)
      st = pairs.pair_sums([layer.w[None] for layer in p], x[None], t[None], kind, a, widths).stats
      w, b = pairs.combine(st, x.shape[0])
      w1, b1 = pairs.combine(st, 1)
      for got, ref in ((w, want.weight), (b, want.bias), (w1, want.weight_batch1), (b1, want.bias_batch1)):
        np.testing.assert_allclose(got[0], ref, rtol=RTOL)

  @parameterized.parameters("quadratic", "xent")
  def test_zero_width_padding_changes_nothing(self, kind):
    from jscale.theory import pairs
    with jax.enable_x64(True):
      widths = (5, 9, 7, 6)
      p, x, t, q, a = self._draw(kind, widths)
      pw = pairs.padded_widths(widths)
      self.assertEqual(pw, (32, 32, 32, 16))  # inputs and hidden layers computed at >= 32, the output at >= 16
      ws = [layer.w[None] for layer in p]
      wp = [_pad_to(layer.w, (pw[l], pw[l + 1]))[None] for l, layer in enumerate(p)]
      plain = pairs.pair_sums(ws, x[None], t[None], kind, a, widths)
      padded = pairs.pair_sums(wp, _pad_to(x, (x.shape[0], pw[0]))[None], _pad_to(t, (t.shape[0], pw[-1]))[None],
                               kind, _pad_to(a, (pw[-1], pw[-1])), widths)
      np.testing.assert_allclose(padded.stats, plain.stats, rtol=1e-12)
      np.testing.assert_allclose(padded.sq_norms, plain.sq_norms, rtol=1e-12)
      np.testing.assert_array_equal(padded.active, plain.active)

  def test_round_computed_padded_equals_its_drawn_shape(self):
    self._check_round_padded("xent", "uniform01", (5, 100, 17, 3, 33))

  @pytest.mark.slow
  def test_round_computed_padded_equals_its_drawn_shape_quadratic(self):
    self._check_round_padded("quadratic", "normal", (8, 20, 40, 10))

  def _check_round_padded(self, loss, input_kind, widths):
    """A round computes on `padded_widths` (>= 32 but for the output) while its random numbers keep the layout
    of `drawn_widths` (buckets from 16): the weights and inputs are the draws laid out in the drawn shape
    bit for bit (rebuilt here from the keys), and the round's statistics equal those of the same draws
    computed in the drawn shape (the per-layer programs before the padding changed) to float32 rounding:
    the padded sums add exact zeros but run over more terms in other blocks (measured <= 3e-7; 1e-6 here)."""
    from jscale.initializers import SCHEMES
    from jscale.theory import pairs, predict
    wsq = predict.weight_second_moments(widths, SCHEMES["xavier"])
    q = losses.random_quadratic(jax.random.PRNGKey(1), widths[-1])
    s = pairs.make_sampler(widths, wsq, input_kind, loss, q, examples=3, round_draws=4)
    d, p = pairs.drawn_widths(widths), pairs.padded_widths(widths)
    self.assertNotEqual(d, p)
    key = jax.random.PRNGKey(5)
    weights, x, _ = pairs.sample_round(s, key)
    kw, ke = jax.random.split(key)
    for l, (w, k) in enumerate(zip(weights, jax.random.split(kw, len(wsq)))):
      chex.assert_shape(w, (4, p[l], p[l + 1]))
      z = np.asarray(jax.random.normal(k, (4, d[l], d[l + 1]), jnp.float32))
      want = np.zeros((4, p[l], p[l + 1]), np.float32)
      want[:, :widths[l], :widths[l + 1]] = np.float32(np.sqrt(wsq[l])) * z[:, :widths[l], :widths[l + 1]]
      np.testing.assert_array_equal(np.asarray(w), want)
    xk = jax.random.split(ke)[0]
    z = np.asarray(jax.random.normal(xk, (4, 3, d[0])) if input_kind == "normal" else jax.random.uniform(xk, (4, 3, d[0])))
    np.testing.assert_array_equal(np.asarray(x)[..., :widths[0]], z[..., :widths[0]])
    np.testing.assert_array_equal(np.asarray(x)[..., widths[0]:], 0.0)
    got = pairs.run_round(s, key)
    a = np.zeros((d[-1], d[-1]), np.float32)
    a[:, :] = np.asarray(s.a_q)[:d[-1], :d[-1]]
    ref = pairs.pair_sums([w[:, :d[l], :d[l + 1]] for l, w in enumerate(weights)], x[..., :d[0]], None, loss,
                          jnp.asarray(a), widths)
    # A pair mean is a sum less its diagonal, (sum - E diag) / (E (E - 1)): where it cancels to ~0 (a bias block
    # of cross-entropy) its rounding is that of the terms summed, so the tolerance is 1e-6 of the larger of the
    # value and its same-example mean.
    want = np.asarray(ref.stats, np.float64)
    scale = np.maximum(np.abs(want), np.abs(want[..., [0, 0, 2, 2]]))
    self.assertTrue(np.all(np.abs(got.stats - want) <= 1e-6 * scale), np.max(np.abs(got.stats - want) / scale))
    np.testing.assert_allclose(got.sq_norms, np.asarray(ref.sq_norms, np.float64), rtol=1e-6)
    np.testing.assert_array_equal(got.active, np.asarray(ref.active, np.float64))
    if loss == "xent":
      np.testing.assert_allclose(got.probs, np.asarray(ref.probs, np.float64)[..., :widths[-1]], rtol=1e-6)

  def test_setups_of_one_padded_shape_share_every_program(self):
    """Setups whose widths pad alike (inputs and hidden layers of 9-32 units compute at 32) share the per-layer
    programs: the later setups' rounds compile none (a per-setup shape would compile its own). Only the draws
    depend on the drawn layout (buckets from 16): the third setup's first two widths are drawn as 32, 16."""
    from jscale.initializers import SCHEMES
    from jscale.theory import pairs, predict
    layer_programs = (pairs._forward, pairs._backward, pairs._layer_pairs, pairs._input_gram, pairs._output_factor)
    counts = []
    for widths, loss in (((10, 20, 12), "xent"), ((9, 30, 14), "xent"), ((17, 11, 9), "xent")):
      self.assertEqual(pairs.padded_widths(widths), (32, 32, 16))
      wsq = predict.weight_second_moments(widths, SCHEMES["fan_in"])
      s = pairs.make_sampler(widths, wsq, "normal", loss, np.eye(widths[-1]), examples=2, round_draws=2)
      pairs.run_round(s, jax.random.PRNGKey(len(counts)))
      counts.append(sum(f._cache_size() for f in layer_programs))
    self.assertEqual(counts[2], counts[0])

  def test_schemes_are_scaled_standard_normals(self):
    """pairs samples W = sqrt(E[W^2]) N(0, 1) on padded shapes; that is each scheme's law only if every
    scheme is a centred normal: same key, same numbers."""
    from jscale import initializers
    key, shape = jax.random.PRNGKey(3), (7, 5)
    for name, spec in initializers.SCHEMES.items():
      init = initializers.get(spec)
      want = np.sqrt(init.second_moment(shape)) * np.asarray(jax.random.normal(key, shape, jnp.float32))
      np.testing.assert_allclose(np.asarray(init(key, shape)), want, rtol=1e-6, err_msg=name)

  @parameterized.parameters(("normal", "xent"), ("uniform01", "quadratic"))
  def test_control_variates_have_mean_one(self, input_kind, loss):
    """The controls' means are exact products; 4096 draws x 4 examples: every column within 4 SE of 1
    (a 4-SE band fails ~6e-5 of the time per column for a Gaussian error)."""
    from jscale.initializers import SCHEMES
    from jscale.theory import pairs, predict
    widths = (6, 9, 8, 5)
    wsq = predict.weight_second_moments(widths, SCHEMES["fan_in"])
    q = losses.random_quadratic(jax.random.PRNGKey(1), widths[-1])
    smp = pairs.make_sampler(widths, wsq, input_kind, loss, q, examples=4, round_draws=1024)
    cs = [pairs.control_variates(pairs.run_round(smp, jax.random.PRNGKey(k)), widths, wsq, input_kind)
          for k in range(4)]
    for c in (np.concatenate([c[0] for c in cs]), np.concatenate([c[1] for c in cs])):
      se = c.std(0, ddof=1) / np.sqrt(c.shape[0])
      self.assertTrue(np.all(np.abs(c.mean(0) - 1) <= 4 * se + 1e-12), (c.mean(0), se))  # top bias: exactly 1

  def test_cv_mean(self):
    from jscale.theory import pairs
    rng = np.random.default_rng(0)
    c = rng.gamma(2.0, 0.5, size=(4000, 1))  # mean 1
    exact = pairs.cv_mean(3 * c + 2, c)  # perfectly correlated: the control removes all variance
    np.testing.assert_allclose(exact.mean, [5.0], rtol=1e-12)
    self.assertLess(float(exact.stderr[0]), 1e-10)
    self.assertGreater(float(exact.raw_stderr[0]), 0.01)
    v = rng.normal(size=(4000, 1))
    est = pairs.cv_mean(v, c)  # an independent control changes (almost) nothing
    np.testing.assert_allclose(est.stderr, est.raw_stderr, rtol=0.01)
    with self.assertRaisesRegex(ValueError, ">= 3 draws"):
      pairs.cv_mean(v[:2], c[:2])


class GuardTest(chex.TestCase):
  """Entry points that form Hessians or big intermediates refuse before compute, naming the estimate."""

  def test_guards(self):
    from jscale.theory import pairs
    p, x, t, q = _shapes_only("quadratic")
    with self.assertRaisesRegex(ValueError, r"diagonal_sq_sv .*needs about .*GiB"):
      hs.diagonal_sq_sv("quadratic", p, x, t, q, max_bytes=1000)
    with self.assertRaisesRegex(ValueError, r"gauss_newton_blocks .*needs about .*GiB"):
      hs.gauss_newton_blocks(hs.mlp_apply(), "quadratic", p, x, t, q, max_bytes=1000)
    with self.assertRaisesRegex(ValueError, r"round of .*needs about .*GiB"):
      pairs.make_sampler((128, 128, 128), [0.01, 0.01], "normal", "xent", jnp.eye(128), examples=64,
                         round_draws=4096)

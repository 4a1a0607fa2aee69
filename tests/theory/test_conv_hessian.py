"""Exact Hessian blocks of the strided LeNet (`jscale.theory.hessian` on any network, `jscale.theory.conv_pairs`):
jax.hessian, Gauss-Newton, the position form, padding, the calculus's conv prediction
(`jscale.theory.predict_conv`) against exact values, and memory refusals."""
import functools

import chex
import jax
import jax.flatten_util
import pytest
import jax.numpy as jnp
import numpy as np

from jscale.initializers import SCHEMES
from jscale.models import lenet
from jscale.theory import conv_pairs as cp
from jscale.theory import hessian as hs
from jscale.theory import hutchinson, losses, pairs, predict
from jscale.theory import predict_conv as pc

# float64: the identities hold to rounding, so 1e-9 relative separates "equal" from "a term missing".
RTOL = 1e-9
TINY = lenet.LeNetConfig((4, 4, 1), (2, 3), ((2, 2), (2, 2)), (5, 4), 3)


def _loss(kind, q):
  def loss(p, x, t):
    return jnp.mean(jax.vmap(losses.per_example(kind), in_axes=(0, 0, None))(lenet.apply_lenet(p, x), t, q))
  return loss


def _problem(kind):
  """(params with non-zero biases, x, t, q) of TINY in float64."""
  with jax.enable_x64(True):
    k = jax.random.split(jax.random.PRNGKey(0), 5)
    p = lenet.init_lenet(k[0], TINY, "he_normal", dtype=jnp.float64)
    p = jax.tree.map(lambda a: a + 0.1 * jax.random.normal(k[4], a.shape, a.dtype) if a.ndim == 1 else a, p)
    return (p, jax.random.normal(k[1], (6, 4, 4, 1), jnp.float64), losses.random_targets(k[2], kind, 6, 3, jnp.float64),
            losses.random_quadratic(k[3], 3, jnp.float64))


@functools.lru_cache(maxsize=None)
def _exact(kind):
  """(params with non-zero biases, x, t, q, jax.hessian blocks) of TINY in float64, cached per loss."""
  p, x, t, q = _problem(kind)
  with jax.enable_x64(True):
    flat, unravel = jax.flatten_util.ravel_pytree(p)  # one P x P Hessian: a much smaller program to compile
    h = jax.jit(jax.hessian(lambda v: _loss(kind, q)(unravel(v), x, t)))(flat)
    sizes = np.cumsum([0] + [leaf.size for leaf in jax.tree.leaves(p)])
    return p, x, t, q, [[h[a:b, c:d] for c, d in zip(sizes[:-1], sizes[1:])] for a, b in zip(sizes[:-1], sizes[1:])]


_factors = jax.jit(hs.leaf_factors, static_argnums=(0, 3))
_pair_stats = jax.jit(cp.lenet_pair_stats, static_argnums=2)


def _config(channels, hidden):
  """The 8x8x1 LeNets of the hessian experiment: 2x2 stride-2 convs, 10 outputs."""
  return lenet.LeNetConfig((8, 8, 1), channels, ((2, 2), (2, 2)), hidden, 10).check()


class ExactTest(chex.TestCase):

  @pytest.mark.slow
  def test_conv_diagonal_blocks_equal_jax_hessian_and_gauss_newton(self):
    kind = "xent"  # the harder loss: its output Hessian depends on the logits
    with jax.enable_x64(True):
      p, x, t, q, blk = _exact(kind)
      gn = hs.gauss_newton_blocks(lenet.apply_lenet, kind, p, x, t, q)
      got = hs.factor_diagonal_sq_sv(lenet.apply_lenet, kind, p, x, t, q)
      names = hs.leaf_names(p)
      self.assertIn("conv1/kernel", names)
      for i, name in enumerate(names):
        scale = float(jnp.max(jnp.abs(blk[i][i])))
        self.assertGreater(scale, 0.0)
        np.testing.assert_allclose(gn[i][i], blk[i][i], rtol=0, atol=RTOL * scale, err_msg=name)
        np.testing.assert_allclose(got[name], hs.sq_sv(blk[i][i]), rtol=RTOL, err_msg=name)
      i = names.index("conv1/kernel")
      np.testing.assert_allclose(hs.diagonal_block(lenet.apply_lenet, kind, p, x, t, q, name="conv1/kernel"), blk[i][i],
                                 rtol=0, atol=RTOL * float(jnp.max(jnp.abs(blk[i][i]))))
      # Between two conv layers the Hessian is not Gauss-Newton: the identity is a diagonal-block one.
      i, j = names.index("conv0/kernel"), names.index("conv1/kernel")
      self.assertGreater(float(jnp.max(jnp.abs(blk[i][j] - gn[i][j]))), 1e-3 * float(jnp.max(jnp.abs(blk[i][j]))))

  @pytest.mark.slow
  def test_position_form_equals_full_jacobian_and_padding_adds_zeros(self):
    """lenet_pair_stats (patches and per-position Jacobians) of the LeNet zero-padded to wider convs and dense
    layers, against factor_pairs of the unpadded LeNet's full parameter Jacobian: the position form is exact and
    padded units add exact zeros."""
    kind = "quadratic"
    with jax.enable_x64(True):
      cfg = lenet.LeNetConfig((8, 8, 1), (3, 4), ((2, 2), (2, 2)), (7, 5), 10)
      p = lenet.init_lenet(jax.random.PRNGKey(1), cfg, "glorot_normal", dtype=jnp.float64)
      x = jax.random.normal(jax.random.PRNGKey(2), (5, 8, 8, 1), jnp.float64)
      a = jnp.asarray(losses.quadratic_factor(losses.random_quadratic(jax.random.PRNGKey(3), 10, jnp.float64)))
      us = dict(zip(hs.leaf_names(p), _factors(lenet.apply_lenet, p, x, kind, a)))
      big = lenet.LeNetConfig((8, 8, 1), (6, 8), ((2, 2), (2, 2)), (16, 8), 10)
      padded = jax.tree.map(jnp.zeros_like, lenet.init_lenet(jax.random.PRNGKey(0), big, dtype=jnp.float64))
      for name, leaf in p.items():
        w = leaf["kernel"]
        if name == "dense0":  # rows are (position, channel): place the true channels of each position
          w4 = w.reshape(2, 2, 4, -1)
          padded[name]["kernel"] = padded[name]["kernel"].reshape(2, 2, 8, -1).at[:, :, :4, :w.shape[-1]].set(
              w4).reshape(32, -1)
        else:
          padded[name]["kernel"] = padded[name]["kernel"].at[tuple(slice(0, s) for s in w.shape)].set(w)
      dims = (jnp.asarray([float(np.prod(v["kernel"].shape)) for v in p.values()]),
              jnp.asarray([float(v["kernel"].shape[-1]) for v in p.values()]))
      f = _pair_stats(padded, x, kind, a, dims)
      for l, name in enumerate(pc.weight_layers(cfg)):
        np.testing.assert_allclose(f[l, 0], hs.factor_pairs(us[f"{name}/kernel"]), rtol=RTOL)
        np.testing.assert_allclose(f[l, 1], hs.factor_pairs(us[f"{name}/bias"]), rtol=RTOL)

  @pytest.mark.slow
  def test_padded_draws_match_unpadded_draws_in_expectation(self):
    """exact_round in the padded shape (masks, traced stds and sizes) and in the LeNet's own shape: different
    random numbers, the same expectation. 1024 draws each; tolerance 4 combined SE per layer and batch size."""
    cfg = _config((3, 2), (9, 6))
    self.assertEqual(cp.padded_config(cfg).channels, (4, 4))
    a = jnp.asarray(losses.quadratic_factor(losses.random_quadratic(jax.random.PRNGKey(0), 10)), jnp.float32)
    draw = lambda key, pad: cp.exact_round(cfg, SCHEMES["fan_out"], "quadratic", key, draws=256, examples=3, a_q=a,
                                           pad=pad)[0]
    st_p = np.concatenate([draw(jax.random.PRNGKey(i), True) for i in range(4)])
    st_u = np.concatenate([draw(jax.random.PRNGKey(10 + i), False) for i in range(4)])
    for b in (1, 64):
      (mp, sp, _), (mu, su, _) = (pairs.plain_mean(pairs.combine(st, b)[0]) for st in (st_p, st_u))
      self.assertTrue(np.all(np.abs(mp - mu) < 4 * np.hypot(sp, su)), (b, mp, mu, sp, su))


class PredictionTest(chex.TestCase):

  @pytest.mark.slow
  def test_last_layer_prediction_against_exact_and_its_one_approximation(self):
    """Last layer (linear in its own weights, M = H = Q exactly): exact s = E||x||^4 tr(Q^2) / (n n_L); the
    leading-order prediction replaces E||x||^4 by (E||x||^2)^2 with E||x||^2 from the calculus's conv rules.
    So predicted * R / S^2 must equal exact, and predicted S must equal the measured E||x||^2, with R and S
    measured on independent forward draws. Tolerance: 4 standard errors of each Monte-Carlo side."""
    cfg = _config((4, 3), (12, 8))
    # The exact side as the experiment measures it (4 rounds of 256 draws of 3 examples, plain mean at batch 1).
    kq, kr = jax.random.split(jax.random.PRNGKey(3))
    q = losses.random_quadratic(kq, 10, jnp.float32)
    a = jnp.asarray(losses.quadratic_factor(q), jnp.float32)
    st = np.concatenate([cp.exact_round(cfg, SCHEMES["geometric"], "quadratic", jax.random.fold_in(kr, i), draws=256,
                                        examples=3, a_q=a)[0] for i in range(4)])
    exact = pairs.plain_mean(pairs.combine(st, 1)[0])
    wsq = pc.weight_sq(cfg, SCHEMES["geometric"])
    batch1_w = pc.predict_lenet(cfg, wsq, pc.image_input_stats(cfg), predict.constant_loss_stats(q), 1,
                                corrected=False).weight

    def last_input_sq_norm(key):
      kp, kx = jax.random.split(key)
      p = lenet.init_lenet(kp, cfg, SCHEMES["geometric"])
      h = lenet.apply_lenet({k: v for k, v in p.items() if k != "dense2"}, jax.random.normal(kx, (1, 8, 8, 1)))
      return jnp.sum(jax.nn.relu(h) ** 2)  # apply_lenet's last remaining layer (dense1) is linear: add its ReLU

    sq = np.asarray(jax.vmap(last_input_sq_norm)(jax.random.split(jax.random.PRNGKey(9), 20000)), np.float64)
    s_mean, s_se = sq.mean(), sq.std(ddof=1) / np.sqrt(sq.size)
    pred = pc.predict_lenet(cfg, wsq, pc.image_input_stats(cfg), predict.constant_loss_stats(np.eye(10)), 1)
    n = cfg.hidden[-1]
    s_pred = float(np.sqrt(pred.weight[-1] * n * cfg.n_out / 10.0))  # tr(I^2) = 10: s = S^2 tr(Q^2) / (n n_L)
    self.assertLess(abs(s_pred - s_mean), 4 * s_se)
    r_over_s2 = (sq ** 2).mean() / s_mean ** 2
    ratio = float(exact.mean[-1] / batch1_w[-1])
    rel_se = float(exact.stderr[-1] / exact.mean[-1])
    self.assertGreater(r_over_s2, 1.05)  # the approximation is visible, so the check below can fail
    self.assertLess(abs(ratio - r_over_s2), 4 * rel_se * ratio + 4 * np.std(sq ** 2) / np.sqrt(sq.size) / s_mean ** 2)

  def test_prediction_grows_with_batch_only_through_cross_terms(self):
    cfg = lenet.LeNetConfig((8, 8, 1), (6, 16), ((2, 2), (2, 2)), (120, 84), 10)
    wsq = pc.weight_sq(cfg, "geometric:c=2")
    ls, ins = predict.constant_loss_stats(np.eye(10)), pc.image_input_stats(cfg)
    p1 = pc.predict_lenet(cfg, wsq, ins, ls, 1)
    pb = pc.predict_lenet(cfg, wsq, ins, ls, 1024, corrected=False)
    np.testing.assert_allclose(pb.weight, p1.weight / 1024, rtol=1e-12)
    self.assertTrue(np.all(pc.predict_lenet(cfg, wsq, ins, ls, 1024).weight > pb.weight))
    with self.assertRaisesRegex(ValueError, "one finite"):
      pc.predict_lenet(cfg, wsq[:-1], ins, ls, 1)


class MemoryTest(chex.TestCase):

  def test_too_big_conv_block_is_refused_with_an_estimate(self):
    # The refusals come before any compute and read shapes only: zeros of _problem's shapes (drawing them took
    # 5 s CPU, XLA compiling the float64 random draws).
    with jax.enable_x64(True):
      k = jax.random.PRNGKey(0)
      p, x, t = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(lambda: (
          lenet.init_lenet(k, TINY, "he_normal", dtype=jnp.float64), jax.random.normal(k, (6, 4, 4, 1), jnp.float64),
          losses.random_targets(k, "xent", 6, 3, jnp.float64))))
      q = jnp.eye(3, dtype=jnp.float64)
    with self.assertRaisesRegex(ValueError, r"diagonal block of 'conv1/kernel' needs about .*GiB"):
      hs.diagonal_block(lenet.apply_lenet, "quadratic", p, x, t, q, name="conv1/kernel", max_bytes=1000)
    with self.assertRaisesRegex(ValueError, "unknown leaf"):
      hs.block_bytes(p, "conv9/kernel")
    with self.assertRaisesRegex(ValueError, r"Gauss-Newton factors .*needs about .*GiB"):
      hs.factor_diagonal_sq_sv(lenet.apply_lenet, "quadratic", p, x, t, q, max_bytes=1000)
    with self.assertRaisesRegex(ValueError, "needs about"):
      cp.exact_round(_config((16, 16), (128, 128)), SCHEMES["xavier"], "quadratic", jax.random.PRNGKey(0), draws=4096,
                     examples=8, a_q=jnp.eye(10))
    with self.assertRaisesRegex(ValueError, "not a normal initializer"):
      cp.exact_round(_config((2, 2), (4, 4)), "he_uniform", "quadratic", jax.random.PRNGKey(0), draws=2, examples=2,
                     a_q=jnp.eye(10))

  @pytest.mark.slow   # 512 probes through the LeNet
  def test_hutchinson_on_a_conv_block_agrees_with_the_exact_block(self):
    """Matrix-free where a block is too big to form: Hutchinson's estimate within 4 SE of the exact value."""
    p, x, t, q, blk = _exact("xent")
    names = hs.leaf_names(p)
    i = names.index("conv1/kernel")
    p32 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), p)
    est = hutchinson.block_sq_sv(_loss("xent", jnp.asarray(q, jnp.float32)), p32,
                                 (jnp.asarray(x, jnp.float32), jnp.asarray(t, jnp.float32)), i, jax.random.PRNGKey(0),
                                 num_probes=512)
    self.assertLess(abs(float(est.mean) - float(hs.sq_sv(blk[i][i]))), 4 * float(est.stderr))

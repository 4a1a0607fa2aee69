"""The predicted response of a ReLU MLP's activations to its first SGD / Adam step (calculus/update_response.py)
against a Monte Carlo over init draws of the same network on the same minibatch, and its closed forms against
sampling. Tolerances: 3 Monte-Carlo standard errors plus a stated relative allowance for what the
infinite-width prediction leaves at width 256 (dev runs on other data seeds: first-order terms within 5%)."""
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jscale.calculus import update_response as ur

B, D, C, WIDTH, DRAWS = 32, 16, 5, 256, 200


def _data(seed=7):
  rng = np.random.default_rng(seed)
  centres = rng.standard_normal((C, D))
  y = rng.integers(0, C, B)
  return centres[y] + 0.7 * rng.standard_normal((B, D)), y


def _forward(ws, x):
  out, h = [], x
  for i, w in enumerate(ws):
    h = h @ w
    if i < len(ws) - 1:
      h = jax.nn.relu(h)
    out.append(h)
  return out


@functools.lru_cache(maxsize=None)
def _monte_carlo(optimizer: str, lr: float):
  """Per layer over DRAWS He inits: (mean, SE) of E[h^2] before and after one step, of the first-order 2E[h.dh]
  (a JVP along the update) and E[dh^2]."""
  x, y = _data()
  X, Y = jnp.asarray(x, jnp.float32), jnp.asarray(y)
  widths = (D, WIDTH, WIDTH, C)

  def loss(ws):
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(_forward(ws, X)[-1], Y))

  def one(key):
    ws = [jax.random.normal(k, (a, b)) * jnp.sqrt(2.0 / a)
          for k, a, b in zip(jax.random.split(key, 3), widths[:-1], widths[1:])]
    g = jax.grad(loss)(ws)
    u = [-lr * (gi if optimizer == "sgd" else jnp.sign(gi)) for gi in g]
    h0, h1 = _forward(ws, X), _forward([w + d for w, d in zip(ws, u)], X)
    _, dh = jax.jvp(lambda v: _forward(v, X), (ws,), (u,))
    ms = lambda hs: jnp.stack([jnp.mean(h * h) for h in hs])   # noqa: E731
    return ms(h0), ms(h1), jnp.stack([2 * jnp.mean(a * b) for a, b in zip(h0, dh)]), ms(dh), ms(u)

  with jax.default_matmul_precision("highest"):
    res = jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(1), DRAWS))
  return {n: (np.asarray(r, np.float64).mean(0), np.asarray(r, np.float64).std(0, ddof=1) / np.sqrt(DRAWS))
          for n, r in zip(("act0", "act1", "cross", "change", "upd_sq"), res)}


def _predict(optimizer, lr, **kw):
  x, y = _data()
  return ur.first_step(x, y, [WIDTH, WIDTH, C], [2 / D, 2 / WIDTH, 2 / WIDTH], [lr] * 3, optimizer, **kw)


def _close(meas, pred, rel):
  m, se = meas
  return np.abs(m - pred) <= 3 * se + rel * np.abs(pred)


class UpdateResponseTest(chex.TestCase):

  def test_sgd_first_order_terms(self):
    """SGD's cross term 2E[h0.dh] and E[dh^2] per layer, first order (the JVP) against the prediction without
    the second-order correction: within 3 SE + 10%."""
    mc, pr = _monte_carlo("sgd", 0.1), _predict("sgd", 0.1, second_order=False)
    for name in ("cross", "change"):
      self.assertTrue(np.all(_close(mc[name], getattr(pr, name), 0.10)), (name, mc[name], getattr(pr, name)))
    # the cross term is what the update-on-top prediction left out: negative, and beyond the allowance
    self.assertTrue(np.all(mc["cross"][0] + 3 * mc["cross"][1] < 0))
    self.assertFalse(np.all(_close(mc["act1"], pr.act0 + pr.change, 0.10)))

  def test_sgd_update_size(self):
    """The first SGD update's mean square per kernel, lr^2 E|grad|^2 from the kernels over example pairs (the
    transfer coordinate check's prediction for dense stacks): within 3 SE + 5% (the mean of the draws' mean
    squares, SE ~1-2% here)."""
    mc, pr = _monte_carlo("sgd", 0.1), _predict("sgd", 0.1)
    self.assertTrue(np.all(_close(mc["upd_sq"], pr.update_rms ** 2, 0.05)), (mc["upd_sq"], pr.update_rms ** 2))

  def test_sgd_after_step(self):
    """E[h^2] after the step (the real one, not the JVP): within 3 SE + 10% at lr 0.1, where the logits grow
    ~8x (the second-order term dW^T dx brings the logits' prediction from 10% to 3% over here)."""
    mc, pr = _monte_carlo("sgd", 0.1), _predict("sgd", 0.1)
    self.assertTrue(np.all(_close(mc["act0"], pr.act0, 0.05)), (mc["act0"], pr.act0))
    self.assertTrue(np.all(_close(mc["act1"], pr.act1, 0.10)), (mc["act1"], pr.act1))

  def test_adam_after_step(self):
    """Adam's first step (lr sign(g)): E[dh^2] within 3 SE + 15% and E[h^2] after the step within 3 SE + 12%.
    Its cross term is 10-25% too large in magnitude (not asserted: docs/calculus.md, *After the first step*)."""
    mc, pr = _monte_carlo("adam", 0.005), _predict("adam", 0.005)
    self.assertTrue(np.all(_close(mc["change"], pr.change, 0.15)), (mc["change"], pr.change))
    self.assertTrue(np.all(_close(mc["act1"], pr.act1, 0.12)), (mc["act1"], pr.act1))

  def test_unit_response_is_the_first_order_change_per_unit_lr(self):
    """`unit_response` (every layer at learning rate 1) against the JVP's sqrt(E[dh^2] / E[h^2]) / lr of the
    Monte Carlo above: SGD within 10%, Adam within 15% (the allowances above; the ratio of two means, each
    within 3 SE of ~1%)."""
    x, y = _data()
    for opt, lr, rel in (("sgd", 0.1, 0.10), ("adam", 0.005, 0.15)):
      mc = _monte_carlo(opt, lr)
      meas = np.sqrt(mc["change"][0] / mc["act0"][0]) / lr
      pred = ur.unit_response(x, y, [WIDTH, WIDTH, C], [2 / D, 2 / WIDTH, 2 / WIDTH], [1.0] * 3, opt)
      chex.assert_shape(pred, (3,))
      np.testing.assert_allclose(pred, meas, rtol=rel, err_msg=opt)


def test_closed_forms_against_sampling():
  """The arc-cosine map, the two- and three-unit orthant probabilities against 200k Gaussian samples
  (SE ~ 0.002 on probabilities; tolerance 0.01), and E[z . g] against Stein's identity K E[1 - |p|^2]."""
  rng = np.random.default_rng(0)
  a = rng.standard_normal((3, 3))
  k = a @ a.T + 0.5 * np.eye(3)
  ys = rng.multivariate_normal(np.zeros(3), k, 200_000)
  h = np.maximum(ys, 0)
  np.testing.assert_allclose(ur.relu_kernel(k, 1), h.T @ h / len(h), rtol=0.02)
  pos = ys > 0
  np.testing.assert_allclose(ur.both_active(k), pos.T.astype(float) @ pos / len(pos), atol=0.01)
  np.testing.assert_allclose(ur.all_three_active(k)[0, 1, 2], np.mean(pos.all(1)), atol=0.01)
  kz = np.diag([4.0, 1.0])
  _, zg = ur.logit_moments(kz * 10, np.array([0, 3]), 10, samples=20_000)
  z = rng.standard_normal((20_000, 2, 10)) * np.sqrt(np.diag(kz))[None, :, None]
  p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
  stein = np.diag(kz) * np.mean(1 - np.sum(p * p, -1), 0)
  np.testing.assert_allclose(zg, stein, rtol=0.05)


def test_bad_input():
  x, y = _data()
  with pytest.raises(ValueError, match="optimizer"):
    ur.first_step(x, y, [8, 5], [0.1, 0.1], [0.1, 0.1], "rmsprop")
  with pytest.raises(ValueError, match="one entry per weight layer"):
    ur.first_step(x, y, [8, 5], [0.1], [0.1, 0.1], "sgd")
  with pytest.raises(ValueError, match="labels"):
    ur.first_step(x, y[:3], [8, 5], [0.1, 0.1], [0.1, 0.1], "sgd")
  with pytest.raises(ValueError, match="labels must be integers"):
    ur.first_step(x, y + 5, [8, 5], [0.1, 0.1], [0.1, 0.1], "sgd")
  with pytest.raises(ValueError, match="w_sq"):
    ur.first_step(x, y, [8, 5], [0.1, 0.0], [0.1, 0.1], "sgd")

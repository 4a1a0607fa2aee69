"""A battery of bad inputs to `calculus.inspect`, each refused before the measurement with jscale's own error
naming the input, and of valid but unusual models (constant operands) that must give their numbers.

Each case names what the error message must contain, so a case fails if the error changes type, loses the
input's name, or stops being raised.
"""
from __future__ import annotations

import math

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jscale import calculus


def _params(d_in=3, h=16, d_out=4):
  return {"w1": jax.random.normal(jax.random.PRNGKey(0), (d_in, h)) / math.sqrt(d_in),
          "w2": jax.random.normal(jax.random.PRNGKey(1), (h, d_out)) / math.sqrt(h)}


def _mlp(p, x):
  return jax.nn.relu(x @ p["w1"]) @ p["w2"]


X = jax.random.normal(jax.random.PRNGKey(2), (8, 3))


def _with(tree, path, value):
  out = dict(tree)
  out[path] = out[path].at[0, 0].set(value)
  return out


def _centred(p, x):
  h = x @ p["w1"]
  return jax.nn.relu(h - h.mean(0)) @ p["w2"]


class _BN(nn.Module):
  @nn.compact
  def __call__(self, x):
    h = nn.Dense(16)(x)
    h = nn.BatchNorm(use_running_average=False)(h)
    return nn.Dense(4)(nn.relu(h))


def _bn_case():
  m = _BN()
  v = m.init(jax.random.PRNGKey(0), X)
  return (lambda v_, x_: m.apply(v_, x_, mutable=["batch_stats"])[0]), v, X


# (name, apply_fn, params, x, kwargs, error type, regex the message must match)
BAD = [
    ("nan in x", _mlp, _params(), X.at[3, 1].set(jnp.nan), {}, ValueError, r"x must be finite.*NaN"),
    ("inf in x", _mlp, _params(), X.at[0, 0].set(jnp.inf), {}, ValueError, r"x must be finite.*inf"),
    ("nan in a leaf", _mlp, _with(_params(), "w2", jnp.nan), X, {}, ValueError, r"leaf 'w2' must be finite"),
    ("-inf in a leaf", _mlp, _with(_params(), "w1", -jnp.inf), X, {}, ValueError, r"leaf 'w1' must be finite.*inf"),
    ("batch statistics h - h.mean(0)", _centred, _params(), X, {}, ValueError, r"examples interact"),
    ("flax BatchNorm, mutable batch_stats", *_bn_case(), {}, ValueError, r"examples interact.*BatchNorm"),
    ("a loss that raises", _mlp, _params(), X, {"loss": lambda out: out["no such key"]}, ValueError,
     r"loss\(outputs\) failed.*(TypeError|IndexError)"),
    ("a loss returning integers", _mlp, _params(), X,
     {"loss": lambda out: jnp.argmax(out, axis=1)}, TypeError, r"loss must return real floating-point.*int"),
    ("a loss returning complex", _mlp, _params(), X,
     {"loss": lambda out: jnp.sum(out, 1) * 1j}, TypeError, r"loss must return real.*complex"),
    ("a loss of the wrong shape", _mlp, _params(), X, {"loss": lambda out: jnp.sum(out)}, ValueError,
     r"per-example losses of shape \(8,\)"),
    ("a loss that is not callable", _mlp, _params(), X, {"loss": 3}, ValueError, r"loss must be a callable"),
    ("apply_fn not callable", "f", _params(), X, {}, ValueError, r"apply_fn must be callable"),
    ("apply_fn that raises", lambda p, x: p["nope"], _params(), X, {}, ValueError, r"apply_fn\(params, x\) failed"),
    ("integer x", _mlp, _params(), jnp.ones((8, 3), jnp.int32), {}, ValueError, r"x must be a float batch"),
    ("x without a batch axis", _mlp, _params(), jnp.ones(3), {}, ValueError, r"x must be a float batch"),
    ("no float leaves", _mlp, {"w1": jnp.ones((3, 4), jnp.int32)}, X, {}, ValueError, r"no float leaves"),
    ("scalar output", lambda p, x: jnp.sum(_mlp(p, x)), _params(), X, {}, ValueError, r"batch axis first"),
    ("target_std nan", _mlp, _params(), X, {"target_std": float("nan")}, ValueError, r"target_std"),
    ("target_std 0", _mlp, _params(), X, {"target_std": 0.0}, ValueError, r"target_std"),
    ("a bad key", _mlp, _params(), X, {"key": 3}, (ValueError, TypeError), r"key"),
    ("a model tied to its batch size", lambda p, x: _mlp(p, x.reshape(8, 3)), _params(), X, {}, ValueError,
     r"failed on the first 4 examples.*any batch size"),
    ("memory limit", _mlp, _params(), X, {"memory_limit": 100}, ValueError, r"bytes"),
]


@pytest.mark.parametrize("name,fn,params,x,kwargs,err,msg", BAD, ids=[c[0] for c in BAD])
def test_bad_input_is_refused_naming_it(name, fn, params, x, kwargs, err, msg):
  with pytest.raises(err, match=msg):
    calculus.inspect(fn, params, x, **kwargs)


class ConstantOperandsTest(chex.TestCase):
  """Constant arrays inside the model are valid models (this crashed: `dict(graph.consts, **const_vals)` with
  integer keys). Each is checked against an equivalent model without the constant: the same function of the
  parameters, so the same measured G to float rounding."""

  def setUp(self):
    super().setUp()
    self.p = _params(3, 64, 4)
    self.x = jax.random.normal(jax.random.PRNGKey(3), (32, 3))

  def _rows(self, fn, x=None, p=None):
    res = calculus.inspect(fn, self.p if p is None else p, self.x if x is None else x)
    return {r.path: r for r in res.layers}

  def test_a_constant_input_scale_equals_the_prescaled_input(self):
    c = jnp.array([1., 2., 3.])
    got = self._rows(lambda p, x: _mlp(p, x * c))
    ref = self._rows(_mlp, x=self.x * c)
    for k in ("w1", "w2"):
      np.testing.assert_allclose(got[k].G_meas, ref[k].G_meas, rtol=1e-5)  # same gradients, float rounding
      self.assertIsNotNone(got[k].G_pred, k)
    # The rule scales E[x^2] by E[c^2] (features assumed alike); on x ~ N(0, 1) that is the prescaled input's
    # E[(x c)^2] up to the sampling error of 32 x 3 squares (rel. s.d. ~ sqrt(2/96) * 1.2): allow 4 s.d.
    np.testing.assert_allclose(got["w1"].G_pred, ref["w1"].G_pred, rtol=0.6)

  def test_a_fixed_dropout_mask_equals_masked_weights(self):
    mask = jax.random.bernoulli(jax.random.PRNGKey(5), 0.5, (64,)) / 0.5

    def drop(p, x):
      return (jax.nn.relu(x @ p["w1"]) * jax.random.bernoulli(jax.random.PRNGKey(5), 0.5, (64,)) / 0.5) @ p["w2"]

    got = self._rows(drop)
    # Folding the mask into w1's columns (relu is positively homogeneous; mask >= 0) gives the same function.
    p2 = {"w1": self.p["w1"] * mask, "w2": self.p["w2"]}
    ref = self._rows(_mlp, p=p2)
    np.testing.assert_allclose(got["w2"].G_meas, ref["w2"].G_meas, rtol=1e-5)
    for k in ("w1", "w2"):
      self.assertIsNone(got[k].reason, k)
      self.assertTrue(math.isfinite(got[k].G_pred) and got[k].G_pred > 0, k)

  def test_a_linspace_multiplier_equals_scaled_weights(self):
    c = jnp.linspace(0.5, 1.5, 64)
    got = self._rows(lambda p, x: (jax.nn.relu(x @ p["w1"]) * c) @ p["w2"])
    ref = self._rows(_mlp, p={"w1": self.p["w1"], "w2": self.p["w2"] * c[:, None]})
    np.testing.assert_allclose(got["w1"].G_meas, ref["w1"].G_meas, rtol=1e-5)
    for k in ("w1", "w2"):
      self.assertTrue(math.isfinite(got[k].G_pred) and got[k].G_pred > 0, k)

  def test_a_batch_size_dependent_mask_is_not_refused(self):
    # A mask of the batch's shape depends on the batch size, not on the other examples' values.
    def drop(p, x):
      h = jax.nn.relu(x @ p["w1"])
      return (h * jax.random.bernoulli(jax.random.PRNGKey(5), 0.5, h.shape)) @ p["w2"]

    res = calculus.inspect(drop, self.p, self.x)
    self.assertEqual(len(res.layers), 2)

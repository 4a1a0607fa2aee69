"""`jscale.optim.scale_by_prescription`: against hand-written per-leaf scaled SGD and Adam updates, on plain,
Flax linen and nnx parameter trees."""
import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl.testing import absltest
from flax import nnx

from jscale import mlp, optim


def _loss(params, x):
  return jnp.sum(jnp.square(mlp.apply_mlp(params, x)))


def _setup():
  params = mlp.init_mlp(jax.random.key(0), (5, 7, 3), "he_normal", "normal:0.1")
  x = jax.random.normal(jax.random.key(1), (4, 5))
  return params, x, None


class ScaleByPrescriptionTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_sgd_equals_hand_written_per_leaf_step(self):
    params, x, _ = _setup()
    leaves, treedef = jax.tree.flatten(params)
    factors = [2.0, 1.0, 0.25, 3.0][:len(leaves)]   # one per leaf, None for 1 where it is 1.0
    mult = jax.tree.unflatten(treedef, [None if f == 1.0 else f for f in factors])
    lr = 0.1
    tx = optim.sgd(lr, mult)
    g = jax.grad(_loss)(params, x)
    upd, _ = self.variant(tx.update)(g, tx.init(params), params)
    # Hand-written: each leaf moves by -lr * factor * its gradient.
    want = [-lr * f * np.asarray(gl) for f, gl in zip(factors, jax.tree.leaves(g))]
    for u, w in zip(jax.tree.leaves(upd), want):
      np.testing.assert_allclose(np.asarray(u), w, rtol=1e-6, atol=1e-8)   # float32 products: rounding only

  @chex.variants(with_jit=True, without_jit=True)
  def test_adam_equals_hand_written_two_steps(self):
    params, x, _ = _setup()
    leaves, treedef = jax.tree.flatten(params)
    factors = np.linspace(0.5, 2.0, len(leaves))
    mult = jax.tree.unflatten(treedef, [float(f) for f in factors])
    lr, b1, b2, eps = 1e-2, 0.9, 0.999, 1e-8
    tx = optim.adam(lr, mult)
    state = tx.init(params)
    p = params
    m = [np.zeros_like(l) for l in leaves]
    v = [np.zeros_like(l) for l in leaves]
    hand = [np.asarray(l, np.float64) for l in leaves]
    for t in (1, 2):
      g = jax.grad(_loss)(p, x)
      upd, state = self.variant(tx.update)(g, state, p)
      p = optax.apply_updates(p, upd)
      gh = jax.tree.leaves(jax.grad(_loss)(jax.tree.unflatten(treedef, [jnp.asarray(h, jnp.float32)
                                                                         for h in hand]), x))
      for i, gi in enumerate(gh):
        gi = np.asarray(gi, np.float64)
        m[i] = b1 * m[i] + (1 - b1) * gi
        v[i] = b2 * v[i] + (1 - b2) * gi * gi
        mh, vh = m[i] / (1 - b1 ** t), v[i] / (1 - b2 ** t)
        hand[i] = hand[i] - factors[i] * lr * mh / (np.sqrt(vh) + eps)
    for got, want in zip(jax.tree.leaves(p), hand):
      np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)   # float32 vs float64 Adam

  def test_flax_linen_and_nnx_trees(self):
    model = nn.Dense(3)
    variables = model.init(jax.random.key(0), jnp.ones((1, 4)))
    mult = {"params": {"kernel": 0.5, "bias": None}}
    tx = optim.sgd(1.0, mult)
    g = jax.tree.map(jnp.ones_like, variables)
    upd, _ = tx.update(g, tx.init(variables), variables)
    np.testing.assert_array_equal(upd["params"]["kernel"], -0.5 * np.ones((4, 3)))
    np.testing.assert_array_equal(upd["params"]["bias"], -np.ones(3))
    layer = nnx.Linear(4, 3, rngs=nnx.Rngs(0))
    state = nnx.state(layer, nnx.Param)
    mult = jax.tree.map(lambda a: 2.0 if a.ndim == 2 else None, state)
    tx = optim.sgd(1.0, mult)
    g = jax.tree.map(jnp.ones_like, state)
    upd, _ = tx.update(g, tx.init(state), state)
    np.testing.assert_array_equal(upd["kernel"].value, -2.0 * np.ones((4, 3)))
    np.testing.assert_array_equal(upd["bias"].value, -np.ones(3))

  def test_traced_multipliers_under_vmap(self):
    params, x, _ = _setup()
    g = jax.grad(_loss)(params, x)
    leaves, treedef = jax.tree.flatten(params)

    def step(s):
      tx = optim.sgd(1.0, jax.tree.unflatten(treedef, [s] * len(leaves)))
      return tx.update(g, tx.init(params), params)[0]

    out = jax.vmap(step)(jnp.array([1.0, 3.0]))
    for u, gl in zip(jax.tree.leaves(out), jax.tree.leaves(g)):
      np.testing.assert_allclose(u[1], 3.0 * u[0], rtol=1e-6)
      np.testing.assert_allclose(u[0], -gl, rtol=1e-6)

  def test_bad_multipliers_refused_at_init(self):
    params, _, _ = _setup()
    with self.assertRaisesRegex(ValueError, "does not match"):
      optim.scale_by_prescription({"a": 1.0}).init(params)
    leaves, treedef = jax.tree.flatten(params)
    with self.assertRaisesRegex(ValueError, "scalar"):
      optim.scale_by_prescription(jax.tree.unflatten(treedef, [jnp.ones(2)] * len(leaves))).init(params)


if __name__ == "__main__":
  absltest.main()

"""`HParams.lr_scale`: per-kernel learning-rate multipliers inside `make_train` (traced, vmappable)."""
import jax
import jax.numpy as jnp
import numpy as np

from jscale import datasets, models, train as T


def _bias_free_model():
  def init(key):
    k0, k1 = jax.random.split(key)
    return {"w0": jax.random.normal(k0, (2, 16)) / 2, "w1": jax.random.normal(k1, (16, 2)) / 4}

  def apply(p, x):
    return jax.nn.relu(x @ p["w0"]) @ p["w1"]

  return models.Model.from_functions(init, apply, (2,), name="nobias")


def test_lr_scale_is_a_per_kernel_learning_rate():
  data = datasets.to_device(datasets.get("two_moons", seed=0))
  spec = T.TrainSpec(model=_bias_free_model(), kernel_inits=("he_normal",), optimizer="sgd", epochs=3, batch_size=64)
  train = jax.jit(jax.vmap(T.make_train(spec), in_axes=(0, 0, None)))
  keys = jnp.stack([jax.random.key(0)] * 4)
  hp = T.stack_hparams([T.hparams(spec, lr=0.1, lr_scale=(1.0, 1.0)),
                        T.hparams(spec, lr=0.05, lr_scale=(2.0, 2.0)),     # the same per-kernel rates
                        T.hparams(spec, lr=0.1, lr_scale=(1.0, 0.0)),      # output layer frozen
                        T.hparams(spec, lr=0.1, lr_scale=(0.0, 0.0))])     # nothing moves
  m = train(keys, hp, data)
  # no biases: rate 0.05 x 2 is rate 0.1 x 1 (float32 rounding of the products only)
  np.testing.assert_allclose(m.train_loss[1], m.train_loss[0], rtol=1e-5)
  assert not np.allclose(m.train_loss[2], m.train_loss[0], rtol=1e-3)
  # all multipliers 0: every epoch's loss is the initial network's (each epoch's minibatches differ, so
  # compare the full-split pass: the test loss)
  np.testing.assert_array_equal(m.test_loss[3], np.full_like(m.test_loss[3], m.test_loss[3][0]))
  # None (the default) is the program without multipliers: equal to lr_scale ones
  base = jax.jit(T.make_train(spec))(jax.random.key(0), T.hparams(spec, lr=0.1), data)
  np.testing.assert_allclose(base.train_loss, m.train_loss[0], rtol=1e-6)

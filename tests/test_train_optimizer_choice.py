"""`TrainSpec(optimizer=("sgd", "adam"))` with `HParams.optimizer_index`: both optimizers in one program
(`jscale.optim.choose`), each row's numbers those of its own optimizer's program."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jscale import datasets, optim, train as T


class ChooseTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_the_chosen_update_is_the_candidates_own(self):
    params = {"w": jnp.array([[0.5, -1.0], [2.0, 0.25]]), "b": jnp.array([0.1, -0.2])}
    grads = {"w": jnp.array([[1e-3, -2.0], [0.3, 4.0]]), "b": jnp.array([-0.5, 1e-4])}
    cands = [optax.sgd(0.1), optax.adam(0.01)]
    for i, tx in enumerate(cands):
      want, _ = self.variant(lambda g, p, tx=tx: tx.update(g, tx.init(p), p))(grads, params)
      ch = optim.choose(jnp.int32(i), cands)
      got, _ = self.variant(lambda g, p: ch.update(g, ch.init(p), p))(grads, params)
      # a select of the candidate's own arithmetic, compiled alike: bit for bit (the candidates' updates
      # differ by orders of magnitude)
      chex.assert_trees_all_equal(got, want)

  def test_no_candidates_refused(self):
    with pytest.raises(ValueError, match="at least one"):
      optim.choose(0, [])


@pytest.mark.slow   # three training programs compiled (~5 s on an idle core); the transfer experiment's runs use it
def test_one_program_matches_each_optimizers_own():
  data = datasets.to_device(datasets.get("two_moons", seed=0))
  both = T.TrainSpec(widths=(2, 16, 2), kernel_inits=("he_normal",), optimizer=("sgd", "adam"), epochs=3,
                     batch_size=64)
  keys = jnp.stack([jax.random.key(0), jax.random.key(1)])
  hp = T.stack_hparams([T.hparams(both, lr=0.1, optimizer_index=0), T.hparams(both, lr=0.01, optimizer_index=1)])
  m = jax.jit(jax.vmap(T.make_train(both), in_axes=(0, 0, None)))(keys, hp, data)
  for row, (name, lr) in enumerate([("sgd", 0.1), ("adam", 0.01)]):
    spec = T.TrainSpec(widths=(2, 16, 2), kernel_inits=("he_normal",), optimizer=name, epochs=3, batch_size=64)
    own = jax.jit(T.make_train(spec))(keys[row], T.hparams(spec, lr=lr), data)
    # the same operations on the same numbers: equal up to XLA's fusion of the select (measured bitwise on the
    # transfer experiment; 1e-6 leaves room for a reordered reduction)
    np.testing.assert_allclose(m.train_loss[row], own.train_loss, rtol=1e-6)
    np.testing.assert_allclose(m.grad_norm[row], own.grad_norm, rtol=1e-6)
  assert not np.allclose(m.train_loss[0], m.train_loss[1], rtol=1e-2)   # the rows did train differently


def test_bad_optimizer_choices_refused():
  with pytest.raises(ValueError, match="distinct"):
    T.TrainSpec(optimizer=("sgd", "sgd"))
  with pytest.raises(ValueError, match="optimizer"):
    T.TrainSpec(optimizer=("sgd", "lion"))
  both = T.TrainSpec(optimizer=("sgd", "adam"))
  with pytest.raises(ValueError, match="out of range"):
    T.hparams(both, optimizer_index=2)
  with pytest.raises(ValueError, match="tuple of candidate"):
    T.hparams(T.TrainSpec(optimizer="sgd"), optimizer_index=0)

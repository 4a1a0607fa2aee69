"""Hidden-unit symmetry: measure it, and show that zeros / constant init never break it.

`unit_spread(params)` is, per hidden layer, the largest difference between any two hidden units' incoming
parameters (weight column and bias): max over input index k of (max_j - min_j) of [W; b][k, j]. It is 0
exactly when all units of the layer have identical incoming weights and biases. `outgoing_spread` does
the same for the units' outgoing weights (rows of the next layer's W). Both 0 = the units are clones.

Why they stay clones under zeros / constant init: identical units compute identical activations, so the
back-propagated gradients of their incoming and outgoing weights are identical too, and an SGD step
keeps them identical. With zeros it is worse: every hidden activation is relu(0) = 0 and every hidden
gradient is 0, so only the output bias learns and the net predicts one class (accuracy = the majority
class rate: chance). With a nonzero constant the net is a width-1 net in disguise: it can learn, but
only a function of ONE projection of the input (monotone through the ReLU chain), i.e. at best a
linear classifier's accuracy -- not chance in general (measured on two moons: see `experiment`).

`make_sgd_loop` is the tiny pure training loop used for this check (PureJaxRL style: `train(key, x, y)` is
pure and jit/vmap-able over keys); the sweep engine runs the full version.

  python scripts/sweep.py --experiment symmetry --grid quick
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jscale import checks, datasets, mlp, train as train_lib
from jscale.sweeps import store
from jscale.sweeps.plan import check_stackable


def unit_spread(params: mlp.Params) -> jax.Array:
  """(L-1,) per hidden layer: max over pairs of hidden units of max |difference| of incoming w and b."""
  if len(params) < 2:
    raise ValueError("unit_spread needs at least one hidden layer (two weight layers)")
  out = []
  for layer in params[:-1]:
    m = jnp.concatenate([layer.w, layer.b[None, :]], axis=0)  # (n_in + 1, n_units)
    out.append(jnp.max(jnp.max(m, axis=1) - jnp.min(m, axis=1)))
  return jnp.stack(out)


def outgoing_spread(params: mlp.Params) -> jax.Array:
  """(L-1,) per hidden layer: max over pairs of its units of max |difference| of their outgoing weights."""
  if len(params) < 2:
    raise ValueError("outgoing_spread needs at least one hidden layer (two weight layers)")
  return jnp.stack([jnp.max(jnp.max(l.w, axis=0) - jnp.min(l.w, axis=0)) for l in params[1:]])


class TrainOut(NamedTuple):
  params: mlp.Params   # after the last step
  loss: jax.Array      # (steps,) minibatch loss before each step
  spread: jax.Array    # (steps + 1, L-1) unit_spread before each step, then after the last


def make_sgd_loop(widths: Sequence[int], kernel_init="he_normal", *, bias_init="zeros", lr: float = 0.1,
               steps: int = 300, batch_size: int = 64, activation: str = "relu"):
  """Returns pure `train(key, x_NxD, y_N) -> TrainOut`: plain SGD on softmax cross-entropy, minibatches
  drawn with replacement from `key`. `lr` may be a traced scalar; widths, inits and steps are static."""
  widths = mlp.check_widths(widths)
  if len(widths) < 3:
    raise ValueError(f"the symmetry check needs a hidden layer: widths {widths}")
  checks.positive_int(steps, "steps")
  checks.positive_int(batch_size, "batch_size")
  mlp.get_activation(activation)

  def loss_fn(params, x_BxD, y_B):
    return train_lib.cross_entropy(mlp.apply_mlp(params, x_BxD, activation), y_B)

  def train(key, x_NxD, y_N) -> TrainOut:
    k_init, k_data = jax.random.split(key)
    return from_params(mlp.init_mlp(k_init, widths, kernel_init, bias_init), k_data, x_NxD, y_N)

  def from_params(params, k_data, x_NxD, y_N) -> TrainOut:
    """The same training from given initial weights and the data key: one program for every init."""

    def step(params, k):
      idx_B = jax.random.randint(k, (batch_size,), 0, x_NxD.shape[0])
      loss, grads = jax.value_and_grad(loss_fn)(params, x_NxD[idx_B], y_N[idx_B])
      new = jax.tree.map(lambda p, g: p - lr * g, params, grads)
      return new, (loss, unit_spread(params))

    params, (loss, spread) = jax.lax.scan(step, params, jax.random.split(k_data, steps))
    return TrainOut(params, loss, jnp.concatenate([spread, unit_spread(params)[None]], 0))

  train.from_params = from_params
  return train


def mlp_accuracy(params: mlp.Params, x, y, activation: str = "relu") -> jax.Array:
  """The MLP's accuracy on (x, y)."""
  return train_lib.accuracy(mlp.apply_mlp(params, x, activation), y)


def chance_accuracy(y_train, y_test) -> float:
  """Accuracy of always predicting the training split's majority class: what a net that cannot use its
  input (zeros init: only the output bias learns) reaches on the test split."""
  majority = np.bincount(np.asarray(y_train)).argmax()
  return float(np.mean(np.asarray(y_test) == majority))


def linear_accuracy(x_train, y_train, x_test, y_test) -> float:
  """Test accuracy of scikit-learn's logistic regression: the reference for a width-1 (constant-init) net,
  which can only threshold one projection of its input."""
  from sklearn.linear_model import LogisticRegression
  clf = LogisticRegression(max_iter=1000).fit(np.asarray(x_train), np.asarray(y_train))
  return float(clf.score(np.asarray(x_test), np.asarray(y_test)))


INITS = ("zeros", "constant:0.1", "he_normal", "glorot_normal")


def experiment(exp_dir: str, seeds: Sequence[int] = (0, 1, 2), inits: Sequence[str] = INITS, *,
               data: str = "two_moons", data_seed: int | None = None, widths_hidden: Sequence[int] = (64, 64),
               lr: float = 0.1, steps: int = 2000, batch_size: int = 64) -> str:
  """Train every init on `data` for every seed (vmapped), write config.json + metrics.npz (the
  results store's format) into `exp_dir`.

  Each seed trains on its own draw of the data (for two moons: its own make_moons sample and 70/30 split;
  data_seed=None follows the seed, an int pins one draw for every seed); the draws are stacked and
  vmapped with the seeds. Chance and the linear classifier are measured on each seed's own split."""
  seeds = [int(s) for s in seeds]
  data_seeds = [s if data_seed is None else int(data_seed) for s in seeds]
  sets = [datasets.get(data, seed=d) for d in data_seeds]
  check_stackable(data, data_seeds, sets)
  ds = sets[0]
  widths = (ds.x_train.shape[1], *widths_hidden, ds.num_classes)
  stack = lambda field: jnp.stack([jnp.asarray(getattr(d, field)) for d in sets])
  x, y, x_test, y_test = stack("x_train"), stack("y_train"), stack("x_test"), stack("y_test")
  keys = jax.vmap(jax.random.key)(jnp.asarray(seeds))
  acc_of = jax.jit(jax.vmap(lambda p, xs, ys: mlp_accuracy(p, xs, ys)))
  losses, spreads, outs, accs, train_accs = [], [], [], [], []
  # One training program for every init (issue 23: compiling one per init was 95% of this experiment's
  # time): the initial weights are drawn per init exactly as `train(key, ...)` draws them, then trained.
  k_init, k_data = jax.vmap(jax.random.split, out_axes=1)(keys)
  from_params = jax.jit(jax.vmap(make_sgd_loop(widths, inits[0], lr=lr, steps=steps,
                                               batch_size=batch_size).from_params))
  for init in inits:
    params = jax.jit(jax.vmap(lambda k: mlp.init_mlp(k, widths, init, "zeros")))(k_init)   # one small program
    out = from_params(params, k_data, x, y)
    losses.append(out.loss)
    spreads.append(out.spread)
    outs.append(jax.vmap(outgoing_spread)(out.params))
    accs.append(acc_of(out.params, x_test, y_test))
    train_accs.append(acc_of(out.params, x, y))
  n_hidden = len(widths) - 2
  spreads = np.stack(spreads)  # (init, seed, steps + 1, layer)
  chance = [chance_accuracy(d.y_train, d.y_test) for d in sets]
  linear = [linear_accuracy(d.x_train, d.y_train, d.x_test, d.y_test) for d in sets]
  store.write_results(
      exp_dir,
      axes={"init": list(inits), "seed": seeds, "step": list(range(steps)),
            "layer": list(range(1, n_hidden + 1))},
      metrics={"loss": (("init", "seed", "step"), np.stack(losses)),
               "spread": (("init", "seed", "step", "layer"), spreads[:, :, :-1]),
               "final_spread": (("init", "seed", "layer"), spreads[:, :, -1]),
               "final_outgoing_spread": (("init", "seed", "layer"), np.stack(outs)),
               "test_acc": (("init", "seed"), np.stack(accs)),
               "train_acc": (("init", "seed"), np.stack(train_accs))},
      experiment="symmetry", data=data, data_source=ds.source, widths=list(widths), lr=lr, steps=steps,
      batch_size=batch_size, seeds=seeds, data_seeds=data_seeds, data_seed_follows_seed=data_seed is None,
      data_fingerprints=[datasets.fingerprint(d) for d in sets],
      # Means over the seeds' own splits (per seed beside them).
      chance_acc=float(np.mean(chance)), chance_acc_per_seed=chance,
      linear_acc=float(np.mean(linear)), linear_acc_per_seed=linear)
  return exp_dir

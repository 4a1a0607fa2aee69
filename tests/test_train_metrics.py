"""Issue 23: the metrics moved off the hot path keep their meaning.

`tests/train_reference.py` is the training loop as it was before (every metric measured on every step, stacked
by the scan and averaged per epoch, the boolean finiteness guard). The engine with `metric_every=1` and
`g_ratio_steps="all"` must give every metric of that per-step definition; the defaults (`g_ratio_steps="last"`)
must change G only, and to G at the epoch's last step; `metric_every=k` must average exactly the steps it
names. The sampled definitions are checked against an independent computation (lr=0 freezes the weights, so
each step's value is a function of its minibatch alone, which the test rebuilds from the documented key use).
"""
import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from jscale import datasets as data_lib, models, train as T
from jscale.calculus.measurement import gradient_to_weight_ratio
from train_reference import make_reference_train

WIDTHS = (2, 16, 16, 2)
# Float32 sums in another order (the scan's running sum vs the mean of the stacked steps; a float count of the
# activation masks vs an integer one): a few ulp per epoch. And the two programs fuse the same update
# differently, so under XLA's default compile options (JSCALE_TEST_XLA_OPT=1) a weight can differ in its last bit,
# which training amplifies: Adam at lr=1 (sigma=2, minibatch 10, 3 epochs) ends 1.5e-5 apart in test loss
# [measured], growing epoch by epoch (epoch 0: 1 ulp). A wrong definition (another step's value, a missing step in
# an average) moves a metric by percents.
RTOL, ATOL = 1e-4, 1e-7


def small_data(n=200, seed=0):
  return data_lib.to_device(data_lib.get("two_moons", n=n, seed=seed))


def run(spec, lrs, sigmas, data, train_fn=T.make_train, seed=0):
  hp = T.stack_hparams([T.hparams(spec, init_scale=s, lr=lr) for lr, s in zip(lrs, sigmas)])
  keys = jax.random.split(jax.random.key(seed), len(lrs))
  return jax.jit(jax.vmap(train_fn(spec), in_axes=(0, 0, None)))(keys, hp, data)


class MetricsMeaningTest(chex.TestCase):

  # Each setting in two of the four cases (a full product doubles the compiles for no new code path).
  @parameterized.parameters((None, "sgd", False), (None, "adam", True), (10, "sgd", True), (10, "adam", False))
  def test_every_metric_equals_the_per_step_definition(self, batch_size, optimizer, train_pass):
    """Stable runs and runs that diverge in various epochs (lr up to 1e30): every metric, NaNs and the
    divergence flag included, is the reference's."""
    data = small_data()
    spec = T.TrainSpec(widths=WIDTHS, optimizer=optimizer, epochs=3, batch_size=batch_size,
                       train_pass=train_pass, saturation_threshold=0.05, metric_every=1, g_ratio_steps="all")
    lrs = [1e-3, 0.1, 1.0, 1e4, 1e12, 1e30]
    sigmas = [0.5, 1.0, 2.0, 1.0, 1.0, 1.0]
    new, ref = run(spec, lrs, sigmas, data), run(spec, lrs, sigmas, data, make_reference_train)
    self.assertTrue(np.asarray(ref.diverged).any() or optimizer == "adam")   # the divergent cases are exercised
    for name in T.Metrics._fields:
      got, want = np.asarray(getattr(new, name)), np.asarray(getattr(ref, name))
      np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=name)
      np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=name)

  @pytest.mark.slow
  def test_the_lenet_path(self):
    """The LeNet path (a `Model`: its reported hidden activations, its per-kernel G). Slow: the default suite
    checks the LeNet's G against a plain loop in tests/models/test_lenet_make_train.py."""
    ds = data_lib.get("digits", seed=0)
    data = data_lib.to_device(ds)
    model = models.get_model("lenet", ds.num_classes, image=(8, 8, 1))
    spec = T.TrainSpec(model=model, kernel_inits=("normal:1",), optimizer="adam", epochs=2, batch_size=64,
                       g_ratio_steps="all")
    new, ref = run(spec, [1e-3], [0.3], data), run(spec, [1e-3], [0.3], data, make_reference_train)
    for name in T.Metrics._fields:
      np.testing.assert_allclose(np.asarray(getattr(new, name)), np.asarray(getattr(ref, name)), rtol=RTOL,
                                 atol=ATOL, err_msg=name)

  # The Adam cases of the test above, with the defaults: the reference ignores metric_every and g_ratio_steps,
  # so its compiled programs are that test's (a cache hit, not a compile each).
  @parameterized.parameters((None, True), (10, False))
  def test_defaults_change_only_g_ratio(self, batch_size, train_pass):
    """The defaults (every step measured, G at the last step): full batch has one step, so G is the
    reference's too; in minibatch mode every other metric is."""
    data = small_data()
    spec = T.TrainSpec(widths=WIDTHS, optimizer="adam", epochs=3, batch_size=batch_size, train_pass=train_pass,
                       saturation_threshold=0.05)
    self.assertEqual((spec.metric_every, spec.g_ratio_steps), (1, "last"))
    lrs, sigmas = [1e-3, 0.1, 1.0, 1e4, 1e12, 1e30], [0.5, 1.0, 2.0, 1.0, 1.0, 1.0]
    new, ref = run(spec, lrs, sigmas, data), run(spec, lrs, sigmas, data, make_reference_train)
    for name in T.Metrics._fields:
      if name == "g_ratio" and batch_size is not None:
        continue
      np.testing.assert_allclose(np.asarray(getattr(new, name)), np.asarray(getattr(ref, name)), rtol=RTOL,
                                 atol=ATOL, err_msg=name)

  @parameterized.parameters((1, "last"), (3, "last"), (3, "all"), (20, "all"))
  def test_sampled_steps_against_an_independent_computation(self, k, g_steps):
    """lr=0: the weights stay at their initial draw, so step s's loss, accuracy, gradient norm and G are
    functions of its minibatch alone. Rebuilt here from the documented key use (split(key) -> init, data;
    split(data, epochs) -> one permutation per epoch; floor(N/B) batches), averaged over the steps
    steps-1, steps-1-k, ... (G: the last step alone with "last")."""
    ds = data_lib.get("two_moons", n=200, seed=1)
    data = data_lib.to_device(ds)
    B, epochs = 16, 2
    spec = T.TrainSpec(widths=WIDTHS, optimizer="sgd", epochs=epochs, batch_size=B, metric_every=k,
                       g_ratio_steps=g_steps)
    key = jax.random.key(7)
    m = jax.jit(T.make_train(spec))(key, T.hparams(spec, init_scale=1.3, lr=0.0), data)
    net = spec.network
    k_init, k_data = jax.random.split(key)
    params = net.map_kernels(lambda l, w: w * 1.3, net.make_draw(spec.kernel_inits)(k_init, jnp.int32(0)))

    def loss(p, x, y):
      logits, _ = net.forward(p, x, 1.0, 1.0)
      return T.cross_entropy(logits, y), logits

    @jax.jit   # one program for every step (eager, op by op, the loop compiled ~150 small programs)
    def step_values(x, y):
      (l, logits), g = jax.value_and_grad(loss, has_aux=True)(params, x, y)
      return (l, T.accuracy(logits, y), jnp.sqrt(sum(jnp.sum(v ** 2) for v in jax.tree.leaves(g))),
              gradient_to_weight_ratio(net.kernels(params), net.kernels(g)))

    n = len(ds.y_train)
    steps = n // B
    picked = list(range(steps - 1, -1, -k))
    for e, ekey in enumerate(jax.random.split(k_data, epochs)):
      idx = np.asarray(jax.random.permutation(ekey, n))[:steps * B].reshape(steps, B)
      per_step = []
      for s in picked:
        l, acc, gn, g_ratio = step_values(data.x_train[idx[s]], data.y_train[idx[s]])
        per_step.append((float(l), float(acc), float(gn), np.asarray(g_ratio)))
      want_loss, want_acc, want_gn = (np.mean([v[i] for v in per_step]) for i in range(3))
      want_g = per_step[0][3] if g_steps == "last" else np.mean([v[3] for v in per_step], axis=0)
      # float32 engine vs the same float32 ops one step at a time: a few ulp.
      np.testing.assert_allclose(float(m.train_loss[e]), want_loss, rtol=1e-5)
      np.testing.assert_allclose(float(m.train_acc[e]), want_acc, rtol=1e-6)
      np.testing.assert_allclose(float(m.grad_norm[e]), want_gn, rtol=1e-5)
      np.testing.assert_allclose(np.asarray(m.g_ratio[e]), want_g, rtol=1e-5)

  def test_sampling_changes_the_measurement_not_the_training(self):
    """The test losses (measured after each epoch, independent of the step metrics) are bitwise the same
    whatever steps the metrics sample: the sampled branches touch no parameter."""
    data = small_data()
    base = T.TrainSpec(widths=WIDTHS, optimizer="adam", epochs=2, batch_size=10)
    runs = [run(dataclasses.replace(base, metric_every=k, g_ratio_steps=g), [1e-2], [1.0], data)
            for k, g in ((1, "all"), (1, "last"), (7, "last"))]
    for other in runs[1:]:
      np.testing.assert_array_equal(np.asarray(other.test_loss), np.asarray(runs[0].test_loss))

  def test_bad_settings(self):
    with self.assertRaisesRegex(ValueError, "metric_every"):
      T.TrainSpec(metric_every=0)
    with self.assertRaisesRegex(ValueError, "g_ratio_steps"):
      T.TrainSpec(g_ratio_steps="first")

"""jscale.train: the pure training loop against an independent numpy reference and per-config runs."""
import math

import chex
import jax
import jax.extend as jex
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from jscale import datasets as data_lib, mlp, train as T
from jscale.sweeps import cost

WIDTHS = (2, 16, 16, 2)


def small_data(n=200, seed=0):
  ds = data_lib.get("two_moons", n=n, seed=seed)
  return ds, data_lib.to_device(ds)


def numpy_reference(key, sigma, lr, epochs, ds, widths, tau):
  """Full-batch SGD written out in float64 numpy with hand-written backprop (no optax, no jax.grad).

  Only the initial weights come from jscale: `init_mlp(split(key)[0])` scaled by sigma, the documented
  key use of `train`.
  """
  k_init, _ = jax.random.split(key)
  params = [(np.asarray(p.w, np.float64) * sigma, np.asarray(p.b, np.float64))
            for p in mlp.init_mlp(k_init, widths, "normal:1", "zeros")]
  x, y = ds.x_train.astype(np.float64), ds.y_train
  xt, yt = ds.x_test.astype(np.float64), ds.y_test
  L = len(params)

  def forward(params, x):
    hs, h = [x], x
    for l, (w, b) in enumerate(params):
      z = h @ w + b
      h = np.maximum(z, 0) if l < L - 1 else z
      hs.append(h)
    return hs

  def ce(logits, y):
    z = logits - logits.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    return -logp[np.arange(len(y)), y].mean(), np.exp(logp)

  out = {k: [] for k in ("train_loss", "train_acc", "train_pass_loss", "test_loss", "test_acc", "grad_norm",
                         "saturation", "zero_fraction", "g_ratio")}
  for _ in range(epochs):
    hs = forward(params, x)
    loss, prob = ce(hs[-1], y)
    d = prob.copy()
    d[np.arange(len(y)), y] -= 1
    d /= len(y)
    grads = [None] * L
    for l in reversed(range(L)):
      grads[l] = (hs[l].T @ d, d.sum(0))
      if l > 0:
        d = (d @ params[l][0].T) * (hs[l] > 0)
    hidden = np.concatenate([h.ravel() for h in hs[1:-1]])
    out["train_loss"].append(loss)
    out["train_acc"].append(np.mean(hs[-1].argmax(1) == y))
    out["grad_norm"].append(np.sqrt(sum((gw ** 2).sum() + (gb ** 2).sum() for gw, gb in grads)))
    out["saturation"].append(np.mean(np.abs(hidden) <= tau))
    out["zero_fraction"].append(np.mean(hidden == 0))
    out["g_ratio"].append([np.mean(gw ** 2) / np.mean(w ** 2) for (gw, _), (w, _) in zip(grads, params)])
    params = [(w - lr * gw, b - lr * gb) for (w, b), (gw, gb) in zip(params, grads)]
    out["train_pass_loss"].append(ce(forward(params, x)[-1], y)[0])  # after the update: end of the epoch
    tl, _ = ce(forward(params, xt)[-1], yt)
    out["test_loss"].append(tl)
    out["test_acc"].append(np.mean(forward(params, xt)[-1].argmax(1) == yt))
  return {k: np.asarray(v) for k, v in out.items()}


class TrainTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_matches_numpy_reference(self):
    ds, data = small_data()
    spec = T.TrainSpec(widths=WIDTHS, optimizer="sgd", epochs=4, saturation_threshold=0.05, train_pass=True)
    train = self.variant(T.make_train(spec))
    key = jax.random.key(3)
    m = train(key, T.hparams(spec, init_scale=0.7, lr=0.5), data)
    ref = numpy_reference(key, 0.7, 0.5, 4, ds, WIDTHS, 0.05)
    n = len(ds.y_train)
    for name, want in ref.items():
      got = np.asarray(getattr(m, name))
      # float32 engine vs float64 numpy over 4 steps: relative error ~1e-6 per op; 1e-4 leaves room.
      # Accuracies and threshold counts are fractions of n points: allow one point to flip (1/n).
      atol = 1.0 / n + 1e-6 if name in ("train_acc", "test_acc", "saturation", "zero_fraction") else 1e-6
      np.testing.assert_allclose(got, want, rtol=1e-4, atol=atol, err_msg=name)
    self.assertFalse(np.asarray(m.diverged).any())

  def test_vmap_equals_per_config(self):
    _, data = small_data()
    spec = T.TrainSpec(widths=WIDTHS, kernel_inits=("normal:1", "he_normal:fan_out", "glorot_uniform"),
                       optimizer="adam", epochs=3)
    train = T.make_train(spec)
    hps = [T.hparams(spec, init_scale=s, lr=lr, init_index=i, input_scale=f, layer_scale=(1.0, ls, 1.0))
           for s, lr, i, f, ls in [(0.1, 1e-3, 0, 1.0, 1.0), (1.0, 1e-2, 1, 0.5, 2.0), (0.5, 3e-3, 2, 2.0, 0.3),
                                   (2.0, 1e-2, 0, 1.0, 1.0)]]
    keys = jax.random.split(jax.random.key(0), len(hps))
    batched = jax.jit(jax.vmap(train, in_axes=(0, 0, None)))(keys, T.stack_hparams(hps), data)
    single = jax.jit(train)
    for i, hp in enumerate(hps):
      one = single(keys[i], hp, data)
      # Same float32 math, different XLA fusion/batching: observed differences ~1e-7; 1e-5 relative.
      chex.assert_trees_all_close(jax.tree.map(lambda a: a[i], batched), one, rtol=1e-5, atol=1e-6)

  def test_traced_initializer_choice(self):
    """Configurations that differ ONLY in init_index: each equals a spec holding that initializer alone
    (same key use), and the choice changes the run."""
    _, data = small_data()
    inits = ("normal:1", "he_normal:fan_out", "glorot_uniform")
    spec = T.TrainSpec(widths=WIDTHS, kernel_inits=inits, optimizer="adam", epochs=3)
    common = dict(init_scale=0.8, lr=1e-2, input_scale=0.5, layer_scale=(1.0, 2.0, 1.0))
    # a fourth row (the first again) gives the batch test_vmap_equals_per_config's size: its compiled program
    hps = T.stack_hparams([T.hparams(spec, init_index=i, **common) for i in (*range(len(inits)), 0)])
    key = jax.random.key(4)
    keys = jnp.stack([key] * (len(inits) + 1))
    batched = jax.jit(jax.vmap(T.make_train(spec), in_axes=(0, 0, None)))(keys, hps, data)
    for i, init in enumerate(inits):
      spec1 = T.TrainSpec(widths=WIDTHS, kernel_inits=(init,), optimizer="adam", epochs=3)
      one = jax.jit(T.make_train(spec1))(key, T.hparams(spec1, **common), data)
      # lax.switch under vmap vs a direct call: float32 fusion differences only (observed ~1e-7).
      chex.assert_trees_all_close(jax.tree.map(lambda a: a[i], batched), one, rtol=1e-5, atol=1e-6)
    # Same key, same hyperparameters: only the initializer differs, and it moves the first loss by far
    # more than float32 noise (~1e-7).
    chex.assert_trees_all_equal(jax.tree.map(lambda a: a[3], batched), jax.tree.map(lambda a: a[0], batched))
    first = np.asarray(batched.train_loss[:, 0])
    for a in range(len(inits)):
      for b in range(a):
        self.assertGreater(abs(first[a] - first[b]), 1e-4, (inits[a], inits[b]))

  def test_train_pass_loss_is_the_loss_after_the_epoch(self):
    """Minibatch mode measures it with its own forward pass. With one minibatch holding the whole
    (permuted) training split, the next epoch's step loss sees the same parameters and examples, and a
    full-batch run (which takes it from the next step, plus one pass after the last epoch) agrees."""
    ds, data = small_data()
    n = len(ds.y_train)
    mini = T.TrainSpec(widths=WIDTHS, optimizer="sgd", epochs=4, batch_size=n, train_pass=True)
    # the threshold of test_matches_numpy_reference (it does not touch the losses): that test's compiled program
    full = T.TrainSpec(widths=WIDTHS, optimizer="sgd", epochs=4, train_pass=True, saturation_threshold=0.05)
    key = jax.random.key(1)
    m = jax.jit(T.make_train(mini))(key, T.hparams(mini, init_scale=0.7, lr=0.2), data)
    f = jax.jit(T.make_train(full))(key, T.hparams(full, init_scale=0.7, lr=0.2), data)
    # Same examples in another order: float32 summation order only (~1e-7 relative over 4 steps); 1e-5.
    np.testing.assert_allclose(m.train_pass_loss[:-1], m.train_loss[1:], rtol=1e-5)
    np.testing.assert_allclose(m.train_pass_loss, f.train_pass_loss, rtol=1e-5)
    # It is the loss AFTER the epoch's update, not the one before it: gradient descent lowered it.
    self.assertTrue(np.all(np.asarray(m.train_pass_loss) < np.asarray(m.train_loss)))

  @parameterized.parameters(None, 10)
  def test_train_pass_off_is_not_measured_and_changes_nothing_else(self, batch_size):
    """train_pass=False (the default): train_pass_loss is NaN ("not measured") and not a divergence; every
    other metric is bit-identical to a run that measures it (the extra pass only reads the parameters);
    a blow-up is still flagged (by the test loss)."""
    _, data = small_data()
    # the runs of test_diverged_exactly_when_a_metric_is_not_finite (lr 1: stable; 1e30: blown up in the first
    # epoch), so that its compiled programs serve this test too
    specs = [T.TrainSpec(widths=WIDTHS, optimizer="sgd", epochs=4, batch_size=batch_size, train_pass=tp)
             for tp in (False, True)]
    self.assertFalse(T.TrainSpec().train_pass)
    lrs = [10.0 ** k for k in range(0, 31, 2)]
    keys = jax.random.split(jax.random.key(2), len(lrs))
    runs = []
    for spec in specs:
      hp = T.stack_hparams([T.hparams(spec, init_scale=1.0, lr=lr) for lr in lrs])
      runs.append(jax.jit(jax.vmap(T.make_train(spec), in_axes=(0, 0, None)))(keys, hp, data))
    off, on = runs
    self.assertTrue(np.isnan(np.asarray(off.train_pass_loss)).all())
    self.assertTrue(np.isfinite(np.asarray(on.train_pass_loss[0])).all())
    for name in T.Metrics._fields:
      if name != "train_pass_loss":
        chex.assert_trees_all_equal(getattr(off, name), getattr(on, name))
    np.testing.assert_array_equal(np.asarray(off.diverged)[[0, -1], 0], [False, True])
    n = len(data.y_train)
    self.assertLess(cost.flops_per_config(specs[0], n, 10), cost.flops_per_config(specs[1], n, 10))
    with self.assertRaisesRegex(ValueError, "train_pass must be True or False"):
      T.TrainSpec(train_pass="yes")

  def test_divergence_is_masked_not_fatal(self):
    _, data = small_data()
    spec = T.TrainSpec(widths=WIDTHS, optimizer="sgd", epochs=3, train_pass=True)
    train = jax.jit(jax.vmap(T.make_train(spec), in_axes=(0, 0, None)))
    # sigma=1e15: logits ~ sigma^3 ~ 1e45 overflow float32 -> inf - inf = NaN in the first loss.
    hp = T.stack_hparams([T.hparams(spec, init_scale=s, lr=0.1) for s in (0.5, 1e15)])
    m = train(jax.random.split(jax.random.key(0), 2), hp, data)
    self.assertFalse(np.asarray(m.diverged[0]).any())
    self.assertTrue(np.asarray(m.diverged[1]).all())
    for name in ("train_loss", "train_pass_loss", "test_loss", "test_acc", "grad_norm", "g_ratio"):
      self.assertTrue(np.isfinite(np.asarray(getattr(m, name)[0])).all(), name)
      self.assertTrue(np.isnan(np.asarray(getattr(m, name)[1])).all(), name)

  @parameterized.parameters(None, 10)
  def test_blow_up_in_the_last_epoch_is_flagged(self, batch_size):
    """epochs=1, so the epoch of the blow-up is the last one. lr=inf: the first update makes the weights
    non-finite (the loss before it is finite). lr=1e30: the weights stay finite (~1e29) but the logits
    overflow, so the test and train-pass losses do not. Both: diverged, every metric NaN (accuracy too:
    the argmax of NaN logits is a made-up number). lr=0.1 never blows up and is not flagged."""
    _, data = small_data()
    spec = T.TrainSpec(widths=WIDTHS, optimizer="sgd", epochs=1, batch_size=batch_size, train_pass=True)
    # hparams refuses a plain lr of inf (not a learning rate), so the blow-up is put in the stacked row directly.
    hp = T.stack_hparams([T.hparams(spec, init_scale=0.5)] * 3)._replace(lr=jnp.asarray([np.inf, 1e30, 0.1]))
    keys = jax.random.split(jax.random.key(0), 3)
    m = jax.jit(jax.vmap(T.make_train(spec), in_axes=(0, 0, None)))(keys, hp, data)
    np.testing.assert_array_equal(np.asarray(m.diverged)[:, 0], [True, True, False])
    for name in T.Metrics._fields:
      if name != "diverged":
        v = np.asarray(getattr(m, name))
        self.assertTrue(np.isnan(v[:2]).all(), name)
        self.assertTrue(np.isfinite(v[2]).all(), name)

  @parameterized.product(batch_size=(None, 10), train_pass=(False, True))
  def test_diverged_exactly_when_a_metric_is_not_finite(self, batch_size, train_pass):
    """Learning rates 1..1e30 blow up in various epochs. In every epoch of every run: either diverged
    (from then on) and every metric NaN, or not diverged and every metric finite. (The old check, made
    before the update, left a blown-up epoch unflagged with a NaN test loss beside a made-up accuracy.)"""
    _, data = small_data()
    spec = T.TrainSpec(widths=WIDTHS, optimizer="sgd", epochs=4, batch_size=batch_size, train_pass=train_pass)
    lrs = [10.0 ** k for k in range(0, 31, 2)]
    hp = T.stack_hparams([T.hparams(spec, init_scale=1.0, lr=lr) for lr in lrs])
    keys = jax.random.split(jax.random.key(2), len(lrs))
    m = jax.jit(jax.vmap(T.make_train(spec), in_axes=(0, 0, None)))(keys, hp, data)
    div = np.asarray(m.diverged)
    np.testing.assert_array_equal(div, np.maximum.accumulate(div, axis=1))  # permanent
    self.assertFalse(div[0].any())   # lr 1: stable
    self.assertTrue(div[-1].all())   # lr 1e30: blown up by the first update
    for name in T.Metrics._fields:
      if name == "train_pass_loss" and not train_pass:
        self.assertTrue(np.isnan(np.asarray(m.train_pass_loss)).all())   # not measured
      elif name != "diverged":
        v = np.asarray(getattr(m, name)).reshape(div.shape + (-1,))
        np.testing.assert_array_equal(np.isnan(v).all(-1), div, err_msg=name)
        np.testing.assert_array_equal(np.isfinite(v).all(-1), ~div, err_msg=name)

  def test_minibatch_shuffles_are_per_config_and_deterministic(self):
    _, data = small_data()
    spec = T.TrainSpec(widths=WIDTHS, epochs=2, batch_size=10, optimizer="sgd")
    train = jax.jit(T.make_train(spec))
    hp = T.hparams(spec, init_scale=0.5, lr=0.1)
    k = jax.random.key(5)
    a, b = train(k, hp, data), train(k, hp, data)
    chex.assert_trees_all_equal(a, b)
    # Another configuration key gives another init and other shuffles: different epoch-mean losses.
    c = train(jax.random.key(6), hp, data)
    self.assertGreater(float(jnp.abs(a.train_loss - c.train_loss).max()), 1e-6)

  def test_output_std_calibrates_logits(self):
    _, data = small_data()
    spec = T.TrainSpec(widths=WIDTHS, epochs=1, output_std=0.05, optimizer="sgd")
    m = jax.jit(T.make_train(spec))(jax.random.key(0), T.hparams(spec, lr=0.0), data)
    # logits ~ 0.05 std -> softmax near uniform: CE within ~0.05^2 of log 2 (second-order term).
    self.assertAlmostEqual(float(m.train_loss[0]), np.log(2), delta=0.01)

  def test_bad_input(self):
    with self.assertRaisesRegex(ValueError, "unknown optimizer"):
      T.TrainSpec(optimizer="rmsprop")
    with self.assertRaisesRegex(ValueError, "unknown initializer"):
      T.TrainSpec(kernel_inits=("nope",))
    with self.assertRaisesRegex(ValueError, "unknown activation"):
      T.TrainSpec(activation="swish2")
    with self.assertRaisesRegex(ValueError, "epochs"):
      T.TrainSpec(epochs=0)
    spec = T.TrainSpec(widths=WIDTHS)
    with self.assertRaisesRegex(ValueError, "unknown hyperparameters"):
      T.hparams(spec, sigma=0.1)
    # The settings' rules are written once (SETTING_CHECKS) and hold outside sweeps too.
    for field, value in (("momentum", -1.0), ("momentum", float("nan")), ("momentum", 1.0),
                         ("saturation_threshold", -1.0), ("batch_size", 0), ("output_std", 0.0), ("train_pass", 1)):
      with self.assertRaisesRegex(ValueError, f"^{field} must be .*got {value!r}$"):
        T.TrainSpec(widths=WIDTHS, **{field: value})
    for field, value in (("lr", -1.0), ("lr", float("nan")), ("input_scale", 0.0), ("init_scale", float("inf"))):
      with self.assertRaisesRegex(ValueError, f"^{field} must be .*got {value!r}$"):
        T.hparams(spec, **{field: value})
    with self.assertRaisesRegex(ValueError, "layer_scale"):
      T.hparams(spec, layer_scale=(1.0, 2.0))
    with self.assertRaisesRegex(ValueError, "larger than the training set"):
      T.TrainSpec(widths=WIDTHS, batch_size=10_000).steps_per_epoch(1400)

  @parameterized.parameters(dict(), dict(batch_size=4), dict(batch_size=4, output_std=0.05, optimizer="sgd"),
                            dict(kernel_inits=("normal:1", "he_normal")))
  def test_flops_count_matches_the_program(self, **kw):
    """The analytic count equals the matmul FLOPs of the traced program itself: every dot_general in
    `train`'s jaxpr, 2 * (contracted size) * (output size), times the trip counts of the scans around it
    (10 training rows at batch 4: 2 steps an epoch, 2 rows dropped)."""
    spec = T.TrainSpec(widths=(3, 5, 4, 2), epochs=2, **kw)
    r = np.random.RandomState(0)
    data = data_lib.Data(jnp.asarray(r.randn(10, 3), jnp.float32), jnp.asarray(r.randint(0, 2, 10), jnp.int32),
                         jnp.asarray(r.randn(6, 3), jnp.float32), jnp.asarray(r.randint(0, 2, 6), jnp.int32))
    jaxpr = jax.make_jaxpr(T.make_train(spec))(jax.random.key(0), T.hparams(spec), data).jaxpr
    self.assertEqual(cost.flops_per_config(spec, 10, 6), matmul_flops(jaxpr))


def matmul_flops(jaxpr) -> int:
  """Matmul FLOPs of a jaxpr, walking into sub-jaxprs (a scan body times its length; cond: the largest
  branch). A while loop has no static trip count: refuse it. The gradient's sum of squares is a dot with ones
  (`T.sum_squares`): a reduction, not a model matmul, so it is not counted."""
  total = 0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "while":
      raise ValueError("a while loop has no static trip count")
    if name == "dot_general" and T.SUM_SQUARES_SCOPE not in str(eqn.source_info.name_stack):
      (contract, _), _ = eqn.params["dimension_numbers"]
      k = math.prod(eqn.invars[0].aval.shape[d] for d in contract)
      total += 2 * k * math.prod(eqn.outvars[0].aval.shape)
    subs = [u.jaxpr if isinstance(u, jex.core.ClosedJaxpr) else u
            for v in eqn.params.values() for u in (v if isinstance(v, (tuple, list)) else (v,))
            if isinstance(u, (jex.core.ClosedJaxpr, jex.core.Jaxpr))]
    counts = [matmul_flops(j) for j in subs]
    if name == "cond":
      total += max(counts, default=0)
    else:
      total += sum(counts) * (eqn.params["length"] if name == "scan" else 1)
  return total


if __name__ == "__main__":
  pytest.main([__file__])



class EpochGuardTest(chex.TestCase):
  """The per-epoch parameter check rests on two facts, tested here: `T.all_finite` is False exactly when some
  entry is inf or NaN, and a non-finite parameter stays non-finite under `optax.apply_updates` (p + u) for any
  update, finite or not, so the epoch's final parameters show every update of the epoch that broke one."""

  @chex.variants(with_jit=True, without_jit=True)
  def test_all_finite(self):
    rng = np.random.default_rng(0)
    tree = [jnp.asarray(rng.standard_normal((30, 20)), jnp.float32), jnp.asarray(rng.standard_normal(7), jnp.float32)]
    f = self.variant(T.all_finite)
    self.assertTrue(bool(f(tree)))
    for bad in (np.inf, -np.inf, np.nan):
      self.assertFalse(bool(f([tree[0].at[3, 4].set(bad), tree[1]])), bad)
      self.assertFalse(bool(f([tree[0], tree[1].at[6].set(bad)])), bad)
    self.assertTrue(bool(f([jnp.full((4,), 3.0e38, jnp.float32)])))   # large but finite: x * 0 is still 0

  def test_non_finite_parameters_stay_non_finite(self):
    import optax
    specials = np.array([np.inf, -np.inf, np.nan], np.float32)
    updates = np.array([0.0, -0.0, 1.0, -1e30, 3.0e38, -3.0e38, np.inf, -np.inf, np.nan], np.float32)
    p, u = np.meshgrid(specials, updates)
    new = optax.apply_updates(jnp.asarray(p), jnp.asarray(u))
    self.assertFalse(bool(jnp.isfinite(new).any()))

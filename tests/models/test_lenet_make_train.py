"""make_train on any model (jscale.models.Model), checked on the LeNet and a Flax module.

The LeNet runs are checked against a loop written plainly (jax.grad + optax, XLA's convolution instead of the
model's patch matmul, the initializer called directly), the measured G against jscale.inspect on the same
parameters, the Flax path against the pure-function LeNet. Every float32 comparison allows 2e-4 relative: the
two forward passes sum the same products in different orders (rounding ~1e-7 relative per op), and Adam's
update divides by sqrt(v), so rounding differences grow over the 6 steps compared, to ~1e-5 measured.
The `lenet` experiment (its grids, section and runs) is tested in tests/experiments/lenet/test_lenet.py.
"""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jscale import calculus, datasets, initializers, models, train as T
from jscale.models import lenet

CFG = lenet.LeNetConfig(image=(4, 4, 1), channels=(2, 3), kernels=((2, 2), (2, 2)), hidden=(8,), n_out=3)
INITS = ("normal:1", "arithmetic", "fan_in", "fan_out", "geometric")
N_TRAIN, BATCH, EPOCHS = 32, 16, 2
RTOL = 2e-4
KEY = jax.random.PRNGKey   # threefry: its draws are the same under vmap and without (rbg's are not)


def tiny_data(seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(N_TRAIN + 16, 16)).astype(np.float32)
  y = rng.integers(0, 3, N_TRAIN + 16).astype(np.int32)
  return datasets.Data(jnp.asarray(x[:N_TRAIN]), jnp.asarray(y[:N_TRAIN]), jnp.asarray(x[N_TRAIN:]),
                       jnp.asarray(y[N_TRAIN:]))


def model():
  return models.Model.lenet(CFG)


# Three configurations of one compiled program: two trained, one frozen (lr 0) for the G check.
CONFIGS = [
    dict(key=1, init_index=4, init_scale=0.7, layer_scale=(1.0, 0.5, 2.0, 1.0), input_scale=0.5, output_scale=1.3,
         lr=1e-2, weight_decay=1e-3),
    dict(key=2, init_index=0, init_scale=0.3, layer_scale=(1.0, 1.0, 1.0, 1.0), input_scale=1.0, output_scale=1.0,
         lr=3e-3, weight_decay=0.0),
    dict(key=3, init_index=2, init_scale=1.0, layer_scale=(1.0, 1.0, 1.0, 1.0), input_scale=1.0, output_scale=1.0,
         lr=0.0, weight_decay=0.0),
]


@functools.lru_cache(maxsize=None)
def engine_run():
  # g_ratio_steps="all": G averaged over the epoch's minibatch steps, as the plain loop below measures it
  # (the default, G at the last step alone, is checked against an independent computation in test_train_metrics).
  spec = T.TrainSpec(model=model(), kernel_inits=INITS, optimizer="adam", epochs=EPOCHS, batch_size=BATCH,
                     train_pass=True, g_ratio_steps="all")
  train = T.make_train(spec)
  hp = T.stack_hparams([T.hparams(spec, **{k: v for k, v in c.items() if k != "key"}) for c in CONFIGS])
  keys = jnp.stack([KEY(c["key"]) for c in CONFIGS])
  return jax.tree.map(np.asarray, jax.jit(jax.vmap(train, in_axes=(0, 0, None)))(keys, hp, tiny_data()))


def plain_params(c):
  """The documented key use, written out: train splits (init, data); the model splits init into (its own
  init, the kernels); kernel l is drawn from the l-th of those keys by the chosen initializer."""
  k_init, k_data = jax.random.split(KEY(c["key"]))
  k_model, k_kernels = jax.random.split(k_init)
  params = lenet.init_lenet(k_model, CFG)
  ini = initializers.get(INITS[c["init_index"]])
  names = ["conv0", "conv1", "dense0", "dense1"]
  for l, (name, k) in enumerate(zip(names, jax.random.split(k_kernels, len(names)))):
    shape = params[name]["kernel"].shape
    params[name]["kernel"] = ini(k, shape) * c["init_scale"] * c["layer_scale"][l]
  return params, names, k_data


def plain_batches(k_data):
  for ek in jax.random.split(k_data, EPOCHS):
    idx = np.asarray(jax.random.permutation(ek, N_TRAIN))[:N_TRAIN // BATCH * BATCH].reshape(-1, BATCH)
    yield idx


def plain_loss(params, x, y, c):
  logits = lenet.apply_lenet(params, x.reshape((-1,) + CFG.image), input_scale=c["input_scale"],
                             output_scale=c["output_scale"])   # XLA's convolution, not the model's matmul
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y)), logits


# Jitted as the step is: eagerly, every op of the forward pass compiled on its own (the test's cost, not its check).
plain_eval = jax.jit(plain_loss)


def plain_opt(c):
  return optax.chain(optax.add_decayed_weights(c["weight_decay"]), optax.adam(c["lr"]))


@jax.jit
def plain_step(params, state, x, y, c):
  (loss, _), g = jax.value_and_grad(plain_loss, has_aux=True)(params, x, y, c)
  G = [jnp.mean(g[n]["kernel"] ** 2) / jnp.mean(params[n]["kernel"] ** 2) for n in sorted(params)]
  updates, state = plain_opt(c).update(g, state, params)
  return optax.apply_updates(params, updates), state, loss, jnp.stack(G)


def plain_loop(c, data):
  """Per epoch: mean minibatch loss, loss over the training split after it, test accuracy after it, mean G."""
  params, names, k_data = plain_params(c)
  c = {k: v for k, v in c.items() if k not in ("key", "init_index")}
  state = plain_opt(c).init(params)
  out = {"train_loss": [], "train_pass_loss": [], "test_acc": [], "g_ratio": []}
  for idx in plain_batches(k_data):
    losses, gs = [], []
    for b in idx:
      params, state, loss, G = plain_step(params, state, data.x_train[b], data.y_train[b], c)
      losses.append(float(loss))
      gs.append(np.asarray(G))
    out["train_loss"].append(np.mean(losses))
    out["g_ratio"].append(np.mean(gs, 0))
    out["train_pass_loss"].append(float(plain_eval(params, data.x_train, data.y_train, c)[0]))
    logits = plain_eval(params, data.x_test, data.y_test, c)[1]
    out["test_acc"].append(float(jnp.mean(jnp.argmax(logits, -1) == data.y_test)))
  return {k: np.asarray(v) for k, v in out.items()}


@pytest.mark.parametrize("i", [0, 1])
def test_make_train_on_the_lenet_equals_a_plain_loop(i):
  """Init choice (traced, 5 candidates), sigma, per-kernel layer_scale, input/output scale, lr and weight decay
  all reach the LeNet as a loop written with jax.grad and optax applies them."""
  got, want = engine_run(), plain_loop(CONFIGS[i], tiny_data())
  for name in ("train_loss", "train_pass_loss", "g_ratio"):
    np.testing.assert_allclose(getattr(got, name)[i], want[name], rtol=RTOL, err_msg=name)
  np.testing.assert_array_equal(got.test_acc[i], want["test_acc"])   # 16 argmaxes: no near-ties at these logits
  assert not got.diverged[i].any()
  assert np.all((got.saturation[i] > 0) & (got.saturation[i] < 1))   # ReLU outputs are measured, not NaN


@pytest.mark.slow
def test_g_ratio_equals_inspect_on_the_same_params():
  """The frozen configuration's G per kernel is the mean over its minibatches of jscale.inspect's G_batch_meas
  (the batch-mean cross-entropy's gradient) on the same parameters and minibatches. Slow: every inspect call
  compiles anew; the default suite checks G against inspect on the Flax model (one call)."""
  c = CONFIGS[2]
  params, names, k_data = plain_params(c)
  data = tiny_data()
  apply_fn = lambda p, x: lenet.apply_lenet(p, x)   # noqa: E731
  got = engine_run().g_ratio[2]                     # (epochs, kernels)
  for e, idx in enumerate(plain_batches(k_data)):
    per_batch = []
    for b in idx:
      y = data.y_train[b]
      loss = lambda logits, y=y: optax.softmax_cross_entropy_with_integer_labels(logits, y)  # noqa: E731
      ins = calculus.inspect(apply_fn, params, data.x_train[b].reshape((-1,) + CFG.image), loss=loss)
      g = {r["path"]: r["G_batch_meas"] for r in ins.layers}
      per_batch.append([g[f"{n}/kernel"] for n in names])
    np.testing.assert_allclose(got[e], np.mean(per_batch, 0), rtol=RTOL)


@pytest.mark.slow
def test_init_choice_equals_the_single_initializer():
  """`make_draw` under vmap with a traced index equals drawing with that one initializer: the scaled-normal
  fast path (all candidates normal) and the lax.switch path (a uniform candidate among them). Slow: XLA on CPU
  compiles every random draw for seconds. The default suite checks the fast path end to end (the plain loop
  draws with the single initializer)."""
  m = model()
  key = KEY(7)
  for cands in (INITS, ("he_uniform", "geometric")):
    draw = jax.jit(jax.vmap(m.make_draw(cands), in_axes=(None, 0)))
    both = draw(key, jnp.arange(len(cands)))
    assert (m.normal_scales(cands) is None) == (cands[0] == "he_uniform")
    for i, spec in enumerate(cands):
      want = m.draw(key, spec)
      jax.tree.map(lambda a, b: np.testing.assert_allclose(a[i], b, rtol=1e-6, atol=1e-7), both, want)
  # Common random numbers: fan-in and geometric draw proportional kernels from one key.
  a, b = m.draw(key, "fan_in"), m.draw(key, "geometric")
  ratio = np.asarray(a["dense0"]["kernel"] / b["dense0"]["kernel"])
  np.testing.assert_allclose(ratio, ratio.flat[0], rtol=1e-5)


def test_flax_lenet_is_the_same_model():
  """Model.from_flax(LeNet(cfg)) and Model.lenet(cfg): same kernels in the same order, same draws, same logits."""
  a, b = model(), models.Model.from_flax(models.LeNet(CFG), CFG.image)
  assert a.kernel_names == b.kernel_names == ["conv0/kernel", "conv1/kernel", "dense0/kernel", "dense1/kernel"]
  key = KEY(3)
  pa, pb = a.draw(key, "geometric"), b.draw(key, "geometric")
  jax.tree.map(lambda u, v: np.testing.assert_array_equal(u, v), pa, pb)
  x = tiny_data().x_train[:5]
  np.testing.assert_allclose(a.forward(pa, x)[0], b.forward(pb, x)[0], rtol=1e-5, atol=1e-6)


class ConvDense(nn.Module):
  """nn.Conv (stride = kernel) -> ReLU (sown as its hidden activation) -> nn.Dense."""

  @nn.compact
  def __call__(self, x):
    h = nn.relu(nn.Conv(4, (2, 2), strides=(2, 2), padding="VALID")(x))
    self.sow("intermediates", "relu", h)
    return nn.Dense(3)(h.reshape(h.shape[0], -1))


def test_flax_module_trains():
  m = models.Model.from_flax(ConvDense(), (4, 4, 1))
  assert m.kernel_names == ["Conv_0/kernel", "Dense_0/kernel"] and m.n_out == 3 and m.returns_hidden
  spec = T.TrainSpec(model=m, kernel_inits=("geometric",), optimizer="adam", epochs=4, train_pass=True)
  data = tiny_data()
  key = KEY(0)
  out = jax.jit(T.make_train(spec))(key, T.hparams(spec, lr=3e-2), data)
  # Epoch 1's full-batch loss is the loss of the drawn parameters, computed here through module.apply.
  params = m.draw(jax.random.split(key)[0], "geometric")
  logits = ConvDense().apply({"params": params}, data.x_train.reshape(-1, 4, 4, 1))
  want = float(jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, data.y_train)))
  np.testing.assert_allclose(out.train_loss[0], want, rtol=1e-5)
  assert out.train_pass_loss[-1] < out.train_loss[0]
  assert out.g_ratio.shape == (4, 2) and np.all(np.isfinite(out.g_ratio))
  # Full batch, epoch 1: G of the initial parameters on the whole training split, as jscale.inspect measures it
  # (G_batch_meas: the batch-mean cross-entropy's gradient) through module.apply.
  loss = lambda lg: optax.softmax_cross_entropy_with_integer_labels(lg, data.y_train)  # noqa: E731
  ins = calculus.inspect(lambda p, x: ConvDense().apply({"params": p}, x), params,
                         data.x_train.reshape(-1, 4, 4, 1), loss=loss)
  g = {r["path"]: r["G_batch_meas"] for r in ins.layers}
  np.testing.assert_allclose(out.g_ratio[0], [g["Conv_0/kernel"], g["Dense_0/kernel"]], rtol=RTOL)
  assert np.all((out.saturation > 0) & (out.saturation < 1))


def test_bad_input_is_refused_before_compute():
  m = model()
  spec = T.TrainSpec(model=m, kernel_inits=("geometric",), epochs=1)
  wrong = datasets.Data(jnp.zeros((8, 64)), jnp.zeros(8, jnp.int32), jnp.zeros((4, 64)), jnp.zeros(4, jnp.int32))
  with pytest.raises(ValueError, match=r"needs rows of 16 features"):
    jax.eval_shape(T.make_train(spec), KEY(0), T.hparams(spec), wrong)   # trace only
  with pytest.raises(ValueError, match="layer_scale needs 4 entries"):
    T.hparams(spec, layer_scale=(1.0, 1.0, 1.0))
  with pytest.raises(ValueError, match="MLP's setting"):
    T.TrainSpec(model=m, activation="tanh")
  with pytest.raises(ValueError, match="do not fit model"):
    T.TrainSpec(model=m, widths=(64, 32, 10))
  with pytest.raises(ValueError, match="jscale.models.Model"):
    T.TrainSpec(model=lenet.apply_lenet)
  with pytest.raises(ValueError, match="per-layer specs for 4 layers"):
    T.TrainSpec(model=m, kernel_inits=(("geometric",) * 3,))
  with pytest.raises(ValueError, match="apply\\(params, x\\) failed"):
    models.Model.from_functions(lambda k: {"w": jnp.zeros((16, 3))}, lambda p, x: x @ p["w"], (4, 4, 1))
  with pytest.raises(ValueError, match="collections"):
    models.Model.from_flax(nn.BatchNorm(use_running_average=False), (4,))

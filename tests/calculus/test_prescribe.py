"""`calculus.prescribe`: the μP table, the equal-G multipliers' width exponents, and the prescription against
the measured G of the first update it produces (on fresh minibatches: equal within sampling error)."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jscale import calculus, datasets, mlp, optim


@pytest.fixture(scope="module")
def digits():
  ds = datasets.get("digits", seed=0, standardize=True)
  return jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)


def _apply(p, x):
  return mlp.apply_mlp(p, x)


def _ce(y):
  return lambda out: optax.softmax_cross_entropy_with_integer_labels(out, y)


def test_mup_matches_the_tensor_programs_table(digits):
  x, y = digits
  params = mlp.init_mlp(jax.random.key(0), (64, 128, 128, 10), "he_normal")
  base = mlp.init_mlp(jax.random.key(0), (64, 32, 32, 10), "he_normal")
  res = calculus.inspect(_apply, params, x[:32], loss=_ce(y[:32]))
  shapes = [np.shape(l) for l in jax.tree.leaves(base)]
  # Tensor Programs V, Table 3 (μP, standard-parametrization form) at width ratio 4; leaf order w0 b0 w1 b1 w2 b2.
  want = {"sgd": ([4, 4, 1, 4, 1 / 4, 1], [1, 1, 1, 1, 1 / 2, 1]),
          "adam": ([1, 1, 1 / 4, 1, 1 / 4, 1], [1, 1, 1, 1, 1 / 2, 1])}
  for opt, (lr_m, init_m) in want.items():
    pr = calculus.from_inspection(res, optimizer=opt, rule="mup", base_shapes=shapes)
    np.testing.assert_allclose([r.lr_multiplier for r in pr.leaves], lr_m, rtol=1e-12)
    np.testing.assert_allclose([r.init_multiplier for r in pr.leaves], init_m, rtol=1e-12)
  std = calculus.from_inspection(res, optimizer="sgd", rule="standard")
  assert all(r.lr_multiplier == 1.0 and r.init_multiplier == 1.0 for r in std.leaves)


def test_equal_G_multipliers_scale_with_width_as_mup_predicts(digits):
  # Standard init, Adam: the update-to-output U = fan_in^2 E[x^2] grows as n^2 for the hidden and output
  # layers, so their multipliers fall as 1/n (μP's Adam rule); the input layer's stays. SGD: the output
  # layer's U grows as n^2 too (E[h^2] and its gradient are O(1)), the input layer's falls as 1/n (the
  # gradient reaching it falls as 1/n). Tolerance 25%: the predicted E[x^2] and G of one draw at widths
  # 64 and 256 differ by a few percent, and the 1/n laws hold to leading order only.
  x, y = digits
  m = {}
  for n in (64, 256):
    params = mlp.init_mlp(jax.random.key(1), (64, n, n, 10), "he_normal")
    res = calculus.inspect(_apply, params, x[:128], loss=_ce(y[:128]))
    for opt in ("sgd", "adam"):
      pr = calculus.from_inspection(res, optimizer=opt, rule="equal_G")
      m[opt, n] = np.array([r.lr_multiplier for r in pr.leaves if r.kind == "dense"])
  np.testing.assert_allclose(m["adam", 256] / m["adam", 64], [1, 1 / 4, 1 / 4], rtol=0.25)
  r_sgd = m["sgd", 256] / m["sgd", 64]
  np.testing.assert_allclose(r_sgd[[0, 2]], [2, 1 / 4], rtol=0.25)


def test_measured_prescription_matches_first_update_on_fresh_batches(digits):
  # The prescription measured on minibatch A; first SGD updates with its multipliers on four other minibatches.
  # The update's G, E[dW^2] / E[W^2] / (lr m)^2, must equal the prescription's G_batch within sampling error:
  # |mean over the 4 batches - G_A| <= 3 sd sqrt(1 + 1/4) (a prediction interval for batch A's single value).
  x, y = digits
  B, lr = 128, 0.01
  params = mlp.init_mlp(jax.random.key(2), (64, 128, 128, 10), "he_normal")
  pr = calculus.prescribe(_apply, params, x[:B], loss=_ce(y[:B]), optimizer="sgd", rule="equal_G", measured=True)
  rows = [r for r in pr.leaves if r.kind == "dense"]
  tx = optim.sgd(lr, pr.lr_multipliers(params))
  Gs = []
  for k in range(1, 5):
    xb, yb = x[k * B:(k + 1) * B], y[k * B:(k + 1) * B]
    g = jax.grad(lambda p: jnp.mean(_ce(yb)(_apply(p, xb))))(params)
    u, _ = tx.update(g, tx.init(params), params)
    Gs.append([float(jnp.mean(jnp.square(l.w)) / jnp.mean(jnp.square(p.w))) / (lr * r.lr_multiplier) ** 2
               for l, p, r in zip(u, params, rows)])
  Gs = np.array(Gs)
  want = np.array([r.G_batch for r in rows])
  assert np.all(np.abs(Gs.mean(0) - want) <= 3 * Gs.std(0, ddof=1) * np.sqrt(1.25)), (Gs, want)
  # and the transform applied exactly the prescribed multipliers: the relative update of each layer is
  # lr * m * sqrt(G) on batch A itself (float32 rounding only)
  g = jax.grad(lambda p: jnp.mean(_ce(y[:B])(_apply(p, x[:B]))))(params)
  u, _ = tx.update(g, tx.init(params), params)
  rel = [float(jnp.sqrt(jnp.mean(jnp.square(l.w)) / jnp.mean(jnp.square(p.w)))) for l, p in zip(u, params)]
  np.testing.assert_allclose(rel, [lr * r.lr_multiplier * np.sqrt(r.G_batch) for r in rows], rtol=1e-4)


def test_flax_model_and_drift(digits):
  x, y = digits

  class Net(nn.Module):
    width: int

    @nn.compact
    def __call__(self, x):
      return nn.Dense(10)(nn.relu(nn.Dense(self.width)(x)))

  # One inspection per width serves both rules: prescribe without layers= is from_inspection(inspect(...)), so
  # these are the numbers prescribe gives (prescribe itself on a Flax module: the README's block, test_readme).
  prs, std = {}, {}
  for n in (64, 256):
    model = Net(n)
    variables = model.init(jax.random.key(0), x[:1])
    insp = calculus.inspect(model.apply, variables, x[:64], loss=_ce(y[:64]))
    prs[n] = calculus.from_inspection(insp, optimizer="adam")
    std[n] = calculus.from_inspection(insp, optimizer="adam", rule="standard")
    tree = prs[n].lr_multipliers(variables)
    assert jax.tree.structure(tree, is_leaf=lambda v: v is None) == jax.tree.structure(
        jax.tree.map(lambda _: 0, variables), is_leaf=lambda v: v is None)
    tx = optim.adam(1e-3, tree)
    tx.update(jax.tree.map(jnp.ones_like, variables), tx.init(variables), variables)
  # equal-G moves every layer's output by the same predicted amount at every width: no predicted drift
  assert calculus.predicted_drift(prs[64], prs[256]) == pytest.approx(0.0, abs=1e-9)
  # standard Adam: U = fan_in^2 E[x^2]; z-scored inputs and He init give E[x^2] = E[h^2] = 1, so
  # S^2 = 64^2 + n^2 and the drift from 64 to 256 is -0.5 log2(17 / 2) = -1.54 octaves (0.3: the digits' and
  # one draw's E[h^2] are not exactly 1)
  assert calculus.predicted_drift(std[64], std[256]) == pytest.approx(-0.5 * np.log2(17 / 2), abs=0.3)


def test_bad_input_refused_before_compute(digits):
  x, _ = digits
  params = mlp.init_mlp(jax.random.key(0), (64, 8, 10))
  with pytest.raises(ValueError, match="rule"):
    calculus.prescribe(_apply, params, x[:4], rule="mu")
  with pytest.raises(ValueError, match="optimizer"):
    calculus.prescribe(_apply, params, x[:4], optimizer="rmsprop")
  with pytest.raises(ValueError, match="base"):
    calculus.prescribe(_apply, params, x[:4], rule="mup")


def test_normalised_divides_every_multiplier_by_the_response_layers_response():
  # hand-made rows, no compute: SGD reads the last hidden layer (4 here; the hidden layers' geometric mean,
  # read until the tenth session, would be sqrt(8)), Adam the logits; every leaf, the bias included, is
  # divided; a missing or non-positive response is refused
  row = lambda kind, m: calculus.LeafPrescription(path=kind, shape=(2, 2), kind=kind, fan_in=2, weight_sq=1.0,  # noqa: E731
                                                  x_sq=1.0, G_batch=1.0, update_to_output=1.0, lr_multiplier=m,
                                                  init_multiplier=1.0)
  for opt, want in (("sgd", 1 / 4.0), ("adam", 1 / 8.0)):
    pr = calculus.Prescription(rule="equal_G", optimizer=opt, source="predicted",
                               leaves=(row("dense", 0.5), row("bias", 1.0), row("dense", 3.0)), batch_size=8)
    n = calculus.normalised(pr, [2.0, 4.0, 8.0])
    assert n.scale == pytest.approx(want, rel=1e-12)
    np.testing.assert_allclose([r.lr_multiplier for r in n.leaves], [0.5 * want, want, 3.0 * want], rtol=1e-12)
    with pytest.raises(ValueError, match="positive"):
      calculus.normalised(pr, [2.0, 0.0, float("nan")])


@pytest.mark.slow
def test_normalised_equal_G_moves_the_response_layer_by_lr_per_step(digits):
  # prescribe(layers=...) scales equal-G by the first step's response: every leaf's multiplier (the biases'
  # too) divided by the relative change per unit rate at the response layer (SGD: the last hidden layer,
  # Adam: the logits). To first order that change is linear in a common factor of the multipliers, so the
  # normalised prescription's response there is 1 (float32 JVPs: rtol 1e-4), the weights' ratios are
  # equal-G's, and a real small step (lr 1e-3) changes the layers by lr relative (2%: second order ~lr R).
  x, y = digits
  B = 64
  params = mlp.init_mlp(jax.random.key(3), (64, 48, 48, 10), "he_normal")

  def layers(p, x_):
    h = x_
    out = []
    for i, layer in enumerate(p):
      h = h @ layer.w + layer.b
      if i < len(p) - 1:
        h = jax.nn.relu(h)
      out.append(h)
    return out

  res = calculus.inspect(_apply, params, x[:B], loss=_ce(y[:B]))   # one inspection serves both optimizers
  for opt in ("sgd", "adam"):
    plain = calculus.from_inspection(res, optimizer=opt)
    pr = calculus.normalised(plain, calculus.first_step_response(layers, params, x[:B], _ce(y[:B]),
                                                                 plain.lr_multipliers(params), opt))
    assert plain.scale == 1.0 and pr.scale != 1.0
    m, m0 = [r.lr_multiplier for r in pr.leaves], [r.lr_multiplier for r in plain.leaves]
    np.testing.assert_allclose(np.divide(m, m0), pr.scale, rtol=1e-12)   # biases (m0 = 1) get the scale
    r = calculus.first_step_response(layers, params, x[:B], _ce(y[:B]), pr.lr_multipliers(params), opt)
    assert calculus.response_at(r, opt) == pytest.approx(1.0, rel=1e-4)
    lr = 1e-3
    tx = (optim.sgd if opt == "sgd" else optim.adam)(lr, pr.lr_multipliers(params))
    g = jax.grad(lambda p: jnp.mean(_ce(y[:B])(_apply(p, x[:B]))))(params)
    u, _ = tx.update(g, tx.init(params), params)
    rel = [float(jnp.sqrt(jnp.mean((b - a) ** 2) / jnp.mean(a ** 2)))
           for a, b in zip(layers(params, x[:B]), layers(optax.apply_updates(params, u), x[:B]))]
    assert calculus.response_at(rel, opt) == pytest.approx(lr, rel=0.02)
  # prescribe(layers=) is the same normalisation (Adam: the logits, so apply_fn itself will do)
  full = calculus.prescribe(_apply, params, x[:B], loss=_ce(y[:B]), optimizer="adam", layers=_apply)
  assert full.scale == pytest.approx(pr.scale, rel=1e-5)
  with pytest.raises(ValueError, match="layers"):
    calculus.prescribe(_apply, params, x[:B], optimizer="sgd", layers=layers)   # no loss: no real step
  with pytest.raises(ValueError, match="hidden"):   # SGD reads the last hidden layer: logits alone will not do
    calculus.normalised(calculus.from_inspection(res, optimizer="sgd"), [2.0])

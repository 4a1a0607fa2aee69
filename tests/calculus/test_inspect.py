"""Tests of `jscale.calculus.inspect` (the calculus on any JAX / Flax model) and of jscale.models.

Tolerances: a measured G of one network draw differs from the rules' expectation mainly through the
non-zero mean of ReLU inputs; averaged over m units that gives a relative s.d. of about r sqrt(2/m) per layer
hop, r <= 0.5 the uncentred correlation (tests/calculus/test_calculus.py's error model); G_pred here uses the draw's
own E[W^2], which removes the weight-sampling term. We allow 4 s.d.
"""
from __future__ import annotations

import dataclasses
import json
import math
import warnings

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jscale import calculus, initializers, mlp, models
from jscale.calculus import inspection, tracing
from jscale.calculus.correlation import pair_corr


def mc_rel_sd(min_width, hops, r=0.5):
  return math.sqrt(hops) * r * math.sqrt(2.0 / min_width)


class CNN(nn.Module):
  channels: tuple = (8, 16)
  kernel: int = 2
  stride: int = 2
  head: str = "none"   # "none", "max" or "tanh"

  @nn.compact
  def __call__(self, x):
    k, s = self.kernel, self.stride
    pad = "VALID" if k == s else "SAME"
    x = nn.Conv(self.channels[0], (k, k), strides=(s, s), padding=pad)(x)
    x = jnp.tanh(x) if self.head == "tanh" else nn.relu(x)
    if self.head == "max":
      x = nn.max_pool(x, (2, 2), (2, 2))
    x = nn.Conv(self.channels[1], (k, k), strides=(s, s), padding=pad)(x)
    x = nn.leaky_relu(x)
    return nn.Dense(10)(x.reshape(x.shape[0], -1))


def _row(res, path):
  return next(r for r in res.layers if r.path == path)


class InspectTest(chex.TestCase):

  def test_mlp_agrees_with_the_mlp_calculus(self):
    widths = (32, 64, 16, 10)
    params = mlp.init_mlp(jax.random.PRNGKey(0), widths, "he_normal")
    x = jax.random.normal(jax.random.PRNGKey(1), (64, 32))
    key = jax.random.PRNGKey(2)
    res = calculus.inspect(lambda p, x_: mlp.apply_mlp(p, x_), params, x, key=key)
    meas = calculus.measure_mlp(params, x, key)  # the same projection: v ~ N(0, 1) from split(key)[0]
    got = [_row(res, f"{l}/w") for l in range(3)]
    # Same gradients, different code paths: float32 rounding.
    np.testing.assert_allclose([r.G_meas for r in got], meas.moments.G, rtol=1e-4)
    np.testing.assert_allclose([r.G_batch_meas for r in got], meas.G_batch, rtol=1e-4)
    # Predictions from the draw's own E[W^2]: the layer-list calculus with those weight_sq, exactly.
    w_sq = [float(jnp.mean(p.w ** 2)) for p in params]
    layers = calculus.mlp_layers(widths, "he_normal")
    layers = tuple(calculus.Linear(l.n_out, weight_sq=w_sq[i // 2]) if l.is_weight else l
                   for i, l in enumerate(layers))
    # inspect keeps the projection's own E[v^2] and correlation between examples (its draw of v)
    v = np.asarray(jax.random.normal(jax.random.split(key)[0], (64, 10)), np.float64)
    pred = calculus.predict(layers, 32, x0_sq=float(jnp.mean(x ** 2)), batch_size=64,
                            x0_corr=float(meas.x0_corr), dy_out_sq=float(np.mean(v * v)), dy_out_corr=pair_corr(v))
    np.testing.assert_allclose([r.G_pred for r in got], pred.moments.G, rtol=1e-5)
    np.testing.assert_allclose([r.G_batch_pred for r in got], pred.G_batch, rtol=1e-4)
    self.assertEqual([r.kind for r in res.layers], ["dense", "bias"] * 3)
    self.assertEqual([a.kind for a in res.activations], ["relu", "relu"])
    json.loads(res.to_json())

  def test_measured_G_equals_a_per_example_vmap_grad_reference(self):
    model = CNN()
    x = jax.random.normal(jax.random.PRNGKey(1), (16, 8, 8, 3))
    labels = jax.random.randint(jax.random.PRNGKey(3), (16,), 0, 10)
    variables = model.init(jax.random.PRNGKey(0), x)

    def xent(out, y):
      return -jnp.take_along_axis(jax.nn.log_softmax(out), y[:, None], axis=1)[:, 0]

    res = calculus.inspect(model.apply, variables, x, loss=lambda out: xent(out, labels))

    def example_loss(v, xb, yb):
      return xent(model.apply(v, xb[None]), yb[None])[0]

    # One program, the means in float64 numpy: run eagerly, every op compiled on its own (the test 4.5 s -> 2.7 s).
    grads = jax.jit(jax.vmap(jax.grad(example_loss), in_axes=(None, 0, 0)))(variables, x, labels)
    for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]:
      name = "/".join(k.key for k in path)
      g, w = (np.asarray(a, np.float64) for a in (g, variables["params"][path[1].key][path[2].key]))
      want = float(np.mean(g ** 2) / np.mean(w ** 2)) if np.mean(w ** 2) > 0 else None
      got = _row(res, name).G_meas
      if want is None:
        self.assertIsNone(got)
      else:
        self.assertAlmostEqual(got / want, 1.0, delta=1e-4, msg=name)  # float32 rounding

  def test_predicted_vs_measured_G_on_a_strided_conv_net(self):
    self._check_conv_nets((((32, 64), 2, 2),))

  @pytest.mark.slow
  def test_predicted_vs_measured_G_on_conv_nets(self):
    # SAME stride 1 and SAME stride 2, at other channel counts.
    self._check_conv_nets((((48, 32), 3, 1), ((64, 48), 3, 2), ((16, 24), 2, 2)))

  def _check_conv_nets(self, configs):
    for channels, kernel, stride in configs:
      model = CNN(channels, kernel, stride)
      x = jax.random.normal(jax.random.PRNGKey(1), (128, 8, 8, 3))
      variables = model.init(jax.random.PRNGKey(0), x)
      res = calculus.inspect(model.apply, variables, x, key=jax.random.PRNGKey(2))
      weights = [r for r in res.layers if r.kind in ("conv", "dense")]
      self.assertEqual([r.kind for r in weights], ["conv", "conv", "dense"])
      self.assertEqual(weights[0]["taps"], kernel * kernel)
      for hops, r in zip((2, 2, 1), weights):
        tol = 4 * mc_rel_sd(min(channels), hops)
        self.assertAlmostEqual(r.G_meas / r.G_pred, 1.0, delta=tol,
                               msg=f"{r.path} channels {channels} kernel {kernel} stride {stride}")

  @pytest.mark.slow
  def test_max_pool_reports_none_with_the_reason(self):
    self._check_none("max", "max pooling")


  def _check_none(self, head, why):
    x = jax.random.normal(jax.random.PRNGKey(1), (16, 8, 8, 3))
    if True:
      model = CNN(head=head)
      variables = model.init(jax.random.PRNGKey(0), x)
      res = calculus.inspect(model.apply, variables, x)
      kernels = [r for r in res.layers if r.path.endswith("kernel")]
      for r in kernels:
        self.assertIsNone(r.G_pred, r.path)
        self.assertIn(why, r.reason)
        self.assertGreater(r.G_meas, 0)  # the measured columns are always there
      self.assertTrue(any(why in k for k in res.verdict.reasons))
      self.assertEqual([r.kind for r in kernels], ["conv", "conv", "dense"])

  def test_nnx_module_through_the_same_call(self):
    from flax import nnx

    class Net(nnx.Module):
      def __init__(self, rngs):
        self.l1, self.l2 = nnx.Linear(16, 32, rngs=rngs), nnx.Linear(32, 4, rngs=rngs)

      def __call__(self, x):
        return self.l2(jax.nn.relu(self.l1(x)))

    net = Net(nnx.Rngs(0))
    x = jax.random.normal(jax.random.PRNGKey(1), (32, 16))
    key = jax.random.PRNGKey(2)
    res = calculus.inspect(net, None, x, key=key)
    params = (mlp.Dense(net.l1.kernel[...], net.l1.bias[...]), mlp.Dense(net.l2.kernel[...], net.l2.bias[...]))
    meas = calculus.measure_mlp(params, x, key)
    np.testing.assert_allclose([_row(res, "l1/kernel").G_meas, _row(res, "l2/kernel").G_meas],
                               meas.moments.G, rtol=1e-4)

  def test_memory_bound_chunk_is_announced(self):
    """A chunk narrowed by free memory changes the measured columns' low digits (another vmap width): the
    default chunk is silent, a narrower one warns, whatever limit made it so."""
    params = mlp.init_mlp(jax.random.PRNGKey(0), (8, 16, 4))
    x = jnp.ones((64, 8))
    leaves = jax.tree.leaves(params)
    graph = tracing.flatten(lambda ls, x_: mlp.apply_mlp(jax.tree.unflatten(jax.tree.structure(params), ls), x_),
                            leaves, x)
    with warnings.catch_warnings():
      warnings.simplefilter("error")
      self.assertEqual(inspection._chunk(graph, leaves, 64, 2.0**40), 64)
    limit = 2.0**40
    while True:   # shrink the limit until the chunk narrows (or the job is refused)
      limit /= 1.5
      with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
          chunk = inspection._chunk(graph, leaves, 64, limit)
        except ValueError:
          self.fail("refused before any narrower chunk was chosen")
      if chunk < 64:
        break
      self.assertEqual(caught, [])
    self.assertTrue(any("chunks of" in str(w.message) for w in caught), caught)

  def test_bad_input_and_memory_guard(self):
    params = mlp.init_mlp(jax.random.PRNGKey(0), (8, 4))
    f = lambda p, x_: mlp.apply_mlp(p, x_)  # noqa: E731
    x = jnp.ones((4, 8))
    with self.assertRaisesRegex(ValueError, "bytes"):
      calculus.inspect(f, params, x, memory_limit=1000)
    with self.assertRaisesRegex(ValueError, "per-example"):
      calculus.inspect(f, params, x, loss=lambda out: jnp.sum(out))
    with self.assertRaisesRegex(ValueError, "batch"):
      calculus.inspect(f, params, jnp.ones(8))
    with self.assertRaisesRegex(ValueError, "failed"):
      calculus.inspect(f, params, jnp.ones((4, 5)))


class RecordsTest(chex.TestCase):
  """The typed answer: attribute access, the old item access, the JSON form in field order, no mutation."""

  def _small(self):
    params = mlp.init_mlp(jax.random.PRNGKey(0), (8, 16, 4), "he_normal")
    x = jax.random.normal(jax.random.PRNGKey(1), (8, 8))
    return calculus.inspect(lambda p, x_: mlp.apply_mlp(p, x_), params, x)

  def test_rows_are_typed_and_keep_item_access(self):
    res = self._small()
    row = res.layers[0]
    self.assertIsInstance(row, calculus.LeafRow)
    self.assertIsInstance(res.verdict, calculus.Verdict)
    self.assertIsInstance(res.activations[0], calculus.ActivationRow)
    self.assertEqual(row["G_meas"], row.G_meas)  # results were dicts before: `row["G_meas"]` still reads
    self.assertEqual(res.verdict["preconditioning_score_meas"], res.verdict.preconditioning_score_meas)
    self.assertEqual(res.verdict.calculus_check["ok"], res.verdict.calculus_check.ok)
    with self.assertRaises(KeyError):
      row["no_such_column"]
    with self.assertRaises(dataclasses.FrozenInstanceError):
      row.G_meas = 0.0

  def test_json_keys_are_pinned(self):
    # The JSON form's keys, in this order, are a format users keep on disk: the records' fields must follow it.
    res = self._small()
    rep = json.loads(res.to_json())
    self.assertEqual(rep, res.to_dict())
    self.assertEqual(list(rep), ["layers", "activations", "output", "verdict", "notes", "batch_size", "x0_sq", "loss"])
    self.assertEqual(list(rep["layers"][0]), [
        "path", "shape", "kind", "op", "fan_in", "fan_out", "taps", "weight_sq", "grad_sq_meas", "G_meas",
        "G_batch_meas", "grad_sq_pred", "G_pred", "G_batch_pred", "x_sq_pred", "x_sq_meas", "dy_sq_pred",
        "dy_sq_meas", "reason", "G_over_median", "verdict"])
    self.assertEqual(list(rep["activations"][0]), [
        "index", "kind", "shape", "y_sq_pred", "y_sq_meas", "x_sq_pred", "x_sq_meas", "dx_sq_pred", "dx_sq_meas",
        "nu_pred", "nu_meas", "reason"])
    self.assertEqual(list(rep["output"]), ["out_sq_meas", "out_std_meas", "out_sq_pred"])
    self.assertEqual(list(rep["verdict"]), [
        "preconditioning_score_meas", "preconditioning_score_pred", "G_median_meas", "equalising_multipliers",
        "output_multiplier", "target_logit_std", "input_scale_for_bias_balance", "x0_sq_for_bias_balance",
        "calculus_check", "reasons"])
    self.assertEqual(list(rep["verdict"]["equalising_multipliers"][0]),
                     ["path", "G_over_median", "init_std_multiplier", "fixed_scalar_after"])
    self.assertEqual(list(rep["verdict"]["calculus_check"]), ["ok", "nu_spread", "reason"])
    self.assertEqual(rep["layers"][0]["shape"], [8, 16])  # tuples are lists in the JSON form
    # The table renders an Inspection and its JSON form alike.
    self.assertEqual(calculus.inspection_table.render(rep), res.table())

  def test_the_verdict_does_not_mutate_the_rows_it_judges(self):
    res = self._small()
    bare = [dataclasses.replace(r, G_over_median=None, verdict=None) for r in res.layers]
    before = list(bare)
    verdict, rows = calculus.inspection_assembly.judge(bare, res.activations, first_fan_in=8, x0_sq=res.x0_sq,
                                                       out_std=1.0, target_std=0.05)
    self.assertEqual(bare, before)
    self.assertTrue(all(r.verdict is None for r in bare))
    self.assertEqual([r.verdict for r in rows], [r.verdict for r in res.layers])
    self.assertEqual(verdict.equalising_multipliers, res.verdict.equalising_multipliers)

  def test_a_mask_computed_inside_the_model(self):
    # A dropout mask drawn inside apply_fn is a constant the graph computes: its value is read back from the
    # measured pass (this crashed before: the graph's constants were merged with `dict(**int_keys)`).
    def f(p, x_):
      mask = jax.random.bernoulli(jax.random.PRNGKey(9), 0.8, (64,))
      return jax.nn.relu(jnp.where(mask, x_ @ p["w1"], 0.0)) @ p["w2"]

    p = {"w1": jax.random.normal(jax.random.PRNGKey(4), (32, 64)) / math.sqrt(32),
         "w2": jax.random.normal(jax.random.PRNGKey(5), (64, 8)) / math.sqrt(64)}
    res = calculus.inspect(f, p, jax.random.normal(jax.random.PRNGKey(1), (32, 32)))
    self.assertEqual([r.kind for r in res.layers], ["dense", "dense"])
    for r in res.layers:
      self.assertIsNone(r.reason, r.path)
      self.assertIsNotNone(r.G_pred, r.path)
    self.assertEqual([a.kind for a in res.activations], ["relu"])


class ModelsTest(chex.TestCase):

  @pytest.mark.slow
  def test_flax_modules_equal_the_pure_functions(self):
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 8, 8, 3))
    cfg = models.LeNetConfig(image=(8, 8, 3))
    m = models.LeNet(cfg, "geometric")
    v = m.init(jax.random.PRNGKey(0), x)
    self.assertEqual(jax.tree_util.tree_structure(v["params"]),
                     jax.tree_util.tree_structure(models.init_lenet(jax.random.PRNGKey(0), cfg, "geometric")))
    np.testing.assert_allclose(m.apply(v, x), models.apply_lenet(v["params"], x), rtol=1e-6)
    rcfg = models.ResNetConfig()
    r = models.ResNet(rcfg, "geometric:c=2")
    rv = r.init(jax.random.PRNGKey(0), x)
    np.testing.assert_allclose(r.apply(rv, x), models.apply_resnet(rv["params"], x, rcfg), rtol=1e-6)
    with self.assertRaisesRegex(ValueError, "divisible"):
      models.init_lenet(jax.random.PRNGKey(0), models.LeNetConfig(image=(7, 7, 1)))

  @pytest.mark.slow
  def test_block_scalars_keep_the_forward_moment(self):
    # sigma_F and sigma_S are chosen so that the rules predict E[z^2] = E[x^2] through a block.
    for cfg, n_in in ((models.BlockConfig(64, 16, 2), 32),):
      x = jax.random.normal(jax.random.PRNGKey(1), (8, 8, 8, n_in))
      p = models.init_block(jax.random.PRNGKey(0), cfg, n_in)
      res = calculus.inspect(lambda p_, x_: models.apply_block(p_, x_, cfg), p, x)
      w_sq_ratio = np.mean([r.weight_sq / initializers.get("geometric").second_moment(r.shape)
                            for r in res.layers if r.kind == "conv"])
      # Drawn E[W^2] vs designed: the prediction uses the draw, so allow the draw's spread (3 convs).
      self.assertAlmostEqual(res.output.out_sq_pred, 1.0, delta=0.35 + abs(w_sq_ratio - 1))

  @pytest.mark.slow
  def test_geometric_and_the_papers_scalars_make_G_equal(self):
    x = jax.random.normal(jax.random.PRNGKey(1), (32, 8, 8, 3))
    scores = {}
    for name, spec in initializers.SCHEMES.items():
      cfg = models.ResNetConfig()
      p = models.init_resnet(jax.random.PRNGKey(0), cfg, spec)
      res = calculus.inspect(lambda p_, x_: models.apply_resnet(p_, x_, cfg, spec), p, x)
      scores[name] = res.verdict.preconditioning_score_pred
    # Geometric: every G_pred is nu / c^2 up to the draw's E[W^2] (a few % to 15% at these widths); the others
    # spread by the width and kernel ratios (factors of 2 and more).
    self.assertLess(scores["geometric"], 0.2)
    for name in ("fan_in", "fan_out", "xavier"):
      self.assertGreater(scores[name], 0.3, name)


if __name__ == "__main__":
  pytest.main([__file__, "-q"])

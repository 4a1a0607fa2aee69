"""Tests of `jscale.calculus.inspect` (the calculus on any JAX / Flax model) and of jscale.models.

Tolerances: a measured G of one network draw differs from the rules' expectation mainly through the
non-zero mean of ReLU inputs; averaged over m units that gives a relative s.d. of about r sqrt(2/m) per layer
hop, r <= 0.5 the uncentred correlation (tests/test_calculus.py's error model); G_pred here uses the draw's
own E[W^2], which removes the weight-sampling term. We allow 4 s.d.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import math
import os
import tempfile

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jscale import calculus, initializers, mlp, models


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
  return next(r for r in res.layers if r["path"] == path)


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
    np.testing.assert_allclose([r["G_meas"] for r in got], meas.moments.G, rtol=1e-4)
    np.testing.assert_allclose([r["G_batch_meas"] for r in got], meas.G_batch, rtol=1e-4)
    # Predictions from the draw's own E[W^2]: the layer-list calculus with those weight_sq, exactly.
    w_sq = [float(jnp.mean(p.w ** 2)) for p in params]
    layers = calculus.mlp_layers(widths, "he_normal")
    layers = tuple(calculus.Linear(l.n_out, weight_sq=w_sq[i // 2]) if l.is_weight else l
                   for i, l in enumerate(layers))
    pred = calculus.predict(layers, 32, x0_sq=float(jnp.mean(x ** 2)), batch_size=64,
                            x0_corr=float(meas.x0_corr))
    np.testing.assert_allclose([r["G_pred"] for r in got], pred.moments.G, rtol=1e-5)
    np.testing.assert_allclose([r["G_batch_pred"] for r in got], pred.G_batch, rtol=1e-4)
    self.assertEqual([r["kind"] for r in res.layers], ["dense", "bias"] * 3)
    self.assertEqual([a["kind"] for a in res.activations], ["relu", "relu"])
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

    grads = jax.vmap(jax.grad(example_loss), in_axes=(None, 0, 0))(variables, x, labels)
    for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]:
      name = "/".join(k.key for k in path)
      w = variables["params"][path[1].key][path[2].key]
      want = float(jnp.mean(g ** 2) / jnp.mean(w ** 2)) if float(jnp.mean(w ** 2)) > 0 else None
      got = _row(res, name)["G_meas"]
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
      weights = [r for r in res.layers if r["kind"] in ("conv", "dense")]
      self.assertEqual([r["kind"] for r in weights], ["conv", "conv", "dense"])
      self.assertEqual(weights[0]["taps"], kernel * kernel)
      for hops, r in zip((2, 2, 1), weights):
        tol = 4 * mc_rel_sd(min(channels), hops)
        self.assertAlmostEqual(r["G_meas"] / r["G_pred"], 1.0, delta=tol,
                               msg=f"{r['path']} channels {channels} kernel {kernel} stride {stride}")

  @pytest.mark.slow
  def test_max_pool_reports_none_with_the_reason(self):
    self._check_none("max", "max pooling")

  @pytest.mark.slow
  def test_tanh_reports_none_with_the_reason(self):
    self._check_none("tanh", "tanh outside its linear regime")

  def _check_none(self, head, why):
    x = jax.random.normal(jax.random.PRNGKey(1), (16, 8, 8, 3))
    if True:
      model = CNN(head=head)
      variables = model.init(jax.random.PRNGKey(0), x)
      res = calculus.inspect(model.apply, variables, x)
      kernels = [r for r in res.layers if r["path"].endswith("kernel")]
      for r in kernels:
        self.assertIsNone(r["G_pred"], r["path"])
        self.assertIn(why, r["reason"])
        self.assertGreater(r["G_meas"], 0)  # the measured columns are always there
      self.assertTrue(any(why in k for k in res.verdict["reasons"]))
      self.assertEqual([r["kind"] for r in kernels], ["conv", "conv", "dense"])

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
    np.testing.assert_allclose([_row(res, "l1/kernel")["G_meas"], _row(res, "l2/kernel")["G_meas"]],
                               meas.moments.G, rtol=1e-4)

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
      w_sq_ratio = np.mean([r["weight_sq"] / initializers.get("geometric").second_moment(r["shape"])
                            for r in res.layers if r["kind"] == "conv"])
      # Drawn E[W^2] vs designed: the prediction uses the draw, so allow the draw's spread (3 convs).
      self.assertAlmostEqual(res.output["out_sq_pred"], 1.0, delta=0.35 + abs(w_sq_ratio - 1))

  @pytest.mark.slow
  def test_geometric_and_the_papers_scalars_make_G_equal(self):
    x = jax.random.normal(jax.random.PRNGKey(1), (32, 8, 8, 3))
    scores = {}
    for name, spec in initializers.SCHEMES.items():
      cfg = models.ResNetConfig()
      p = models.init_resnet(jax.random.PRNGKey(0), cfg, spec)
      res = calculus.inspect(lambda p_, x_: models.apply_resnet(p_, x_, cfg, spec), p, x)
      scores[name] = res.verdict["preconditioning_score_pred"]
    # Geometric: every G_pred is nu / c^2 up to the draw's E[W^2] (a few % to 15% at these widths); the others
    # spread by the width and kernel ratios (factors of 2 and more).
    self.assertLess(scores["geometric"], 0.2)
    for name in ("fan_in", "fan_out", "xavier"):
      self.assertGreater(scores[name], 0.3, name)


def _load_cli():
  path = os.path.join(os.path.dirname(__file__), "..", "scripts", "calculus.py")
  spec = importlib.util.spec_from_file_location("calculus_cli", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def _run(*argv):
  out, err = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    try:
      rc = _load_cli().main(list(argv))
    except SystemExit as e:
      rc = e.code
  return rc, out.getvalue(), err.getvalue()


class CLITest(chex.TestCase):

  def test_model_lenet_json_and_table(self):
    rc, out, _ = _run("--model", "lenet", "--batch", "16", "--json")
    self.assertEqual(rc, 0)
    rep = json.loads(out)
    self.assertEqual([r["path"] for r in rep["layers"] if r["kind"] == "conv"], ["conv0/kernel", "conv1/kernel"])
    text = calculus.inspection.render(rep)  # what the script prints without --json
    self.assertIn("G meas", text)
    self.assertIn("recommendations", text)

  def test_model_from_a_file(self):
    path = os.path.join(tempfile.mkdtemp(), "net.py")
    with open(path, "w") as f:
      f.write("import jax\nfrom jscale import mlp\n"
              "def make(key, init):\n"
              "  p = mlp.init_mlp(key, (8, 16, 4), init or 'he_normal')\n"
              "  return (lambda p, x: mlp.apply_mlp(p, x)), p, jax.random.normal(key, (16, 8))\n")
    rc, out, _ = _run("--model", f"{path}:make", "--json")
    self.assertEqual(rc, 0)
    self.assertEqual(json.loads(out)["layers"][0]["path"], "0/w")

  def test_errors_exit_2_without_traceback(self):
    for argv in (["--model", "nope"], ["--model", "/no/such.py:f"], ["--widths", "100000,100000,100000"]):
      rc, _, err = _run(*argv)
      self.assertEqual(rc, 2, argv)
      self.assertTrue(err.startswith("error: "), err)
      self.assertNotIn("Traceback", err)


if __name__ == "__main__":
  pytest.main([__file__, "-q"])

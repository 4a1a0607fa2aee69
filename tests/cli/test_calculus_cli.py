"""Tests of `jscale calculus` (jscale/cli/calculus.py) through its thin wrapper scripts/calculus.py: the MLP
table and JSON, the `--model` path through `inspect`, and the one-line errors."""
from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import math
import os
import pathlib
import tempfile

import chex
import numpy as np
import pytest

from jscale import calculus


def load_cli():
  """scripts/calculus.py as a module, by path (scripts/ is not a package)."""
  path = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "calculus.py"
  spec = importlib.util.spec_from_file_location("jscale_calculus_cli", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def run_cli(*argv):
  buf = io.StringIO()
  with contextlib.redirect_stdout(buf):
    rc = load_cli().main(list(argv))
  assert rc == 0
  return buf.getvalue()


def _small_model_file() -> str:
  """A user's --model file: make(key, init) returning a small MLP, its apply and a batch."""
  path = os.path.join(tempfile.mkdtemp(), "net.py")
  with open(path, "w") as f:
    f.write("import jax\nfrom jscale import mlp\n"
            "def make(key, init):\n"
            "  p = mlp.init_mlp(key, (8, 16, 4), init or 'he_normal')\n"
            "  return (lambda p, x: mlp.apply_mlp(p, x)), p, jax.random.normal(key, (16, 8))\n")
  return path


def run_status(*argv):
  """(exit status, stdout, stderr) of the script's main, SystemExit included."""
  out, err = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    try:
      rc = load_cli().main(list(argv))
    except SystemExit as e:
      rc = e.code
  return rc, out.getvalue(), err.getvalue()


class MlpCLITest(chex.TestCase):

  def test_json_schema_and_default_table(self):
    rep = json.loads(run_cli("--widths", "64,32,16,8", "--batch", "32", "--json"))
    self.assertLen(rep["layers"], 3)
    for row in rep["layers"]:
      for key in ("fan_in", "fan_out", "weight_var", "nu_pred", "nu_meas", "G_pred", "G_meas"):
        self.assertIsInstance(row[key], (int, float), key)
    self.assertEqual([r["fan_in"] for r in rep["layers"]], [64, 32, 16])
    self.assertAlmostEqual(rep["layers"][0]["weight_var"], 2 / math.sqrt(64 * 32))
    # The JSON keys, in this order, are a format kept on disk: the typed summary's fields must follow it.
    self.assertEqual(list(rep), ["widths", "init", "activation", "weight_scale", "batch_size", "x0_sq", "x0_corr",
                                 "layers", "output", "preconditioning", "calculus_check", "recommendations", "notes"])
    self.assertEqual(list(rep["layers"][0]), [
        "layer", "fan_in", "fan_out", "init", "weight_var", "weight_sq_meas", "x_sq_pred", "x_sq_meas", "dx_sq_pred",
        "dx_sq_meas", "nu_pred", "nu_meas", "G_pred", "G_meas", "G_batch_pred", "G_batch_meas", "G_over_median",
        "verdict", "saturation", "dead", "bias_balance_pred"])
    self.assertEqual(list(rep["output"]), ["out_sq_pred", "out_sq_meas", "out_std_meas"])
    self.assertEqual(list(rep["preconditioning"]), ["score_pred", "score_meas", "G1_over_rest_meas"])
    self.assertEqual(list(rep["recommendations"]), [
        "output_multiplier", "target_logit_std", "input_scale_for_bias_balance", "x0_sq_for_bias_balance",
        "geometric_c", "geometric_weight_sq", "geometric_G_pred"])
    text = run_cli("--widths", "64,32,16,8", "--batch", "32")
    self.assertIn("nu pred", text)
    self.assertIn("recommendations", text)

  def test_compare(self):
    rep = json.loads(run_cli("--widths", "64,32,16,8", "--batch", "32", "--compare",
                             "he_normal,glorot_normal,geometric", "--json"))
    self.assertLen(rep["schemes"], 3)
    self.assertLen(rep["layers"], 9)
    self.assertEqual({r["init"] for r in rep["layers"]},
                     {"he_normal:fan_in", "glorot_normal", "geometric:c=2.0"})

  def test_feature_vs_weight_scaling_question(self):
    common = ("--widths", "784,300,100,10", "--init", "glorot_normal", "--data", "pixels", "--batch", "32",
              "--json")
    good = json.loads(run_cli(*common, "--feature-scale", "255", "--weight-scale", "1"))
    bad = json.loads(run_cli(*common, "--feature-scale", "1", "--weight-scale", "255"))
    g_good = np.array([r["G_meas"] for r in good["layers"]])
    g_bad = np.array([r["G_meas"] for r in bad["layers"]])
    # Same forward pass (x W = (255 x)(W / 255)): layers 2.. are identical, layer 1's G is 255^4 larger.
    # float32 on pixel sums: 1e-3 relative.
    np.testing.assert_allclose(g_bad[1:], g_good[1:], rtol=1e-3)
    self.assertAlmostEqual(g_bad[0] / g_good[0] / 255.0 ** 4, 1.0, delta=1e-3)
    self.assertEqual(bad["layers"][0]["verdict"], "severe")

  def test_bad_args(self):
    cli = load_cli()
    for argv in (["--widths", "10"], ["--widths", "10,0,3"], ["--widths", "a,b"], ["--activation", "swish"],
                 ["--init", "nope"], ["--feature-scale", "0"], ["--batch", "0"]):
      with contextlib.redirect_stderr(io.StringIO()), self.assertRaises(SystemExit) as e:
        cli.main(argv)
      self.assertEqual(e.exception.code, 2, argv)


class ModelCLITest(chex.TestCase):

  def test_model_lenet_json_and_table(self):
    rc, out, _ = run_status("--model", "lenet", "--batch", "16", "--json")
    self.assertEqual(rc, 0)
    rep = json.loads(out)
    self.assertEqual([r["path"] for r in rep["layers"] if r["kind"] == "conv"], ["conv0/kernel", "conv1/kernel"])
    text = calculus.inspection_table.render(rep)  # the table renders the JSON form as it renders an Inspection
    self.assertIn("G meas", text)
    self.assertIn("recommendations", text)

  @pytest.mark.slow
  def test_model_transformer_json(self):
    rc, out, _ = run_status("--model", "transformer", "--init", "lecun_normal", "--batch", "16", "--depth", "3",
                            "--json")
    self.assertEqual(rc, 0)
    rep = json.loads(out)
    rows = {r["path"]: r for r in rep["layers"]}
    for name in ("block0/attn/query/kernel", "block2/mlp/dense0/kernel", "embed/tokens", "ln_final/scale"):
      self.assertIsNotNone(rows[name]["G_pred"], f"{name}: {rows[name]['reason']}")
      self.assertGreater(rows[name]["G_meas"], 0)

  def test_model_from_a_file(self):
    path = _small_model_file()
    rc, out, err = run_status("--model", f"{path}:make", "--json")
    self.assertEqual(rc, 0)
    self.assertEqual(json.loads(out)["layers"][0]["path"], "0/w")
    self.assertEqual(err, "")   # not a terminal: no progress line in a log

  def test_model_progress_on_a_terminal(self):
    # The inspection of a --model was silent for tens of seconds; on a terminal it says what it is doing.
    path = _small_model_file()

    class Terminal(io.StringIO):
      def isatty(self):
        return True

    out, err = io.StringIO(), Terminal()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
      rc = load_cli().main(["--model", f"{path}:make", "--compare", "he_normal,glorot_normal", "--json"])
    self.assertEqual(rc, 0)
    self.assertEqual(err.getvalue().splitlines(), [
        f"calculus: inspecting model {path}:make  init he_normal (1 of 2) ...",
        f"calculus: inspecting model {path}:make  init glorot_normal (2 of 2) ..."])
    self.assertEqual(len(json.loads(out.getvalue())["schemes"]), 2)

  def test_errors_exit_2_without_traceback(self):
    for argv in (["--model", "nope"], ["--model", "/no/such.py:f"], ["--widths", "100000,100000,100000"],
                 ["--model", "lenet", "--depth", "3"], ["--model", "transformer", "--depth", "0"]):
      rc, _, err = run_status(*argv)
      self.assertEqual(rc, 2, argv)
      self.assertTrue(err.startswith("error: "), err)
      self.assertNotIn("Traceback", err)


def relu_c_map(c: float) -> float:
  """The arc-cosine kernel of He-scaled ReLU layers: the next layer's correlation (closed form)."""
  return (math.sqrt(1 - c * c) + (math.pi - math.acos(c)) * c) / math.pi


class DepthProfileCLITest(chex.TestCase):

  def test_relu_he_keeps_both_moments_and_c0_follows_the_arc_cosine_map(self):
    rep = json.loads(run_cli("--depth-profile", "--activation", "relu", "--depth", "12", "--json"))
    self.assertEqual((rep["layers_computed"], len(rep["q"]), len(rep["grad"])), (12, 13, 13))
    np.testing.assert_allclose(rep["q"], 1.0, rtol=1e-6)      # gain 2 times E[relu^2] = q/2
    np.testing.assert_allclose(rep["grad"], 1.0, rtol=1e-6)   # gain 2 times E[relu'^2] = 1/2
    c = 0.0
    for _ in range(12):
      c = relu_c_map(c)
    # the pair map's quadrature at the kink is good to ~1% per layer (test_activation_maps); the map contracts
    # towards 1, so the errors do not add up past that
    np.testing.assert_allclose(rep["C0"], c, rtol=0.02)

  def test_gelu_at_he_gain_halves_both_moments_per_layer_deep_down(self):
    rep = json.loads(run_cli("--depth-profile", "--activation", "gelu", "--depth", "50", "--json"))
    q, g = np.array(rep["q"]), np.array(rep["grad"])
    # small q: gelu(y) = y/2 + O(y^2) and gelu'(0) = 1/2, so gain 2 times 1/4 per layer, both ways (the O(q)
    # corrections are below 1e-6 once q < 1e-8)
    deep = q[:-1] < 1e-8
    self.assertGreater(int(deep.sum()), 5)
    np.testing.assert_allclose(q[1:][deep] / q[:-1][deep], 0.5, rtol=1e-5)
    np.testing.assert_allclose(g[1:][deep] / g[:-1][deep], 2.0, rtol=1e-5)
    self.assertIn("forward second moment changes", rep["verdict"])

  def test_table_and_a_stable_stack(self):
    out = run_cli("--depth-profile", "--activation", "tanh", "--depth", "10", "--weight-gain", "1", "--q0", "0.01")
    self.assertIn("verdict: stable at this depth", out)
    self.assertIn("C(0) = ", out)
    self.assertEqual(sum(line.split()[0].isdigit() for line in out.splitlines()), 11)   # layers 0..10

  def test_bad_args_exit_2_with_one_line(self):
    for argv in (["--depth", "0"], ["--activation", "swoosh"], ["--weight-gain", "0"], ["--q0", "nan"],
                 ["--bias-sq", "-1"], ["--model", "lenet"], ["--widths", "3,4"]):
      rc, out, err = run_status("--depth-profile", *argv)
      self.assertEqual(rc, 2, argv)
      self.assertTrue(err.startswith("error: ") and err.count("\n") == 1, err)
      self.assertEqual(out, "")


if __name__ == "__main__":
  pytest.main([__file__, "-q"])

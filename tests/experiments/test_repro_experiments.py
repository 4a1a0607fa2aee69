"""The reproductions end to end: every registered experiment's grids, `scripts/sweep.py` on reduced quick grids
(the real code path: plan, run, custom runs, report), each report section's numbers against the saved
arrays, the feature/weight scale semantics, and LIBSVM files as init_schemes data sets.

The reduced grids swap only sizes (epochs, samples, seeds, data sets) on the registered experiments via
`dataclasses.replace`; the experiments are restored after the module. The symmetry claim itself is asserted in
tests/experiments/symmetry/test_symmetry.py (zeros: exactly chance; constant: identical units, at most a linear
classifier; He: learns); here only its report sentence is checked.
"""
import dataclasses
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile

import numpy as np
import pytest
from absl.testing import absltest

from jscale import datasets, experiments, report, sweeps  # noqa: F401  (experiments: registers the built-ins)
from jscale.experiments.feature_weight import config as feature_weight
from jscale.experiments.init_schemes import config as init_schemes
from jscale.experiments.sources.tutorial import TUTORIAL_TEST_ACC
from jscale.sweeps import registry

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PNG = b"\x89PNG\r\n\x1a\n"
NAMES = ("activations", "feature_weight", "init_schemes", "sigma", "symmetry")


def _load_script(name):
  spec = importlib.util.spec_from_file_location(f"_script_{name}", os.path.join(REPO, "scripts", f"{name}.py"))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def write_libsvm(path, n=90, d=5, seed=0):
  """Three Gaussian blobs in LIBSVM format, labels 2/5/9 (remapped to 0..2), zero features omitted."""
  rng = np.random.default_rng(seed)
  y = np.repeat([2, 5, 9], n // 3)
  x = rng.normal(size=(n, d)) + 3.0 * np.eye(3, d)[np.repeat(np.arange(3), n // 3)]
  x[:, -1] = 0.0  # an all-zero feature: never written, must still be counted via the others' indices
  with open(path, "w") as f:
    for xi, yi in zip(x, y):
      f.write(f"{yi} " + " ".join(f"{j + 1}:{v:.6g}" for j, v in enumerate(xi) if v != 0.0) + "\n")
  return x, y


def _fmt_ci(v):
  """An accuracy's mean [95% CI] as the report prints it: the t interval cut at [0, 1]."""
  return report.fmt_ci(report.mean_ci95(np.asarray(v, np.float64), 0, report.UNIT))


class RegistryTest(absltest.TestCase):

  def test_every_experiment_has_quick_and_full(self):
    self.assertTrue(set(NAMES) <= set(sweeps.names()))
    for name in NAMES:
      exp = sweeps.get(name)
      self.assertIn("quick", exp.grids, name)
      self.assertIn("full", exp.grids, name)
      self.assertIn("scripts/sweep.py", exp.doc, name)  # the docstring gives the command

  def test_grids_as_specified(self):
    q = sweeps.get("feature_weight").grid("quick").axes
    f = sweeps.get("feature_weight").grid("full").axes
    np.testing.assert_allclose(sorted(1 / np.array(q["input_scale"])), [1.0, 255.0])
    np.testing.assert_allclose(sorted(1 / np.array(q["layer_scale.0"])), [1.0, 255.0])
    for axis in ("input_scale", "layer_scale.0"):
      v = np.sort(1 / np.array(f[axis]))
      self.assertGreaterEqual(len(v), 5)
      np.testing.assert_allclose(v[[0, -1]], [1.0, 255.0], rtol=1e-9)
      # log-spaced: equal log steps up to the 4-significant-digit label rounding (<= 5e-4 relative)
      np.testing.assert_allclose(np.diff(np.log(v)), np.log(255.0) / (len(v) - 1), atol=1e-3)
    fw = sweeps.get("feature_weight")
    self.assertEqual((fw.hidden, fw.optimizer, fw.lr, fw.batch_size, fw.epochs, fw.kernel_init),
                     ((300, 100), "sgd", 0.1, 32, 2, "glorot_normal"))
    ins = sweeps.get("init_schemes")
    g = ins.grid("full").axes
    self.assertEqual(tuple(g["init"]), ("arithmetic", "fan_in", "fan_out", "geometric"))
    self.assertLen(g["seed"], 10)
    self.assertTrue(all(float(np.log2(v)).is_integer() for v in g["lr"]))
    self.assertEqual((ins.hidden, ins.epochs, ins.input_layernorm, ins.output_std, ins.weight_decay),
                     ((384, 64), 5, True, 0.05, 1e-5))
    self.assertTrue({"iris", "wine", "digits_raw", "breast_cancer", "two_moons"} <= set(g["dataset"]))
    sig = sweeps.get("sigma").grid("full").axes["sigma"]
    self.assertTrue({0.01, 0.1, 0.5, 1.0} <= set(sig))  # Table 1 compares like with like

  def test_custom_experiment_checks_settings_at_registration(self):
    def run(exp_dir, seed=0):
      pass
    try:
      sweeps.register(sweeps.CustomExperiment(name="_bad", run=run, grids={"quick": {"seeds": 1}}))
      with self.assertRaisesRegex(ValueError, "bad settings"):
        sweeps.get("_bad")
    finally:
      registry.unregister("_bad")
    with self.assertRaisesRegex(ValueError, "no grid"):
      sweeps.CustomExperiment(name="_ok", run=run, grids={"quick": {}}).grid("full")

  def test_importing_an_experiment_reads_no_environment_or_file(self):
    # Options are resolved when the experiment is built, never at import: a LIBSVM path that does not
    # exist fails only when passed, and the module imports with a hostile environment.
    code = "import jscale.experiments.init_schemes, jscale.experiments.feature_weight; print('ok')"
    env = dict(os.environ, JAX_PLATFORMS="cpu", JSCALE_LIBSVM="/nonexistent", TFDS_DATA_DIR="/nonexistent")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    self.assertEqual(out.returncode, 0, out.stderr)
    with self.assertRaisesRegex(ValueError, "no such LIBSVM file"):
      sweeps.get("init_schemes", libsvm=("/nonexistent.svm",))
    with self.assertRaisesRegex(ValueError, "has no option"):
      sweeps.get("sigma", libsvm=("x",))


class FeatureWeightSemanticsTest(absltest.TestCase):

  def test_input_and_layer_scale_divide_as_the_question_does(self):
    # Full batch, 1 epoch: train_loss is the loss at initialisation and g_ratio the G_l there. (x/255, W)
    # and (x, W/255) must give the same first forward pass (same loss) while layer 1's G differs by
    # 255^4 (dW_1 ~ x: 255^2 in E[dW^2]; E[W^2]: 255^2 the other way). Layers 2-3 see identical
    # activations and gradients, so their G agree.
    exp = dataclasses.replace(sweeps.get("feature_weight"), data="digits_raw", data_options={}, epochs=1,
                              batch_size=None, hidden=(16, 8))
    grid = feature_weight.scale_grid((1.0, 255.0), (0,))
    plan = sweeps.make_plan(exp, grid, devices=1)
    res = sweeps.run(plan, tempfile.mkdtemp() + "/fw", progress=False)
    loss, dims = res.grid("train_loss")
    g, _ = res.grid("g_ratio")
    self.assertEqual(dims[:2], ("input_scale", "layer_scale.0"))
    f_255_w_1, f_1_w_255 = (1, 0), (0, 1)   # input_scale = 1/f, layer_scale.0 = 1/w; values (1, 1/255)
    self.assertAlmostEqual(res.points[2]["input_scale"], 1 / 255)  # ordered as the grid says
    # float32 forward pass: the two products agree to ~1e-6 relative.
    np.testing.assert_allclose(loss[f_255_w_1][0, 0], loss[f_1_w_255][0, 0], rtol=1e-5)
    np.testing.assert_allclose(g[f_1_w_255][0, 0, 0] / g[f_255_w_1][0, 0, 0], 255.0 ** 4, rtol=1e-3)
    np.testing.assert_allclose(g[f_1_w_255][0, 0, 1:], g[f_255_w_1][0, 0, 1:], rtol=1e-4)


class LibsvmTest(absltest.TestCase):

  def test_file_becomes_a_data_set(self):
    d = tempfile.mkdtemp()
    path = os.path.join(d, "blobs.svm")
    x, y = write_libsvm(path)
    ds = datasets.get(f"libsvm:{path}", test_fraction=0.0)
    self.assertEqual(ds.num_classes, 3)
    np.testing.assert_array_equal(np.bincount(ds.y_train), [30, 30, 30])
    exp = init_schemes.make_experiment([path], datasets=())
    self.assertEqual(exp.grid("quick").axes["dataset"], (f"libsvm:{os.path.abspath(path)}",))

  def test_option_adds_files_to_the_registered_grid(self):
    path = os.path.join(tempfile.mkdtemp(), "b.svm")
    write_libsvm(path, n=30)
    a = sweeps.get("init_schemes", libsvm=(path,)).grid("quick").axes["dataset"]
    self.assertEqual(a[-1], f"libsvm:{path}")
    self.assertNotIn(f"libsvm:{path}", sweeps.get("init_schemes").grid("quick").axes["dataset"])


def _reduced_main_job(tmp: str, outs) -> list[int]:
  """`scripts/sweep.py --grid quick` on reduced copies of the five training and statistics experiments, once
  per directory in `outs`; returns the exit statuses. The registry is restored afterwards."""
  svm = os.path.join(tmp, "blobs.svm")
  # 150 rows of 4 features in 3 classes: iris's shapes (105 training, 45 test), so init_schemes' training
  # program for the blobs is iris's (one compile fewer, ~3 CPU s; the data differ, the code path is the same)
  write_libsvm(svm, n=150)
  full = {n: sweeps.get(n) for n in NAMES}
  small = {
      "sigma": dataclasses.replace(full["sigma"], epochs=4, data_options={"n": 200, "noise": 0.2}, grids={
          "quick": sweeps.product(batch_size=(None, 32), sigma=(0.01, 0.1, 0.5, 1.0), seed=range(3))}),
      "feature_weight": dataclasses.replace(full["feature_weight"], data="digits_raw", data_options={},
                                            hidden=(32, 16), grids={"quick": feature_weight.scale_grid(
                                                (1.0, 255.0), range(2))}),
      "init_schemes": dataclasses.replace(init_schemes.make_experiment(
          [svm], datasets=("iris", "two_moons"), quick_seeds=3, quick_lrs=(0.25, 1.0), epochs=2),
          hidden=(24, 8)),
      "activations": dataclasses.replace(full["activations"], grids={
          "quick": {"seed": 0, "replicates": 3, "depth": 3, "width": 32, "n_samples": 64}}),
      "symmetry": dataclasses.replace(full["symmetry"], grids={
          "quick": {"seeds": (0, 1), "steps": 30, "lr": 0.1, "batch_size": 32,
                    "inits": ("zeros", "constant:0.1", "he_normal"), "widths_hidden": (8, 8)}}),
  }
  with registry.replaced(small):
    sweep = _load_script("sweep")
    # The hessian experiment has its own end-to-end test (tests/experiments/hessian/test_repro_hessian.py).
    args = ["--grid", "quick", "--no-progress", "--devices", "1", "--experiment", ",".join(NAMES)]
    return [sweep.main(args + ["--out", out]) for out in outs]


class EndToEndTest(absltest.TestCase):
  """`scripts/sweep.py --grid quick` on reduced copies of every experiment, then the report."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp()
    cls.out = os.path.join(cls.tmp, "run")
    cls.rc, = _reduced_main_job(cls.tmp, [cls.out])
    with open(os.path.join(cls.out, "report.md")) as f:
      cls.md = f.read()

  def _row(self, start):
    return next(l for l in self.md.splitlines() if l.startswith(start))

  def test_every_section_built_with_its_figures(self):
    self.assertEqual(self.rc, 0)
    for name in NAMES:
      self.assertIn(f"| {name} | built |", self.md)
    imgs = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", self.md)
    for sub, n_min in (("sigma/", 5), ("feature_weight/", 2), ("init_schemes/", 1), ("activations/", 4),
                       ("symmetry/", 2)):
      self.assertGreaterEqual(sum(i.startswith(sub) for i in imgs), n_min, sub)
    for rel in imgs:
      with open(os.path.join(self.out, rel), "rb") as f:
        self.assertEqual(f.read(8), PNG, rel)
    self.assertIn("python scripts/sweep.py --grid quick", self.md)  # run.json: the command that wrote it

  def test_sigma_table1_from_the_run(self):
    res = sweeps.load(os.path.join(self.out, "sigma"))
    acc, dims = res.grid("test_acc")
    self.assertEqual(dims, ("batch_size", "sigma", "seed", "epoch"))
    with open(os.path.join(self.out, "sigma", "verdicts.json")) as f:
      ver = json.load(f)
    self.assertLen(ver, 8)
    for k, (s, src) in enumerate(TUTORIAL_TEST_ACC.items()):
      for b, (bs, name) in enumerate(((None, "full batch"), (32, "batch 32"))):
        row = self._row(f"| {s:g} | {name} | {src} |")
        self.assertIn(f"| 3 / 3 | {_fmt_ci(acc[b, k, :, -1])} |", row)
        self.assertIn("| too few seeds |", row)      # 3 seeds: no verdict
        v = ver[2 * k + b]
        self.assertEqual(v["cell"], {"sigma": s, "batch_size": bs})
        self.assertEqual((v["metric"], v["source"], v["n_seeds"], v["verdict"]), ("test_acc", src, 3, "too few seeds"))
        self.assertAlmostEqual(v["mean"], float(np.mean(acc[b, k, :, -1])), places=6)
        self.assertTrue(0.0 <= v["single_run_95"][0] <= v["ci95"][0] <= v["ci95"][1] <= v["single_run_95"][1] <= 1)

  def test_headlines_from_the_run(self):
    """activations, feature_weight and symmetry quote their numbers (README's Reproductions table)."""
    def headline(name):
      with open(os.path.join(self.out, name, "headline.json")) as f:
        return json.load(f)["numbers"]
    sym = sweeps.load(os.path.join(self.out, "symmetry"))
    acc = sym.metric("test_acc", "init", "seed")
    for k, i in enumerate(sym.axis("init")):
      self.assertAlmostEqual(headline("symmetry")[f"{i}.test_acc"], float(acc[k].mean()), places=6)
    act = sweeps.load(os.path.join(self.out, "activations"))
    ratio = (act.metric("std", "replicate", "activation", "scheme", "layer")[..., -1]
             / act.metric("predicted_std", "activation", "scheme", "layer")[None, ..., -1])
    relu = list(act.axis("activation")).index("relu")
    self.assertEqual(ratio.shape[0], 3)  # three independent nets
    # The headline is the geometric mean over the nets, and its interval holds it.
    self.assertAlmostEqual(headline("activations")[f"relu.{act.axis('scheme')[0]}.last_std_over_pred"],
                           float(np.exp(np.log(ratio[:, relu, 0]).mean())), places=6)
    lo, hi = (headline("activations")[f"relu.{act.axis('scheme')[0]}.last_std_over_pred_{e}"] for e in ("lo", "hi"))
    self.assertLess(lo, float(np.exp(np.log(ratio[:, relu, 0]).mean())))
    self.assertGreater(hi, float(np.exp(np.log(ratio[:, relu, 0]).mean())))
    fw = sweeps.load(os.path.join(self.out, "feature_weight"))
    a, _ = fw.grid("test_acc")   # (input_scale = 1/f, layer_scale.0 = 1/w, seed, epoch): f = 255 at index 1
    chance = 1.0 / fw.widths[-1]
    fast = np.where(np.isfinite(a[1, 0, :, -1]), a[1, 0, :, -1], chance)
    self.assertAlmostEqual(headline("feature_weight")["fast.acc"], float(fast.mean()), places=6)

  def test_feature_weight_corners_and_data_named(self):
    res = sweeps.load(os.path.join(self.out, "feature_weight"))
    acc, _ = res.grid("test_acc")  # (input_scale = 1/f, layer_scale.0 = 1/w, seed, epoch)
    self.assertIn("**Data used: the offline stand-in, not Fashion-MNIST.**", self.md)
    row = self._row("| 255 | 1 |")          # f = 255 is input_scale 1/255 (index 1), w = 1 (index 0)
    self.assertIn(_fmt_ci(acc[1, 0, :, -1]), row)
    row = self._row("| 1 | 255 |")
    self.assertIn(_fmt_ci(acc[0, 1, :, -1]), row)

  def test_init_schemes_best_lr_median(self):
    res = sweeps.load(os.path.join(self.out, "init_schemes"))
    metric = "train_pass_loss" if res.has("train_pass_loss") else "train_loss"
    if metric == "train_loss":
      self.assertIn("falls back to `train_loss`", self.md)
    loss, dims = res.grid(metric)
    self.assertEqual(dims, ("dataset", "init", "lr", "seed", "epoch"))
    med = np.median(loss[..., -1], axis=-1)          # (dataset, init, lr); nothing diverges here
    self.assertTrue(np.all(np.isfinite(med)))
    lrs = res.config["axes"]["lr"]
    for i, name in enumerate(("iris", "two_moons (apart)", "blobs.svm")):
      row = self._row(f"| {name} |")
      for k in range(4):
        j = int(np.argmin(med[i, k]))
        self.assertIn(f"{report.fmt(med[i, k, j])} (lr {lrs[j]:g})", row)
    # Two moons is set apart (LayerNorm over 2 features: one bit) and out of the averages, which run over
    # the other two data sets with a 95% interval each; too few data sets for a verdict.
    self.assertIn("**Reported apart, left out of the averages: two_moons.**", self.md)
    best = np.min(med, axis=-1)[[0, 2]]                 # (iris, blobs) x init
    norm = best / best.max(1, keepdims=True)
    row = self._row("| geometric |")
    self.assertIn(report.fmt_ci(report.mean_ci95(norm[:, 3], 0, report.UNIT), digits=3), row)
    with open(os.path.join(self.out, "init_schemes", "verdicts.json")) as f:
      ver = json.load(f)
    self.assertEqual([(v["cell"]["init"], v["n_seeds"], v["verdict"]) for v in ver],
                     [(k, 2, "too few seeds") for k in ("arithmetic", "fan_in", "fan_out", "geometric")])
    self.assertEqual(ver[3]["metric"], f"avg_normalised_{metric}")
    self.assertIn("**The data sets differ from the paper's.**", self.md)
    for src in ("0.90", "0.84", "0.88", "0.81", "14 / 26", "12 / 26"):
      self.assertIn(src, self.md)

  def test_symmetry_sentence(self):
    self.assertIn("- zeros: hidden units stayed identical; accuracy stays at chance", self.md)

  @pytest.mark.slow   # the script on a small run: tests/report/test_report.py::ReportTest::test_script
  def test_report_script_rebuilds_the_report_from_saved_results(self):
    before = os.path.getmtime(os.path.join(self.out, "report.md"))
    out = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "report.py"), self.out,
                          "--experiments", *[n for n in sweeps.names() if n in NAMES]],
                         capture_output=True, text=True)
    self.assertEqual(out.returncode, 0, out.stderr)
    self.assertGreater(os.path.getmtime(os.path.join(self.out, "report.md")), before)  # rewritten
    with open(os.path.join(self.out, "report.md")) as f:
      self.assertEqual(f.read(), self.md)


@pytest.mark.slow
class TwoRunsTest(absltest.TestCase):
  """Two independent runs of the same reduced main job write the same report, timings and paths aside."""

  def test_two_real_runs_give_the_same_report(self):
    tmp = tempfile.mkdtemp()
    outs = [os.path.join(tmp, "run"), os.path.join(tmp, "run2")]
    self.assertEqual(_reduced_main_job(tmp, outs), [0, 0])
    md, md2 = (open(os.path.join(o, "report.md")).read() for o in outs)
    self.assertNotEqual(md, md2)   # paths and timings do differ, so the masking below matters
    self.assertEqual(_without_timings(md, outs[0]), _without_timings(md2, outs[1]))


def _without_timings(md: str, out: str) -> str:
  """A report with its run directory and every measured time replaced by placeholders."""
  md = md.replace(os.path.abspath(out), "OUT").replace(out, "OUT")
  md = re.sub(r"[0-9.]+ s (wall time|of compute)", r"T s \1", md)
  # the run summary's compile line (issue 23): seconds, shares and how many programs the compilation cache
  # served are timings of this machine, not results
  md = re.sub(r"^  - [0-9.]+ s compiling .*$", "  - COMPILE", md, flags=re.M)
  return re.sub(r"wall_time_s: [0-9.]+", "wall_time_s: T", md)


if __name__ == "__main__":
  absltest.main()

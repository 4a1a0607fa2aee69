"""The `hessian` experiment: Figure 1 lands in report.md with the run's own numbers;
a killed run resumes from its per-setup files; Figure 2 shares one colour scale; the scripts' defaults."""
import json
import os
import shutil

import numpy as np
import pytest

from jscale import experiments, report, sweeps  # noqa: F401  (experiments: registers the built-ins)
from jscale.experiments.hessian import figures, rounds
from jscale.experiments.hessian import run as hessian_run
from jscale.experiments.hessian import section as hessian_section
from jscale.experiments.hessian.mlp_family import MLPFamily
from jscale.experiments.hessian.settings import Figure1Settings
from jscale.theory import conv_pairs, lenet_slots, pairs

TINY = dict(setups=2, batch=4, draws=4, seed=0, fig2_draws=0, fig2_minibatch=8, examples=3, target_rel_se=None,
            max_draws=4)


def test_hessian_experiment_section_reports_its_own_run(tmp_path):
  exp = sweeps.get("hessian")
  d = str(tmp_path / "hessian")
  # as in a fresh process: the run compiles (and counts) its programs whatever ran before. Only the counted
  # programs are dropped: jax.clear_caches() here made every later test on this xdist worker compile anew.
  for f in (*pairs.PROGRAMS, lenet_slots._round, conv_pairs._round):
    f.clear_cache()
  assert pairs.compiled_programs() == hessian_run._lenet_programs() == 0
  exp.execute("quick", d, setups=1, batch=4, draws=4, examples=3, max_draws=4, fig2_draws=0, lenet_setups=4)
  assert os.path.isfile(os.path.join(d, "fig1_ratio_hist.png"))
  with open(os.path.join(d, "fig1_records.json")) as f:
    data = json.load(f)
  summary = data["summary"]["batch_sizes"]
  text = report.render_section(hessian_section.build(sweeps.load(d)), str(tmp_path))
  # Every number printed comes from this run's records (read back independently of the builder).
  for b in ("1", "4"):
    assert f"| {b} | {report.fmt(summary[b]['median'])} [" in text
    assert report.fmt(summary[b]["median_corrected"]) in text
    assert report.fmt(summary[b]["median_corrected_nr"]) in text
  assert np.isfinite(summary["4"]["median_corrected"]) and summary["4"]["median_corrected"] > 0
  # per setup: its largest relative SE, in the records and in the report's per-setup table
  rel = data["records"][1]["exact_w_rel_se_max"]
  assert rel == max(np.array(data["records"][1]["exact_w_se"]) / np.array(data["records"][1]["exact_w"]))
  assert f"| 0 | {'-'.join(map(str, data['records'][0]['widths']))} |" in text and report.fmt(rel) in text
  assert "full grid only" in text
  # the quick grid's varied LeNet beside the MLP (four setups of different structures): its per-position ratios
  # as recorded, the pooled row, Figure 1's rows
  lenet = json.load(open(os.path.join(d, hessian_section.LENET_RECORDS)))
  at4 = [r for r in lenet["records"] if r["batch"] == 4]
  assert len(at4) == 4 and len({tuple(r["layers"]) for r in at4}) == 4 and "layers" not in lenet
  ratios = {}
  for r in at4:
    for l, layer in enumerate(r["layers"]):
      for key in [layer] + (["output"] if l == len(r["layers"]) - 1 else []):
        ratios.setdefault(key, []).append((r["full_w"][l] / r["exact_w"][l], r["leading_w"][l] / r["exact_w"][l]))
  assert set(lenet["positions"]["4"]) == set(ratios)
  for layer, v in lenet["positions"]["4"].items():
    assert (f"| 4 | {layer} | {report.fmt(v['median_full'])} [{report.fmt(v['p5_full'])}, "
            f"{report.fmt(v['p95_full'])}] | {report.fmt(v['median_leading'])} [") in text
    np.testing.assert_allclose([v["median_full"], v["median_leading"]], np.median(ratios[layer], axis=0))
    assert v["blocks"] == len(ratios[layer])
  assert os.path.isfile(os.path.join(d, "lenet_fig1_layers.png"))
  # the full-order tables of both families, as summarised in the records
  for fam in (json.load(open(os.path.join(d, hessian_section.RECORDS))), lenet):
    e = fam["full_order"]["batch_sizes"]["4"]
    assert f"| 4 | all | {report.fmt(e['median'])} [{report.fmt(e['p5'])}, {report.fmt(e['p95'])}] |" in text
  assert "strided LeNet" in text
  assert "| 4 | " + report.fmt(lenet["summary"]["batch_sizes"]["4"]["median_corrected"]) + " [" in text
  cfg = json.load(open(os.path.join(d, "config.json")))
  assert cfg["grid_name"] == "quick" and cfg["settings"]["setups"] == 1
  assert cfg["compiled_programs"] >= 1
  # the varied LeNet's four structures: two slot programs (one conv; more), not one per setup
  assert cfg["lenet_varied"] and cfg["lenet_compiled_programs"] == 2
  # each family's held-out seed (the quick grid: one setup each), in its own folder, beside the development seed
  quick = exp.grids["quick"]
  for key, folder in (("holdout_full_order", f"holdout_seed{quick['holdout_seed']}"),
                      ("lenet_holdout_full_order", f"lenet_holdout_seed{quick['lenet_holdout_seed']}")):
    held = json.load(open(os.path.join(d, folder, "fig1_records.json")))
    assert cfg[key]["seed"] == held["full_order"]["seed"] != cfg["seed"] and len(held["records"]) == 2
    e = held["full_order"]["batch_sizes"]["4"]
    assert f"| {report.fmt(e['median_nr'])} [{report.fmt(e['p5_nr'])}, {report.fmt(e['p95_nr'])}] ({e['blocks']}) |" in text


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  """A finished `hessian_run.run` at TINY, shared: the kill/resume test works on a copy, the figures script reads
  its records (one run fewer, ~2 CPU s)."""
  d = str(tmp_path_factory.mktemp("tiny") / "hessian")
  hessian_run.run(d, **TINY)
  return d


def test_killed_run_resumes_without_redoing_finished_setups(tiny_run, tmp_path, monkeypatch):
  d = str(tmp_path / "hessian")
  shutil.copytree(tiny_run, d)
  first = json.load(open(os.path.join(d, "fig1_records.json")))
  os.remove(os.path.join(d, MLPFamily.setup_dir, "0001.json"))  # as if killed during setup 1
  calls = []
  real = rounds.measure_setup
  monkeypatch.setattr(rounds, "measure_setup", lambda fam, s, *a, **k: calls.append(s) or real(fam, s, *a, **k))
  hessian_run.run(d, **TINY)
  assert [c.widths for c in calls] == [tuple(first["records"][2]["widths"])]  # only setup 1 recomputed
  again = json.load(open(os.path.join(d, "fig1_records.json")))
  for a, b in zip(first["records"], again["records"]):  # same keys: the same numbers
    np.testing.assert_allclose(a["exact_w"], b["exact_w"], rtol=1e-6)
  calls.clear()
  hessian_run.run(d, **{**TINY, "target_rel_se": 0.5})  # other settings (same shapes: no new compile): none reused
  assert len(calls) == 2


def test_figure2_panels_share_one_colour_scale(tmp_path):
  per = lambda scale: {"weights": (scale * np.array([[1.0, 0.1], [0.1, 3.0]])).tolist(), "diag_max_over_min": 3.0}
  fig = figures.heatmap_figure({"1": {"a": per(1.0), "b": per(100.0)}, "8": {"a": per(0.01), "b": per(1.0)}},
                               (3, 4, 2))
  clims = {im.get_clim() for ax in fig.axes for im in ax.get_images()}
  assert len(clims) == 1
  lo, hi = clims.pop()
  assert np.isclose(lo, np.log10(0.001)) and np.isclose(hi, np.log10(300.0))


def test_hessian_section_prints_the_lenet_evenness_verdict(tmp_path):
  d = str(tmp_path / "hessian")
  os.makedirs(d)
  rec = {"median": 0.4, "p5": 0.3, "p95": 0.5, "median_batch1": 0.4, "median_rel_se": 0.03, "max_rel_se": 0.05,
         "setups": 2}
  summ = {"median_corrected": 0.4, "p5_corrected": 0.3, "p95_corrected": 0.5, "median_corrected_ci95": [0.35, 0.45],
          "median_corrected_nr": 0.4, "p5_corrected_nr": 0.31, "p95_corrected_nr": 0.49, "blocks": 10}
  with open(os.path.join(d, hessian_section.LENET_RECORDS), "w") as f:
    json.dump({"layers": {"1": {"conv0": rec}}, "summary": {"batch_sizes": {"1": summ}}, "records": []}, f)
  even = {"1": {"fan_in": {"max_over_min": 2.06, "max_over_min_se": 0.18, "predicted_max_over_min": 2.0,
                           "draws": 1024},
                "geometric": {"max_over_min": 1.73, "max_over_min_se": 0.19, "predicted_max_over_min": 1.03,
                              "draws": 1024}}}
  sweeps.write_results(d, axes={"batch": [1]}, metrics={"median": (("batch",), [1.0])}, setups=1, draws=4, seed=0,
                       lenet_setups=2, lenet_draws=4, lenet_evenness=even,
                       lenet_fig2_config={"channels": [4, 8], "hidden": [32, 16]})
  text = report.render_section(hessian_section.build(sweeps.load(d)), str(tmp_path))
  assert "| 1 | conv0 | - | 0.4000 [0.3000, 0.5000] |" in text  # records without a full-order column: "-"
  assert "the most even diagonal is geometric (1.7300 +- 0.1900)" in text
  assert "| 1 | 2.0600 +- 0.1800 (pred. 2.0000) | 1.7300 +- 0.1900 (pred. 1.0300) |" in text


def test_hessian_section_prints_figure2_table(tmp_path):
  d = str(tmp_path / "hessian")
  ratios = {"1": {"fan_in": 47.7, "geometric": 1.84}, "128": {"fan_in": 1335.0, "geometric": 55.6}}
  sweeps.write_results(d, axes={"batch": [1, 1024]},
                       metrics={k: (("batch",), [1.0, 2.0]) for k in
                                ("median", "p5", "p95", "median_corrected", "p5_corrected", "p95_corrected")},
                       setups=100, draws=4, seed=0, fig2_widths=[24, 96, 12, 48, 8], fig2_diag_max_over_min=ratios)
  text = report.render_section(hessian_section.build(sweeps.load(d)), str(tmp_path))
  assert "| batch | fan_in | geometric |" in text
  assert "| 128 | 1335" in text and "55.6" in text
  assert "fig2_heatmaps.png" in text


def test_hessian_figures_default_out_is_a_new_run_directory(tiny_run, tmp_path, monkeypatch):
  import importlib.util
  spec = importlib.util.spec_from_file_location(
      "hessian_figures", os.path.join(os.path.dirname(__file__), "..", "..", "..", "scripts", "hessian_figures.py"))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  monkeypatch.chdir(tmp_path)
  assert mod.main(["fig1", "--records", os.path.join(tiny_run, "fig1_records.json")]) == 0
  made = os.listdir(tmp_path / "runs")
  assert len(made) == 1 and made[0].startswith("hessian-")
  assert os.path.isfile(tmp_path / "runs" / made[0] / "fig1_ratio_hist.png")
  assert not os.path.exists(tmp_path / "results")


def test_setups_in_threads_equal_one_at_a_time():
  """Two setups at once (threads) give bitwise the records of one at a time: each setup draws from its own key."""
  fig1 = Figure1Settings(3, 4, 4, 0, examples=3, target_rel_se=0.3, max_draws=16)  # adaptive: rounds differ by setup
  one = rounds.figure1(MLPFamily(), fig1, workers=1)
  two = rounds.figure1(MLPFamily(), fig1, workers=2)
  assert [r.setup for r in one] == [r.setup for r in two]
  for a, b in zip(one, two):
    assert a.draws == b.draws
    np.testing.assert_array_equal(a.exact_w, b.exact_w)
    np.testing.assert_array_equal(a.exact_w_se, b.exact_w_se)
    np.testing.assert_array_equal(a.exact_b, b.exact_b)


def test_a_failing_setup_stops_the_queue_and_finished_ones_are_kept():
  sampled = list(range(6))
  saved, started = [], []

  def run(s, on_round):
    started.append(s)
    if s == 1:
      raise RuntimeError("setup 1 broke")
    return (s, -s)

  try:
    rounds.measure_all(sampled, run, done={0: ("a", "b")}, on_record=lambda i, r1, rb: saved.append(i), workers=1)
  except RuntimeError as e:
    assert "setup 1 broke" in str(e)
  else:
    raise AssertionError("the failure was swallowed")
  # done setups are not rerun; the queue is cancelled (the one worker may already have taken setup 2)
  assert 0 not in started and started[0] == 1 and len(started) <= 2
  assert saved == [] or saved == [2]
  out = rounds.measure_all(sampled[:3], lambda s, _: (s, -s), done={0: ("a", "b")}, workers=2,
                           on_record=lambda i, r1, rb: saved.append(i))
  assert out == ["a", "b", 1, -1, 2, -2] and sorted(saved) == [1, 2]

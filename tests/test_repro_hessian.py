"""The `hessian` experiment: Figure 1 from jscale.theory lands in report.md with the run's own numbers."""
import json
import os

import numpy as np

from jscale import experiments, report, sweeps  # noqa: F401  (experiments: registers the built-ins)
from jscale.experiments.hessian import section as hessian_section


def test_hessian_experiment_section_reports_its_own_run(tmp_path):
  exp = sweeps.get("hessian")
  d = str(tmp_path / "hessian")
  exp.execute("quick", d, setups=1, batch=4, draws=2, fig2_draws=0)
  assert os.path.isfile(os.path.join(d, "fig1_ratio_hist.png"))
  with open(os.path.join(d, "fig1_records.json")) as f:
    summary = json.load(f)["summary"]["batch_sizes"]
  text = report.render_section(hessian_section.build(sweeps.load(d)), str(tmp_path))
  # Every number printed comes from this run's records (read back independently of the builder).
  for b in ("1", "4"):
    assert f"| {b} | {report.fmt(summary[b]['median'])} [" in text
    assert report.fmt(summary[b]["median_corrected"]) in text
  assert np.isfinite(summary["4"]["median_corrected"]) and summary["4"]["median_corrected"] > 0
  assert "full grid only" in text
  cfg = json.load(open(os.path.join(d, "config.json")))
  assert cfg["grid_name"] == "quick" and cfg["settings"]["setups"] == 1


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

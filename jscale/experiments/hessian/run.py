"""The hessian experiment's run code: Figure 1 over sampled setups, Figure 2's heat maps, their records."""
import json
import os

from jscale.experiments.hessian import figures
from jscale.sweeps import store
from jscale.theory import heatmaps, setups as setups_lib


def run(exp_dir, setups: int, batch: int, draws: int, seed: int, fig2_draws: int, fig2_minibatch: int):
  os.makedirs(exp_dir, exist_ok=True)
  recs = setups_lib.figure1(setups, batch, draws, seed)
  summary = setups_lib.summarize(recs)
  records = setups_lib.records_json(recs)
  with open(os.path.join(exp_dir, "fig1_records.json"), "w") as f:
    json.dump({"summary": summary, "records": records}, f)
  figures.ratio_histogram(records, os.path.join(exp_dir, "fig1_ratio_hist.png"))
  fig2 = {}
  if fig2_draws:
    fig2 = {"1": heatmaps.heatmaps(batch=1, draws=fig2_draws, seed=seed),
            str(fig2_minibatch): heatmaps.heatmaps(batch=fig2_minibatch, draws=1, seed=seed)}
    with open(os.path.join(exp_dir, "fig2.json"), "w") as f:
      json.dump({"widths": list(heatmaps.FIG2_WIDTHS), "batch_sizes": fig2}, f)
    figures.block_heatmaps(fig2, heatmaps.FIG2_WIDTHS, os.path.join(exp_dir, "fig2_heatmaps.png"))
  per_batch = summary["batch_sizes"]
  batches = sorted(per_batch, key=int)
  stat = lambda key: (("batch",), [float("nan") if per_batch[b][key] is None else per_batch[b][key]
                                   for b in batches])
  store.write_results(
      exp_dir, axes={"batch": [int(b) for b in batches]},
      metrics={k: stat(k) for k in ("median", "p5", "p95", "median_corrected", "p5_corrected", "p95_corrected")},
      setups=setups, draws=draws, seed=seed, fig2_widths=list(heatmaps.FIG2_WIDTHS),
      fig2_diag_max_over_min={b: {s: v["diag_max_over_min"] for s, v in per.items()} for b, per in fig2.items()})

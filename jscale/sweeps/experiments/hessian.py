"""`hessian`: the paper's Figures 1 and 2, the calculus's Hessian-block predictions against exact blocks.

Figure 1: predicted / exact average squared singular value of every diagonal weight block over sampled
setups (depth 3-6, widths 8-128, fan-in / fan-out / Xavier / geometric, random input and loss), at batch 1
and at a minibatch, with and without the cross-example correction (`jscale.theory.predict`). Figure 2:
exact `jax.hessian` block heat maps on a fixed 24-96-12-48-8 net. The quick grid is a smoke-sized
version (compiling one Hessian per sampled width pattern dominates its cost); the full grid is the
paper's 100 setups at batch 1024 (about half an hour on a 2-core CPU).

  python scripts/sweep.py --experiment hessian --grid quick
  python scripts/sweep.py --experiment hessian --grid full
"""
import json
import os

from jscale import report
from jscale.sweeps.experiment import CustomExperiment, register


def run(exp_dir, setups: int, batch: int, draws: int, seed: int, fig2_draws: int, fig2_minibatch: int):
  from jscale.theory import experiments, figures  # heavy: only when the experiment runs

  os.makedirs(exp_dir, exist_ok=True)
  recs = experiments.figure1(setups, batch, draws, seed)
  summary = experiments.summarize(recs)
  records = experiments.records_json(recs)
  with open(os.path.join(exp_dir, "fig1_records.json"), "w") as f:
    json.dump({"summary": summary, "records": records}, f)
  figures.ratio_histogram(records, os.path.join(exp_dir, "fig1_ratio_hist.png"))
  fig2 = {}
  if fig2_draws:
    fig2 = {"1": experiments.heatmaps(batch=1, draws=fig2_draws, seed=seed),
            str(fig2_minibatch): experiments.heatmaps(batch=fig2_minibatch, draws=1, seed=seed)}
    with open(os.path.join(exp_dir, "fig2.json"), "w") as f:
      json.dump({"widths": list(experiments.FIG2_WIDTHS), "batch_sizes": fig2}, f)
    figures.block_heatmaps(fig2, experiments.FIG2_WIDTHS, os.path.join(exp_dir, "fig2_heatmaps.png"))
  per_batch = summary["batch_sizes"]
  batches = sorted(per_batch, key=int)
  stat = lambda key: (("batch",), [float("nan") if per_batch[b][key] is None else per_batch[b][key]
                                   for b in batches])
  report.write_results(
      exp_dir, axes={"batch": [int(b) for b in batches]},
      metrics={k: stat(k) for k in ("median", "p5", "p95", "median_corrected", "p5_corrected", "p95_corrected")},
      setups=setups, draws=draws, seed=seed, fig2_widths=list(experiments.FIG2_WIDTHS),
      fig2_diag_max_over_min={b: {s: v["diag_max_over_min"] for s, v in per.items()} for b, per in fig2.items()})


EXPERIMENT = register(CustomExperiment(
    name="hessian",
    doc=__doc__,
    run=run,
    grids={
        "quick": {"setups": 2, "batch": 16, "draws": 2, "seed": 0, "fig2_draws": 0, "fig2_minibatch": 32},
        "full": {"setups": 100, "batch": 1024, "draws": 4, "seed": 0, "fig2_draws": 8, "fig2_minibatch": 128},
    },
))

"""The hessian experiment's run code: Figure 1 over sampled setups, Figure 2's heat maps, their records.

Each finished setup is written at once to `fig1_setups/NNNN.json` (atomically, through the store), so a
killed run, started again on the same directory, resumes: setups whose file matches this run's settings
are read back, not recomputed."""
import os
import time

from jscale.experiments.hessian import figures
from jscale.sweeps import store
from jscale.theory import heatmaps, pairs, setups as setups_lib

SETUP_DIR = "fig1_setups"
# Summary statistics stored per batch size as metrics (axis "batch"); the section prints them.
METRICS = ("median", "p5", "p95", "median_corrected", "p5_corrected", "p95_corrected", "median_corrected_nr",
           "p5_corrected_nr", "p95_corrected_nr", "sd_log_corrected", "sd_log_corrected_nr",
           "median_exact_rel_stderr", "max_exact_rel_stderr", "setups_within_target", "draws_median")


def _setup_path(exp_dir, i):
  return os.path.join(exp_dir, SETUP_DIR, f"{i:04d}.json")


def load_done(exp_dir, sampled, settings) -> dict:
  """{index: (r1, rb)} of the setups already measured in `exp_dir` with these settings and this setup."""
  done = {}
  for i, s in enumerate(sampled):
    path = _setup_path(exp_dir, i)
    if not os.path.isfile(path):
      continue
    d = store.read_json(path)
    recs = [setups_lib.record_from_json(r) for r in d.get("records", [])]
    if d.get("settings") == settings and len(recs) == 2 and recs[0].setup == s:
      done[i] = (recs[0], recs[1])
  return done


def run(exp_dir, setups: int, batch: int, draws: int, seed: int, fig2_draws: int, fig2_minibatch: int,
        examples: int = pairs.DEFAULT_EXAMPLES, target_rel_se: float | None = 0.05, max_draws: int | None = None):
  os.makedirs(os.path.join(exp_dir, SETUP_DIR), exist_ok=True)
  t0 = time.perf_counter()
  compiled0 = pairs.compiled_programs()
  settings = store.jsonable({"batch": batch, "draws": draws, "examples": examples, "target_rel_se": target_rel_se,
                             "max_draws": max_draws, "seed": seed})
  sampled = setups_lib.sample_setups(setups, seed)
  done = load_done(exp_dir, sampled, settings)

  def save(i, r1, rb):
    store.write_json(_setup_path(exp_dir, i), {"index": i, "settings": settings,
                                               "records": setups_lib.records_json([r1, rb])})

  recs = setups_lib.figure1(setups, batch, draws, seed, progress=True, examples=examples,
                            target_rel_se=target_rel_se, max_draws=max_draws, done=done, on_record=save)
  fig1_seconds = time.perf_counter() - t0
  summary = setups_lib.summarize(recs, target_rel_se if target_rel_se is not None else 0.05)
  records = setups_lib.records_json(recs)
  store.write_json(os.path.join(exp_dir, "fig1_records.json"), {"summary": summary, "records": records})
  figures.ratio_histogram(records, os.path.join(exp_dir, "fig1_ratio_hist.png"))
  fig2 = {}
  if fig2_draws:
    fig2 = {"1": heatmaps.heatmaps(batch=1, draws=fig2_draws, seed=seed, progress=True),
            str(fig2_minibatch): heatmaps.heatmaps(batch=fig2_minibatch, draws=1, seed=seed, progress=True)}
    store.write_json(os.path.join(exp_dir, "fig2.json"), {"widths": list(heatmaps.FIG2_WIDTHS), "batch_sizes": fig2})
    figures.block_heatmaps(fig2, heatmaps.FIG2_WIDTHS, os.path.join(exp_dir, "fig2_heatmaps.png"))
  per_batch = summary["batch_sizes"]
  batches = sorted(per_batch, key=int)
  stat = lambda key: (("batch",), [float("nan") if per_batch[b][key] is None else per_batch[b][key]
                                   for b in batches])
  ci = lambda i: (("batch",), [float("nan") if per_batch[b]["median_corrected_ci95"][i] is None
                               else per_batch[b]["median_corrected_ci95"][i] for b in batches])
  store.write_results(
      exp_dir, axes={"batch": [int(b) for b in batches]},
      metrics={**{k: stat(k) for k in METRICS}, "median_corrected_ci_lo": ci(0), "median_corrected_ci_hi": ci(1)},
      setups=setups, draws=draws, examples=examples, target_rel_se=target_rel_se, max_draws=max_draws, seed=seed,
      resumed_setups=len(done), fig1_seconds=round(fig1_seconds, 1),
      compiled_programs=pairs.compiled_programs() - compiled0, fig2_widths=list(heatmaps.FIG2_WIDTHS),
      fig2_diag_max_over_min={b: {s: v["diag_max_over_min"] for s, v in per.items()} for b, per in fig2.items()})

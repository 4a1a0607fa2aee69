"""The hessian experiment's run code: Figure 1 over sampled setups, Figure 2's heat maps, their records.

Each finished setup is written at once to `fig1_setups/NNNN.json` (atomically, through the store), so a
killed run, started again on the same directory, resumes: setups whose file matches this run's settings
are read back, not recomputed."""
import os
import time

from jscale.experiments.hessian import figures
from jscale.sweeps import store
from jscale.theory import convnet, heatmaps, pairs, setups as setups_lib

SETUP_DIR = "fig1_setups"
LENET_SETUP_DIR = "lenet_setups"
# Summary statistics stored per batch size as metrics (axis "batch"); the section prints them.
METRICS = ("median", "p5", "p95", "median_corrected", "p5_corrected", "p95_corrected", "median_corrected_nr",
           "p5_corrected_nr", "p95_corrected_nr", "sd_log_corrected", "sd_log_corrected_nr",
           "median_exact_rel_stderr", "max_exact_rel_stderr", "setups_within_target", "draws_median")


def _setup_path(exp_dir, i, folder=SETUP_DIR):
  return os.path.join(exp_dir, folder, f"{i:04d}.json")


def load_done(exp_dir, sampled, settings, folder=SETUP_DIR, from_json=setups_lib.record_from_json) -> dict:
  """{index: (r1, rb)} of the setups already measured in `exp_dir` with these settings and this setup."""
  done = {}
  for i, s in enumerate(sampled):
    path = _setup_path(exp_dir, i, folder)
    if not os.path.isfile(path):
      continue
    d = store.read_json(path)
    recs = [from_json(r) for r in d.get("records", [])]
    if d.get("settings") == settings and len(recs) == 2 and recs[0].setup == s:
      done[i] = (recs[0], recs[1])
  return done


def run_lenet(exp_dir, setups: int, batch: int, draws: int, seed: int, examples: int, target_rel_se, max_draws,
              fig2_draws: int, fig2_minibatch: int, evenness_draws: int, channels=(4, 16), hidden=(16, 128)) -> dict:
  """The LeNet's Figure 1 (sampled channel counts; per-setup files in lenet_setups/, resumable), Figure 2 (exact
  heat maps per scheme) and the diagonal's evenness with SEs. Returns the summaries stored in config.json."""
  os.makedirs(os.path.join(exp_dir, LENET_SETUP_DIR), exist_ok=True)
  t0 = time.perf_counter()
  settings = store.jsonable({"batch": batch, "draws": draws, "examples": examples, "target_rel_se": target_rel_se,
                             "max_draws": max_draws, "seed": seed, "channels": channels, "hidden": hidden})
  sampled = convnet.sample_setups(setups, seed, channels=tuple(channels), hidden=tuple(hidden))
  done = load_done(exp_dir, sampled, settings, LENET_SETUP_DIR, convnet.record_from_json)

  def save(i, r1, rb):
    store.write_json(_setup_path(exp_dir, i, LENET_SETUP_DIR),
                     {"index": i, "settings": settings, "records": convnet.records_json([r1, rb])})

  recs = convnet.figure1(setups, batch, draws, seed, progress=True, examples=examples, target_rel_se=target_rel_se,
                         max_draws=max_draws, done=done, on_record=save, channels=tuple(channels), hidden=tuple(hidden))
  summary = setups_lib.summarize(recs, target_rel_se if target_rel_se is not None else 0.05)
  layers = convnet.layer_summary(recs)
  out = {"lenet_summary": summary, "lenet_layers": layers, "lenet_resumed_setups": len(done)}
  store.write_json(os.path.join(exp_dir, "lenet_fig1_records.json"),
                   {"summary": summary, "layers": layers, "records": convnet.records_json(recs)})
  if fig2_draws:
    cfg = convnet.FIG2_CONFIG
    fig2 = {"1": convnet.heatmaps(batch=1, draws=fig2_draws, seed=seed, progress=True),
            str(fig2_minibatch): convnet.heatmaps(batch=fig2_minibatch, draws=1, seed=seed, progress=True)}
    even = convnet.evenness(batches=(1, batch), draws=evenness_draws, seed=seed, examples=examples)
    store.write_json(os.path.join(exp_dir, "lenet_fig2.json"), {"config": store.jsonable(cfg.__dict__),
                                                               "batch_sizes": fig2, "evenness": even})
    figures.block_heatmaps(fig2, convnet.weight_layers(cfg), os.path.join(exp_dir, "lenet_fig2_heatmaps.png"),
                           title=f"LeNet 8x8x1, convs {cfg.channels}, dense {cfg.hidden}: avg squared singular "
                                 "value of Hessian kernel blocks (conv0, conv1, dense0, ...)")
    out["lenet_fig2_config"] = {"channels": list(cfg.channels), "hidden": list(cfg.hidden)}
    out["lenet_fig2_diag_max_over_min"] = {b: {s: v["diag_max_over_min"] for s, v in per.items()}
                                           for b, per in fig2.items()}
    out["lenet_evenness"] = {b: {s: {k: v[k] for k in ("max_over_min", "max_over_min_se", "predicted_max_over_min",
                                                       "draws")} for s, v in per.items()} for b, per in even.items()}
  out["lenet_seconds"] = round(time.perf_counter() - t0, 1)
  return out


def run(exp_dir, setups: int, batch: int, draws: int, seed: int, fig2_draws: int, fig2_minibatch: int,
        examples: int = pairs.DEFAULT_EXAMPLES, target_rel_se: float | None = 0.05, max_draws: int | None = None,
        lenet_setups: int = 0, lenet_draws: int = 64, lenet_max_draws: int | None = None, lenet_examples: int = 4,
        lenet_fig2_draws: int = 0, lenet_fig2_minibatch: int = 64, lenet_evenness_draws: int = 256,
        lenet_channels=(4, 16), lenet_hidden=(16, 128)):
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
  lenet = {}
  if lenet_setups:
    lenet = run_lenet(exp_dir, lenet_setups, batch, lenet_draws, seed, lenet_examples, target_rel_se, lenet_max_draws,
                      lenet_fig2_draws, lenet_fig2_minibatch, lenet_evenness_draws, lenet_channels, lenet_hidden)
    lenet_records = store.read_json(os.path.join(exp_dir, "lenet_fig1_records.json"))["records"]
    figures.ratio_histograms({"MLP": records, "LeNet": lenet_records}, os.path.join(exp_dir, "fig1_ratio_hist.png"))
  else:
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
      fig2_diag_max_over_min={b: {s: v["diag_max_over_min"] for s, v in per.items()} for b, per in fig2.items()},
      lenet_setups=lenet_setups, lenet_draws=lenet_draws, lenet_max_draws=lenet_max_draws,
      lenet_examples=lenet_examples, lenet_channels=list(lenet_channels), lenet_hidden=list(lenet_hidden), **lenet)

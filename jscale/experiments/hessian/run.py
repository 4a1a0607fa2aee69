"""The hessian experiment's run code: Figures 1 and 2 for every family (`run_family`), then the run's results.

Each finished setup is written at once to its family's per-setup folder (`records`), so a killed run, started
again on the same directory, resumes: setups whose file matches this run's settings are read back, not
recomputed. What the run writes: `<prefix>fig1_records.json` (summary, per-layer summary where the setups
share their layers, per-position summary where they do not, records), `<prefix>fig2.json` and
`<prefix>fig2_heatmaps.png` per family ("" for the MLPs, "lenet_" for the LeNet), `fig1_ratio_hist.png`,
`lenet_fig1_layers.png` (the varied LeNet's ratios per layer position), the held-out seed's Figure 1 per family
(`<prefix>holdout_seed<S>/`: per-setup files and fig1_records.json; its full-order summary in config.json as
`holdout_full_order` / `lenet_holdout_full_order`), and config.json / metrics.npz (the MLP
summary per batch size as metrics, the LeNet's summaries as `lenet_*` entries) for the section.
"""
from __future__ import annotations

import os
import time
from typing import NamedTuple

from jscale.experiments.hessian import figures, heatmaps, records, rounds
from jscale.experiments.hessian.full_summary import full_order_summary
from jscale.experiments.hessian.settings import FamilyRun, HessianSettings
from jscale.experiments.hessian.summary import layer_summary, position_summary, ratio_summary, seed_label
from jscale.sweeps import store
from jscale.theory import conv_pairs, lenet_slots, pairs

# Summary statistics stored per batch size as metrics (axis "batch"); the section prints them.
METRICS = ("median", "p5", "p95", "median_corrected", "p5_corrected", "p95_corrected", "median_corrected_nr",
           "p5_corrected_nr", "p95_corrected_nr", "sd_log_corrected", "sd_log_corrected_nr",
           "median_exact_rel_stderr", "max_exact_rel_stderr", "setups_within_target", "draws_median")


class FamilyResult(NamedTuple):
  records: list           # `records.records_json` of every setup
  summary: dict           # `summary.ratio_summary`
  full_order: dict        # `full_summary.full_order_summary`
  layers: dict | None     # `summary.layer_summary`, for families whose setups share their layers
  positions: dict | None  # `summary.position_summary`, for families whose setups differ in their layers
  resumed: int            # setups read back from a killed run's files
  fig1_seconds: float
  fig2: dict              # {batch: `heatmaps.heatmaps`}, {} without Figure 2
  evenness: dict | None
  holdout: dict | None = None  # `full_summary.full_order_summary` of the held-out seed's setups, None without


def _figure1(exp_dir: str, fam, fig1, progress: bool) -> tuple[list, int]:
  """Figure 1's records of `fig1` (resumable: per-setup files under `exp_dir`) and how many were read back."""
  os.makedirs(os.path.join(exp_dir, fam.setup_dir), exist_ok=True)
  settings = store.jsonable({**fig1.resume_key(), **fam.resume_fields()})
  done = records.load_done(exp_dir, fam, fam.sample_setups(fig1.setups, fig1.seed), settings)
  recs = rounds.figure1(fam, fig1, progress=progress, done=done,
                        on_record=lambda i, r1, rb: records.write_setup(exp_dir, fam, i, settings, (r1, rb)))
  return recs, len(done)


def holdout_dir(exp_dir: str, part: FamilyRun) -> str:
  """Where a family's held-out Figure 1 keeps its per-setup files and records (its own folder: the setups' indices
  and resume keys are those of another seed)."""
  return os.path.join(exp_dir, f"{part.family.prefix}holdout_seed{part.holdout.seed}")


def run_holdout(exp_dir: str, part: FamilyRun, progress: bool = True) -> dict:
  """Figure 1 on the held-out seed's setups: its full-order summary, also written with the records to
  `holdout_dir`/fig1_records.json."""
  fam, d = part.family, holdout_dir(exp_dir, part)
  t0 = time.perf_counter()
  recs, _ = _figure1(d, fam, part.holdout, progress)
  full = {**full_order_summary(fam, part.holdout.seed, recs), "setups": part.holdout.setups,
          "seconds": round(time.perf_counter() - t0, 1)}
  store.write_json(os.path.join(d, "fig1_records.json"), {"full_order": full, "records": records.records_json(fam, recs)})
  return full


def run_family(exp_dir: str, part: FamilyRun, progress: bool = True) -> FamilyResult:
  """Figure 1 (resumable, per-setup files), Figure 2 and the held-out Figure 1 of one family, with their files in
  `exp_dir`; `progress`: tqdm bars on stderr."""
  fam, fig1, fig2 = part.family, part.figure1, part.figure2
  t0 = time.perf_counter()
  recs, resumed = _figure1(exp_dir, fam, fig1, progress)
  fig1_seconds = time.perf_counter() - t0
  summary = ratio_summary(recs, fig1.summary_target)
  full = full_order_summary(fam, fig1.seed, recs)
  layers = layer_summary(fam, recs) if fam.per_layer else None
  positions = None if fam.per_layer else position_summary(fam, recs)
  rec_json = records.records_json(fam, recs)
  store.write_json(os.path.join(exp_dir, f"{fam.prefix}fig1_records.json"),
                   {"summary": summary, "full_order": full, **({} if layers is None else {"layers": layers}),
                    **({} if positions is None else {"positions": positions}), "records": rec_json})
  maps, even = {}, None
  if fig2.draws:
    maps = heatmaps.figure2(fam, fig2, seed=fig1.seed, progress=progress)
    if fig2.evenness_draws:
      even = fam.evenness(batches=(1, fig1.batch), draws=fig2.evenness_draws, seed=fig1.seed, examples=fig1.examples)
    store.write_json(os.path.join(exp_dir, f"{fam.prefix}fig2.json"),
                     {**store.jsonable(fam.net_json(fam.fig2_net)), "batch_sizes": maps,
                      **({} if even is None else {"evenness": even})})
    figures.block_heatmaps(maps, fam.net_layers(fam.fig2_net), os.path.join(exp_dir, f"{fam.prefix}fig2_heatmaps.png"),
                           title=fam.heatmap_title(fam.fig2_net))
  holdout = run_holdout(exp_dir, part, progress) if part.holdout is not None else None
  return FamilyResult(rec_json, summary, full, layers, positions, resumed, fig1_seconds, maps, even, holdout)


def _diag_max_over_min(maps: dict) -> dict:
  return {b: {s: v["diag_max_over_min"] for s, v in per.items()} for b, per in maps.items()}


def _lenet_entries(part: FamilyRun, res: FamilyResult, seconds: float) -> dict:
  """The LeNet's summaries as config.json's `lenet_*` entries."""
  out = {"lenet_summary": res.summary, "lenet_full_order": res.full_order, "lenet_holdout_full_order": res.holdout,
         "lenet_layers": res.layers,
         "lenet_resumed_setups": res.resumed, "lenet_fig1_seconds": round(res.fig1_seconds, 1)}
  if res.fig2:
    net = part.family.fig2_net
    out["lenet_fig2_config"] = {"channels": list(net.channels), "hidden": list(net.hidden)}
    out["lenet_fig2_diag_max_over_min"] = _diag_max_over_min(res.fig2)
    out["lenet_evenness"] = {b: {s: {k: v[k] for k in ("max_over_min", "max_over_min_se", "predicted_max_over_min",
                                                       "draws")} for s, v in per.items()}
                             for b, per in res.evenness.items()}
  out["lenet_seconds"] = round(seconds, 1)
  return out


def _lenet_programs() -> int:
  """Compiled exact-side rounds of the LeNet: slot programs (varied Figure 1) and padded ones (Figure 2)."""
  return lenet_slots.compiled_programs() + conv_pairs.compiled_programs()


def run(exp_dir, *, progress: bool = True, **settings):
  """The experiment on the grid's flat keyword settings (`settings.HessianSettings.from_grid`); `progress`:
  bars on stderr (`--no-progress` turns them off)."""
  s = HessianSettings.from_grid(settings)
  compiled0, lenet0 = pairs.compiled_programs(), _lenet_programs()
  mlp = run_family(exp_dir, s.mlp, progress)
  lenet = {}
  if s.lenet.figure1.setups:
    t0 = time.perf_counter()
    res = run_family(exp_dir, s.lenet, progress)
    lenet = _lenet_entries(s.lenet, res, time.perf_counter() - t0)
    figures.ratio_histograms({"MLP": mlp.records, "LeNet": res.records}, os.path.join(exp_dir, "fig1_ratio_hist.png"))
    if res.positions:
      figures.position_ratios(res.positions, os.path.join(exp_dir, f"{s.lenet.family.prefix}fig1_layers.png"),
                              title=f"{s.lenet.family.name}, {seed_label(s.lenet.figure1.seed)}")
  else:
    figures.ratio_histogram(mlp.records, os.path.join(exp_dir, "fig1_ratio_hist.png"))
  per_batch = mlp.summary["batch_sizes"]
  batches = sorted(per_batch, key=int)
  nan_none = lambda v: float("nan") if v is None else v
  stat = lambda key: (("batch",), [nan_none(per_batch[b][key]) for b in batches])
  ci = lambda i: (("batch",), [nan_none(per_batch[b]["median_corrected_ci95"][i]) for b in batches])
  fig1, lenet1 = s.mlp.figure1, s.lenet.figure1
  store.write_results(
      exp_dir, axes={"batch": [int(b) for b in batches]},
      metrics={**{k: stat(k) for k in METRICS}, "median_corrected_ci_lo": ci(0), "median_corrected_ci_hi": ci(1)},
      setups=fig1.setups, draws=fig1.draws, examples=fig1.examples, target_rel_se=fig1.target_rel_se,
      max_draws=fig1.max_draws, seed=fig1.seed, resumed_setups=mlp.resumed, fig1_seconds=round(mlp.fig1_seconds, 1),
      compiled_programs=pairs.compiled_programs() - compiled0, fig2_widths=list(s.mlp.family.fig2_net.widths),
      fig2_diag_max_over_min=_diag_max_over_min(mlp.fig2), lenet_setups=lenet1.setups, lenet_draws=lenet1.draws,
      lenet_max_draws=lenet1.max_draws, lenet_examples=lenet1.examples, lenet_channels=list(s.lenet.family.channels),
      lenet_hidden=list(s.lenet.family.hidden), lenet_varied=s.lenet.family.varied,
      lenet_compiled_programs=_lenet_programs() - lenet0, full_order=mlp.full_order,
      holdout_full_order=mlp.holdout, **lenet)

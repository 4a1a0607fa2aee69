"""The hessian experiment's report section: the paper's Figures 1-2 summaries."""
from __future__ import annotations

import os

import numpy as np

from jscale.experiments.hessian.summary import seed_label
from jscale.report.document import Figure, Headline, Section, Table
from jscale.report.format import fmt
from jscale.sweeps import Results, store

RECORDS = "fig1_records.json"


def _get(r: Results, name: str, batches) -> list:
  return list(r.metric(name, "batch")) if r.has(name) else [float("nan")] * len(batches)


def _per_setup_table(r: Results) -> Table | None:
  """One row per setup: its draws and the largest relative SE of its exact weight blocks, per batch size."""
  path = os.path.join(r.path, RECORDS)
  if not os.path.isfile(path):
    return None
  records = store.read_json(path)["records"]
  batches = sorted({d["batch"] for d in records})
  rows = []
  for i in range(len(records) // len(batches)):
    by_b = {d["batch"]: d for d in records[i * len(batches):(i + 1) * len(batches)]}
    first = by_b[batches[0]]
    ratio = lambda d: np.median(np.array(d["corrected_w"]) / np.array(d["exact_w"]))
    rows.append([i, "-".join(map(str, first["widths"])), first["scheme"], first["loss"], first["input"],
                 first.get("draws", "")] + [f"{fmt(by_b[b].get('exact_w_rel_se_max', float('nan')))}" for b in batches]
                + [fmt(ratio(by_b[b])) for b in batches])
  return Table(["setup", "widths", "scheme", "loss", "input", "draws"] + [f"max rel SE, B={b}" for b in batches]
               + [f"median r, B={b}" for b in batches], rows,
               "Per setup: draws of (weights, examples) averaged, the largest relative standard error of its exact "
               "weight blocks, and its median predicted / exact (r) over layers")


def _full_order_table(full: dict, family: str, holdout: dict | None = None) -> Table:
  """The full-order prediction's pooled summary (`full_summary.full_order_summary`), per batch size and loss; with
  `holdout` (the same summary on a held-out seed's setups) its noise-removed cells beside the development seed's."""
  rows = []
  cell = lambda e: (f"{fmt(e['median'])} [{fmt(e['p5'])}, {fmt(e['p95'])}]",
                    f"{fmt(e['median_nr'])} [{fmt(e['p5_nr'])}, {fmt(e['p95_nr'])}]")
  nr = lambda e: f"{fmt(e['median_nr'])} [{fmt(e['p5_nr'])}, {fmt(e['p95_nr'])}] ({e['blocks']})"
  for b, e in sorted(full["batch_sizes"].items(), key=lambda kv: int(kv[0])):
    held_losses = set(((holdout or {}).get("batch_sizes", {}).get(b) or {}).get("by_loss", {}))
    for loss in ["all"] + sorted(set(e["by_loss"]) | held_losses):
      v = e if loss == "all" else e["by_loss"].get(loss)
      if v is None:  # a loss only the held-out setups drew
        row = [b, loss, "-", "-", 0, "", "-"]
      else:
        row = [b, loss, *cell(v), v["blocks"], e["tautological_blocks"] if loss == "all" else "",
               fmt(e["leading"]["median"]) if loss == "all" else fmt(e["leading"]["by_loss"][loss]["median"])]
      if holdout is not None:
        h = holdout["batch_sizes"].get(b)
        h = None if h is None else h if loss == "all" else h["by_loss"].get(loss)
        row.append("-" if h is None or h.get("median_nr") is None else nr(h))
      rows.append(row)
  head = ["batch", "loss", "full order: median r [p5, p95]", "noise removed", "blocks", "tautological (left out)",
          "leading order: median r"]
  held = ""
  if holdout is not None:
    head.append(f"held-out seed {holdout['seed']}: noise removed (blocks)")
    held = (f"; beside it the same on {holdout.get('setups', '?')} setups of seed {holdout['seed']}, which no "
            "development of the prediction used (docs/calculus.md, 'Full order', says which seeds developed and "
            "judged which correction)")
  skipped = [g for f in (full, holdout or {}) for g in f.get("guarded", [])]
  if skipped:  # a correction the prediction could not apply is said where its numbers are read
    held += (f"; in {len(skipped)} cross-entropy setup(s) the softmax's coupling factors were set to 1 (too few "
             "loss draws, or too noisy to apply: `gains.guarded`; the reasons are in the JSON under 'guarded')")
  return Table(head, rows,
               f"{family}: the full-order prediction (`jscale.theory.full_order.predict_wick`, every Wick pairing of "
               f"positions and examples) against the exact blocks, development seed {full['seed']}; the leading order "
               f"is the paper's batch-1 form (divided by B){held}")


def build(r: Results) -> Section:
  """Figures 1-2 of the Hessian check. Written by the `hessian` experiment (axis batch; JSON records)."""
  cfg = r.config
  batches = r.axis("batch")
  target = cfg.get("target_rel_se")
  draws_text = (f"at least {cfg['draws']} draws per setup, more (up to {cfg.get('max_draws')}) until every weight "
                f"block's relative standard error is at most {target}" if target else f"{cfg['draws']} draws per setup")
  s = Section("hessian: the calculus's Hessian-block predictions against exact blocks (the paper's Figures 1-2)", [
      f"{cfg['setups']} sampled setups (depth 3-6, widths 8-128, fan-in / fan-out / Xavier / geometric, random "
      f"input and loss), seed {cfg['seed']}; {draws_text}, {cfg.get('examples', '?')} examples per draw. "
      "Exact: the expectation of each diagonal block's average squared singular value, from the Gauss-Newton "
      "identity (equal to `jax.hessian` for ReLU nets, checked in the tests) split into same-example and "
      "two-example terms, with control variates of exactly known mean (`jscale.theory.pairs`). r = predicted / "
      "exact per weight block. 'Noise removed': the exact side's measurement noise deconvolved from the spread "
      "of log r (variance minus the mean squared relative SE; constrained-Bayes quantiles, "
      "`jscale.experiments.hessian.summary.noise_removed`); the median's 95% CI is a bootstrap over setups. "
      "The paper shows the ratio as a histogram and gives no numeric summary, so there is no source number to "
      "print beside these."])
  med, p5, p95 = (_get(r, k, batches) for k in ("median", "p5", "p95"))
  medc, p5c, p95c = (_get(r, k, batches) for k in ("median_corrected", "p5_corrected", "p95_corrected"))
  mnr, p5nr, p95nr = (_get(r, k, batches) for k in ("median_corrected_nr", "p5_corrected_nr", "p95_corrected_nr"))
  lo, hi = _get(r, "median_corrected_ci_lo", batches), _get(r, "median_corrected_ci_hi", batches)
  sd, sdnr = _get(r, "sd_log_corrected", batches), _get(r, "sd_log_corrected_nr", batches)
  rows = [[b, f"{fmt(med[i])} [{fmt(p5[i])}, {fmt(p95[i])}]",
           f"{fmt(medc[i])} (CI {fmt(lo[i])}-{fmt(hi[i])}) [{fmt(p5c[i])}, {fmt(p95c[i])}]",
           f"{fmt(mnr[i])} [{fmt(p5nr[i])}, {fmt(p95nr[i])}]", f"{fmt(sd[i])} / {fmt(sdnr[i])}"]
          for i, b in enumerate(batches)]
  s.parts.append(Table(["batch", "batch-1 formula: median r [p5, p95]",
                        "with cross-example terms: median r (95% CI) [p5, p95], raw",
                        "same, noise removed: median [p5, p95]", "sd of log r: raw / noise removed"],
                       rows, "Figure 1 summary (at batch 1 the two formulas coincide)"))
  within, rse, rse_max = (_get(r, k, batches) for k in ("setups_within_target", "median_exact_rel_stderr",
                                                         "max_exact_rel_stderr"))
  if target:
    s.parts.append(Table(["batch", f"setups with every block's rel. SE <= {target}", "median rel. SE of a block",
                          "largest rel. SE"],
                         [[b, f"{fmt(within[i])} of {cfg['setups']}", fmt(rse[i]), fmt(rse_max[i])]
                          for i, b in enumerate(batches)], "The exact side's measurement error"))
  if cfg.get("full_order"):
    s.parts.append(_full_order_table(cfg["full_order"], "MLP", cfg.get("holdout_full_order")))
  s.parts.append(Figure(os.path.join(r.path, "fig1_ratio_hist.png"),
                        "Figure 1: log10(predicted / exact) per weight block, per batch size"
                        + ("; the second row is the LeNet (full order beside the leading order)."
                           if cfg.get("lenet_setups") else ".")))
  table = _per_setup_table(r)
  if table is not None:
    s.parts.append(table)
  fig2 = cfg.get("fig2_diag_max_over_min") or {}
  if fig2:
    schemes = list(next(iter(fig2.values())))
    s.parts.append(Table(["batch"] + schemes, [[b] + [fmt(fig2[b][k]) for k in schemes] for b in fig2],
                         f"Figure 2: max/min of the diagonal blocks' average squared singular value, widths "
                         f"{tuple(cfg['fig2_widths'])} (1 = evenly weighted; the paper: geometric is the most even)"))
    s.parts.append(Figure(os.path.join(r.path, "fig2_heatmaps.png"),
                          "Figure 2: block heat maps (log10), one colour scale for every panel."))
  else:
    s.parts.append("Figure 2 (block heat maps) is part of the full grid only.")
  if cfg.get("lenet_setups"):
    _lenet_parts(s, r, cfg, target)
  s.headline = _headline(cfg)
  return s


def _headline(cfg: dict) -> Headline | None:
  """The full-order prediction's noise-removed median [p5, p95] per family and batch size: the development seed
  of the main job and, where the run has one, the held-out seed beside it (numbers `<family>_holdout_b<B>_*`)."""
  parts, numbers = [], {}
  for key in ("full_order", "lenet_full_order"):
    full = cfg.get(key)
    if not full:
      continue
    cells = []
    for b, e in sorted(full["batch_sizes"].items(), key=lambda kv: int(kv[0])):
      cells.append(f"batch {b} {fmt(e['median_nr'])} [{fmt(e['p5_nr'])}, {fmt(e['p95_nr'])}] "
                   f"({e['blocks']} blocks, {e['tautological_blocks']} tautological left out; leading order "
                   f"{fmt(e['leading']['median_nr'])})")
      numbers[f"{full['family']}_b{b}_median_nr"] = e["median_nr"]
    text = f"{full['family']} (seed {full['seed']}, development): " + "; ".join(cells)
    held = cfg.get(key.replace("full_order", "holdout_full_order"))
    if held:
      cells = []
      for b, e in sorted(held["batch_sizes"].items(), key=lambda kv: int(kv[0])):
        cells.append(f"batch {b} {fmt(e['median_nr'])} [{fmt(e['p5_nr'])}, {fmt(e['p95_nr'])}] ({e['blocks']} blocks)")
        numbers.update({f"{full['family']}_holdout_b{b}_{k}": e[k] for k in ("median_nr", "p5_nr", "p95_nr")})
      text += f"; held out (seed {held['seed']}, {held.get('setups', '?')} setups): " + "; ".join(cells)
    parts.append(text)
  if not parts:
    return None
  fig2 = cfg.get("fig2_diag_max_over_min") or {}
  if fig2:
    widths = "-".join(str(w) for w in cfg.get("fig2_widths") or [])
    cells = []
    for b, per in sorted(fig2.items(), key=lambda kv: int(kv[0])):
      cells.append(f"batch {b} " + ", ".join(f"{sch} {v:.3g}" if v < 1000 else f"{sch} {v:.0f}" for sch, v in sorted(per.items(),
                                                                                     key=lambda kv: kv[1])))
      numbers.update({f"fig2_b{b}_{sch}_diag_max_over_min": v for sch, v in per.items()})
    parts.append(f"Figure 2 (net {widths}, exact `jax.hessian`) diagonal max/min, most even first: "
                 + "; ".join(cells))
  target = cfg.get("target_rel_se")
  se_text = f"measured to at most {target:.0%} relative SE" if target else f"from {cfg['draws']} draws per setup"
  lenet = "varied LeNet" if cfg.get("lenet_varied") else "LeNet"
  return Headline(what=f"{cfg['setups']} sampled MLP setups and {cfg.get('lenet_setups') or 0} {lenet} setups, exact "
                       f"blocks {se_text} (setups that hit the draw cap excepted)",
                  measured="full-order predicted / exact, noise removed, median [p5, p95]: " + " | ".join(parts),
                  source="the paper's Figure 1: 'generally good agreement' (a histogram, no numbers)",
                  numbers=numbers)


LENET_RECORDS = "lenet_fig1_records.json"


def _ci(entry) -> list:
  return entry.get("median_corrected_ci95") or [None, None]


def _lenet_parts(s: Section, r: Results, cfg: dict, target) -> None:
  """The strided LeNet beside the MLPs: per-layer predicted / exact, the pooled summary, Figure 2 on the LeNet."""
  path = os.path.join(r.path, LENET_RECORDS)
  if not os.path.isfile(path):
    s.parts.append(f"LeNet: {LENET_RECORDS} is missing from this run directory.")
    return
  data = store.read_json(path)
  chans, hidden = cfg.get("lenet_channels", [4, 16]), cfg.get("lenet_hidden", [16, 128])
  draws = (f"at least {cfg.get('lenet_draws')} draws, up to {cfg.get('lenet_max_draws')} until every weight block's "
           f"relative SE is at most {target}" if target else f"{cfg.get('lenet_draws')} draws")
  if cfg.get("lenet_varied"):
    shape = (f"1-3 strided convs with square kernels = strides 2-4 and {chans[0]}-{chans[1]} channels, 0-2 dense "
             f"hidden layers of {hidden[0]}-{hidden[1]} units (log-uniform), 10 outputs, one-channel images of side "
             "the kernels' product times 1-4 (the first conv's grid 2x2 to 4x4), N(0, 1) or U[0, 1] pixels, the "
             "four schemes, both losses; no average pooling (the full-order predictor has none)")
    exact = ("the same pair decomposition, with the conv blocks' factors summed over positions, every setup "
             "computed in shared slot shapes (`jscale.theory.lenet_slots`: zero-padded patches and channels, equal "
             "to the LeNet's own shape on the same draws in the tests; "
             f"{cfg.get('lenet_compiled_programs', '?')} compiled exact-side programs in this run)")
  else:
    shape = (f"8x8x1 N(0, 1) images, two 2x2 stride-2 convs with {chans[0]}-{chans[1]} channels, two dense hidden "
             f"layers of {hidden[0]}-{hidden[1]} units, 10 outputs")
    exact = ("the same pair decomposition, with the conv blocks' factors summed over positions "
             "(`jscale.theory.conv_pairs`, equal to `jax.hessian` in the tests)")
  s.parts.append(
      f"**The paper's own network: the strided LeNet** ({shape}; {cfg['lenet_setups']} sampled setups, "
      f"{seed_label(cfg['seed'])}, {cfg.get('lenet_examples')} examples per draw, {draws}). Exact: {exact}. "
      "Predicted: the calculus's leading-order "
      "form (the paper's Proposition 4 with the conv rules, k taps and rho positions, plus the cross-example "
      "term), derived in `jscale.theory.predict_conv`; it drops terms of order n_L / n_{l+1} and 1 / n "
      "(10 outputs against a few channels) and, for the cross-example term, the pairings of different positions, "
      "which dominate the first conv at large batch (its patches of independent inputs are uncorrelated). "
      "The full-order prediction (`jscale.theory.full_order`: a dense layer is a conv with one position; every "
      "pairing of positions and examples, the pair cosine's spread, docs/calculus.md) keeps all of these; "
      "cross-entropy's loss statistics come from draws of their own, never the judged ones.")
  if "positions" in data:
    _lenet_positions(s, r, data["positions"], cfg)
  layers = data.get("layers") or {}
  rows = []
  for b in sorted(layers, key=int):
    for name, v in layers[b].items():
      full = (f"{fmt(v['median_full'])} [{fmt(v['p5_full'])}, {fmt(v['p95_full'])}]" if "median_full" in v else "-")
      rows.append([b, name, full, f"{fmt(v['median'])} [{fmt(v['p5'])}, {fmt(v['p95'])}]", fmt(v["median_batch1"]),
                   f"{fmt(v['median_rel_se'])} / {fmt(v['max_rel_se'])}", v["setups"]])
  if rows:
    s.parts.append(Table(["batch", "layer", "full order: median [p5, p95]",
                          "leading order + cross term: median [p5, p95]", "batch-1 model s(1)/B: median",
                          "exact rel. SE: median / max", "setups"], rows,
                         "LeNet, per weight layer: predicted / exact average squared singular value of the diagonal "
                         "kernel block"))
  summ = data["summary"]["batch_sizes"]
  s.parts.append(Table(
      ["batch", "median r [p5, p95] (95% CI of the median)", "noise removed: median [p5, p95]", "blocks"],
      [[b, f"{fmt(e['median_corrected'])} [{fmt(e['p5_corrected'])}, {fmt(e['p95_corrected'])}] "
           f"(CI {fmt(_ci(e)[0])}-{fmt(_ci(e)[1])})",
        f"{fmt(e.get('median_corrected_nr'))} [{fmt(e.get('p5_corrected_nr'))}, {fmt(e.get('p95_corrected_nr'))}]",
        e["blocks"]] for b, e in sorted(summ.items(), key=lambda kv: int(kv[0]))],
      "LeNet, all weight blocks pooled (beside the MLP summary above), the leading-order prediction"))
  if cfg.get("lenet_full_order"):
    s.parts.append(_full_order_table(cfg["lenet_full_order"], "LeNet", cfg.get("lenet_holdout_full_order")))
  even = cfg.get("lenet_evenness") or {}
  if even:
    conf = cfg.get("lenet_fig2_config", {})
    schemes = list(next(iter(even.values())))
    rows = [[b] + [f"{fmt(per[k]['max_over_min'])} +- {fmt(per[k]['max_over_min_se'])} "
                   f"(pred. {fmt(per[k]['predicted_max_over_min'])})" for k in schemes] for b, per in even.items()]
    s.parts.append(Table(["batch"] + schemes, rows,
                         f"LeNet Figure 2: max/min of the expected diagonal kernel blocks (+- SE, "
                         f"{next(iter(next(iter(even.values())).values()))['draws']} draws), convs "
                         f"{tuple(conf.get('channels', ()))}, dense {tuple(conf.get('hidden', ()))}; 1 = evenly "
                         "weighted; the paper: geometric is the most even"))
    for b, per in even.items():
      best = min(per, key=lambda k: per[k]["max_over_min"])
      geo = per.get("geometric")
      s.parts.append(f"LeNet, batch {b}: the most even diagonal is {best} "
                     f"({fmt(per[best]['max_over_min'])} +- {fmt(per[best]['max_over_min_se'])})"
                     + (f"; geometric {fmt(geo['max_over_min'])} +- {fmt(geo['max_over_min_se'])}." if geo else "."))
    heat = cfg.get("lenet_fig2_diag_max_over_min") or {}
    if heat:
      s.parts.append(Table(["batch"] + schemes, [[b] + [fmt(heat[b].get(k)) for k in schemes] for b in heat],
                           "LeNet Figure 2 heat maps (exact `jax.hessian`, few draws): diagonal max/min"))
    s.parts.append(Figure(os.path.join(r.path, "lenet_fig2_heatmaps.png"),
                          "LeNet Figure 2: kernel-block heat maps (log10), one colour scale for every panel."))


def _lenet_positions(s: Section, r: Results, positions: dict, cfg: dict) -> None:
  """The varied LeNet's Figure 1 per layer position (`summary.position_summary`): table and plot."""
  rows = []
  for b in sorted(positions, key=int):
    for name, v in positions[b].items():
      rows.append([b, name, f"{fmt(v['median_full'])} [{fmt(v['p5_full'])}, {fmt(v['p95_full'])}]",
                   f"{fmt(v['median_leading'])} [{fmt(v['p5_leading'])}, {fmt(v['p95_leading'])}]", v["blocks"],
                   fmt(v["median_rel_se"])])
  s.parts.append(Table(["batch", "layer position", "full order: median [p5, p95]",
                        "leading order: median [p5, p95]", "blocks", "exact rel. SE: median"], rows,
                       f"LeNet Figure 1 per layer position, {seed_label(cfg['seed'])}: predicted / exact "
                       "average squared singular value of the diagonal kernel block, over the setups that have the "
                       "layer ('output': every setup's last layer again)"))
  s.parts.append(Figure(os.path.join(r.path, "lenet_fig1_layers.png"),
                        "LeNet Figure 1 per layer position: median predicted / exact with its p5-p95 range, full "
                        "order beside the leading order (the LeNet row of the Figure 1 histogram above pools them)."))

"""The transfer experiment's report section and OUT/transfer/transfer.json: loss vs learning rate per width,
the optimum per width with bootstrap intervals, measured beside predicted drift, and the coordinate check."""
from __future__ import annotations

import math
import os

import numpy as np

from jscale import calculus
from jscale.experiments.transfer import analysis, epoch_probe
from jscale.report import describe
from jscale.report.document import Figure, Headline, Section, Table
from jscale.sweeps import Results, store

DRIFT_GOAL = 0.5        # octaves: equal-G's drift, and predicted vs measured
# seeds whose drifts were in view when the response predictor was chosen: the full grid's (10-13), and the first
# judge grid's (20-23), seen before SGD's response became the hidden layers' geometric mean; every seed 10-111
# was in view when it became the last hidden layer again (tenth session, docs/calculus.md); the full grid's are
# the ones the main job runs
PREDICTOR_DEV_SEEDS = tuple(range(10, 14)) + tuple(range(20, 24))
COORD_TOL = 0.1         # |log(measured / predicted)|
COORD_SHARE = 0.95


def _subplots(nrows: int = 1, ncols: int = 1, **kw):
  """A figure and its axes without pyplot (as jscale.report.plots draws): no global backend switch, nothing
  to close."""
  from matplotlib.figure import Figure
  fig = Figure(figsize=kw.pop("figsize"))
  return fig, fig.subplots(nrows, ncols, **kw)


def _save(fig, path: str, dpi: int) -> str:
  fig.tight_layout()
  fig.savefig(path, dpi=dpi)
  return path


def response_predictions(r: Results, model: str) -> dict | None:
  """The response predictor's inputs for `model`: (measured relative response (W, param, opt, L), its SE,
  the calculus's, and where recorded the per-draw E[h^2], E[dh^2] (W, param, opt, draw, L)), or None for
  results written before they were recorded."""
  names = set(r.arrays)
  if f"{model}_resp_meas" not in names:
    return None
  return {k: r.metric(f"{model}_resp_{k}") for k in ("meas", "rse", "calc", "h", "d") if f"{model}_resp_{k}" in names}


def _drifts(resp, c: int, i: int, opt: str) -> list:
  """Predicted drift from the narrowest width to each width (octaves; `calculus.response_drift`), None where
  it has no prediction."""
  return [calculus.response_drift(resp[0, i, c], resp[b, i, c], opt) for b in range(resp.shape[0])]


def summarize(r: Results) -> dict:
  """transfer.json: per model, optimizer and parametrization the optimum per width with its interval, the
  measured drift (octaves) and the predicted ones: `predicted_drift_octaves` from the first step's measured
  response at init (`calculus.response_drift`, response.py) with its SE over the init draws, the calculus's
  response (dense stacks) and the step-size predictor (`calculus.predicted_drift`), and the coordinate
  check's shares. Where the grid ran Adam's one-epoch pilot (epoch_probe.py), `pilot_drift_octaves` (Adam's
  cells: the mean paired shift of the one-epoch optimum at the probe inits, its SE): a short learning-rate
  sweep, not a prediction from the calculus, reported beside it."""
  loss = r.metric("loss", "model", "width", "optimizer", "param", "lr_octave", "seed")
  lr = r.metric("lr", "optimizer", "param", "lr_octave")
  step = r.metric("step_size", "model", "width", "optimizer", "param")
  widths, seeds = r.axis("width"), r.axis("seed")
  out = {"widths": widths, "seeds": seeds, "bootstrap_resamples": analysis.N_BOOT,
         "predictor": "response: log2 of the first step's relative response per unit lr (narrow / wide) at "
                      f"{calculus.RESPONSE_AT}, measured by a JVP at the probe inits before any training",
         "results": []}
  for a, model in enumerate(r.axis("model")):
    rp = response_predictions(r, model)
    ep = r.metric(f"{model}_epoch_opt") if f"{model}_epoch_opt" in set(r.arrays) else None
    for c, opt in enumerate(r.axis("optimizer")):
      for i, param in enumerate(r.axis("param")):
        o = analysis.optimum(loss[a, :, c, i], np.log2(lr[c, i]))
        step_pred = (math.log2(step[a, 0, c, i] / step[a, -1, c, i])
                     if np.all(np.isfinite(step[a, [0, -1], c, i])) else None)
        pred = per_width = calc = pred_se = None
        if rp is not None:
          per_width = _drifts(rp["meas"], c, i, opt)
          pred = per_width[-1]
          calc = _drifts(rp["calc"], c, i, opt)[-1]
          if "h" in rp:   # paired draws (the same keys at both widths): analysis.drift_se
            pred_se = analysis.drift_se(*[(rp["h"][b, i, c], rp["d"][b, i, c]) for b in (0, -1)], opt)
          else:   # results written before the per-draw arrays: the widths' SEs in quadrature
            se = np.array([calculus.response_se(rp["rse"][b, i, c], opt) for b in (0, -1)])
            pred_se = float(np.sqrt(np.sum(np.square(se))) / math.log(2))
          pred_se = pred_se if math.isfinite(pred_se) else None
        pilot = pilot_se = None
        if opt == "adam" and ep is not None:   # Adam's one-epoch pilot at the probe inits (epoch_probe.py)
          pilot, pilot_se = epoch_probe.drift(ep[0, i], ep[-1, i])
        out["results"].append({
            "model": model, "optimizer": opt, "param": param,
            "optimal_lr": [2.0 ** v for v in o.log2_lr], "optimal_lr_lo": [2.0 ** v for v in o.lo],
            "optimal_lr_hi": [2.0 ** v for v in o.hi], "optimum_at_grid_edge": [bool(e) for e in o.at_edge],
            "measured_drift_octaves": o.drift, "measured_drift_interval": [o.drift_lo, o.drift_hi],
            "measured_optimum_octaves_per_width": [float(v - o.log2_lr[0]) for v in o.log2_lr],
            "predicted_drift_octaves": pred, "predicted_drift_se": pred_se,
            "predicted_drift_per_width": per_width,
            "predicted_minus_measured": None if pred is None else pred - o.drift,
            **({} if ep is None else {"pilot_drift_octaves": pilot, "pilot_drift_se": pilot_se,
                                      "pilot_minus_measured": None if pilot is None else pilot - o.drift}),
            "calculus_response_drift_octaves": calc,
            "step_size_drift_octaves": step_pred,
            "diverged_share": float(np.mean(~np.isfinite(loss[a, :, c, i])))})
  out["coordinate_check"] = coordinate_summary(r)
  out["coordinate_check_per_leaf"] = per_leaf(r)
  return out


def coordinate_errors(r: Results, model: str) -> dict:
  """|log(measured / predicted)| of the first update's RMS, activations at init and after step 1, each with the
  relative SE of its measurement over the init draws (NaN for results written before it was recorded)."""
  um, up = r.metric(f"{model}_upd_meas"), r.metric(f"{model}_upd_pred")
  am, ap = r.metric(f"{model}_act_meas"), r.metric(f"{model}_act_pred")
  names = set(r.arrays)
  us = r.metric(f"{model}_upd_rse") if f"{model}_upd_rse" in names else np.full(um.shape, np.nan)
  as_ = r.metric(f"{model}_act_rse") if f"{model}_act_rse" in names else np.full(am.shape, np.nan)
  return {"first update": (analysis.log_errors(um[..., 0, :], up[..., 0, :]), us[..., 0, :]),
          "updates 1..k": (analysis.log_errors(um, up), us),
          "activations at init": (analysis.log_errors(am[..., 0, :], ap[..., 0, :]), as_[..., 0, :]),
          "activations after step 1": (analysis.log_errors(am[..., 1, :], ap[..., 1, :]), as_[..., 1, :])}


def per_leaf(r: Results) -> dict:
  """Per model, quantity and kernel / layer output: (median |log(meas/pred)| over widths x parametrizations x
  optimizers, share below COORD_TOL, share within max(COORD_TOL, 2 SE))."""
  out = {}
  for model in r.axis("model"):
    out[model] = {}
    for what, (err, rse) in coordinate_errors(r, model).items():
      if what == "updates 1..k":
        continue
      e, s_ = err.reshape(-1, err.shape[-1]), rse.reshape(-1, rse.shape[-1])
      ok = analysis.within_se(e, s_, COORD_TOL)
      out[model][what] = [{"median": float(np.nanmedian(e[:, l])) if np.isfinite(e[:, l]).any() else None,
                           "share_below_0.1": analysis.fraction_within(e[:, l], COORD_TOL)[0],
                           "share_within_0.1_or_2SE": float(np.nanmean(ok[:, l])) if np.isfinite(ok[:, l]).any()
                           else None} for l in range(e.shape[-1])]
  return out


def coordinate_summary(r: Results) -> dict:
  """Per model and quantity: the share with |log| < COORD_TOL, the share within max(COORD_TOL, 2 SE) of the
  measurement (its draws' sampling error), how many entries and the median |log|."""
  out = {}
  for model in r.axis("model"):
    out[model] = {}
    for what, (err, rse) in coordinate_errors(r, model).items():
      share, n = analysis.fraction_within(err, COORD_TOL)
      ok = analysis.within_se(err, rse, COORD_TOL)
      out[model][what] = {"share_below_0.1": share, "share_within_0.1_or_2SE": float(np.nanmean(ok)) if n else
                          float("nan"), "median_rse": float(np.nanmedian(rse)) if np.isfinite(rse).any() else None,
                          "n": n, "median": float(np.nanmedian(err))}
  return out


def build(r: Results) -> Section:
  s = Section("transfer: does the optimal learning rate hold across width? (standard, μP, equal-G)",
              [describe.grid_text(r, skip=("lr_octave", "seed", "coord_step", "when", "mlp_kernel",
                                           "lenet_kernel"))])
  summary = summarize(r)
  store.write_json(os.path.join(r.path, "transfer.json"), summary)
  widths = summary["widths"]
  rows, judged = [], []
  pilot = any("pilot_drift_octaves" in e for e in summary["results"])
  for e in summary["results"]:
    opt_txt = ", ".join(f"{w}: {_lr(v)} [{_lr(lo)}, {_lr(hi)}]{'*' if edge else ''}" for w, v, lo, hi, edge in
                        zip(widths, e["optimal_lr"], e["optimal_lr_lo"], e["optimal_lr_hi"],
                            e["optimum_at_grid_edge"]))
    pred, se = e["predicted_drift_octaves"], e["predicted_drift_se"]
    rows.append([e["model"], e["optimizer"], e["param"], opt_txt,
                 f"{e['measured_drift_octaves']:+.2f} [{e['measured_drift_interval'][0]:+.2f}, "
                 f"{e['measured_drift_interval'][1]:+.2f}]",
                 "n/a" if pred is None else f"{pred:+.2f}" + ("" if se is None else f" ± {se:.2f}"),
                 "n/a" if pred is None else ("yes" if abs(pred - e["measured_drift_octaves"]) <= DRIFT_GOAL else "no"),
                 _signed(e["calculus_response_drift_octaves"]), _signed(e["step_size_drift_octaves"])]
                + ([_pilot(e)] if pilot else []))
    judged.append(e)
  ratio = widths[-1] / widths[0]
  s.parts.append(Table(["model", "optimizer", "parametrization", "optimal lr per width [95% bootstrap interval]",
                        f"measured drift {widths[0]}->{widths[-1]} (octaves)", "predicted drift ± SE (response)",
                        f"predicted within {DRIFT_GOAL}", "calculus's response", "step size"]
                       + ([f"Adam's one-epoch pilot ± SE (within {DRIFT_GOAL}?)"] if pilot else []), rows,
                       f"{len(summary['seeds'])} seeds (judged; the LR centres were chosen on other seeds); "
                       f"intervals: {analysis.N_BOOT} bootstrap resamples of the seeds; * = the minimum is at "
                       f"the grid's edge (the optimum may lie outside); width ratio {ratio:g}x. Predicted drift: "
                       "log2 of the first step's relative response per unit learning rate, narrow over wide, at "
                       "the logits (Adam) or the last hidden layer (SGD), measured by a JVP at the "
                       "probe inits before any training (SE over the init draws; equal-G is normalised by that "
                       "response, so its prediction is 0 by construction); beside it the calculus's prediction of "
                       "the same response (dense stacks only) and the older step-size predictor (each layer's "
                       "own change, `calculus.predicted_drift`). docs/calculus.md, *Predicted drift from the "
                       "response*, says which seeds developed the predictor and which judged it. "
                       "Written to `transfer/transfer.json`."
                       + (" Adam's one-epoch pilot (this grid only, epoch_probe.py): the shift of the optimum of "
                          "the probe minibatch's loss after one epoch of Adam at 33 half-octave rates from the first "
                          "16 probe inits (SE over the paired inits), a short learning-rate sweep rather than a "
                          "prediction from the calculus (docs/calculus.md, *The threshold rate over the first "
                          "epoch*)." if pilot else "")))
  s.parts.append(_goal_text(judged, ratio))
  s.parts.append(Figure(_loss_curves(r), "Final training loss (seed mean) vs learning rate, one line per width; "
                                         "diverged runs are left out of the line."))
  s.parts.append(Figure(_optimum_plot(r, summary), "Optimal learning rate per width (points, 95% bootstrap "
                                                   "intervals) and the response predictor's, before training "
                                                   "(dashed: the narrowest width's optimum moved by the predicted "
                                                   "drift)."))
  s.parts.append(Figure(_drift_plot(summary, r.path), f"Predicted vs measured drift (octaves, {widths[0]} -> "
                                              f"{widths[-1]}); the band is +-{DRIFT_GOAL} octave."))
  cs = summary["coordinate_check"]
  crow = [[m, what, f"{v['share_below_0.1']:.0%}", f"{v['share_within_0.1_or_2SE']:.0%}",
           "n/a" if v["median_rse"] is None else f"{v['median_rse']:.3f}", v["n"], f"{v['median']:.3f}"]
          for m, d in cs.items() for what, v in d.items()]
  s.parts.append(Table(["model", "quantity", f"share with |log(meas/pred)| < {COORD_TOL}",
                        f"share within max({COORD_TOL}, 2 SE)", "median SE of log(meas)", "leaves x widths x "
                        "settings", "median |log|"], crow,
                       "Coordinate check: per kernel (updates) or layer output (activations), for every width, "
                       "parametrization and optimizer, at the grid's centre learning rate, on one fixed "
                       "minibatch, measured as the mean over the check's own init draws (SE: their spread / "
                       "sqrt(draws); the draws per model and width keep the SE near 0.03 or below at init and in the "
                       "first update); "
                       "the second share does not count a miss the draws' sampling error alone could make. "
                       "SGD's predicted update: from the kernels over (example, position) pairs with the "
                       "gradient's component along each example's own activation (calculus.strided_update). "
                       f"Goal: < {COORD_TOL} on >= {COORD_SHARE:.0%} at init and after the first update (its "
                       "size and the activations after it)."))
  leaf_rows = [[m, what, l, "n/a" if v["median"] is None else f"{v['median']:.3f}",
                f"{v['share_below_0.1']:.0%}", "n/a" if v["share_within_0.1_or_2SE"] is None else
                f"{v['share_within_0.1_or_2SE']:.0%}"]
               for m, d in per_leaf(r).items() for what, rows in d.items() for l, v in enumerate(rows)]
  s.parts.append(Table(["model", "quantity", "kernel / layer output", "median |log(meas/pred)|",
                        f"share < {COORD_TOL}", f"share within max({COORD_TOL}, 2 SE)"], leaf_rows,
                       "Coordinate check per leaf (kernel l's update; the activation after kernel l, the logits "
                       "last), over widths x parametrizations x optimizers. After step 1 the prediction is the "
                       "first-order response through the layers over (example, position) pairs "
                       "(`calculus.strided_response`: the cross term 2E[h0 . dh], the layers below's changes along "
                       "each example's own activation included, and E[dh^2]; docs/calculus.md, *After the first "
                       "step over (example, position) pairs*)."))
  for model in r.axis("model"):
    s.parts.append(Figure(_coord_plot(r, model), f"Coordinate check, {model}: measured (points) and predicted "
                                                 "(lines) per kernel / layer against width."))
  s.headline = _headline(summary)
  return s


def _headline(summary: dict) -> Headline:
  """Measured drift of the optimal learning rate (octaves over the width range) per model and optimizer for
  standard and equal-G, how many predicted drifts fall within DRIFT_GOAL, and the coordinate check's shares."""
  widths, res = summary["widths"], summary["results"]
  drift = {(e["model"], e["optimizer"], e["param"]): e for e in res}
  cells, numbers = [], {}
  for model, opt in sorted({(e["model"], e["optimizer"]) for e in res}):
    txt = []
    for param in ("standard", "equal_G"):
      e = drift.get((model, opt, param))
      if e is not None:
        lo, hi = e["measured_drift_interval"]
        txt.append(f"{param} {e['measured_drift_octaves']:+.2f} [{lo:+.2f}, {hi:+.2f}]")
        numbers[f"{model}_{opt}_{param}_drift"] = e["measured_drift_octaves"]
    cells.append(f"{model}/{opt}: " + ", ".join(txt))
  pred = [e for e in res if e["predicted_drift_octaves"] is not None]
  hits = sum(abs(e["predicted_drift_octaves"] - e["measured_drift_octaves"]) <= DRIFT_GOAL for e in pred)
  seen = set(summary["seeds"]) & set(PREDICTOR_DEV_SEEDS)
  role = (" (seeds whose drifts developed the response predictor and equal-G's normalisation; `--grid "
          "judge_seeds_112` judges both, SGD's at the last hidden layer, on 24 new ones: "
          "results/transfer/judge_seeds_112/)"
          if seen
          else " (training seeds the response predictor never saw)")
  cs = summary["coordinate_check"]
  coord = ", ".join(f"{m} {d['first update']['share_below_0.1']:.0%}" for m, d in cs.items() if "first update" in d)
  after = ", ".join(f"{m} {d['activations after step 1']['share_below_0.1']:.0%}" for m, d in cs.items()
                    if "activations after step 1" in d)
  return Headline(what=f"widths {widths[0]}-{widths[-1]}, {len(summary['seeds'])} seeds, standard / μP / "
                       "equal-G, SGD and Adam, MLP and LeNet on digits",
                  measured=f"drift of the optimal lr {widths[0]}->{widths[-1]} (octaves, 95% seed-bootstrap "
                           "interval): " + "; ".join(cells)
                           + f"; predicted drift within {DRIFT_GOAL} octave in {hits} of {len(pred)}{role}; coordinate "
                           f"check, first update within 0.1: {coord}; activations after step 1 within 0.1: "
                           f"{after}",
                  source="issue 22's goal (no source number): equal-G drifts <= 0.5 octave over 16x width",
                  numbers=numbers)


def _pilot(e: dict) -> str:
  p, se = e.get("pilot_drift_octaves"), e.get("pilot_drift_se")
  if p is None:
    return "n/a"
  hit = "yes" if abs(p - e["measured_drift_octaves"]) <= DRIFT_GOAL else "no"
  return f"{p:+.2f}" + ("" if se is None else f" ± {se:.2f}") + f" ({hit})"


def _signed(v) -> str:
  return "n/a" if v is None else f"{v:+.2f}"


def _lr(v: float) -> str:
  return f"2^{math.log2(v):.1f}"


def _goal_text(results: list, ratio: float) -> str:
  lines = []
  for e in results:
    if e["param"] == "equal_G":
      ok = abs(e["measured_drift_octaves"]) <= DRIFT_GOAL
      lines.append(f"- equal-G, {e['model']} / {e['optimizer']}: drift {e['measured_drift_octaves']:+.2f} octaves "
                   f"over {ratio:g}x width ({'within' if ok else '**outside**'} the {DRIFT_GOAL}-octave goal).")
  n_pred = sum(1 for e in results if e["predicted_minus_measured"] is not None
               and abs(e["predicted_minus_measured"]) <= DRIFT_GOAL)
  lines.append(f"- predicted drift within {DRIFT_GOAL} octave of the measured one: {n_pred} of {len(results)} "
               "(model, optimizer, parametrization) cells.")
  pilots = [e for e in results if e.get("pilot_drift_octaves") is not None]
  if pilots:
    n_pilot = sum(abs(e["pilot_minus_measured"]) <= DRIFT_GOAL for e in pilots)
    lines.append(f"- Adam's one-epoch pilot (a short sweep, not the calculus) within {DRIFT_GOAL} octave: {n_pilot} "
                 f"of {len(pilots)} Adam cells.")
  return "\n".join(lines)


def _loss_curves(r: Results) -> str:
  loss = r.metric("loss", "model", "width", "optimizer", "param", "lr_octave", "seed")
  lr = r.metric("lr", "optimizer", "param", "lr_octave")
  models, opts, params, widths = r.axis("model"), r.axis("optimizer"), r.axis("param"), r.axis("width")
  fig, axes = _subplots(len(models) * len(opts), len(params), figsize=(4 * len(params), 3 * len(models) * len(opts)),
                           squeeze=False)
  for a, m in enumerate(models):
    for c, o in enumerate(opts):
      for i, p in enumerate(params):
        ax = axes[a * len(opts) + c, i]
        for b, w in enumerate(widths):
          # a learning rate where any seed diverged has no seed-mean loss (NaN, a gap in the curve); the plain
          # mean gives that NaN without nanmean's warning on an all-NaN column
          y = np.where(np.all(np.isfinite(loss[a, b, c, i]), -1), np.mean(loss[a, b, c, i], -1), np.nan)
          ax.plot(lr[c, i], y, marker="o", ms=3, label=f"width {w}")
        ax.set_xscale("log", base=2)
        ax.set_ylim(0, 2.6)
        ax.set_title(f"{m} / {o} / {p}", fontsize=9)
        ax.set_xlabel("learning rate")
        ax.set_ylabel("final training loss")
  axes[0, 0].legend(fontsize=7)
  return _save(fig, os.path.join(r.path, "transfer_loss_vs_lr.png"), dpi=80)


def _optimum_plot(r: Results, summary: dict) -> str:
  models, opts, params, widths = r.axis("model"), r.axis("optimizer"), r.axis("param"), r.axis("width")
  fig, axes = _subplots(len(models), len(opts), figsize=(5 * len(opts), 3.5 * len(models)), squeeze=False)
  by = {(e["model"], e["optimizer"], e["param"]): e for e in summary["results"]}
  for a, m in enumerate(models):
    for c, o in enumerate(opts):
      ax = axes[a, c]
      for i, p in enumerate(params):
        e = by[m, o, p]
        v = np.log2(e["optimal_lr"])
        err = np.stack([v - np.log2(e["optimal_lr_lo"]), np.log2(e["optimal_lr_hi"]) - v])
        line = ax.errorbar(np.array(widths) * (1 + 0.04 * (i - 1)), v, yerr=np.maximum(err, 0), marker="o",
                           capsize=3, label=f"{p} measured")
        pw = e["predicted_drift_per_width"]
        if pw is not None and all(d is not None for d in pw):
          ax.plot(widths, v[0] + np.array(pw), ls="--", color=line[0].get_color(), label=f"{p} predicted")
      ax.set_xscale("log", base=2)
      ax.set_xlabel("width")
      ax.set_ylabel("log2 optimal learning rate")
      ax.set_title(f"{m} / {o}", fontsize=9)
  axes[0, 0].legend(fontsize=7)
  return _save(fig, os.path.join(r.path, "transfer_optimum_vs_width.png"), dpi=80)


def _drift_plot(summary: dict, out_dir: str) -> str:
  fig, ax = _subplots(figsize=(5, 4.5))
  marks = {"standard": "o", "mup": "s", "equal_G": "^"}
  for e in summary["results"]:
    if e["predicted_drift_octaves"] is None:
      continue
    d, (lo, hi) = e["measured_drift_octaves"], e["measured_drift_interval"]
    ax.errorbar(e["predicted_drift_octaves"], d, yerr=[[max(d - lo, 0)], [max(hi - d, 0)]], marker=marks[e["param"]],
                capsize=3, label=f"{e['model']}/{e['optimizer']}/{e['param']}", ls="none")
  lim = ax.get_xlim()[0] - 0.5, ax.get_xlim()[1] + 0.5
  xs = np.linspace(*lim, 2)
  ax.plot(xs, xs, "k-", lw=0.8)
  ax.fill_between(xs, xs - DRIFT_GOAL, xs + DRIFT_GOAL, color="0.85")
  ax.set_xlabel("predicted drift (octaves)")
  ax.set_ylabel("measured drift (octaves)")
  ax.legend(fontsize=6)
  return _save(fig, os.path.join(out_dir, "transfer_drift.png"), dpi=80)


def _coord_plot(r: Results, model: str) -> str:
  um, up = r.metric(f"{model}_upd_meas"), r.metric(f"{model}_upd_pred")   # (W, R, O, step, L)
  am, ap = r.metric(f"{model}_act_meas"), r.metric(f"{model}_act_pred")   # (W, R, O, when, L)
  widths, params, opts = r.axis("width"), r.axis("param"), r.axis("optimizer")
  quantities = [("RMS of the first update", um[..., 0, :], up[..., 0, :]),
                ("E[h^2] at init", am[..., 0, :], ap[..., 0, :]),
                ("E[h^2] after step 1", am[..., 1, :], ap[..., 1, :])]
  fig, axes = _subplots(len(quantities), len(params) * len(opts),
                           figsize=(2.8 * len(params) * len(opts), 2.6 * len(quantities)), squeeze=False)
  for q, (name, meas, pred) in enumerate(quantities):
    for i, p in enumerate(params):
      for c, o in enumerate(opts):
        ax = axes[q, i * len(opts) + c]
        for leaf in range(meas.shape[-1]):
          line = ax.plot(widths, pred[:, i, c, leaf], lw=1)
          ax.plot(widths, meas[:, i, c, leaf], "o", ms=3, color=line[0].get_color())
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(f"{p}/{o}: {name}", fontsize=7)
  return _save(fig, os.path.join(r.path, f"transfer_coord_{model}.png"), dpi=70)

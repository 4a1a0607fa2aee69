"""`report.md` for a run directory: one section per experiment, built from that experiment's saved results.

  python scripts/report.py RUN_DIR          # rebuilds RUN_DIR/report.md

## The results protocol (an assumption the sweep engine's writer must meet, or adapt `load_results`)
A run directory holds one sub-directory per experiment, named as the experiment is registered:

  RUN_DIR/<experiment>/config.json   {"axes": {"sigma": [0.01, 0.1], "seed": [0, 1, 2], "epoch": [1, ...]},
                                      "metrics": {"test_acc": ["sigma", "seed"],
                                                  "loss": ["sigma", "seed", "epoch"]},
                                      ...anything else: grid name, widths, lr, wall time, data source}
  RUN_DIR/<experiment>/metrics.npz   one array per name in config["metrics"], its shape the lengths of the
                                      named axes in that order
  RUN_DIR/<experiment>/*.png         figures the section builder writes (paths in report.md are relative)

`write_results` writes exactly this; `load_results` reads and validates it into a `Results` whose
`metric(name, *axes)` returns the array transposed to the requested axis order. An experiment whose
directory or files are missing is listed as "not run"; a builder that raises is listed as "failed" with
its error (the rest of the report is still written, and `build_report` says which ones failed).

## Sections
`register_section(name, builder)` with `builder(exp_dir) -> Section`; a `Section` is a title and a list of
parts: markdown text (str), `Table(header, rows, caption)` or `Figure(path, caption)`. Builders for the
five experiments of issue 6 (sigma, feature_weight, init_schemes, activations, symmetry) are registered
here against the metric names in their docstrings; the integrator can replace any of them.

Every number printed comes from the results read; source documents' numbers are printed beside the
measured ones, and `verdict` says "does not reproduce" whenever the measured 95% interval excludes them.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import traceback
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import numpy as np

from jscale import plots

# ---------------------------------------------------------------------------------------------------
# Source documents' numbers.

# seeds/init-scale-convergence-tutorial.txt, Table 1 (one run each): test accuracy per sigma.
TUTORIAL_TEST_ACC: dict[float, float] = {0.01: 0.8733, 0.1: 0.9483, 0.5: 0.9367, 1.0: 0.9183}


class PaperRow(NamedTuple):
  avg_normalised_loss: float
  worst_count: int
  best_count: int


# seeds/scaling-calculus-paper.txt, Section 9 table over 26 LIBSVM data sets.
PAPER_INIT_TABLE: dict[str, PaperRow] = {
    "arithmetic": PaperRow(0.90, 14, 3),
    "fan_in": PaperRow(0.84, 3, 5),
    "fan_out": PaperRow(0.88, 9, 12),
    "geometric": PaperRow(0.81, 0, 6),
}
PAPER_N_DATASETS = 26

# ---------------------------------------------------------------------------------------------------
# Results protocol.


class Results(NamedTuple):
  name: str
  path: str
  config: dict
  axes: dict            # axis name -> list of values
  metric_axes: dict     # metric name -> tuple of axis names
  arrays: dict          # metric name -> np.ndarray

  def axis(self, name: str) -> list:
    if name not in self.axes:
      raise KeyError(f"{self.name}: no axis {name!r}; axes: {list(self.axes)}")
    return self.axes[name]

  def has(self, metric: str) -> bool:
    return metric in self.arrays

  def metric(self, name: str, *order: str) -> np.ndarray:
    """The metric's array; with `order` (all its axis names), transposed to that order."""
    if name not in self.arrays:
      raise KeyError(f"{self.name}: no metric {name!r}; metrics: {list(self.arrays)}")
    a, axes = self.arrays[name], self.metric_axes[name]
    if not order:
      return a
    if sorted(order) != sorted(axes):
      raise ValueError(f"{self.name}: metric {name!r} has axes {axes}, asked for order {order}")
    return np.transpose(a, [axes.index(o) for o in order])


def _jsonable(v):
  if isinstance(v, np.generic):
    return v.item()
  if isinstance(v, np.ndarray):
    return v.tolist()
  if isinstance(v, Mapping):
    return {str(k): _jsonable(x) for k, x in v.items()}
  if isinstance(v, (list, tuple)):
    return [_jsonable(x) for x in v]
  return v


def write_results(exp_dir: str, axes: Mapping[str, Sequence], metrics: Mapping[str, tuple], **config) -> str:
  """Write `config.json` + `metrics.npz`. `metrics[name] = (axis_names, array)`; extra keyword arguments go
  into config.json as they are (seeds, grid, widths, wall time...). Returns exp_dir."""
  axes = {k: list(_jsonable(v)) for k, v in axes.items()}
  arrays, metric_axes = {}, {}
  for name, (names, arr) in metrics.items():
    arr = np.asarray(arr)
    names = tuple(names)
    want = tuple(len(axes[a]) if a in axes else None for a in names)
    if None in want:
      raise ValueError(f"metric {name!r} uses axes {names}, but only {list(axes)} are defined")
    if arr.shape != want:
      raise ValueError(f"metric {name!r} has shape {arr.shape}, its axes {names} need {want}")
    arrays[name], metric_axes[name] = arr, list(names)
  os.makedirs(exp_dir, exist_ok=True)
  np.savez(os.path.join(exp_dir, "metrics.npz"), **arrays)
  with open(os.path.join(exp_dir, "config.json"), "w") as f:
    json.dump({**_jsonable(config), "axes": axes, "metrics": metric_axes}, f, indent=1)
  return exp_dir


class ResultsMissing(FileNotFoundError):
  pass


def load_results(exp_dir: str) -> Results:
  cfg_path, npz_path = os.path.join(exp_dir, "config.json"), os.path.join(exp_dir, "metrics.npz")
  missing = [p for p in (cfg_path, npz_path) if not os.path.isfile(p)]
  if missing:
    raise ResultsMissing(f"no results in {exp_dir}: missing {', '.join(os.path.basename(m) for m in missing)}")
  with open(cfg_path) as f:
    config = json.load(f)
  axes, metric_axes = config.get("axes", {}), config.get("metrics", {})
  arrays = {}
  with np.load(npz_path, allow_pickle=False) as z:
    for name, names in metric_axes.items():
      if name not in z:
        raise ValueError(f"{exp_dir}: config.json lists metric {name!r} but metrics.npz lacks it")
      a = z[name]
      want = tuple(len(axes.get(n, ())) for n in names)
      if a.shape != want:
        raise ValueError(f"{exp_dir}: metric {name!r} has shape {a.shape}, axes {names} need {want}")
      arrays[name] = a
  return Results(os.path.basename(os.path.normpath(exp_dir)), exp_dir, config, axes,
                 {k: tuple(v) for k, v in metric_axes.items()}, arrays)


# ---------------------------------------------------------------------------------------------------
# Sections and rendering.


class Table(NamedTuple):
  header: Sequence[str]
  rows: Sequence[Sequence[Any]]
  caption: str = ""


class Figure(NamedTuple):
  path: str
  caption: str = ""


@dataclasses.dataclass
class Section:
  title: str
  parts: list = dataclasses.field(default_factory=list)


def fmt(v, digits: int = 4) -> str:
  if isinstance(v, str):
    return v
  if v is None or (isinstance(v, float) and math.isnan(v)):
    return "n/a"
  if isinstance(v, (int, np.integer)):
    return str(int(v))
  v = float(v)
  if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5):
    return f"{v:.3g}"
  return f"{v:.{digits}f}"


def fmt_ci(ci: plots.CI, i=None, digits: int = 4) -> str:
  m = ci.mean if i is None else ci.mean[i]
  lo = ci.lo if i is None else ci.lo[i]
  hi = ci.hi if i is None else ci.hi[i]
  if ci.n < 2:
    return f"{fmt(m, digits)} (1 seed, no interval)"
  return f"{fmt(m, digits)} [{fmt(lo, digits)}, {fmt(hi, digits)}]"


def render_table(t: Table) -> str:
  head = "| " + " | ".join(str(h) for h in t.header) + " |"
  sep = "|" + "|".join("---" for _ in t.header) + "|"
  body = ["| " + " | ".join(fmt(c) for c in row) + " |" for row in t.rows]
  cap = [f"*{t.caption}*", ""] if t.caption else []
  return "\n".join(cap + [head, sep] + body)


def render_section(s: Section, report_dir: str) -> str:
  out = [f"## {s.title}", ""]
  for p in s.parts:
    if isinstance(p, Table):
      out += [render_table(p), ""]
    elif isinstance(p, Figure):
      rel = os.path.relpath(p.path, report_dir).replace(os.sep, "/")
      out += [f"![{p.caption or os.path.basename(p.path)}]({rel})", ""]
      if p.caption:
        out += [f"*{p.caption}*", ""]
    elif isinstance(p, str):
      out += [p, ""]
    else:
      raise TypeError(f"section {s.title!r}: a part must be str, Table or Figure, got {type(p).__name__}")
  return "\n".join(out)


_SECTIONS: dict[str, Callable[[str], Section]] = {}


def register_section(experiment: str, builder: Callable[[str], Section]) -> None:
  """Register (or replace) the report section of `experiment`; `builder(exp_dir) -> Section`."""
  if not isinstance(experiment, str) or not experiment or os.sep in experiment:
    raise ValueError(f"experiment name must be a non-empty string without {os.sep!r}, got {experiment!r}")
  if not callable(builder):
    raise ValueError(f"builder for {experiment!r} must be callable, got {builder!r}")
  _SECTIONS[experiment] = builder


def registered() -> list[str]:
  return list(_SECTIONS)


class ReportResult(NamedTuple):
  path: str
  built: list
  not_run: list
  failed: dict   # experiment -> error text


def build_report(run_dir: str, experiments: Sequence[str] | None = None, *,
                 title: str = "jscale: the source experiments, reproduced", preamble: str = "") -> ReportResult:
  """Write RUN_DIR/report.md: a summary, then one section per experiment (registered order)."""
  if not os.path.isdir(run_dir):
    raise ValueError(f"run directory {run_dir!r} does not exist")
  names = list(experiments) if experiments is not None else registered()
  unknown = [n for n in names if n not in _SECTIONS]
  if unknown:
    raise ValueError(f"no report section registered for {unknown}; registered: {registered()}")
  built, not_run, failed, bodies = [], [], {}, []
  for name in names:
    exp_dir = os.path.join(run_dir, name)
    try:
      section = _SECTIONS[name](exp_dir)
      bodies.append(render_section(section, run_dir))
      built.append(name)
    except ResultsMissing as e:
      not_run.append(name)
      bodies.append(f"## {name}\n\n**not run**: {e}.\n")
    except Exception as e:  # noqa: BLE001 -- one broken section must not hide the others
      failed[name] = "".join(traceback.format_exception_only(type(e), e)).strip()
      bodies.append(f"## {name}\n\n**failed to build this section**: `{failed[name]}`\n")
  extra = sorted(d for d in os.listdir(run_dir) if os.path.isdir(os.path.join(run_dir, d))
                 and d not in names and os.path.isfile(os.path.join(run_dir, d, "config.json")))
  summary = [f"# {title}", "", preamble, "",
             f"Run directory: `{os.path.abspath(run_dir)}`.", "",
             "| experiment | status |", "|---|---|"]
  summary += [f"| {n} | {'built' if n in built else 'not run' if n in not_run else 'FAILED'} |" for n in names]
  if extra:
    summary += ["", f"Results without a registered section: {', '.join(extra)}."]
  path = os.path.join(run_dir, "report.md")
  with open(path, "w") as f:
    f.write("\n".join(summary) + "\n\n" + "\n".join(bodies))
  return ReportResult(path, built, not_run, failed)


# ---------------------------------------------------------------------------------------------------
# Measured vs source.


def verdict(samples, source: float, *, what: str, digits: int = 4) -> str:
  """One plain sentence comparing measured samples (e.g. over seeds) with a source's number."""
  ci = plots.mean_ci95(np.asarray(samples, np.float64), 0)
  if ci.n < 2:
    return (f"{what}: measured {fmt(ci.mean, digits)} from 1 seed beside the source's {fmt(source, digits)}; "
            "one seed gives no interval, so no verdict.")
  inside = ci.lo <= source <= ci.hi
  if inside:
    return (f"{what}: reproduces -- the source's {fmt(source, digits)} lies inside the measured 95% interval "
            f"{fmt_ci(ci, digits=digits)} over {ci.n} seeds.")
  side = "below" if ci.hi < source else "above"
  return (f"{what}: **does not reproduce** -- measured {fmt_ci(ci, digits=digits)} (mean, 95% interval over "
          f"{ci.n} seeds) lies {side} the source's {fmt(source, digits)}.")


class SchemeSummary(NamedTuple):
  schemes: list
  normalised: np.ndarray    # (datasets, schemes): loss / the worst scheme's loss on that data set
  avg: np.ndarray           # (schemes,) mean over data sets
  ci: plots.CI              # 95% interval of that mean over data sets
  worst_count: np.ndarray   # (schemes,) data sets on which the scheme is worst (ties count for all tied)
  best_count: np.ndarray    # (schemes,)


def init_scheme_summary(loss_DxS, schemes: Sequence[str]) -> SchemeSummary:
  """The paper's Section 9 summary: divide each data set's losses by its worst scheme's, average over data
  sets, count worst and best. `loss_DxS` is the median-over-seeds loss at each scheme's best lr."""
  l = np.asarray(loss_DxS, np.float64)
  if l.ndim != 2 or l.shape[1] != len(schemes):
    raise ValueError(f"loss must be (datasets, {len(schemes)} schemes), got {l.shape}")
  if not np.all(np.isfinite(l)) or np.any(l <= 0):
    raise ValueError("losses must be finite and positive to normalise by the worst")
  worst = l.max(1, keepdims=True)
  norm = l / worst
  return SchemeSummary(list(schemes), norm, norm.mean(0), plots.mean_ci95(norm, 0),
                       (l == worst).sum(0), (l == l.min(1, keepdims=True)).sum(0))


def equivalent_sigma(widths: Sequence[int], init) -> tuple[float, list]:
  """The single sigma (same for every layer, as in the tutorial) whose end-to-end forward gain
  prod_l n_l sigma^2 equals the rule's prod_l n_l E[W_l^2]: the geometric mean of the rule's per-layer
  stds. Returns (sigma, per-layer stds)."""
  from jscale import initializers
  init = initializers.get(init)
  per = [math.sqrt(init.second_moment((a, b))) for a, b in zip(widths[:-1], widths[1:])]
  return float(np.exp(np.mean(np.log(per)))), per


def feature_weight_G1(widths: Sequence[int], feature_scales, weight_scales, x0_sq_raw: float,
                      init="glorot_normal") -> np.ndarray:
  """The calculus's layer-1 gradient-to-weight ratio G_1 (batch 1, unit gradient at the logits) over the
  question's grid: inputs divided by feature_scale (E[x_0^2] = x0_sq_raw / f^2), first-layer weights
  divided by weight_scale (E[W_1^2] / w^2). Shape (len(weight_scales), len(feature_scales))."""
  from jscale import calculus, initializers
  init = initializers.get(init)
  base = np.array([init.second_moment((a, b)) for a, b in zip(widths[:-1], widths[1:])])
  out = np.empty((len(weight_scales), len(feature_scales)))
  for i, w in enumerate(weight_scales):
    wsq = base.copy()
    wsq[0] /= w * w
    for j, f in enumerate(feature_scales):
      out[i, j] = float(calculus.predict_dense(widths, wsq, x0_sq=x0_sq_raw / (f * f)).G[0])
  return out


# ---------------------------------------------------------------------------------------------------
# Default section builders (metric names are the contract with the experiments' writers).


def _grid_text(r: Results, skip=()) -> str:
  seeds = r.config.get("seeds", r.axes.get("seed"))
  parts = [f"{k} = {fmt_list(v)}" for k, v in r.axes.items() if k not in ("seed",) + tuple(skip)]
  extra = [f"{k}: {r.config[k]}" for k in ("grid", "data", "data_source", "widths", "lr", "optimizer",
                                            "batch_size", "epochs", "steps", "wall_time_s") if k in r.config]
  return f"Grid: {'; '.join(parts)}. Seeds: {fmt_list(seeds)}." + (f" {'; '.join(extra)}." if extra else "")


def fmt_list(v, limit: int = 12) -> str:
  if v is None:
    return "n/a"
  v = list(v)
  s = ", ".join(f"{x:g}" if isinstance(x, (float, int)) and not isinstance(x, bool) else str(x)
                for x in v[:limit])
  return f"[{s}{', ...' if len(v) > limit else ''}] ({len(v)})" if len(v) > limit else f"[{s}]"


def sigma_section(exp_dir: str) -> Section:
  """The tutorial. Axes sigma, seed, epoch. Metrics: loss, train_acc, grad_norm, dead_frac
  [sigma, seed, epoch] (any present are plotted) and test_acc [sigma, seed]. Config: widths (for the
  He / Glorot / geometric markers)."""
  r = load_results(exp_dir)
  sig = [float(s) for s in r.axis("sigma")]
  s = Section("sigma: weight scale vs convergence (the tutorial, two moons)", [_grid_text(r, skip=("epoch",))])
  labels = {"loss": ("training loss (cross-entropy, nats)", True), "train_acc": ("training accuracy", False),
            "grad_norm": ("gradient L2 norm", True), "dead_frac": ("fraction of ReLU outputs == 0", False)}
  for i, (m, (ylabel, logy)) in enumerate(labels.items()):
    if r.has(m):
      v = r.metric(m, "sigma", "seed", "epoch")
      p = plots.curves(os.path.join(exp_dir, f"fig{i + 1}_{m}.png"),
                       {f"sigma={x:g}": v[k] for k, x in enumerate(sig)}, ylabel=ylabel, logy=logy,
                       epochs=r.axes.get("epoch"), title=f"Figure {i + 1}: {ylabel} vs epoch, per sigma")
      s.parts.append(Figure(p, f"Figure {i + 1}: {ylabel} per epoch, mean over seeds with 95% band."))
  acc = r.metric("test_acc", "sigma", "seed")
  ci = plots.mean_ci95(acc, 1)
  rows, verdicts = [], []
  for k, x in enumerate(sig):
    src = next((v for key, v in TUTORIAL_TEST_ACC.items() if math.isclose(key, x, rel_tol=1e-9)), None)
    rows.append([f"{x:g}", fmt_ci(ci, k), src if src is not None else "-"])
    if src is not None:
      verdicts.append("- " + verdict(acc[k], src, what=f"sigma = {x:g}"))
  s.parts.append(Table(["sigma", "measured test accuracy (mean [95% CI])", "tutorial (one run)"], rows,
                       "Table 1: test accuracy per sigma"))
  s.parts += ["\n".join(verdicts)] if verdicts else []
  widths = r.config.get("widths")
  if len(sig) > 1 and min(sig) > 0:
    markers = {}
    if widths:
      for name, spec in (("He", "he_normal"), ("Glorot", "glorot_normal"), ("geometric", "geometric:c=2")):
        markers[name], per = equivalent_sigma(widths, spec)
      s.parts.append("Markers: the one sigma whose end-to-end forward gain equals the rule's (geometric "
                     "mean of the rule's per-layer stds) for widths " + str(list(widths)) + ".")
    p = plots.metric_vs_param(os.path.join(exp_dir, "final_acc_vs_sigma.png"), sig, acc,
                              xlabel="sigma (weight std, log scale)", ylabel="test accuracy",
                              title="Final test accuracy vs sigma", markers=markers,
                              reference=TUTORIAL_TEST_ACC, reference_label="tutorial (one run)")
    s.parts.append(Figure(p, "Final test accuracy against sigma (mean, 95% CI over seeds); crosses: the "
                             "tutorial's single runs; dashed: the sigma each rule picks."))
  return s


def feature_weight_section(exp_dir: str) -> Section:
  """The question. Axes feature_scale, weight_scale, seed, epoch. Metric val_acc [feature_scale,
  weight_scale, seed, epoch]; predicted G_1 from metric pred_G1 [weight_scale, feature_scale] if present,
  else computed from config widths and x0_sq (E[x^2] of the raw inputs)."""
  r = load_results(exp_dir)
  fs = np.asarray(r.axis("feature_scale"), float)
  ws = np.asarray(r.axis("weight_scale"), float)
  acc = r.metric("val_acc", "weight_scale", "feature_scale", "seed", "epoch")
  if r.has("pred_G1"):
    g1 = r.metric("pred_G1", "weight_scale", "feature_scale")
  else:
    g1 = feature_weight_G1(r.config["widths"], fs, ws, r.config["x0_sq"])
  s = Section("feature_weight: feature scaling vs weight scaling (the question)", [_grid_text(r, skip=("epoch",))])
  epochs = r.axes.get("epoch", list(range(1, acc.shape[-1] + 1)))
  for e in range(acc.shape[-1]):
    p = plots.heatmap_pair(os.path.join(exp_dir, f"heatmap_epoch{epochs[e]}.png"), fs, ws,
                           acc[..., e].mean(-1), g1, xlabel="feature_scale (inputs / f, log)",
                           ylabel="weight_scale (layer-1 W / w, log)", vmin=0.0, vmax=1.0,
                           measured_label="validation accuracy", predicted_label="predicted G_1 (log)",
                           measured_title=f"validation accuracy after epoch {epochs[e]} (mean over seeds)",
                           predicted_title="calculus: layer-1 gradient-to-weight ratio G_1",
                           title="Feature scale x first-layer weight scale")
    s.parts.append(Figure(p, f"Validation accuracy after epoch {epochs[e]} beside the predicted G_1."))
  ci = plots.mean_ci95(acc[..., -1], 2)
  rows = [[f"{f:g}", f"{w:g}", fmt_ci(ci, (i, j)), fmt(g1[i, j])]
          for i, w in enumerate(ws) for j, f in enumerate(fs)
          if (f in (fs.min(), fs.max()) and w in (ws.min(), ws.max()))]
  s.parts.append(Table(["feature_scale", "weight_scale", "final val accuracy (mean [95% CI])", "predicted G_1"],
                       rows, "The grid's corners"))
  return s


def init_schemes_section(exp_dir: str) -> Section:
  """The paper's Section 9. Axes dataset, scheme, lr, seed. Metric final_loss [dataset, scheme, lr, seed]
  (training loss after the epoch budget). Median over seeds, best lr per (dataset, scheme) by that
  median, normalised by each data set's worst scheme. Scheme names should be the paper's
  (arithmetic, fan_in, fan_out, geometric) for the source column to line up."""
  r = load_results(exp_dir)
  dsets, schemes, lrs = r.axis("dataset"), [str(x) for x in r.axis("scheme")], r.axis("lr")
  loss = r.metric("final_loss", "dataset", "scheme", "lr", "seed")
  med = np.median(np.where(np.isfinite(loss), loss, np.inf), axis=-1)   # diverged runs count as +inf
  best_lr_idx = med.argmin(-1)
  best = np.take_along_axis(med, best_lr_idx[..., None], -1)[..., 0]
  s = Section("init_schemes: arithmetic, fan-in, fan-out, geometric (the paper's Section 9)",
              [_grid_text(r)])
  rows = [[d] + [f"{fmt(best[i, k])} (lr {lrs[best_lr_idx[i, k]]:g})" for k in range(len(schemes))]
          for i, d in enumerate(dsets)]
  s.parts.append(Table(["data set"] + schemes, rows, "Median training loss over seeds at each scheme's best "
                                                     "learning rate"))
  if not np.all(np.isfinite(best)):
    s.parts.append("Some (data set, scheme) pairs diverged at every learning rate; they are left out of "
                   "the normalised summary: " + ", ".join(f"{dsets[i]}/{schemes[k]}" for i, k in
                                                         zip(*np.nonzero(~np.isfinite(best)))))
  keep = np.all(np.isfinite(best), axis=1)
  summ = init_scheme_summary(best[keep], schemes)
  n = int(keep.sum())
  rows = []
  for k, sch in enumerate(schemes):
    src = PAPER_INIT_TABLE.get(sch)
    rows.append([sch, fmt_ci(summ.ci, k, 3), f"{summ.worst_count[k]} / {n}", f"{summ.best_count[k]} / {n}",
                 fmt(src.avg_normalised_loss, 2) if src else "-",
                 f"{src.worst_count} / {PAPER_N_DATASETS}" if src else "-",
                 f"{src.best_count} / {PAPER_N_DATASETS}" if src else "-"])
  s.parts.append(Table(["scheme", "avg normalised loss (mean [95% CI over data sets])", "worst on", "best on",
                        "paper avg", "paper worst on", "paper best on"], rows,
                       "Normalised by each data set's worst scheme, beside the paper's table"))
  lines = [f"Measured on {n} data sets ({', '.join(str(d) for d, k in zip(dsets, keep) if k)}); the paper "
           f"used {PAPER_N_DATASETS} LIBSVM sets, so the averages compare protocols, not the same data."]
  for k, sch in enumerate(schemes):
    if sch in PAPER_INIT_TABLE and n >= 2:
      lines.append("- " + verdict(summ.normalised[:, k], PAPER_INIT_TABLE[sch].avg_normalised_loss,
                                  what=f"{sch} average normalised loss", digits=3).replace("seeds", "data sets"))
  order = [schemes[k] for k in np.argsort(summ.avg)]
  paper_order = sorted(PAPER_INIT_TABLE, key=lambda k: PAPER_INIT_TABLE[k].avg_normalised_loss)
  lines.append(f"Ranking by average normalised loss (best first): measured {', '.join(order)}; paper "
               f"{', '.join(paper_order)}.")
  s.parts.append("\n".join(lines))
  p = plots.scheme_bars(os.path.join(exp_dir, "init_schemes.png"), schemes, summ.avg,
                        errors=None if summ.ci.n < 2 else summ.ci.half, ylabel="average normalised loss",
                        title="Init schemes: loss / worst scheme's, averaged over data sets",
                        reference={k: v.avg_normalised_loss for k, v in PAPER_INIT_TABLE.items()},
                        reference_label=f"paper ({PAPER_N_DATASETS} LIBSVM sets)")
  s.parts.append(Figure(p, "Average normalised loss per scheme (error bars: 95% CI over data sets)."))
  return s


def _same_curves_note(r: Results) -> str:
  """Name the schemes whose weights have the same E[W^2] here (their curves coincide)."""
  from jscale import initializers
  specs, w = r.config.get("schemes") or {}, r.config.get("width")
  if not specs or not w:
    return ""
  groups: dict = {}
  for label, spec in specs.items():
    groups.setdefault(round(initializers.get(spec).second_moment((w, w)), 12), []).append(label)
  same = [" = ".join(g) for g in groups.values() if len(g) > 1]
  return f"Same E[W^2] on {w}x{w} layers (curves coincide): {'; '.join(same)}." if same else ""


def activations_section(exp_dir: str) -> Section:
  """The explainers. Written by `jscale.activations.experiment` (axes activation, scheme, layer, bin)."""
  r = load_results(exp_dir)
  acts, schemes = r.axis("activation"), r.axis("scheme")
  std = r.metric("std", "activation", "scheme", "layer")
  pred = r.metric("predicted_std", "activation", "scheme", "layer")
  sat = r.metric("saturation_frac", "activation", "scheme", "layer")
  counts = r.metric("counts", "activation", "scheme", "layer", "bin")
  edges = r.metric("bin_edges", "activation", "bin_edge") if r.has("bin_edges") else None
  s = Section("activations: per-layer activations at initialisation (the explainers)",
              [f"{r.config.get('depth')} layers of {r.config.get('width')} units, {r.config.get('n_samples')} "
               f"unit-Gaussian inputs, zero biases, seed {fmt_list(r.config.get('seeds'))}; schemes "
               f"{r.config.get('schemes')}. Predicted std: the calculus (ReLU: sqrt(E[y^2] (1/2 - 1/(2 pi))); "
               "tanh: its linear regime, which fails once units saturate). " + _same_curves_note(r) +
               " All schemes share one random draw (common random numbers); ReLU is positively homogeneous, "
               "so its measured/predicted ratio is the same for every scheme: that ratio is this draw's "
               "finite-width fluctuation."])
  layers = r.axis("layer")
  for a_i, a in enumerate(acts):
    if edges is not None:
      p = plots.histogram_grid(os.path.join(exp_dir, f"hist_{a}.png"), edges[a_i], counts[a_i],
                               row_labels=schemes, col_labels=[f"layer {l}" for l in layers],
                               logx=(a == "relu"), extra=sat[a_i], extra_label="sat " if a == "tanh" else "zero ",
                               xlabel=f"{a} output" + (" (> 0, log)" if a == "relu" else ""),
                               title=f"{a}: activation histograms per layer at init")
      s.parts.append(Figure(p, f"{a}: per-layer histograms (rows: schemes)."))
    p = plots.std_vs_depth(os.path.join(exp_dir, f"std_{a}.png"), dict(zip(schemes, std[a_i])),
                           dict(zip(schemes, pred[a_i])), title=f"{a}: activation std vs depth "
                           "(dashed: calculus" + (", linear regime)" if a == "tanh" else ")"),
                           note=_same_curves_note(r))
    s.parts.append(Figure(p, f"{a}: per-layer std, measured (solid) and predicted (dashed)."))
    rows = [[sch, fmt(std[a_i, k, 0]), fmt(std[a_i, k, -1]), fmt(pred[a_i, k, -1]),
             fmt(std[a_i, k, -1] / pred[a_i, k, -1], 3), fmt(sat[a_i, k, -1], 3)] for k, sch in enumerate(schemes)]
    s.parts.append(Table(["scheme", "std layer 1", f"std layer {layers[-1]}", f"predicted layer {layers[-1]}",
                          "measured / predicted", "saturated" if a == "tanh" else "zero fraction"], rows, a))
  return s


def symmetry_section(exp_dir: str) -> Section:
  """Zeros / constant init. Written by `jscale.symmetry.experiment` (axes init, seed, step, layer)."""
  r = load_results(exp_dir)
  inits = r.axis("init")
  acc = r.metric("test_acc", "init", "seed")
  fin = r.metric("final_spread", "init", "seed", "layer").max(-1)
  ci = plots.mean_ci95(acc, 1)
  chance, lin = r.config.get("chance_acc"), r.config.get("linear_acc")
  s = Section("symmetry: zeros and constant init never break hidden-unit symmetry", [_grid_text(r, skip=("step", "layer"))])
  rows = [[i, fmt_ci(ci, k), fmt(fin[k].max(), 6), "yes" if fin[k].max() == 0 else "no"] for k, i in enumerate(inits)]
  s.parts.append(Table(["init", "test accuracy (mean [95% CI])", "max unit spread after training",
                        "units identical"], rows, f"Chance (majority class) = {fmt(chance)}; logistic "
                                                  f"regression (a linear classifier) = {fmt(lin)}"))
  lines = []
  for k, i in enumerate(inits):
    same = fin[k].max() == 0
    if chance is None or not same:
      continue
    lo, hi = (ci.lo[k], ci.hi[k]) if ci.n > 1 else (ci.mean[k], ci.mean[k])
    at_chance = lo <= chance <= hi or (ci.n > 1 and np.all(acc[k] == chance))
    lines.append(f"- {i}: hidden units stayed identical; accuracy " + (
        f"stays at chance ({fmt_ci(ci, k)} vs chance {fmt(chance)})." if at_chance else
        f"does **not** stay at chance: {fmt_ci(ci, k)} vs chance {fmt(chance)} (identical units make a "
        f"width-1 net, which can still learn one projection of the input; linear classifier: {fmt(lin)})."))
  if lines:
    s.parts.append("\n".join(lines))
  if r.has("spread"):
    sp = r.metric("spread", "init", "seed", "step", "layer").max(-1)
    p = plots.curves(os.path.join(exp_dir, "spread.png"), {i: sp[k] for k, i in enumerate(inits)},
                     ylabel="max difference between hidden units' incoming weights", xlabel="SGD step",
                     epochs=r.axis("step"), title="Hidden-unit spread during training")
    s.parts.append(Figure(p, "Max pairwise difference between hidden units (0 = all units identical)."))
  p = plots.scheme_bars(os.path.join(exp_dir, "symmetry_acc.png"), inits, ci.mean,
                        errors=None if ci.n < 2 else ci.half, ylabel="test accuracy",
                        title="Test accuracy per init", reference={i: chance for i in inits},
                        reference_label="chance (majority class)")
  s.parts.append(Figure(p, "Test accuracy per init beside chance."))
  return s


for _name, _builder in (("sigma", sigma_section), ("feature_weight", feature_weight_section),
                        ("init_schemes", init_schemes_section), ("activations", activations_section),
                        ("symmetry", symmetry_section)):
  register_section(_name, _builder)

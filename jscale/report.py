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
import sys
import traceback
import warnings
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


RUN_INFO = "run.json"


def write_run_info(run_dir: str, **info) -> str:
  """Append one invocation's facts (command, grid, wall time, devices) to RUN_DIR/run.json; the report's
  header prints them. scripts/sweep.py calls this before `build_report`."""
  os.makedirs(run_dir, exist_ok=True)
  path = os.path.join(run_dir, RUN_INFO)
  runs = []
  if os.path.isfile(path):
    with open(path) as f:
      runs = json.load(f).get("invocations", [])
  runs.append(_jsonable(info))
  with open(path + ".tmp", "w") as f:
    json.dump({"invocations": runs}, f, indent=1)
  os.replace(path + ".tmp", path)
  return path


def _run_info_text(run_dir: str) -> str:
  path = os.path.join(run_dir, RUN_INFO)
  if not os.path.isfile(path):
    return ""
  with open(path) as f:
    runs = json.load(f).get("invocations", [])
  lines = ["Written by:"] + [f"- `{r.get('command', '?')}` (grid {r.get('grid', '?')}): {fmt(r.get('wall_time_s'), 1)} s "
                            f"wall time on {', '.join(r.get('devices') or ['?'])}" for r in runs]
  return "\n".join(lines)


class ReportResult(NamedTuple):
  path: str
  built: list
  not_run: list
  failed: dict   # experiment -> error text

  def print_summary(self, note: str = "") -> int:
    """Say where report.md is and what it holds (failures on stderr); return the exit status."""
    print(f"wrote {os.path.abspath(self.path)}{note}: built {self.built or 'none'}; "
          f"not run {self.not_run or 'none'}; failed {list(self.failed) or 'none'}")
    for name, err in self.failed.items():
      print(f"  {name}: {err}", file=sys.stderr)
    return 1 if self.failed else 0


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
  summary = [f"# {title}", "", preamble, "", _run_info_text(run_dir), "",
             f"Run directory: `{os.path.abspath(run_dir)}`. Every number below was measured in this run "
             "(seeds and grid stated per section); source documents' numbers are printed beside them.", "",
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


def _is_sweep(r: Results) -> bool:
  """Results written by the sweep engine (`jscale.sweeps`): config.json also holds points/configs/groups."""
  return "groups" in r.config and "configs" in r.config


_FIXED = ("data", "activation", "kernel_init", "optimizer", "lr", "weight_decay", "epochs", "batch_size",
          "input_layernorm", "output_std")


def _label(v, axis: str = "batch_size") -> str:
  """Setting values as readers see them: batch_size None is full batch, 32 is "batch 32"."""
  if axis == "batch_size":
    return "full batch" if v is None else f"batch {v}"
  if v is None:
    return "none"
  if isinstance(v, float):
    return f"{v:g}"
  return str(v)


def _sweep_text(r: Results) -> list[str]:
  from jscale.sweeps.experiment import AXIS_ALIASES  # lazy: the report itself does not need JAX
  cfg = r.config
  varied = {AXIS_ALIASES.get(a, a) for a in cfg["grid"]["axes"]}
  c0 = cfg["configs"][0]
  fixed = [f"{k} {_label(c0[k], k)}" for k in _FIXED if k in c0 and k not in varied]
  widths = sorted({tuple(g["spec"]["widths"]) for g in cfg["groups"]})
  sources = list(dict.fromkeys(g.get("data_source", "?") for g in cfg["groups"]))
  div = int(np.any(r.arrays["diverged"], axis=-1).sum()) if "diverged" in r.arrays else 0
  secs = _chunk_seconds(r.path)
  out = [f"Widths {', '.join(str(list(w)) for w in widths)}; {', '.join(fixed)}; base seed {cfg.get('base_seed', 0)}. "
         f"{len(cfg['points'])} configurations, {div} diverged (NaN/inf: the engine freezes them and their "
         f"metrics are NaN from that epoch), {fmt(secs, 1)} s of compute on {cfg.get('backend', '?')}."]
  out.append("Data: " + "; ".join(sources) + ".")
  return out


def _chunk_seconds(exp_dir: str) -> float:
  total, d = 0.0, os.path.join(exp_dir, "chunks")
  if not os.path.isdir(d):
    return math.nan
  for f in sorted(os.listdir(d)):
    if f.endswith(".npz") and not f.endswith(".tmp.npz"):
      with np.load(os.path.join(d, f)) as z:
        total += float(z["seconds"])
  return total


def _grid_text(r: Results, skip=()) -> str:
  seeds = r.config.get("seeds", r.axes.get("seed"))
  skip = ("seed", "layer") + tuple(skip)
  parts = [f"{k} = {fmt_list([_label(x, k) if k == 'batch_size' else x for x in v])}" for k, v in r.axes.items()
           if k not in skip]
  grid = r.config.get("grid_name", r.config.get("grid"))
  head = (f"Grid `{grid}`: " if isinstance(grid, str) else "Grid: ") + f"{'; '.join(parts)}. Seeds: {fmt_list(seeds)}."
  if _is_sweep(r):
    return " ".join([head] + _sweep_text(r))
  extra = [f"{k}: {r.config[k]}" for k in ("data", "data_source", "widths", "lr", "optimizer",
                                            "batch_size", "epochs", "steps", "wall_time_s") if k in r.config]
  return head + (f" {'; '.join(extra)}." if extra else "")


def fmt_list(v, limit: int = 12) -> str:
  if v is None:
    return "n/a"
  v = list(v)
  s = ", ".join(f"{x:g}" if isinstance(x, (float, int)) and not isinstance(x, bool) else str(x)
                for x in v[:limit])
  return f"[{s}{', ...' if len(v) > limit else ''}] ({len(v)})" if len(v) > limit else f"[{s}]"


def _first_metric(r: Results, *names: str) -> str | None:
  return next((n for n in names if r.has(n)), None)


def _ci_finite(samples) -> plots.CI:
  """95% interval over the finite samples (diverged runs are NaN and are counted separately)."""
  v = np.asarray(samples, np.float64).ravel()
  return plots.mean_ci95(v[np.isfinite(v)], 0)


def _ci_text(samples, digits: int = 4) -> str:
  v = np.asarray(samples, np.float64).ravel()
  bad = int((~np.isfinite(v)).sum())
  if bad == v.size:
    return f"diverged ({bad}/{v.size})"
  txt = fmt_ci(_ci_finite(v), digits=digits)
  return txt + (f", {bad}/{v.size} diverged" if bad else "")


def _widths(r: Results):
  if r.config.get("widths"):
    return list(r.config["widths"])
  if _is_sweep(r):
    return list(r.config["groups"][0]["spec"]["widths"])
  return None


def _panel_axis(r: Results, metric: str, known: Sequence[str]) -> str | None:
  """The one extra grid axis of a metric beyond `known` (e.g. batch_size in sigma's grid), or None."""
  extra = [a for a in r.metric_axes[metric] if a not in known]
  if len(extra) > 1:
    raise ValueError(f"{r.name}: metric {metric!r} has axes {extra} beyond {list(known)}; the section "
                     "draws one extra axis as panels")
  return extra[0] if extra else None


def _with_panels(r: Results, metric: str, order: Sequence[str], panel: str | None) -> np.ndarray:
  a = r.metric(metric, *(([panel] if panel else []) + list(order)))
  return a if panel else a[None]


def sigma_section(exp_dir: str) -> Section:
  """The tutorial. Axes sigma, seed, epoch, and optionally one more (the engine's batch_size: full batch
  and 32), drawn as side-by-side panels. Curves (any present): train_loss (or loss), train_acc,
  grad_norm, saturation (or dead_frac) [.., sigma, seed, epoch]; test_acc [.., sigma, seed(, epoch)]
  (its last epoch). Widths from config (for the He / Glorot / geometric markers)."""
  r = load_results(exp_dir)
  sig = [float(x) for x in r.axis("sigma")]
  acc_name = "test_acc"
  known = ("sigma", "seed", "epoch", "layer")
  panel = _panel_axis(r, acc_name, known)
  pvals = r.axis(panel) if panel else [None]
  plabels = [_label(v, panel) if panel else "" for v in pvals]
  s = Section("sigma: weight scale vs convergence (the tutorial, two moons)", [_grid_text(r, skip=("epoch",))])
  figs = [(("train_loss", "loss"), "training loss (cross-entropy, nats)", True),
          (("train_acc",), "training accuracy", False),
          (("grad_norm",), "gradient L2 norm (all parameters)", True),
          (("saturation", "dead_frac"), "fraction of near-zero ReLU outputs", False)]
  for i, (names, ylabel, logy) in enumerate(figs):
    m = _first_metric(r, *names)
    if m is None:
      continue
    v = _with_panels(r, m, ("sigma", "seed", "epoch"), _panel_axis(r, m, known))
    title = f"Figure {i + 1}: {ylabel} vs epoch, per sigma"
    groups = [{f"sigma={x:g}": v[p, k] for k, x in enumerate(sig)} for p in range(v.shape[0])]
    path = os.path.join(exp_dir, f"fig{i + 1}_{m}.png")
    if len(groups) > 1:
      path = plots.curve_panels(path, dict(zip(plabels, groups)), ylabel=ylabel, logy=logy,
                                epochs=r.axes.get("epoch"), title=title)
    else:
      path = plots.curves(path, groups[0], ylabel=ylabel, logy=logy, epochs=r.axes.get("epoch"), title=title)
    what = {"saturation": f" ({m}: share of hidden ReLU outputs with |a| <= "
                          f"{r.config.get('configs', [{}])[0].get('saturation_threshold', 1e-3):g}, averaged over "
                          "the epoch's steps)"}.get(m, "")
    avg = "geometric mean over seeds with the 95% band of the log" if logy else "mean over seeds with 95% band"
    s.parts.append(Figure(path, f"Figure {i + 1}: {ylabel} per epoch{what}, {avg}"
                                + (f"; panels: {panel} = {', '.join(plabels)}." if panel else ".")))
  acc = r.metric(acc_name, *(([panel] if panel else []) + ["sigma", "seed"]
                             + (["epoch"] if "epoch" in r.metric_axes[acc_name] else [])))
  acc = acc[..., -1] if "epoch" in r.metric_axes[acc_name] else acc
  acc = acc if panel else acc[None]                                  # (panels, sigma, seed)
  src_idx = {k: next((i for i, x in enumerate(sig) if math.isclose(x, key, rel_tol=1e-9)), None)
             for k, key in enumerate(TUTORIAL_TEST_ACC)}
  tut = list(TUTORIAL_TEST_ACC.items())
  rows, verdicts = [], []
  for t, (ts, tv) in enumerate(tut):
    k = src_idx[t]
    if k is None:
      continue
    rows.append([f"{ts:g}", tv] + [_ci_text(acc[p, k]) for p in range(len(pvals))])
    for p in range(len(pvals)):
      finite = acc[p, k][np.isfinite(acc[p, k])]
      verdicts.append("- " + verdict(finite, tv, what=f"sigma = {ts:g}" + (f", {plabels[p]}" if panel else "")))
  cols = [f"measured, {l} (mean [95% CI])" for l in plabels] if panel else ["measured test accuracy (mean [95% CI])"]
  if rows:
    s.parts.append(Table(["sigma", "tutorial (one run)"] + cols, rows,
                         "Table 1: test accuracy after the last epoch per sigma, beside the tutorial's single runs"))
    s.parts.append("\n".join(verdicts))
  else:
    s.parts.append("The grid has none of the tutorial's sigmas (0.01, 0.1, 0.5, 1): no Table 1 comparison.")
  extra = [k for k in range(len(sig)) if k not in src_idx.values()]
  if extra:
    s.parts.append(Table(["sigma"] + cols, [[f"{sig[k]:g}"] + [_ci_text(acc[p, k]) for p in range(len(pvals))]
                                            for k in range(len(sig))],
                         "Test accuracy after the last epoch, every sigma of the grid"))
  widths = _widths(r)
  if len(sig) > 1 and min(sig) > 0:
    markers = {}
    if widths:
      for name, spec in (("He", "he_normal"), ("Glorot", "glorot_normal"), ("geometric", "geometric:c=2")):
        markers[name], _ = equivalent_sigma(widths, spec)
      s.parts.append("Markers: the one sigma whose end-to-end forward gain equals the rule's (geometric "
                     "mean of the rule's per-layer stds) for widths " + str(list(widths)) + ": " +
                     ", ".join(f"{k} {v:.3g}" for k, v in markers.items()) + ".")
    series = {(l or "measured"): np.where(np.isfinite(acc[p]), acc[p], np.nan) for p, l in enumerate(plabels)}
    path = plots.metric_vs_param(os.path.join(exp_dir, "final_acc_vs_sigma.png"), sig, series,
                                 xlabel="sigma (weight std, log scale)", ylabel="test accuracy after the last epoch",
                                 title="Final test accuracy vs sigma", markers=markers,
                                 reference=TUTORIAL_TEST_ACC, reference_label="tutorial (one run)")
    s.parts.append(Figure(path, "Final test accuracy against sigma (mean, 95% CI over seeds); crosses: the "
                                "tutorial's single runs; vertical lines: the sigma each rule picks."))
  return s


def _fw_arrays(r: Results):
  """(feature scales f, weight scales w, accuracy [w, f, seed, epoch], measured G_1 [w, f, seed, epoch] or
  None) from either the engine's layout (axes input_scale = 1/f and layer_scale.0 = 1/w, metric test_acc
  on the held-out split) or a hand-written one (axes feature_scale, weight_scale; metric val_acc)."""
  if "input_scale" in r.axes:
    inv = lambda vs: np.array([float(f"{1.0 / float(v):.4g}") for v in vs])
    fs, ws = inv(r.axis("input_scale")), inv(r.axis("layer_scale.0"))
    order = ("layer_scale.0", "input_scale", "seed", "epoch")
    acc = r.metric("test_acc", *order)
    g = r.metric("g_ratio", *order, "layer")[..., 0] if r.has("g_ratio") else None
    return fs, ws, acc, g
  fs = np.asarray(r.axis("feature_scale"), float)
  ws = np.asarray(r.axis("weight_scale"), float)
  return fs, ws, r.metric("val_acc", "weight_scale", "feature_scale", "seed", "epoch"), None


def _x0_sq(r: Results) -> tuple[float, str]:
  """E[x_0^2] of the raw training inputs: from config, else recomputed from the run's own data (checked
  against the fingerprint the run recorded) and cached next to the results."""
  if "x0_sq" in r.config:
    return float(r.config["x0_sq"]), "config"
  cache = os.path.join(r.path, "x0_sq.json")
  fp = r.config["groups"][0]["data_fingerprint"]
  if os.path.isfile(cache):
    with open(cache) as f:
      c = json.load(f)
    if c.get("fingerprint") == fp:
      return float(c["x0_sq"]), "the run's data"
  from jscale import data as data_lib
  c0 = r.config["configs"][0]
  ds = data_lib.load(c0["data"], seed=c0["data_seed"], **dict(c0["data_options"]))
  if data_lib.fingerprint(ds) != fp:
    raise ValueError(f"{r.path}: the data set {c0['data']!r} loaded now differs from the run's (fingerprint)")
  x0 = float(np.mean(np.square(ds.x_train, dtype=np.float64)))
  with open(cache, "w") as f:
    json.dump({"fingerprint": fp, "x0_sq": x0}, f)
  return x0, "the run's data"


def feature_weight_section(exp_dir: str) -> Section:
  """The question. Engine layout: axes input_scale (= 1/feature_scale), layer_scale.0 (= 1/weight_scale),
  seed, epoch; metric test_acc (the held-out split: Fashion-MNIST's 5000 validation images, or digits'
  30% test split) and g_ratio. Hand-written layout: axes feature_scale, weight_scale, seed, epoch; metric
  val_acc. Predicted G_1 from metric pred_G1 [weight_scale, feature_scale] if present, else computed
  from the widths and E[x_0^2] of the raw inputs."""
  r = load_results(exp_dir)
  fs, ws, acc, g_meas = _fw_arrays(r)
  widths = _widths(r)
  x0, x0_from = _x0_sq(r)
  g1 = r.metric("pred_G1", "weight_scale", "feature_scale") if r.has("pred_G1") else \
      feature_weight_G1(widths, fs, ws, x0)
  s = Section("feature_weight: feature scaling vs weight scaling (the question)", [_grid_text(r, skip=("epoch",))])
  data = r.config["configs"][0]["data"] if _is_sweep(r) else r.config.get("data")
  if data == "digits_raw":
    s.parts.append("**Data used: the offline stand-in, not Fashion-MNIST.** Fashion-MNIST was not prepared in "
                   "TFDS on this machine, so this run used scikit-learn's 8x8 digits with pixels rescaled to the "
                   f"raw range 0..255 (input width 64, net {widths}). For the question's own data, prepare it once "
                   "with `python -c \"import jscale.datasets as d; d.fashion_mnist(download=True)\"` and rerun "
                   "(the experiment picks it up automatically).")
  elif data:
    s.parts.append(f"**Data used: {data}** (net {widths}).")
  s.parts.append(f"Scales: inputs divided by feature_scale f, first-layer weights divided by weight_scale w "
                 f"(the engine multiplies by 1/f and 1/w). E[x_0^2] of the raw inputs = {fmt(x0)} (from "
                 f"{x0_from}). Predicted G_1: the calculus's layer-1 gradient-to-weight ratio at initialisation "
                 "(batch 1, unit logit gradient); it scales as w^2 / f^2.")
  epochs = r.axes.get("epoch", list(range(1, acc.shape[-1] + 1)))
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN cells (every seed diverged) stay NaN
    mean_acc = np.nanmean(acc, axis=2)  # over seeds
  for e in range(acc.shape[-1]):
    p = plots.heatmap_pair(os.path.join(exp_dir, f"heatmap_epoch{epochs[e]}.png"), fs, ws,
                           mean_acc[..., e], g1, xlabel="feature_scale f (inputs / f, log)",
                           ylabel="weight_scale w (layer-1 W / w, log)", vmin=0.0, vmax=1.0,
                           measured_label="validation accuracy", predicted_label="predicted G_1 (log)",
                           measured_title=f"validation accuracy after epoch {epochs[e]} (mean over seeds)",
                           predicted_title="calculus: layer-1 gradient-to-weight ratio G_1",
                           title="Feature scale x first-layer weight scale", nan_label="diverged")
    s.parts.append(Figure(p, f"Validation accuracy after epoch {epochs[e]} (mean over seeds; blank = every "
                             "seed diverged) beside the predicted G_1."))
  corners = [(i, j) for i, w in enumerate(ws) for j, f in enumerate(fs)
             if f in (fs.min(), fs.max()) and w in (ws.min(), ws.max())]
  head = ["feature_scale f", "weight_scale w", "final val accuracy (mean [95% CI])", "predicted G_1"]
  if g_meas is not None:
    head.append("measured G_1, epoch 1 (mean over seeds)")
  rows = []
  for i, j in corners:
    row = [f"{fs[j]:g}", f"{ws[i]:g}", _ci_text(acc[i, j, :, -1]), fmt(g1[i, j])]
    if g_meas is not None:
      with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        row.append(fmt(float(np.nanmean(g_meas[i, j, :, 0]))))
    rows.append(row)
  s.parts.append(Table(head, rows, "The grid's corners (the question's two configurations are "
                                   "(f, w) = (255, 1) and (1, 255)); measured G_1: minibatch, averaged over "
                                   "epoch 1's steps, so compare its pattern across cells, not its level"))
  jf, jw = int(np.argmax(fs)), int(np.argmax(ws))   # (f max, w = min) vs (f = min, w max)
  a_good = acc[int(np.argmin(ws)), jf, :, -1]
  a_bad = acc[jw, int(np.argmin(fs)), :, -1]
  # A diverged run did not converge: for this comparison it counts as chance (1 / classes).
  chance = 1.0 / widths[-1]
  cg, cb = (plots.mean_ci95(np.where(np.isfinite(a), a, chance), 0) for a in (a_good, a_bad))
  ratio = g1[jw, int(np.argmin(fs))] / g1[int(np.argmin(ws)), jf]
  sep = cg.n > 1 and (cg.lo > cb.hi or (np.all(~np.isfinite(a_bad)) and cg.lo > chance))
  s.parts.append(
      f"The question: (f, w) = ({fs.max():g}, {ws.min():g}) \"converges fast\", ({fs.min():g}, {ws.max():g}) \"does "
      f"not converge (or converges extremely slowly)\" (no numbers given). Measured after {epochs[-1]} epochs: "
      f"{_ci_text(a_good)} vs {_ci_text(a_bad)}. The calculus predicts G_1 {fmt(ratio)} times larger in the second "
      f"configuration (= (255^2)^2 for the full grid): layer 1 moves ~{math.sqrt(ratio):.3g} times further per "
      "step relative to its size. " + (
          "**Reproduces**: the first configuration is better, 95% intervals disjoint (a diverged run counted "
          f"as chance, {fmt(chance, 2)})." if sep else
          "**Does not reproduce clearly**: the 95% intervals of the two configurations overlap or the order is "
          "reversed (see the table)."))
  if len(fs) > 2 and len(ws) > 2:
    # Over the whole grid: does the final accuracy follow G_1 (diagonal iso-lines, w^2 / f^2), or the
    # feature scale alone? Rank correlations over the grid cells; a diverged cell counts as chance.
    from scipy import stats
    fin = np.nanmean(np.where(np.isfinite(acc[..., -1]), acc[..., -1], chance), axis=2).ravel()
    rho_g = stats.spearmanr(fin, -np.log(g1).ravel())[0]
    rho_f = stats.spearmanr(fin, np.log(np.broadcast_to(fs[None, :], g1.shape)).ravel())[0]
    rho_w = stats.spearmanr(fin, -np.log(np.broadcast_to(ws[:, None], g1.shape)).ravel())[0]
    s.parts.append(
        f"Over the whole {len(ws)} x {len(fs)} grid (Spearman rank correlation of the final accuracy, a diverged run "
        f"counted as chance): with -log G_1 {rho_g:.2f}, with log f alone {rho_f:.2f}, with -log w alone "
        f"{rho_w:.2f}. " + (
            "The measured accuracy follows the feature scale alone clearly better than the predicted G_1."
            if abs(rho_f) > abs(rho_g) + 0.1 else
            "The measured accuracy follows the predicted G_1 clearly better than the feature scale alone."
            if abs(rho_g) > abs(rho_f) + 0.1 else
            "G_1 and the feature scale alone rank the cells about equally well (within 0.1): look at the heat "
            "maps for where the measured boundary runs (along G_1's diagonals, or along f)."))
  return s


def init_schemes_section(exp_dir: str) -> Section:
  """The paper's Section 9. Engine layout: axes dataset, init (the paper's names: arithmetic, fan_in,
  fan_out, geometric), lr, seed, epoch; metric train_loss (the last epoch's mean minibatch loss is the
  "training loss after the epoch budget"). Hand-written layout: axis scheme and metric final_loss
  [dataset, scheme, lr, seed]. Median over seeds, best lr per (dataset, scheme) by that median (a
  diverged run counts as +inf), normalised by each data set's worst scheme."""
  r = load_results(exp_dir)
  scheme_axis = "init" if "init" in r.axes else "scheme"
  dsets = [os.path.basename(str(d).partition("libsvm:")[2]) if str(d).startswith("libsvm:") else str(d)
           for d in r.axis("dataset")]
  schemes, lrs = [str(x) for x in r.axis(scheme_axis)], [float(x) for x in r.axis("lr")]
  if r.has("final_loss"):
    loss = r.metric("final_loss", "dataset", scheme_axis, "lr", "seed")
  else:
    loss = r.metric("train_loss", "dataset", scheme_axis, "lr", "seed", "epoch")[..., -1]
  med = np.median(np.where(np.isfinite(loss), loss, np.inf), axis=-1)   # diverged runs count as +inf
  best_lr_idx = med.argmin(-1)
  best = np.take_along_axis(med, best_lr_idx[..., None], -1)[..., 0]
  s = Section("init_schemes: arithmetic, fan-in, fan-out, geometric (the paper's Section 9)", [_grid_text(r)])
  s.parts.append(f"**The data sets differ from the paper's.** The paper averaged over {PAPER_N_DATASETS} LIBSVM "
                 f"multi-class sets; this run used {len(dsets)}: {', '.join(dsets)} (see the data line above). "
                 "Pass the paper's LIBSVM files with `scripts/sweep.py --libsvm PATH` to run its table. The "
                 "paper does not state its optimizer or batch size; the settings above are this run's.")
  if _is_sweep(r):
    narrow = sorted({os.path.basename(str(g["data"][0]).partition("libsvm:")[2]) or str(g["data"][0])
                     for g in r.config["groups"] if g["spec"].get("input_layernorm") and g["spec"]["widths"][0] <= 2})
    if narrow:
      s.parts.append(f"Flag: {', '.join(narrow)} has 2 input features, and LayerNorm over 2 features maps every "
                     "input to +-(1, -1): the net sees one bit (sign(x1 - x2)), so every init ends near the same "
                     "loss there. It is kept in the averages below (the protocol normalises every data set).")
  rows = [[d] + [f"{fmt(best[i, k])} (lr {lrs[best_lr_idx[i, k]]:g})" for k in range(len(schemes))]
          for i, d in enumerate(dsets)]
  s.parts.append(Table(["data set"] + schemes, rows, "Median training loss over seeds at each scheme's best "
                                                     "learning rate"))
  edge = [(dsets[i], schemes[k]) for i in range(len(dsets)) for k in range(len(schemes))
          if len(lrs) > 1 and best_lr_idx[i, k] in (0, len(lrs) - 1) and np.isfinite(best[i, k])]
  if edge:
    s.parts.append(f"The best lr is at an end of the lr grid ({lrs[0]:g} .. {lrs[-1]:g}) for "
                   f"{len(edge)} of {best.size} (data set, scheme) pairs ({', '.join(f'{d}/{k}' for d, k in edge[:8])}"
                   f"{', ...' if len(edge) > 8 else ''}): a wider grid could lower those losses.")
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


def hessian_section(exp_dir: str) -> Section:
  """Figures 1-2 of the Hessian check. Written by the `hessian` experiment (axis batch; JSON records)."""
  r = load_results(exp_dir)
  cfg = r.config
  batches = r.axis("batch")
  s = Section("hessian: the calculus's Hessian-block predictions against exact blocks (the paper's Figures 1-2)", [
      f"{cfg['setups']} sampled setups (depth 3-6, widths 8-128, fan-in / fan-out / Xavier / geometric, random "
      f"input and loss), seed {cfg['seed']}, {cfg['draws']} draw(s) per setup; exact diagonal blocks from the "
      "Gauss-Newton identity (equal to `jax.hessian` for ReLU nets, checked in the tests). r = predicted / exact "
      "average squared singular value of each weight block. The paper shows the ratio as a histogram and "
      "gives no numeric summary, so there is no source number to print beside these."])
  med, p5, p95 = (r.metric(k, "batch") for k in ("median", "p5", "p95"))
  medc, p5c, p95c = (r.metric(k, "batch") for k in ("median_corrected", "p5_corrected", "p95_corrected"))
  rows = [[b, f"{fmt(med[i])} [{fmt(p5[i])}, {fmt(p95[i])}]", f"{fmt(medc[i])} [{fmt(p5c[i])}, {fmt(p95c[i])}]"]
          for i, b in enumerate(batches)]
  s.parts.append(Table(["batch", "batch-1 formula: median r [p5, p95]", "with cross-example terms: median r [p5, p95]"],
                       rows, "Figure 1 summary (at batch 1 the two coincide)"))
  s.parts.append(Figure(os.path.join(exp_dir, "fig1_ratio_hist.png"),
                        "Figure 1: log10(predicted / exact) per weight block, per batch size."))
  fig2 = cfg.get("fig2_diag_max_over_min") or {}
  if fig2:
    schemes = list(next(iter(fig2.values())))
    s.parts.append(Table(["batch"] + schemes, [[b] + [fmt(fig2[b][k]) for k in schemes] for b in fig2],
                         f"Figure 2: max/min of the diagonal blocks' average squared singular value, widths "
                         f"{tuple(cfg['fig2_widths'])} (1 = evenly weighted; the paper: geometric is the most even)"))
    s.parts.append(Figure(os.path.join(exp_dir, "fig2_heatmaps.png"), "Figure 2: block heat maps (log10)."))
  else:
    s.parts.append("Figure 2 (block heat maps) is part of the full grid only.")
  return s


for _name, _builder in (("sigma", sigma_section), ("feature_weight", feature_weight_section),
                        ("init_schemes", init_schemes_section), ("activations", activations_section),
                        ("symmetry", symmetry_section), ("hessian", hessian_section)):
  register_section(_name, _builder)

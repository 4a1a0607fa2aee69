"""A run directory on disk, and the `Results` read back from it.

  RUN_DIR/config.json            experiment, grid (dims, shape, values), every configuration's axis values
                                 and settings, static groups, the chunk plan, data fingerprints, versions
  RUN_DIR/chunks/chunk_NNNNN.npz one per finished chunk: `config_index` and each metric for those configs
  RUN_DIR/metrics.npz            all chunks assembled, each metric shaped by the grid's named dims
                                 (written when the run ends, when config.json also gains "axes" and
                                 "metrics": the results protocol `jscale.report.load_results` reads)
  RUN_DIR/summary.csv            one row per configuration: axis values, final metrics, divergence

Chunk files hold flat arrays with dims ("config", "epoch") or ("config", "epoch", "layer") (stored as
JSON in `dims`). metrics.npz holds them grid-shaped: sigma's full grid gives test_acc of shape
(2, 16, 32, 200), config.json["metrics"]["test_acc"] = ["batch_size", "sigma", "seed", "epoch"], and
config.json["axes"] the values along each (batch_size None means full batch). In memory, `Results.metrics`
is flat (config first) and `Results.grid(name)` returns the grid-shaped array with its dims. Configurations whose static groups differ in epochs or depth
are NaN-padded to the longest.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
from typing import Any, Mapping, Sequence

import numpy as np

from jscale.train import Metrics

METRIC_DIMS = {name: ("config", "epoch") for name in Metrics._fields}
METRIC_DIMS["g_ratio"] = ("config", "epoch", "layer")
CONFIG_JSON, CHUNK_DIR, METRICS_NPZ, SUMMARY_CSV = "config.json", "chunks", "metrics.npz", "summary.csv"


def chunk_path(run_dir: str, chunk_id: int) -> str:
  return os.path.join(run_dir, CHUNK_DIR, f"chunk_{chunk_id:05d}.npz")


def _atomic_savez(path: str, **arrays):
  tmp = path + ".tmp.npz"
  np.savez(tmp, **arrays)
  os.replace(tmp, path)  # a chunk file exists only once it is complete: resume trusts it


def write_json(path: str, obj):
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=1, default=_json_default)
  os.replace(tmp, path)


def _json_default(o):
  if isinstance(o, (np.integer,)):
    return int(o)
  if isinstance(o, (np.floating,)):
    return float(o)
  if isinstance(o, np.ndarray):
    return o.tolist()
  raise TypeError(f"not JSON serializable: {o!r}")


def write_chunk(run_dir: str, chunk_id: int, indices: Sequence[int], metrics: Metrics, seconds: float):
  arrays = {name: np.asarray(getattr(metrics, name)) for name in Metrics._fields}
  _atomic_savez(chunk_path(run_dir, chunk_id), config_index=np.asarray(indices, np.int64),
                seconds=np.float64(seconds), dims=json.dumps(METRIC_DIMS), **arrays)


def chunk_done(run_dir: str, chunk_id: int) -> bool:
  return os.path.exists(chunk_path(run_dir, chunk_id))


def first_true(mask_CxE: np.ndarray) -> np.ndarray:
  """Index of the first True along the last axis, -1 where there is none."""
  any_ = mask_CxE.any(-1)
  return np.where(any_, mask_CxE.argmax(-1), -1)


@dataclasses.dataclass
class Results:
  run_dir: str
  config: dict                   # config.json
  metrics: dict[str, np.ndarray]  # name -> (n_configs, epochs[, layers])
  seconds: float                 # compute wall time summed over chunks

  @property
  def dims(self) -> dict[str, tuple]:
    return METRIC_DIMS

  @property
  def points(self) -> list[dict]:
    return self.config["points"]

  @property
  def n_configs(self) -> int:
    return len(self.points)

  @property
  def diverged(self) -> np.ndarray:
    """(n_configs,) True where the configuration diverged (NaN/inf) at some epoch."""
    return self.metrics["diverged"].any(-1)

  @property
  def diverged_epoch(self) -> np.ndarray:
    """(n_configs,) first diverged epoch, -1 if never."""
    return first_true(self.metrics["diverged"])

  def final(self, name: str) -> np.ndarray:
    """The last epoch's value of a metric, per configuration (NaN if diverged)."""
    m = self.metrics[name]
    return m[:, -1]

  def grid(self, name: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """A metric with the config axis reshaped into the grid's dims: (array, dims)."""
    g = self.config["grid"]
    m = self.metrics[name]
    return m.reshape(tuple(g["shape"]) + m.shape[1:]), tuple(g["dims"]) + METRIC_DIMS[name][1:]

  def axis_values(self, axis: str) -> list:
    return [p[axis] for p in self.points]

  def summary(self, by: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Rows grouping configurations by the axes `by` (default: the experiment's `summary_by`, else
    every axis but seed), with counts, divergences and mean / std over the non-diverged ones."""
    axes = list(self.config["grid"]["axes"])
    by = list(by if by is not None else (self.config.get("summary_by") or [a for a in axes if a != "seed"]))
    keys = [tuple(_label(p.get(a)) for a in by) for p in self.points]
    order = list(dict.fromkeys(keys))
    div = self.diverged
    rows = []
    for k in order:
      sel = np.array([kk == k for kk in keys])
      ok = sel & ~div
      row = dict(zip(by, k))
      row["n"] = int(sel.sum())
      row["diverged"] = int((sel & div).sum())
      for name in ("train_loss", "train_acc", "test_acc", "grad_norm", "saturation"):
        v = self.final(name)[ok]
        v = v[np.isfinite(v)]
        row[f"{name}_mean"] = float(v.mean()) if v.size else math.nan
        row[f"{name}_std"] = float(v.std()) if v.size else math.nan
      rows.append(row)
    return rows


def _label(v):
  if v is None:
    return "full"
  if isinstance(v, list):
    return tuple(v)
  return v


def format_table(rows: list[dict], by: Sequence[str] | None = None) -> str:
  """Plain-text table of `Results.summary()` rows."""
  if not rows:
    return "(no rows)"
  by = list(by) if by is not None else [k for k in rows[0] if k not in ("n", "diverged") and "_mean" not in k
                                       and "_std" not in k]
  head = by + ["n", "diverged", "test_acc", "train_loss", "grad_norm", "saturation"]
  lines = []
  for r in rows:
    cells = [_fmt(r[a]) for a in by] + [str(r["n"]), str(r["diverged"])]
    for name in ("test_acc", "train_loss", "grad_norm", "saturation"):
      cells.append(f"{_fmt(r[name + '_mean'])} ± {_fmt(r[name + '_std'])}")
    lines.append(cells)
  widths = [max(len(h), *(len(c[i]) for c in lines)) for i, h in enumerate(head)]
  out = ["  ".join(h.ljust(w) for h, w in zip(head, widths)),
         "  ".join("-" * w for w in widths)]
  out += ["  ".join(c.ljust(w) for c, w in zip(cells, widths)) for cells in lines]
  return "\n".join(out)


def _fmt(v) -> str:
  if isinstance(v, float):
    if math.isnan(v):
      return "nan"
    return f"{v:.4g}"
  return str(v)


def assemble(run_dir: str, config: dict | None = None) -> Results:
  """Read every chunk of a finished run; write metrics.npz and summary.csv; return the Results."""
  if config is None:
    with open(os.path.join(run_dir, CONFIG_JSON)) as f:
      config = json.load(f)
  n = len(config["points"])
  E = max(g["epochs"] for g in config["groups"])
  L = max(g["n_layers"] for g in config["groups"])
  shapes = {name: (n, E, L) if len(d) == 3 else (n, E) for name, d in METRIC_DIMS.items()}
  metrics = {name: np.full(s, False if name == "diverged" else np.nan, bool if name == "diverged" else np.float32)
             for name, s in shapes.items()}
  seen = np.zeros(n, bool)
  seconds = 0.0
  for cid in range(len(config["chunks"])):
    path = chunk_path(run_dir, cid)
    if not os.path.exists(path):
      raise ValueError(f"run {run_dir} is incomplete: chunk {cid} missing (resume it with --resume {run_dir})")
    with np.load(path) as z:
      idx = z["config_index"]
      seconds += float(z["seconds"])
      for name in METRIC_DIMS:
        a = z[name]
        sl = (idx, slice(0, a.shape[1])) + ((slice(0, a.shape[2]),) if a.ndim == 3 else ())
        metrics[name][sl] = a
      seen[idx] = True
  if not seen.all():
    raise ValueError(f"run {run_dir}: configurations {np.flatnonzero(~seen)[:10].tolist()}... have no results")
  config = dict(config, **named_axes(config, E, L))
  res = Results(run_dir, config, metrics, seconds)
  shape = tuple(config["grid"]["shape"])
  _atomic_savez(os.path.join(run_dir, METRICS_NPZ),
                **{name: m.reshape(shape + m.shape[1:]) for name, m in metrics.items()})
  write_json(os.path.join(run_dir, CONFIG_JSON), config)
  _write_summary_csv(res)
  return res


def named_axes(config: dict, epochs: int, layers: int) -> dict:
  """config.json's "axes" (every dim's values, then epoch 1..E and layer 0..L-1) and "metrics" (each
  metric's dims, in the order of its metrics.npz array): the shared results protocol of jscale.report."""
  axes = {}
  for dim, block in zip(config["grid"]["dims"], config["grid"]["blocks"]):
    axes[dim] = block[0][1] if len(block) == 1 else [list(v) for v in zip(*(values for _, values in block))]
  axes["epoch"] = list(range(1, epochs + 1))
  axes["layer"] = list(range(layers))
  dims = list(config["grid"]["dims"])
  return {"axes": axes, "metrics": {name: dims + list(d[1:]) for name, d in METRIC_DIMS.items()}}


def _write_summary_csv(res: Results):
  axes = list(res.config["grid"]["axes"])
  path = os.path.join(res.run_dir, SUMMARY_CSV)
  finals = {name: res.final(name) for name in ("train_loss", "train_acc", "test_loss", "test_acc", "grad_norm",
                                               "saturation", "zero_fraction")}
  best = np.nanmax(np.where(np.isnan(res.metrics["test_acc"]), -np.inf, res.metrics["test_acc"]), axis=-1)
  div, div_e = res.diverged, res.diverged_epoch
  with open(path + ".tmp", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["config"] + axes + [f"final_{k}" for k in finals] + ["best_test_acc", "diverged", "diverged_epoch"])
    for i, p in enumerate(res.points):
      w.writerow([i] + [_csv(p[a]) for a in axes] + [f"{finals[k][i]:.6g}" for k in finals]
                 + [f"{best[i]:.6g}" if np.isfinite(best[i]) else "nan", int(div[i]), int(div_e[i])])
  os.replace(path + ".tmp", path)


def _csv(v):
  if v is None:
    return "full"
  if isinstance(v, (list, tuple)):
    return " ".join(str(x) for x in v)
  return v


def load(run_dir: str) -> Results:
  """Results of a finished run directory (assembles metrics.npz if the run ended before writing it)."""
  cfg_path = os.path.join(run_dir, CONFIG_JSON)
  if not os.path.exists(cfg_path):
    raise ValueError(f"{run_dir} is not a run directory (no {CONFIG_JSON})")
  with open(cfg_path) as f:
    config = json.load(f)
  npz = os.path.join(run_dir, METRICS_NPZ)
  if not os.path.exists(npz):
    return assemble(run_dir, config)
  n = len(config["points"])
  with np.load(npz) as z:  # grid-shaped on disk, flat (config, ...) in memory
    metrics = {name: z[name].reshape((n,) + z[name].shape[len(config["grid"]["shape"]):]) for name in METRIC_DIMS}
  seconds = 0.0
  for cid in range(len(config["chunks"])):
    with np.load(chunk_path(run_dir, cid)) as z:
      seconds += float(z["seconds"])
  return Results(run_dir, config, metrics, seconds)

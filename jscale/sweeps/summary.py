"""A sweep's summary table: configurations grouped by their grid axes, mean and std over seeds."""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np


def summary(res, by: Sequence[str] | None = None) -> list[dict[str, Any]]:
  """Rows grouping configurations by the axes `by` (default: the experiment's `summary_by`, else
  every axis but seed), with counts, divergences and mean / std over the non-diverged ones."""
  axes = list(res.config["grid"]["axes"])
  by = list(by if by is not None else (res.config.get("summary_by") or [a for a in axes if a != "seed"]))
  keys = [tuple(_label(p.get(a)) for a in by) for p in res.points]
  order = list(dict.fromkeys(keys))
  div = res.diverged
  rows = []
  for k in order:
    sel = np.array([kk == k for kk in keys])
    ok = sel & ~div
    row = dict(zip(by, k))
    row["n"] = int(sel.sum())
    row["diverged"] = int((sel & div).sum())
    for name in ("train_loss", "train_acc", "test_acc", "grad_norm", "saturation"):
      v = res.final(name)[ok]
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


MAX_ROWS = 24   # a longer table prints its first rows and says where the rest is


def format_table(rows: list[dict], by: Sequence[str] | None = None, max_rows: int | None = MAX_ROWS) -> str:
  """Plain-text table of `Results.summary()` rows: mean +- sd (the standard deviation over the row's finite
  seeds), or the value and "(n=1)" where one seed is finite (its sd is not 0, it is unknown). More than
  `max_rows` rows (None: no limit): the first max_rows // 2 and a pointer to summary.csv and report.md."""
  if not rows:
    return "(no rows)"
  by = list(by) if by is not None else [k for k in rows[0] if k not in ("n", "diverged") and "_mean" not in k
                                       and "_std" not in k]
  names = ("test_acc", "train_loss", "grad_norm", "saturation")
  head = by + ["n", "diverged"] + list(names)
  shown = rows if max_rows is None or len(rows) <= max_rows else rows[:max(1, max_rows // 2)]
  lines = []
  for r in shown:
    cells = [_fmt(r[a]) for a in by] + [str(r["n"]), str(r["diverged"])]
    n_ok = r["n"] - r["diverged"]
    for name in names:
      m, sd = r[name + "_mean"], r[name + "_std"]
      cells.append(_fmt(m) if isinstance(m, float) and math.isnan(m) else
                   f"{_fmt(m)} (n=1)" if n_ok == 1 else f"{_fmt(m)} +- {_fmt(sd)}")
    lines.append(cells)
  widths = [max(len(h), *(len(c[i]) for c in lines)) for i, h in enumerate(head)]
  out = ["metrics after the last epoch: mean +- sd, the standard deviation over the row's finite seeds "
         "(n=1: one finite seed, no sd)",
         "  ".join(h.ljust(w) for h, w in zip(head, widths)),
         "  ".join("-" * w for w in widths)]
  out += ["  ".join(c.ljust(w) for c, w in zip(cells, widths)) for cells in lines]
  if len(shown) < len(rows):
    out.append(f"... {len(rows) - len(shown)} more rows ({len(rows)} in all): every row is in summary.csv beside "
               "the results, and the experiment's tables in report.md")
  return "\n".join(out)


def _fmt(v) -> str:
  if isinstance(v, float):
    if math.isnan(v):
      return "nan"
    return f"{v:.4g}"
  return str(v)

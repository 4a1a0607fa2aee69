"""How numbers, lists and setting values are written in the report."""
from __future__ import annotations

import math

import numpy as np


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


def fmt_list(v, limit: int = 12) -> str:
  if v is None:
    return "n/a"
  v = list(v)
  s = ", ".join(f"{x:g}" if isinstance(x, (float, int)) and not isinstance(x, bool) else str(x)
                for x in v[:limit])
  return f"[{s}{', ...' if len(v) > limit else ''}] ({len(v)})" if len(v) > limit else f"[{s}]"


def label(v, axis: str = "batch_size") -> str:
  """Setting values as readers see them: batch_size None is full batch, 32 is "batch 32"."""
  if axis == "batch_size":
    return "full batch" if v is None else f"batch {v}"
  if v is None:
    return "none"
  if isinstance(v, float):
    return f"{v:g}"
  return str(v)

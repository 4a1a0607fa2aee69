"""`Record`: the base of the calculus's JSON-ready answers (`Inspection`, `MlpSummary` and their rows), and
the one row both have (`CalculusCheckRow`).

A record is a frozen dataclass whose fields are, in order, the keys of its JSON form (`to_dict`, nested
records as dicts, tuples as lists), so that field order *is* the on-disk format. Attribute access is the
way to read one (`res.layers[0].G_meas`); `record["G_meas"]` also works, because results were plain dicts
before and the tables render a record and its `json.loads` form alike.
"""
from __future__ import annotations

import dataclasses
import math


def finite_or_none(v) -> float | None:
  """v as a float, or None when it is None, nan or infinite (JSON has no nan)."""
  if v is None:
    return None
  v = float(v)
  return v if math.isfinite(v) else None


def plain(v):
  """v with every record turned into a dict and every tuple into a list (what json.dumps writes)."""
  if isinstance(v, Record):
    return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
  if isinstance(v, (list, tuple)):
    return [plain(x) for x in v]
  if isinstance(v, dict):
    return {k: plain(x) for k, x in v.items()}
  return v


class Record:
  """Mixin of the frozen dataclasses above: item access by field name and the JSON-ready dict."""

  def __getitem__(self, key: str):
    if not isinstance(key, str) or key not in {f.name for f in dataclasses.fields(self)}:
      raise KeyError(key)
    return getattr(self, key)

  def to_dict(self) -> dict:
    return plain(self)


@dataclasses.dataclass(frozen=True)
class CalculusCheckRow(Record):
  """`design.check_calculus` as a row (nu_spread None when not finite)."""
  ok: bool
  nu_spread: float | None
  reason: str

  @classmethod
  def of(cls, check) -> "CalculusCheckRow":
    return cls(ok=check.ok, nu_spread=finite_or_none(check.nu_spread), reason=check.reason)

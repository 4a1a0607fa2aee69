"""The checks every jscale entry point runs on its inputs before any compute, written once.

Each check returns the value in its canonical Python type or raises `ValueError` (a value of the right kind
that is out of range) with one message shape: `<what> must be <allowed>, got <value>`. `what` names the
parameter as the caller's user knows it ("epochs", "TrainSpec.momentum", "--devices"), and `context` (keyword)
says where, e.g. " (experiment 'sigma', configuration {...})"; the scripts print the message as their one
`error:` line (`jscale.cli`).

  positive_int(v, "epochs")                  an int >= 1 (bool refused: True is not a count)
  int_at_least(v, "k", 2)                     an int >= 2
  int_in_range(v, "seed", 0, 2**32)           0 <= v < 2**32
  finite_real(v, "lr", minimum=0)             a finite real number (>= minimum, > minimum with strict=True)
  in_range(v, "momentum", 0, 1, hi_open=True) lo <= v < hi
  one_of(v, "optimizer", ("sgd", "adam"))     a member of a fixed set
  boolean(v, "train_pass")                    True or False
  optional(positive_int)(v, "batch_size")     None, or what the check allows
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Iterable


def is_int(v) -> bool:
  """A Python or NumPy integer that is not a bool."""
  return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def is_real(v) -> bool:
  """A Python or NumPy real number that is not a bool."""
  return isinstance(v, numbers.Real) and not isinstance(v, bool)


def int_at_least(v, what: str, minimum: int, *, context: str = "") -> int:
  if not is_int(v) or v < minimum:
    raise ValueError(f"{what} must be an int >= {minimum}{context}, got {v!r}")
  return int(v)


def positive_int(v, what: str, *, context: str = "") -> int:
  return int_at_least(v, what, 1, context=context)


def int_in_range(v, what: str, lo: int, hi: int, *, hi_text: str | None = None, context: str = "") -> int:
  """lo <= v < hi (`hi_text`: how to write hi, e.g. "2**32")."""
  if not is_int(v) or not lo <= v < hi:
    raise ValueError(f"{what} must be an int in [{lo}, {hi_text or hi}){context}, got {v!r}")
  return int(v)


def finite_real(v, what: str, *, minimum: float | None = None, strict: bool = False, context: str = "") -> float:
  """A finite real number; with `minimum`, at least it (`strict`: above it)."""
  bound = "" if minimum is None else f" {'>' if strict else '>='} {minimum:g}"
  if not is_real(v) or not math.isfinite(v) or (minimum is not None and (v <= minimum if strict else v < minimum)):
    raise ValueError(f"{what} must be a finite number{bound}{context}, got {v!r}")
  return float(v)


def in_range(v, what: str, lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False,
             context: str = "") -> float:
  """A real number between lo and hi (each end closed unless said open)."""
  ok = is_real(v) and not math.isnan(v) and (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
  if not ok:
    interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    raise ValueError(f"{what} must be a number in {interval}{context}, got {v!r}")
  return float(v)


def one_of(v, what: str, choices: Iterable) -> Any:
  choices = tuple(choices)
  if not isinstance(v, (str, int, float, type(None))) or v not in choices:
    raise ValueError(f"unknown {what} {v!r}; valid: {', '.join(map(str, choices))}")
  return v


def boolean(v, what: str, *, context: str = "") -> bool:
  if not isinstance(v, bool):
    raise ValueError(f"{what} must be True or False{context}, got {v!r}")
  return v


def optional(check: Callable[..., Any]) -> Callable[..., Any]:
  """`check` that also lets None through (e.g. `optional(positive_int)(batch_size, "batch_size")`)."""
  def checked(v, what: str, *args, **kwargs):
    return None if v is None else check(v, what, *args, **kwargs)
  return checked

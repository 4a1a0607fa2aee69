"""Interval statistics the report prints: means with 95% intervals, and verdicts against a source."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import stats  # scikit-learn depends on scipy, so it is always installed

from jscale.report.format import fmt


class CI(NamedTuple):
  mean: np.ndarray
  lo: np.ndarray    # lower end of the 95% interval (nan with fewer than 2 samples)
  hi: np.ndarray
  half: np.ndarray  # half-width t_{0.975, n-1} s / sqrt(n)
  n: int


def mean_ci95(values, axis: int = 0) -> CI:
  """Mean and two-sided 95% Student-t interval of the mean along `axis` (e.g. the seed axis).

  With n < 2 samples there is no interval: lo, hi and half are nan (never a zero-width band).
  """
  v = np.asarray(values, np.float64)
  if v.ndim == 0:
    raise ValueError("mean_ci95 needs an array with a sample axis, got a scalar")
  n = v.shape[axis]
  mean = v.mean(axis)
  if n < 2:
    nan = np.full_like(mean, np.nan)
    return CI(mean, nan, nan, nan, n)
  half = stats.t.ppf(0.975, n - 1) * v.std(axis, ddof=1) / np.sqrt(n)
  return CI(mean, mean - half, mean + half, half, n)


def fmt_ci(ci: CI, i=None, digits: int = 4) -> str:
  m = ci.mean if i is None else ci.mean[i]
  lo = ci.lo if i is None else ci.lo[i]
  hi = ci.hi if i is None else ci.hi[i]
  if ci.n < 2:
    return f"{fmt(m, digits)} (1 seed, no interval)"
  return f"{fmt(m, digits)} [{fmt(lo, digits)}, {fmt(hi, digits)}]"


def ci_finite(samples) -> CI:
  """95% interval over the finite samples (diverged runs are NaN and are counted separately)."""
  v = np.asarray(samples, np.float64).ravel()
  return mean_ci95(v[np.isfinite(v)], 0)


def ci_text(samples, digits: int = 4) -> str:
  v = np.asarray(samples, np.float64).ravel()
  bad = int((~np.isfinite(v)).sum())
  if bad == v.size:
    return f"diverged ({bad}/{v.size})"
  txt = fmt_ci(ci_finite(v), digits=digits)
  return txt + (f", {bad}/{v.size} diverged" if bad else "")


def verdict(samples, source: float, *, what: str, digits: int = 4) -> str:
  """One plain sentence comparing measured samples (e.g. over seeds) with a source's number."""
  ci = mean_ci95(np.asarray(samples, np.float64), 0)
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

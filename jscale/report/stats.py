"""Interval statistics the report prints: means with 95% intervals, single-run prediction intervals, and
verdicts against a source's number.

Two different questions, two intervals:
  mean_ci95            where the MEAN over seeds lies (Student t). It shrinks as seeds are added, so it is
                       the wrong yardstick for a source's single run.
  prediction_interval  where ONE NEW RUN lands (normal-theory prediction interval,
                       mean +- t_{0.975, n-1} s sqrt(1/n + 1/m) for the mean of m new runs, m = 1 for a
                       single run). It does not shrink to zero with more seeds: it tends to mean +- 1.96 s.
                       Under normal outcomes it covers exactly 95% at every n >= 2; the empirical central
                       95% of the per-seed outcomes (or [min, max]) covers at most (n - 1) / (n + 1) of new
                       runs, 78% at 8 seeds, so it is not used.
Bounded metrics (accuracy, fractions, a loss normalised into [0, 1]) pass `bounds`: either interval is
cut at the metric's range. Cutting never removes the true value (it lies in the range), so coverage stays
at least the t interval's; a bootstrap percentile interval of the mean, the other bounded choice, covers
only about 48% of the time at 2 seeds, 79% at 4 and 89% at 8 (1000 simulated normal experiments each).

A verdict compares a source's single run with the prediction interval for one new run; below `MIN_SEEDS`
finite seeds it is "too few seeds" (the interval's t factor and s are too unstable to judge by).
"""
from __future__ import annotations

import math
from typing import Any, Mapping, NamedTuple

import numpy as np

from jscale.report.format import fmt


def _t975(df):
  """Student's t 0.975 quantile. scipy.stats is imported here, not at module import: it costs ~0.8 CPU s, and
  every command line imports the report through the experiments' sections (scikit-learn depends on scipy, so
  it is always installed)."""
  from scipy import stats  # pylint: disable=import-outside-toplevel
  return stats.t.ppf(0.975, df)


UNIT = (0.0, 1.0)   # the range of accuracies, fractions and losses normalised by the worst one
MIN_SEEDS = 8       # fewer finite seeds than this: no verdict

CI_METHOD = "Student-t 95% interval of the mean over seeds"
BOUNDED_CI_METHOD = CI_METHOD + ", cut at the metric's range"
PI_METHOD = ("95% normal-theory prediction interval for one new run, mean +- t_{0.975, n-1} s sqrt(1 + 1/n)"
             " (cut at the metric's range)")

REPRODUCES, DOES_NOT_REPRODUCE, TOO_FEW = "reproduces", "does not reproduce", "too few seeds"
# Two kinds of verdict, counted apart in the report's summary: a REPRODUCTION compares a source's run with runs
# in like settings (its data, network, protocol); a TRANSFER test asks whether a source's claim carries over to
# other settings (another network or data set, laptop scale), and says "holds" / "does not hold".
REPRODUCTION, TRANSFER = "reproduction", "transfer"
HOLDS, DOES_NOT_HOLD = "holds", "does not hold"
_TRANSFER_WORD = {REPRODUCES: HOLDS, DOES_NOT_REPRODUCE: DOES_NOT_HOLD, TOO_FEW: TOO_FEW}


class CI(NamedTuple):
  mean: np.ndarray
  lo: np.ndarray    # lower end of the 95% interval (nan with fewer than 2 samples), cut at `bounds`
  hi: np.ndarray
  half: np.ndarray  # half-width t_{0.975, n-1} s / sqrt(n) before any cut
  n: Any            # samples per entry: an int, or an int array where the finite count varies


def _check_bounds(bounds):
  if bounds is not None and not bounds[0] < bounds[1]:
    raise ValueError(f"bounds must be (lo, hi) with lo < hi, got {bounds}")


def _cut(lo, hi, bounds):
  if bounds is None:
    return lo, hi
  return np.clip(lo, *bounds), np.clip(hi, *bounds)


def mean_ci95(values, axis: int = 0, bounds: tuple[float, float] | None = None) -> CI:
  """Mean and two-sided 95% Student-t interval of the mean along `axis` (e.g. the seed axis); with
  `bounds`, the interval is cut at the metric's range (see the module doc).

  With n < 2 samples there is no interval: lo, hi and half are nan (never a zero-width band).
  """
  _check_bounds(bounds)
  v = np.asarray(values, np.float64)
  if v.ndim == 0:
    raise ValueError("mean_ci95 needs an array with a sample axis, got a scalar")
  n = v.shape[axis]
  mean = v.mean(axis)
  if n < 2:
    nan = np.full_like(mean, np.nan)
    return CI(mean, nan, nan, nan, n)
  half = _t975(n - 1) * v.std(axis, ddof=1) / np.sqrt(n)
  return CI(mean, *_cut(mean - half, mean + half, bounds), half, n)


def finite_mean_ci95(values, axis: int = 0, bounds: tuple[float, float] | None = None) -> CI:
  """`mean_ci95` over the finite entries only (a diverged run is NaN): `n` is an int array of the finite
  counts; the mean is nan where none is finite, the interval nan where fewer than 2 are."""
  _check_bounds(bounds)
  v = np.moveaxis(np.asarray(values, np.float64), axis, 0)
  ok = np.isfinite(v)
  n = ok.sum(0)
  x = np.where(ok, v, 0.0)
  with np.errstate(invalid="ignore", divide="ignore"):
    mean = np.where(n > 0, x.sum(0) / np.maximum(n, 1), np.nan)
    var = np.where(ok, (v - mean) ** 2, 0.0).sum(0) / (n - 1)
    tq = _t975(np.maximum(n - 1, 1))
    half = np.where(n >= 2, tq * np.sqrt(var) / np.sqrt(n), np.nan)
  return CI(mean, *_cut(mean - half, mean + half, bounds), half, n)


def prediction_interval(samples, bounds: tuple[float, float] | None = None, n_future: float = 1) -> tuple:
  """95% interval for the mean of `n_future` new independent runs (1: a single run) from the samples'
  distribution: mean +- t_{0.975, n-1} s sqrt(1/n + 1/n_future), cut at `bounds`. NaN entries (diverged
  runs) are dropped; with fewer than 2 finite samples there is no interval (nan, nan)."""
  _check_bounds(bounds)
  if not n_future > 0:
    raise ValueError(f"n_future must be positive, got {n_future}")
  v = np.asarray(samples, np.float64).ravel()
  v = v[np.isfinite(v)]
  if v.size < 2:
    return (math.nan, math.nan)
  half = _t975(v.size - 1) * v.std(ddof=1) * math.sqrt(1.0 / v.size + 1.0 / n_future)
  lo, hi = _cut(v.mean() - half, v.mean() + half, bounds)
  return (float(lo), float(hi))


def fmt_ci(ci: CI, i=None, digits: int = 4) -> str:
  m = ci.mean if i is None else ci.mean[i]
  lo = ci.lo if i is None else ci.lo[i]
  hi = ci.hi if i is None else ci.hi[i]
  n = np.asarray(ci.n)
  n = int(n if n.ndim == 0 else (n.min() if i is None else n[i]))
  if n < 2:
    return f"{fmt(m, digits)} ({n} seed{'s' if n != 1 else ''}, no interval)"
  return f"{fmt(m, digits)} [{fmt(lo, digits)}, {fmt(hi, digits)}]"


def ci_finite(samples, bounds: tuple[float, float] | None = None) -> CI:
  """95% interval over the finite samples (diverged runs are NaN and are counted separately)."""
  v = np.asarray(samples, np.float64).ravel()
  return mean_ci95(v[np.isfinite(v)], 0, bounds)


def ci_text(samples, digits: int = 4, bounds: tuple[float, float] | None = None) -> str:
  v = np.asarray(samples, np.float64).ravel()
  bad = int((~np.isfinite(v)).sum())
  if bad == v.size:
    return f"diverged ({bad}/{v.size})"
  txt = fmt_ci(ci_finite(v, bounds), digits=digits)
  return txt + (f", {bad}/{v.size} diverged" if bad else "")


def fmt_interval(iv, digits: int = 4) -> str:
  lo, hi = iv
  return "n/a" if not (np.isfinite(lo) and np.isfinite(hi)) else f"[{fmt(lo, digits)}, {fmt(hi, digits)}]"


class Verdict(NamedTuple):
  """One comparison of a source's number with this run's; `to_json` gives the verdicts.json record."""
  cell: dict             # the grid point, e.g. {"sigma": 0.1, "batch_size": None}
  metric: str
  source: float          # the source's single-run value
  n_seeds: int           # finite replicates compared (diverged ones are left out and counted in n_diverged)
  mean: float
  ci95: tuple            # 95% interval of the mean
  single_run_95: tuple   # 95% prediction interval for one new run
  verdict: str           # REPRODUCES, DOES_NOT_REPRODUCE or TOO_FEW (a transfer test: HOLDS, DOES_NOT_HOLD, TOO_FEW)
  n_diverged: int = 0
  kind: str = REPRODUCTION

  def to_json(self) -> dict:
    num = lambda x: None if x is None or not math.isfinite(x) else float(x)
    return {"cell": dict(self.cell), "metric": self.metric, "source": float(self.source),
            "n_seeds": int(self.n_seeds), "mean": num(self.mean), "ci95": [num(x) for x in self.ci95],
            "single_run_95": [num(x) for x in self.single_run_95], "verdict": self.verdict, "kind": self.kind}


class Claim(NamedTuple):
  """A verdict on a source's claim that is not one number (e.g. "geometric beats arithmetic, significantly"),
  decided by a test this run states in `evidence`; `kind` REPRODUCTION or TRANSFER as for `Verdict`."""
  claim: str             # the source's claim in one line
  cell: dict
  metric: str
  verdict: str           # HOLDS, DOES_NOT_HOLD or TOO_FEW
  evidence: str          # the numbers and the test that decided it
  n_seeds: int
  kind: str = TRANSFER

  def to_json(self) -> dict:
    return {"claim": self.claim, "cell": dict(self.cell), "metric": self.metric, "verdict": self.verdict,
            "evidence": self.evidence, "n_seeds": int(self.n_seeds), "kind": self.kind}


def judge(samples, source: float, *, cell: Mapping, metric: str, bounds: tuple[float, float] | None = None,
          n_future: float = 1, min_seeds: int = MIN_SEEDS, kind: str = REPRODUCTION) -> Verdict:
  """Compare a source's value with the distribution of this run's replicates (e.g. per-seed outcomes):
  "reproduces" when it lies inside the 95% prediction interval for `n_future` new replicates (1: the
  source reports one run), "does not reproduce" when outside, "too few seeds" below `min_seeds` finite
  replicates. NaN samples are diverged runs: left out and counted. `kind=TRANSFER` (the source's number is
  from other settings): the same test, worded "holds" / "does not hold"."""
  if kind not in (REPRODUCTION, TRANSFER):
    raise ValueError(f"kind must be {REPRODUCTION!r} or {TRANSFER!r}, got {kind!r}")
  v = np.asarray(samples, np.float64).ravel()
  fin = v[np.isfinite(v)]
  n = int(fin.size)
  ci = mean_ci95(fin, 0, bounds) if n else CI(math.nan, math.nan, math.nan, math.nan, 0)
  pi = prediction_interval(fin, bounds, n_future)
  if n < min_seeds:
    word = TOO_FEW
  else:
    word = REPRODUCES if pi[0] <= source <= pi[1] else DOES_NOT_REPRODUCE
  if kind == TRANSFER:
    word = _TRANSFER_WORD[word]
  return Verdict(dict(cell), metric, float(source), n, float(ci.mean), (float(ci.lo), float(ci.hi)), pi, word,
                 int(v.size - n), kind)


def verdict_cell(v: Verdict) -> str:
  """A verdict for a table cell: "does not reproduce" in bold, so it stands out."""
  return f"**{v.verdict}**" if v.verdict in (DOES_NOT_REPRODUCE, DOES_NOT_HOLD) else v.verdict


def verdict_text(v: Verdict, *, what: str, digits: int = 4, source_name: str = "the source's",
                 unit: str = "seeds", single: str = "one run") -> str:
  """One plain sentence: the verdict, the source's number, the single-run interval and the mean's. `unit`
  names the replicates (seeds, data sets), `single` what the source's number is one of."""
  mean = (f"mean {fmt(v.mean, digits)}, 95% CI of the mean {fmt_interval(v.ci95, digits)}, over {v.n_seeds} "
          f"{unit}" + (f" ({v.n_diverged} diverged, left out)" if v.n_diverged else ""))
  single = f"95% interval for {single} {fmt_interval(v.single_run_95, digits)}"
  if v.verdict == TOO_FEW:
    return (f"{what}: too few seeds ({v.n_seeds} < {MIN_SEEDS} {unit}) for a verdict -- {source_name} "
            f"{fmt(v.source, digits)} beside {single}; {mean}.")
  if v.verdict in (REPRODUCES, HOLDS):
    return f"{what}: {v.verdict} -- {source_name} {fmt(v.source, digits)} lies inside the {single}; {mean}."
  side = "below" if v.source < v.single_run_95[0] else "above"
  return (f"{what}: **{v.verdict}** -- {source_name} {fmt(v.source, digits)} lies {side} the {single}; "
          f"{mean}.")

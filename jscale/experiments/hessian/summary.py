"""Figure 1's summaries, the same for every family: predicted / exact pooled over all weight blocks of all
setups (`ratio_summary`), with the measurement noise of the exact side removed from the spread
(`noise_removed`) and a bootstrap CI of the median over setups (`median_ci`); and, for a family whose setups
share their weight layers, the same per layer (`layer_summary`)."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from jscale.experiments.hessian.family import Family
from jscale.experiments.hessian.records import Record
from jscale.experiments.hessian.settings import DEFAULT_TARGET


def _pct(r: np.ndarray) -> dict:
  r = r[np.isfinite(r)]
  if r.size == 0:
    return {"median": None, "p5": None, "p95": None}
  return {"median": float(np.median(r)), "p5": float(np.percentile(r, 5)), "p95": float(np.percentile(r, 95))}


def noise_removed(log_ratio: np.ndarray, se_log: np.ndarray) -> dict:
  """The spread of log(predicted / exact) with the exact side's measurement noise removed.

  Observed d_i = theta_i + eps_i with Var(eps_i) = se_i^2 (se of log exact = its relative SE, delta
  method). The true spread is tau^2 = Var(d) - mean(se^2) (moment estimator, floored at 0). Quantiles:
  each block's deviation from the median is scaled by sqrt(tau^2 / (tau^2 + se_i^2)) so that every
  adjusted value has variance tau^2 (constrained Bayes, Louis 1984; plain shrinkage would understate the
  spread), and p5 / median / p95 are read off the adjusted values. Returns ratios (exp of logs)."""
  ok = np.isfinite(log_ratio) & np.isfinite(se_log)
  d, se = log_ratio[ok], se_log[ok]
  if d.size < 2:
    return {"median_nr": None, "p5_nr": None, "p95_nr": None, "sd_log": None, "sd_log_nr": None,
            "noise_var_log": None}
  var_obs, noise = float(np.var(d, ddof=1)), float(np.mean(se * se))
  tau2 = max(var_obs - noise, 0.0)
  m = float(np.median(d))
  adj = m + (d - m) * np.sqrt(tau2 / (tau2 + se * se)) if tau2 > 0 else np.full_like(d, m)
  return {"median_nr": float(np.exp(np.median(adj))), "p5_nr": float(np.exp(np.percentile(adj, 5))),
          "p95_nr": float(np.exp(np.percentile(adj, 95))), "sd_log": math.sqrt(var_obs), "sd_log_nr": math.sqrt(tau2),
          "noise_var_log": noise}


def median_ci(groups: Sequence[np.ndarray], reps: int = 2000, seed: int = 0) -> list:
  """95% percentile-bootstrap CI of the pooled median, resampling setups (blocks of one setup share its
  draws and its prediction, so setups are the independent units)."""
  rng = np.random.default_rng(seed)
  groups = [g[np.isfinite(g)] for g in groups]
  groups = [g for g in groups if g.size]
  if len(groups) < 2:
    return [None, None]
  meds = [np.median(np.concatenate([groups[j] for j in rng.integers(0, len(groups), len(groups))]))
          for _ in range(reps)]
  return [float(np.percentile(meds, 2.5)), float(np.percentile(meds, 97.5))]


def ratio_summary(recs: Sequence[Record], target_rel_se: float = DEFAULT_TARGET) -> dict:
  """Per batch size: median / p5 / p95 of predicted / exact over all weight blocks of all setups, for the
  batch-1 model (`median`...), the corrected prediction (`*_corrected`), the paper's leading-order form
  (`*_leading`) and bias blocks (`*_bias_corrected`); for the corrected prediction also the median's 95%
  CI (`median_corrected_ci95`) and the spread with the measurement noise removed (`*_corrected_nr`,
  `sd_log_corrected` raw and `sd_log_corrected_nr`; see `noise_removed`); the exact side's relative SE
  (`median_exact_rel_stderr`, `max_exact_rel_stderr`) and how many setups have every weight block's
  relative SE at most `target_rel_se` (`setups_within_target`)."""
  out = {}
  for b in sorted({r.batch for r in recs}):
    rs = [r for r in recs if r.batch == b]
    cat = lambda f: np.concatenate([f(r) for r in rs])
    p1 = _pct(cat(lambda r: r.batch1_w / r.exact_w))
    pc = _pct(cat(lambda r: r.corrected_w / r.exact_w))
    pl = _pct(cat(lambda r: r.leading_w / r.exact_w))
    pb = _pct(cat(lambda r: r.corrected_b / r.exact_b))
    entry = dict(p1)
    entry.update({f"{k}_corrected": v for k, v in pc.items()})
    entry.update({f"{k}_leading": v for k, v in pl.items()})
    entry.update({f"{k}_bias_corrected": v for k, v in pb.items()})
    with np.errstate(divide="ignore", invalid="ignore"):
      rel_se = cat(lambda r: r.exact_w_se / r.exact_w)
      log_r = cat(lambda r: np.log(r.corrected_w / r.exact_w))
      entry["median_corrected_ci95"] = median_ci([r.corrected_w / r.exact_w for r in rs])
    nr = noise_removed(log_r, rel_se)
    entry.update(median_corrected_nr=nr["median_nr"], p5_corrected_nr=nr["p5_nr"], p95_corrected_nr=nr["p95_nr"],
                 sd_log_corrected=nr["sd_log"], sd_log_corrected_nr=nr["sd_log_nr"],
                 noise_var_log_corrected=nr["noise_var_log"])
    finite = np.isfinite(rel_se)
    entry["median_exact_rel_stderr"] = float(np.median(rel_se[finite])) if finite.any() else None
    entry["max_exact_rel_stderr"] = float(np.max(rel_se[finite])) if finite.any() else None
    entry["setups_within_target"] = int(sum(bool(np.all(r.rel_se <= target_rel_se)) for r in rs))
    entry["target_rel_se"] = target_rel_se
    entry["blocks"] = int(sum(len(r.exact_w) for r in rs))
    entry["setups"] = len(rs)
    entry["draws_median"] = float(np.median([r.draws for r in rs]))
    out[str(b)] = entry
  return {"batch_sizes": out}


def layer_summary(family: Family, recs: Sequence[Record]) -> dict:
  """Per batch size and weight layer (conv0, conv1, dense0, ...): median / p5 / p95 over setups of
  predicted / exact (with the cross-example term, `r`; the full-order prediction, `*_full`; and the batch-1
  model s(1)/B, `r_batch1`), and the
  median and largest relative SE of the exact side. For families whose setups share their layers."""
  out = {}
  for b in sorted({r.batch for r in recs}):
    rs = [r for r in recs if r.batch == b]
    names = family.layer_names(rs[0].setup)
    rc = np.array([r.corrected_w / r.exact_w for r in rs])
    rf = np.array([r.full_w / r.exact_w for r in rs]) if all(r.full_w is not None for r in rs) else None
    r1 = np.array([r.batch1_w / r.exact_w for r in rs])
    rse = np.array([r.exact_w_se / r.exact_w for r in rs])
    pct = lambda a, q: float(np.percentile(a, q))
    out[str(b)] = {n: {"median": float(np.median(rc[:, l])), "p5": pct(rc[:, l], 5), "p95": pct(rc[:, l], 95),
                       "median_batch1": float(np.median(r1[:, l])), "median_rel_se": float(np.median(rse[:, l])),
                       "max_rel_se": float(np.max(rse[:, l])), "setups": len(rs),
                       **({} if rf is None else {"median_full": float(np.median(rf[:, l])), "p5_full": pct(rf[:, l], 5),
                                                 "p95_full": pct(rf[:, l], 95)})} for l, n in enumerate(names)}
  return out


DEVELOPMENT_SEED = 0  # issue 20: every full-order correction was developed on seed 0 (docs/calculus.md)


def seed_label(seed: int) -> str:
  """'seed 0 (development)' or plain 'seed N': which later seed judged which correction (and which were looked at
  afterwards, "seen") is per correction and per family, in docs/calculus.md, so no other seed gets a fixed role."""
  return f"seed {seed}" + (" (development)" if int(seed) == DEVELOPMENT_SEED else "")


def _layer_order(name: str):
  """conv0, conv1, ..., dense0, dense1, ..., then "output"."""
  kind = name.rstrip("0123456789")
  return ({"conv": 0, "dense": 1}.get(kind, 2), int(name[len(kind):] or 0))


def position_summary(family: Family, recs: Sequence[Record]) -> dict:
  """Per batch size and layer position (the family's layer names: conv0, conv1, ..., dense0, ...; and "output",
  every setup's last layer again), over the setups that have it: median / p5 / p95 of predicted / exact for the
  full-order prediction (`*_full`) and the paper's leading-order form (`*_leading`), the number of blocks and
  the median relative SE of the exact side. For families whose setups differ in their layers (the varied
  LeNet); blocks equal to the prediction by construction (`Family.tautological`) are left out."""
  pct = lambda a, q: float(np.percentile(a, q)) if a.size else None
  stats = lambda a, tag: {f"median{tag}": pct(a, 50), f"p5{tag}": pct(a, 5), f"p95{tag}": pct(a, 95)}
  out = {}
  for b in sorted({r.batch for r in recs}):
    rows = {}
    for r in (r for r in recs if r.batch == b):
      keep = ~family.tautological(r.setup, r.batch)
      names = family.layer_names(r.setup)
      full = r.full_w / r.exact_w if r.full_w is not None else np.full(len(names), np.nan)
      for l, name in enumerate(names):
        for key in (name, "output") if l == len(names) - 1 else (name,):
          if keep[l]:
            rows.setdefault(key, []).append((full[l], r.leading_w[l] / r.exact_w[l], r.exact_w_se[l] / r.exact_w[l]))
    entry = {}
    for name in sorted(rows, key=_layer_order):
      a = np.array(rows[name], np.float64)
      full = a[:, 0][np.isfinite(a[:, 0])]
      entry[name] = {**stats(full, "_full"), **stats(a[:, 1], "_leading"), "blocks": len(a),
                     "median_rel_se": float(np.median(a[:, 2]))}
    out[str(b)] = entry
  return out

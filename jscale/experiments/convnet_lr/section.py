"""The convnet_lr experiment's report section: each scheme's best learning rate (chosen on the selection seeds),
its training-loss curve on the judged seeds with a 95% band, and the paired tests of geometric against each other
scheme at early, mid and final iterations -- verdicts on the paper's Section 10 claims as transfer tests."""
from __future__ import annotations

import math
import os

import numpy as np

from jscale.experiments.convnet_lr.config import select_seeds
from jscale.report import describe, plots, stats
from jscale.report.document import Figure, Headline, Section, Table
from jscale.report.format import fmt
from jscale.sweeps import Results

REFERENCE = "geometric"
ALPHA = 0.05
# The paper's claims (Section 10), per other scheme: at which iterations geometric is significantly better.
CLAIMS = {"arithmetic": ("early", "mid", "final"), "fan_in": ("early", "mid", "final"), "fan_out": ("mid",)}
CLAIM_TEXT = {
    "arithmetic": "geometric init trains to a significantly lower loss than arithmetic (Glorot) init",
    "fan_in": "geometric init trains to a significantly lower loss than fan-in (He) init",
    "fan_out": "geometric init is significantly better than fan-out init at mid-iterations only",
}


def loss_array(r: Results, metric: str = "train_loss"):
  """(schemes, lrs, seeds, epochs) of `metric` from the flat points (NaN where missing or diverged), with the
  axis values."""
  pts = r.points
  schemes = list(dict.fromkeys(p["init"] for p in pts))
  lrs = sorted({float(p["lr"]) for p in pts})
  seeds = sorted({int(p["seed"]) for p in pts})
  m = r.metrics[metric]
  out = np.full((len(schemes), len(lrs), len(seeds), m.shape[1]), np.nan)
  for i, p in enumerate(pts):
    out[schemes.index(p["init"]), lrs.index(float(p["lr"])), seeds.index(int(p["seed"]))] = m[i]
  return out, schemes, lrs, seeds


def best_lr_index(final_SxLxN: np.ndarray) -> np.ndarray:
  """Per scheme, the lr whose median final loss over the given seeds is lowest; a diverged seed counts as an
  infinite loss (so a learning rate that diverges for half the seeds is never chosen)."""
  f = np.where(np.isfinite(final_SxLxN), final_SxLxN, np.inf)
  return np.argmin(np.median(f, axis=-1), axis=1)


def iterations(n_epochs: int) -> dict:
  """early / mid / final epoch indices (0-based)."""
  return {"early": 0, "mid": (n_epochs - 1) // 2, "final": n_epochs - 1}



def paired_test(other: np.ndarray, ref: np.ndarray) -> dict:
  """other - ref per seed (pairs where both are finite): mean difference with its 95% CI, the paired t-test's
  and Wilcoxon signed-rank test's two-sided p-values, and n."""
  ok = np.isfinite(other) & np.isfinite(ref)
  d = (other - ref)[ok]
  n = int(d.size)
  if n < 2 or np.all(d == 0):
    return {"n": n, "mean": float(d.mean()) if n else math.nan, "ci": (math.nan, math.nan), "p_t": math.nan,
            "p_w": math.nan, "n_dropped": int((~ok).sum())}
  ci = stats.mean_ci95(d)
  from scipy import stats as sps  # at first use: importing scipy.stats costs every command line ~0.8 CPU s
  return {"n": n, "mean": float(d.mean()), "ci": (float(ci.lo), float(ci.hi)),
          "p_t": float(sps.ttest_rel(other[ok], ref[ok]).pvalue), "p_w": float(sps.wilcoxon(d).pvalue),
          "n_dropped": int((~ok).sum())}


def pval(p: float) -> str:
  return "n/a" if not np.isfinite(p) else f"{p:.2g}"


def significant_better(t: dict) -> bool:
  """Geometric's loss significantly lower: mean difference (other - geometric) > 0 and Wilcoxon p < ALPHA."""
  return t["n"] >= 2 and t["mean"] > 0 and t["p_w"] < ALPHA


def claim_verdict(scheme: str, tests: dict, n: int) -> stats.Claim:
  """The paper's claim about `scheme` against the tests at early / mid / final iterations."""
  better = {k: significant_better(t) for k, t in tests.items()}
  want = CLAIMS[scheme]
  if n < stats.MIN_SEEDS:
    word = stats.TOO_FEW
  elif scheme == "fan_out":
    word = stats.HOLDS if better["mid"] and not better["early"] and not better["final"] else stats.DOES_NOT_HOLD
  else:
    word = stats.HOLDS if all(better[k] for k in want) else stats.DOES_NOT_HOLD
  ev = "; ".join(f"{k}: loss({scheme}) - loss(geometric) = {fmt(t['mean'], 3)} {stats.fmt_interval(t['ci'], 3)}, "
                 f"Wilcoxon p = {pval(t['p_w'])}" for k, t in tests.items())
  return stats.Claim(CLAIM_TEXT[scheme], {"init": scheme}, "train_loss", word, ev, n)


def _log2(x: float) -> int:
  return int(round(math.log2(x)))


def headline(schemes, lrs, best, judged, tests, n_judged) -> Headline:
  """The numbers the docs quote: each scheme's best lr and final loss, and geometric's paired p-values."""
  nums = {}
  parts = []
  for i, k in enumerate(schemes):
    fin = judged[k][:, -1]
    m = float(np.exp(np.nanmean(np.log(fin)))) if np.any(np.isfinite(fin)) else math.nan
    nums[f"{k}.best_log2_lr"], nums[f"{k}.final_loss"] = _log2(lrs[best[i]]), m
    parts.append(f"{k} 2^{_log2(lrs[best[i]])} ({fmt(m, 3)})")
  ps = []
  for k, t in tests.items():
    for w in ("early", "mid", "final"):
      nums[f"{k}.{w}.diff"], nums[f"{k}.{w}.p_wilcoxon"] = t[w]["mean"], t[w]["p_w"]
    ps.append(f"{k} " + " / ".join(f"{fmt(t[w]['mean'], 2)} (p {pval(t[w]['p_w'])})" for w in ("early", "mid", "final")))
  return Headline(
      what=f"paper Sec. 10 protocol on a strided convnet (kernels 4, 3, 2, linear), {n_judged} judged seeds; "
           "transfer test",
      measured="best lr (final training loss, geometric mean): " + ", ".join(parts)
               + "; loss(scheme) - loss(geometric) early / mid / final (Wilcoxon p; > 0: geometric lower): "
               + "; ".join(ps),
      source="AlexNet on CIFAR-10, 40 seeds: geometric significantly better than arithmetic and fan-in, than "
             "fan-out at mid-iterations only",
      numbers=nums)


def build(r: Results) -> Section:
  """Axes init, lr, seed, epoch. Metric train_loss (the mean minibatch loss of each epoch)."""
  s = Section("convnet_lr: four init schemes at their best learning rate on a strided convnet (the paper's "
              "Section 10 protocol, a transfer test)", [describe.grid_text(r, skip=("epoch",))])
  s.verdicts = []
  loss, schemes, lrs, seeds = loss_array(r)
  n_sel = select_seeds(len(seeds))
  epochs = loss.shape[-1]
  model = r.model()
  net = model.description if model is not None else "the MLP"
  s.parts.append(
      "**A transfer test.** The paper ran AlexNet (kernels 11, 5, 3, linear; striding instead of max pooling) on "
      "CIFAR-10 with 40 seeds per init. Here: " + net + f" on the data above; {epochs} epochs. The "
      f"first {n_sel} seeds choose each scheme's learning rate (lowest median final training loss, the paper's "
      f"rule); the other {len(seeds) - n_sel} are judged at it, so no judged seed helped choose. Seeds are paired: "
      "a seed has the same data split and minibatch order under every scheme.")
  best = best_lr_index(loss[:, :, :n_sel, -1])
  rows = []
  for i, k in enumerate(schemes):
    med = [np.median(np.where(np.isfinite(loss[i, j, :n_sel, -1]), loss[i, j, :n_sel, -1], np.inf))
           for j in range(len(lrs))]
    rows.append([k] + [("**" + fmt(m, 3) + "**" if j == best[i] else fmt(m, 3)) if np.isfinite(m) else "diverged"
                       for j, m in enumerate(med)] + [f"2^{int(round(math.log2(lrs[best[i]])))}"])
  s.parts.append(Table(["scheme"] + [f"lr 2^{int(round(math.log2(x)))}" for x in lrs] + ["best lr"], rows,
                       f"Median final training loss over the {n_sel} selection seeds per learning rate (bold: the "
                       "best; diverged: the median run diverged)"))
  judged = {k: loss[i, best[i], n_sel:] for i, k in enumerate(schemes)}       # (judged seeds, epochs)
  tiny = len(seeds) - n_sel < stats.MIN_SEEDS
  path = plots.curves(os.path.join(r.path, "convnet_lr_curves.png"),
                      {f"{k} (lr 2^{int(round(math.log2(lrs[best[i]])))})": judged[k] for i, k in enumerate(schemes)},
                      ylabel="training loss (epoch mean of minibatch losses)", logy=True,
                      title="Strided convnet: each scheme at its best lr" + (" (tiny grid)" if tiny else ""))
  s.parts.append(Figure(path, f"Training loss per epoch on the {len(seeds) - n_sel} judged seeds, each scheme at "
                              "its best learning rate (geometric mean, band: 95% CI of the log)"
                              + ("; a tiny quick grid: bands this wide say nothing" if tiny else "") + "."))
  if REFERENCE not in judged:
    s.parts.append(f"No {REFERENCE} scheme in the grid: no paired tests.")
    return s
  its = iterations(epochs)
  rows, finals = [], {}
  for k in schemes:
    if k == REFERENCE:
      continue
    tests = {w: paired_test(judged[k][:, e], judged[REFERENCE][:, e]) for w, e in its.items()}
    finals[k] = tests
    for w, t in tests.items():
      rows.append([k, f"{w} (epoch {its[w] + 1})", t["n"], fmt(t["mean"], 3), stats.fmt_interval(t["ci"], 3),
                   pval(t["p_t"]), pval(t["p_w"])])
    if k in CLAIMS:
      s.verdicts.append(claim_verdict(k, tests, min(t["n"] for t in tests.values())))
  s.parts.append(Table(["scheme", "iteration", "pairs", "mean loss(scheme) - loss(geometric)", "95% CI",
                        "paired t p", "Wilcoxon p"], rows,
                       "Paired tests, geometric against each scheme, each at its own best lr (positive: geometric "
                       "lower); two-sided p-values, not corrected for the nine tests"))
  s.headline = headline(schemes, lrs, best, judged, finals, len(seeds) - n_sel)
  s.parts.append(Table(["the paper's claim (AlexNet, CIFAR-10)", "here (transfer)"],
                       [[v.claim, stats.verdict_cell(v)] for v in s.verdicts],
                       f"Verdicts: significant means geometric's loss is lower with Wilcoxon p < {ALPHA}; "
                       f"below {stats.MIN_SEEDS} judged pairs there is none"))
  return s

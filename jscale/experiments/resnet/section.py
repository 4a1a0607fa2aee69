"""The resnet experiment's report section: test accuracy against depth per scheme, the output-scale sweep with
the best scale and its bootstrap interval, and verdicts on the paper's two Section 11 claims as transfer tests."""
from __future__ import annotations

import os

import numpy as np

from jscale.experiments.sources.paper import (PAPER_BEST_OUTPUT_SCALE, PAPER_RESNET50_BLOCKS, PAPER_RESNET_SEEDS,
                                              PAPER_RESNET_TOP1)
from jscale.report import describe, plots, stats
from jscale.report.document import Figure, Headline, Section, Table
from jscale.report.format import fmt
from jscale.report.stats import ci_text
from jscale.sweeps import Results

MARGIN = 0.01        # "matches": geometric's accuracy not below fixed residual scaling's by more than 1 point
N_BOOT = 2000


def best_scale_interval(acc_OxS: np.ndarray, seed: int = 0, n_boot: int = N_BOOT) -> tuple[int, int, int]:
  """(best, lo, hi) indices into the output scales: the best mean accuracy over seeds, and the 2.5% and 97.5%
  quantiles of the best index over bootstrap resamples of the seeds (a diverged seed counts as accuracy 0)."""
  a = np.where(np.isfinite(acc_OxS), acc_OxS, 0.0)
  rng = np.random.default_rng(seed)
  n = a.shape[1]
  picks = np.array([np.argmax(a[:, rng.integers(0, n, n)].mean(1)) for _ in range(n_boot)])
  return int(np.argmax(a.mean(1))), int(np.quantile(picks, 0.025, method="lower")), \
      int(np.quantile(picks, 0.975, method="higher"))


def match_claim(geo: np.ndarray, ref: np.ndarray, depth: int) -> stats.Claim:
  """Claim 1: the geometric net matches fixed residual scaling -- the paired difference of final test accuracy
  (same seeds: same data split and minibatch order) has a 95% CI whose lower end is above -MARGIN."""
  ok = np.isfinite(geo) & np.isfinite(ref)
  d = (geo - ref)[ok]
  n = int(d.size)
  ci = stats.mean_ci95(d) if n >= 2 else None
  word = (stats.TOO_FEW if n < stats.MIN_SEEDS else stats.HOLDS if ci.lo > -MARGIN else stats.DOES_NOT_HOLD)
  ev = (f"at {depth} blocks: accuracy(geometric) - accuracy(rescale) = {fmt(float(d.mean()), 3)} "
        f"{stats.fmt_interval((ci.lo, ci.hi), 3)} (95% CI of the paired mean, {n} seeds); holds when the CI's "
        f"lower end is above -{MARGIN:g}" if ci is not None else f"{n} finite pairs")
  return stats.Claim("the geometric ResNet with the calculus's scalars matches fixed residual scaling (RescaleNet): "
                     f"{PAPER_RESNET_TOP1['geometric'][0]} vs {PAPER_RESNET_TOP1['rescalenet'][0]} top-1",
                     {"scheme": "geometric", "depth": depth}, "test_acc", word, ev, n)


def scale_claim(scales, best: int, lo: int, hi: int, n: int) -> stats.Claim:
  """Claim 2: 0.05 is the best output scale -- holds when 0.05 lies in the bootstrap interval of the best."""
  inside = scales[lo] <= PAPER_BEST_OUTPUT_SCALE <= scales[hi]
  word = stats.TOO_FEW if n < stats.MIN_SEEDS else stats.HOLDS if inside else stats.DOES_NOT_HOLD
  ev = (f"best {scales[best]:g}, 95% bootstrap interval of the best [{scales[lo]:g}, {scales[hi]:g}] over {n} "
        "seeds")
  return stats.Claim(f"{PAPER_BEST_OUTPUT_SCALE:g} is the best output scale", {"scheme": "geometric"},
                     "test_acc", word, ev, n)


def build(r: Results) -> Section:
  """Axes scheme, depth, seed, epoch (part A) and output_scale, seed, epoch (part B); metrics test_acc,
  train_loss, diverged and their sweep_ twins."""
  schemes, depths, scales = r.axis("scheme"), r.axis("depth"), r.axis("output_scale")
  acc = r.metric("test_acc", "scheme", "depth", "seed", "epoch")[..., -1]            # (schemes, depths, seeds)
  div = r.metric("diverged", "scheme", "depth", "seed", "epoch")[..., -1]
  n_seeds = acc.shape[-1]
  s = Section("resnet: the paper's unnormalised ResNet block against fixed residual scaling, by depth (Section 11, "
              "a transfer test)", [describe.grid_text(r, skip=("epoch",))])
  s.verdicts = []
  s.parts.append(
      f"**A transfer test.** The paper: ResNet-50 ({PAPER_RESNET50_BLOCKS} bottleneck blocks) on ImageNet, "
      f"{PAPER_RESNET_SEEDS} seeds, 90 epochs. Here: a ResNet of 2 to {max(depths)} bottleneck blocks "
      f"({r.recorded('channels')} -> {r.recorded('width')} -> {r.recorded('channels')} channels on a 4x4 grid) on "
      f"8x8 digits, {r.recorded('epochs')} epochs, SGD momentum {r.recorded('momentum')}, weight decay "
      f"{r.recorded('weight_decay')}, lr {r.recorded('lr')}, dropout {r.recorded('dropout')} before the head, "
      f"output scale {r.recorded('scheme_scale'):g} for every scheme (the paper's best). Schemes: geometric (the "
      "paper's block: geometric init, fixed scalars, learnable alpha), fan_in (He init, z = x + F(x), no scalars), "
      "rescale (He init, z_k = sqrt(k/(k+1)) x + sqrt(1/(k+1)) F(x): fixed residual scaling), layernorm (He init, "
      "a LayerNorm before each branch ReLU).")
  rows = []
  for i, k in enumerate(schemes):
    rows.append([k] + [ci_text(acc[i, j], 3, stats.UNIT) + (f" ({int(div[i, j].sum())} diverged)" if div[i, j].any()
                                                            else "") for j in range(len(depths))])
  s.parts.append(Table(["scheme"] + [f"{d} blocks" for d in depths], rows,
                       f"Final test accuracy, mean [95% CI of the mean, cut at [0, 1]] over {n_seeds} seeds"))
  path = plots.metric_vs_param(os.path.join(r.path, "resnet_acc_vs_depth.png"), [float(d) for d in depths],
                               {k: acc[i] for i, k in enumerate(schemes)}, xlabel="residual blocks (log scale)",
                               ylabel="final test accuracy", title="Small ResNet on digits: accuracy vs depth",
                               bounds=stats.UNIT)
  s.parts.append(Figure(path, "Final test accuracy against depth per scheme (mean over finite seeds, 95% CI)."))
  if "geometric" in schemes and "rescale" in schemes:
    deep = len(depths) - 1
    s.verdicts.append(match_claim(acc[schemes.index("geometric"), deep], acc[schemes.index("rescale"), deep],
                                  depths[deep]))
  sw = r.metric("sweep_test_acc", "output_scale", "seed", "epoch")[..., -1]          # (scales, seeds)
  best, lo, hi = best_scale_interval(sw)
  s.parts.append(Table(["output scale"] + [f"{x:g}" for x in scales],
                       [["test accuracy"] + [ci_text(sw[o], 3, stats.UNIT) for o in range(len(scales))]],
                       f"Output-scale sweep, the geometric net of {r.recorded('sweep_depth')} blocks: final test "
                       f"accuracy, mean [95% CI] over {sw.shape[1]} seeds. Best {scales[best]:g}; 95% bootstrap "
                       f"interval of the best scale [{scales[lo]:g}, {scales[hi]:g}] ({N_BOOT} resamples of the "
                       "seeds)"))
  path = plots.metric_vs_param(os.path.join(r.path, "resnet_output_scale.png"), scales, {"geometric": sw},
                               xlabel="output scale (log)", ylabel="final test accuracy",
                               title=f"Geometric ResNet, {r.recorded('sweep_depth')} blocks: output-scale sweep",
                               markers={"paper's best": PAPER_BEST_OUTPUT_SCALE}, bounds=stats.UNIT)
  s.parts.append(Figure(path, "Final test accuracy against the output scale (mean, 95% CI); the line marks the "
                              "paper's best, 0.05."))
  s.verdicts.append(scale_claim(scales, best, lo, hi, int(np.isfinite(sw).all(0).sum())))
  deep = {k: float(np.nanmean(acc[i, -1])) if np.any(np.isfinite(acc[i, -1])) else float("nan")
          for i, k in enumerate(schemes)}
  s.headline = Headline(
      what=f"paper Sec. 11 block on a small ResNet on digits, {n_seeds} seeds, {r.recorded('epochs')} epochs; "
           "transfer test",
      measured=f"test accuracy at {depths[-1]} blocks: " + ", ".join(f"{k} {fmt(v, 3)}" for k, v in deep.items())
               + f"; best output scale {scales[best]:g} [{scales[lo]:g}, {scales[hi]:g}]",
      source=f"ResNet-50, ImageNet: {PAPER_RESNET_TOP1['geometric'][0]} (SE {PAPER_RESNET_TOP1['geometric'][1]}) vs "
             f"RescaleNet {PAPER_RESNET_TOP1['rescalenet'][0]} (SE {PAPER_RESNET_TOP1['rescalenet'][1]}); best "
             f"output scale {PAPER_BEST_OUTPUT_SCALE:g}",
      numbers={**{f"{k}.acc_deepest": v for k, v in deep.items()}, "best_output_scale": scales[best],
               "best_output_scale_lo": scales[lo], "best_output_scale_hi": scales[hi]})
  s.parts.append(Table(["the paper's claim (ResNet-50, ImageNet)", "here (transfer)", "evidence"],
                       [[v.claim, stats.verdict_cell(v), v.evidence] for v in s.verdicts],
                       f"Verdicts; below {stats.MIN_SEEDS} seeds there is none"))
  return s

"""The lenet experiment's report section: test accuracy vs sigma beside the tutorial's Table 1, the four init
schemes' normalised training loss beside the paper's Section 9 table, and each scheme's per-kernel G at
initialisation (how even the calculus's preconditioning is on the LeNet)."""
from __future__ import annotations

import math
import os

import numpy as np

from jscale.experiments.sources.paper import PAPER_INIT_TABLE, PAPER_N_DATASETS
from jscale.experiments.sources.tutorial import TUTORIAL_EPOCHS, TUTORIAL_INIT, TUTORIAL_TEST_ACC
from jscale.report import describe, plots, sigma_markers, stats
from jscale.report.document import Figure, Headline, Section, Table
from jscale.report.format import fmt, label
from jscale.report.stats import ci_text
from jscale.sweeps import Results

SOURCE_NOTE = (
    "**A transfer test.** The sources' numbers are for MLPs: the tutorial's Table 1 for one 2-64-64-2 MLP on two "
    f"moons, the paper's Section 9 table for a 3-layer MLP averaged over {PAPER_N_DATASETS} LIBSVM data "
    "sets. Here the same protocols run on the paper's strided LeNet (its Figures 1-2 network) on other data, so a "
    "match or a miss says whether the sources' claims carry over to a convnet, not whether their runs reproduce.")


POSITIVE = (0.0, math.inf)   # a loss's range: its interval is cut at 0


def _close(a, b) -> bool:
  return a == b if not isinstance(a, float) or not isinstance(b, float) else math.isclose(a, b, rel_tol=1e-9)


class Cells:
  """The flat results regrouped as [batch mode][(init, sigma)] -> per-seed arrays (NaN where missing)."""

  def __init__(self, r: Results):
    pts = r.points
    self.seeds = sorted({p["seed"] for p in pts})
    self.modes = list(dict.fromkeys(p.get("batch_size", r.settings(0)["batch_size"]) for p in pts))
    self.cells = list(dict.fromkeys((p.get("init", p.get("kernel_init")), float(p.get("sigma", 1.0)))
                                    for p in pts))
    self._row = {}
    for i, p in enumerate(pts):
      key = (p.get("batch_size", self.modes[0]), p.get("init", p.get("kernel_init")), float(p.get("sigma", 1.0)))
      self._row[key + (p["seed"],)] = i
    self.m = r.metrics

  def per_seed(self, metric: str, mode, init: str, sigma: float, epoch: int = -1) -> np.ndarray:
    """(seeds,) the metric at `epoch` (last by default); g_ratio: (seeds, kernels)."""
    a = self.m[metric]
    out = np.full((len(self.seeds),) + a.shape[2:], np.nan)
    for k, s in enumerate(self.seeds):
      i = next((i for key, i in self._row.items() if key[0] == mode and key[1] == init and _close(key[2], sigma)
                and key[3] == s), None)
      if i is not None:
        out[k] = a[i, epoch]
    return out

  def tutorial_sigmas(self) -> list[float]:
    return [s for i, s in self.cells if i == TUTORIAL_INIT]

  def schemes(self) -> list[str]:
    return [i for i, s in self.cells if i != TUTORIAL_INIT and _close(s, 1.0)]


def _sigma_part(s: Section, r: Results, c: Cells, model):
  sigmas = c.tutorial_sigmas()
  if not sigmas:
    s.parts.append(f"The grid has no cell of the tutorial's init ({TUTORIAL_INIT}): no Table 1 comparison.")
    return
  rows = []
  epochs = r.settings(0)["epochs"]
  for ts, tv in TUTORIAL_TEST_ACC.items():
    if not any(_close(ts, x) for x in sigmas):
      continue
    for mode in c.modes:
      acc = c.per_seed("test_acc", mode, TUTORIAL_INIT, ts)
      if mode is None and epochs < TUTORIAL_EPOCHS:
        # Full batch is one Adam step per epoch: fewer epochs than the tutorial's 200 is a less trained net, so
        # its single run is no reference for these numbers (compare like with like): shown, not judged.
        rows.append([f"{ts:g}", label(mode), tv, f"{int(np.isfinite(acc).sum())} / {len(acc)}",
                     ci_text(acc, bounds=stats.UNIT), "-", f"not judged: {epochs} Adam steps (tutorial: 200)"])
        continue
      v = stats.judge(acc, tv, cell={"init": TUTORIAL_INIT, "sigma": ts, "batch_size": mode}, metric="test_acc",
                      bounds=stats.UNIT, kind=stats.TRANSFER)
      s.verdicts.append(v)
      rows.append([f"{ts:g}", label(mode), tv, f"{v.n_seeds} / {v.n_seeds + v.n_diverged}",
                   ci_text(acc, bounds=stats.UNIT), stats.fmt_interval(v.single_run_95), stats.verdict_cell(v)])
  if rows:
    s.parts.append(Table(["sigma", "batch", "tutorial (moons MLP, one run)", "seeds (finite / run)",
                          "measured mean [95% CI of the mean]", "one new run: 95% interval", "verdict"], rows,
                         "Table 1: test accuracy after the last epoch, W ~ N(0, sigma^2) on every kernel of the "
                         "LeNet, beside the tutorial's single runs on two moons"))
    s.parts.append(
        f"Verdicts compare the tutorial's single run with the {stats.PI_METHOD}; below {stats.MIN_SEEDS} finite "
        f"seeds there is none (\"too few seeds\"). The mean's interval: {stats.BOUNDED_CI_METHOD} ([0, 1]). "
        f"{describe.data_seed_text(r)}. Diverged seeds are left out and counted. Written to "
        "`lenet/verdicts.json`.")
  extra = [x for x in sigmas if not any(_close(x, t) for t in TUTORIAL_TEST_ACC)]
  if extra:
    s.parts.append(Table(["sigma"] + [f"{label(m)} (mean [95% CI])" for m in c.modes],
                         [[f"{x:g}"] + [ci_text(c.per_seed("test_acc", m, TUTORIAL_INIT, x), bounds=stats.UNIT)
                                        for m in c.modes] for x in sigmas],
                         "Test accuracy after the last epoch, every sigma of the grid"))
  if len(sigmas) > 1:
    series = {label(m): np.stack([c.per_seed("test_acc", m, TUTORIAL_INIT, x) for x in sigmas]) for m in c.modes}
    markers = sigma_markers.rule_markers(model.kernel_shapes) if model is not None else {}
    path = plots.metric_vs_param(os.path.join(r.path, "lenet_acc_vs_sigma.png"), sigmas, series,
                                 xlabel="sigma (weight std of every kernel, log scale)",
                                 ylabel="test accuracy after the last epoch",
                                 title="LeNet on digits: final test accuracy vs sigma", markers=markers,
                                 reference=TUTORIAL_TEST_ACC, reference_label="tutorial (moons MLP, one run)",
                                 bounds=stats.UNIT)
    what = ("; vertical lines: the one sigma whose end-to-end forward gain equals each rule's on the LeNet's kernels "
            "(the geometric mean of its per-kernel stds: " + ", ".join(f"{k} {v:.3g}" for k, v in markers.items())
            + ")") if markers else ""
    s.parts.append(Figure(path, "Figure 1: final test accuracy against sigma per batch mode (mean over finite "
                                "seeds, 95% CI of the mean cut at [0, 1]); crosses: the tutorial's single runs "
                                f"on two moons{what}."))


def normalised_losses(loss_SxK: np.ndarray) -> np.ndarray:
  """Each seed's losses divided by its worst scheme's (the paper's normalisation, paired by seed: same data draw
  and key). A seed with a diverged (non-finite) scheme gets NaN for every scheme: the worst is unknown."""
  loss = np.asarray(loss_SxK, np.float64)
  ok = np.all(np.isfinite(loss), axis=1, keepdims=True) & np.all(loss > 0, axis=1, keepdims=True)
  worst = np.where(ok, loss, 1.0).max(axis=1, keepdims=True)
  return np.where(ok, loss / worst, np.nan)


def _scheme_part(s: Section, r: Results, c: Cells):
  schemes = c.schemes()
  if not schemes:
    s.parts.append("The grid has none of the paper's schemes at their own scale: no Section 9 comparison.")
    return
  metric = "train_pass_loss" if np.any(np.isfinite(r.metrics.get("train_pass_loss", np.nan))) else "train_loss"
  loss_text = ("the loss over the whole training split after the last epoch (`train_pass_loss`), as the paper "
               "measures it" if metric == "train_pass_loss" else
               "**not the paper's measure**: the last epoch's mean minibatch loss (`train_loss`; these results "
               "have no `train_pass_loss`)")
  for mode in c.modes:
    loss = np.stack([c.per_seed(metric, mode, k, 1.0) for k in schemes], axis=1)          # (seeds, schemes)
    acc = np.stack([c.per_seed("test_acc", mode, k, 1.0) for k in schemes], axis=1)
    norm = normalised_losses(loss)
    fin = np.all(np.isfinite(norm), axis=1)
    worst = (norm[fin] == 1.0).sum(0)
    best = (norm[fin] == norm[fin].min(1, keepdims=True)).sum(0) if fin.any() else np.zeros(len(schemes), int)
    rows, verdicts = [], []
    for k, sch in enumerate(schemes):
      src = PAPER_INIT_TABLE.get(sch)
      v = None
      if src is not None:
        v = stats.judge(norm[:, k], src.avg_normalised_loss, cell={"init": sch, "batch_size": mode},
                        metric=f"normalised_{metric}", bounds=stats.UNIT, kind=stats.TRANSFER)
        verdicts.append(v)
      rows.append([sch, ci_text(loss[:, k], bounds=POSITIVE), ci_text(norm[:, k], 3, stats.UNIT),
                   stats.fmt_interval(v.single_run_95, 3) if v else "-", f"{worst[k]} / {int(fin.sum())}",
                   f"{best[k]} / {int(fin.sum())}", fmt(src.avg_normalised_loss, 2) if src else "-",
                   stats.verdict_cell(v) if v else "-", ci_text(acc[:, k], bounds=stats.UNIT)])
    s.verdicts.extend(verdicts)
    s.parts.append(Table(["scheme", f"{metric} (mean [95% CI])", "normalised (mean [95% CI])",
                          "one new seed: 95% interval", "worst on", "best on",
                          f"paper ({PAPER_N_DATASETS} LIBSVM sets, MLP)", "verdict", "test accuracy"], rows,
                         f"Table 2 ({label(mode)}): the four schemes at their own scale; each seed's losses divided "
                         "by its worst scheme's"))
    order = [schemes[k] for k in np.argsort(np.nanmean(np.where(fin[:, None], norm, np.nan), 0))] if fin.any() else []
    paper_order = sorted(PAPER_INIT_TABLE, key=lambda k: PAPER_INIT_TABLE[k].avg_normalised_loss)
    s.parts.append(
        f"{label(mode).capitalize()}: loss per run is {loss_text}. Replicates are seeds of one data set (each its "
        f"own split and init), not the paper's {PAPER_N_DATASETS} data sets, so the paper's average is set "
        "beside where one seed's normalised loss lands; \"worst on\" / \"best on\" count seeds. Ranking by mean "
        f"normalised loss (best first): measured {', '.join(order) or 'n/a'}; paper {', '.join(paper_order)}.")
    if fin.any():
      ci = stats.mean_ci95(norm[fin], 0, stats.UNIT)
      err = None if int(fin.sum()) < 2 else np.stack([ci.mean - ci.lo, ci.hi - ci.mean])
      tag = "full" if mode is None else f"b{mode}"
      path = plots.scheme_bars(os.path.join(r.path, f"lenet_schemes_{tag}.png"), schemes, ci.mean, errors=err,
                               ylabel="normalised training loss", title=f"LeNet, {label(mode)}: loss / worst scheme's",
                               reference={k: v.avg_normalised_loss for k, v in PAPER_INIT_TABLE.items()},
                               reference_label=f"paper ({PAPER_N_DATASETS} LIBSVM sets, MLP)",
                               measured_label=f"measured, mean over {int(fin.sum())} seeds (95% CI)")
      s.parts.append(Figure(path, f"Figure 2 ({label(mode)}): normalised training loss per scheme (mean over seeds "
                                  "whose four runs are finite, 95% CI cut at [0, 1]) beside the paper's averages."))


def g_spread(g_SxL: np.ndarray) -> np.ndarray:
  """Per seed, max_l G_l / min_l G_l: 1 when every kernel has the same G (NaN when any G is not finite or <= 0)."""
  g = np.asarray(g_SxL, np.float64)
  ok = np.all(np.isfinite(g) & (g > 0), axis=1)
  return np.where(ok, np.where(ok[:, None], g, 1.0).max(1) / np.where(ok[:, None], g, 1.0).min(1), np.nan)


def _g_part(s: Section, r: Results, c: Cells, model):
  schemes = c.schemes()
  if not schemes or "g_ratio" not in r.metrics:
    return
  mode = None if None in c.modes else c.modes[0]
  where = ("full batch, epoch 1: the gradient of the whole training split's mean loss at the initial weights"
           if mode is None else f"{label(mode)}: the mean over epoch 1's minibatch steps, while the weights move")
  names = model.kernel_names if model is not None else None
  g = {k: c.per_seed("g_ratio", mode, k, 1.0, epoch=0) for k in schemes}        # (seeds, kernels)
  L = next(iter(g.values())).shape[1]
  names = names if names and len(names) == L else [f"kernel {l}" for l in range(L)]
  rows = []
  for k in schemes:
    logg = np.log(g[k])
    gm = np.exp(np.nanmean(np.where(np.isfinite(logg), logg, np.nan), 0))
    rows.append([k] + [fmt(x, 3) for x in gm] + [ci_text(g_spread(g[k]), 3, (1.0, math.inf))])
  short = [n.replace("/kernel", "") for n in names]
  s.parts.append(Table(["scheme"] + short + ["max/min over kernels (mean [95% CI])"],
                       rows, f"Table 3: per-kernel G = E[dW^2] / E[W^2] at initialisation ({where}); geometric mean "
                             "over seeds"))
  spread = {k: g_spread(g[k]) for k in schemes}
  means = {k: np.nanmean(v) if np.any(np.isfinite(v)) else np.nan for k, v in spread.items()}
  most_even = min(means, key=lambda k: means[k] if np.isfinite(means[k]) else np.inf)
  s.parts.append(
      "The paper: under geometric init every layer has the same G (nu / c^2, its Sections 4-6), so the network is "
      "\"preconditioned\" and its Hessian diagonal blocks are evenly weighted (Figure 2). Measured on the LeNet with "
      f"the cross-entropy of real labels: the most even G (smallest mean max/min ratio) is **{most_even}** "
      f"({', '.join(f'{k} {fmt(v, 3)}' for k, v in means.items())}). The paper derives equal G for its random "
      "loss (outputs dotted with a normal matrix); here the loss is the cross-entropy of the digits' labels, so the "
      "ratio measures how far the prediction carries over to training.")
  measured = {k: np.exp(np.nanmean(np.log(g[k]), 0)) for k in schemes}
  path = plots.std_vs_depth(os.path.join(r.path, "lenet_g_at_init.png"), measured,
                            title="LeNet: per-kernel G at initialisation", ylabel="G = E[dW^2] / E[W^2]",
                            xlabel="kernel", categories=short)
  s.parts.append(Figure(path, f"Figure 3: per-kernel G at initialisation per scheme ({where}; geometric mean over "
                              "seeds, log scale). A flat line is an evenly preconditioned network."))
  return means


def build(r: Results) -> Section:
  """Axes batch_size, init+sigma (zipped), seed, epoch, layer (the kernels). Metrics test_acc, train_pass_loss
  (train_loss where absent), g_ratio."""
  c = Cells(r)
  model = r.model()
  s = Section("lenet: sigma and init schemes on the strided LeNet (the tutorial's and the paper's protocols, "
              "a transfer test)", [describe.grid_text(r, skip=("epoch",))])
  s.verdicts = []
  s.parts.append(SOURCE_NOTE)
  if model is not None:
    s.parts.append(f"Network: {model.description}; kernels {', '.join(model.kernel_names)} (what layer_scale and G "
                   f"index); inputs are the data's rows reshaped to {model.input_shape}. Epochs: "
                   f"{r.settings(0)['epochs']} (the tutorial ran 200 on moons): full batch takes that many "
                   "Adam steps only, so its accuracies are of a net early in training.")
  _sigma_part(s, r, c, model)
  _scheme_part(s, r, c)
  means = _g_part(s, r, c, model) or {}
  s.headline = _headline(r, c, means)
  return s


def _headline(r: Results, c: Cells, g_spread_means: dict) -> Headline | None:
  """The docs' numbers: mean test accuracy at the tutorial's sigmas (minibatch mode where run) and each scheme's
  mean max/min per-kernel G at initialisation."""
  sigmas = [t for t in TUTORIAL_TEST_ACC if any(_close(t, x) for x in c.tutorial_sigmas())]
  if not sigmas:
    return None
  mode = next((m for m in c.modes if m is not None), c.modes[0])
  acc = {t: float(np.nanmean(c.per_seed("test_acc", mode, TUTORIAL_INIT, t))) for t in sigmas}
  nums = {f"sigma={t:g}.test_acc": v for t, v in acc.items()}
  nums.update({f"{k}.g_max_over_min": float(v) for k, v in g_spread_means.items()})
  g = ("; per-kernel G max/min at init: " + ", ".join(f"{k} {fmt(v, 3)}" for k, v in g_spread_means.items())
       if g_spread_means else "")
  return Headline(
      what=f"transfer test on the strided LeNet, digits, {len(c.seeds)} seeds, {label(mode)}",
      measured=f"test accuracy at sigma {' / '.join(f'{t:g}' for t in sigmas)}: "
               + " / ".join(fmt(v, 3) for v in acc.values()) + g,
      source="the tutorial's moons numbers; the paper: geometric evens G", numbers=nums)

"""The transfer experiment's statistics: the optimal learning rate per width with a bootstrap interval over
seeds, the drift of the optimum across widths, the predicted drift's SE over the probe inits, and the
coordinate check's |log(measured / predicted)|."""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from jscale.calculus import strided_response, strided_update
from jscale.calculus.prescribe import PRESCRIBED_KINDS

N_BOOT = 2000
BOOT_SEED = 0


class Optimum(NamedTuple):
  log2_lr: np.ndarray      # (W,) optimum per width, log2 of the learning rate
  lo: np.ndarray           # (W,) 2.5% bootstrap percentile
  hi: np.ndarray           # (W,) 97.5%
  drift: float             # log2 optimum at the widest minus at the narrowest width (octaves)
  drift_lo: float
  drift_hi: float
  at_edge: np.ndarray      # (W,) bool: the seed-mean curve's minimum is at an end of the grid


def refined_argmin(curves: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(position in grid steps, at an edge) of the minimum of each curve (last axis), refined by the parabola
  through the minimum and its two neighbours (offset clipped to half a step); inf marks a diverged point."""
  k = np.argmin(curves, axis=-1)
  K = curves.shape[-1]
  edge = (k == 0) | (k == K - 1)
  kk = np.clip(k, 1, K - 2)
  take = lambda o: np.take_along_axis(curves, (kk + o)[..., None], -1)[..., 0]   # noqa: E731
  a, b, c = take(-1), take(0), take(1)
  with np.errstate(invalid="ignore", divide="ignore"):
    off = 0.5 * (a - c) / (a - 2 * b + c)
  off = np.where(np.isfinite(off) & ~edge & (a - 2 * b + c > 0), np.clip(off, -0.5, 0.5), 0.0)
  return k + off, edge


def optimum(loss: np.ndarray, log2_grid: np.ndarray, *, n_boot: int = N_BOOT, seed: int = BOOT_SEED) -> Optimum:
  """loss: (W, K, S) final training loss per width, grid learning rate and seed (NaN: diverged, counted as
  an infinite loss); log2_grid: (K,) log2 of the grid's learning rates (a step of 1 octave)."""
  L = np.where(np.isfinite(loss), loss, np.inf)
  W, K, S = L.shape
  pos, edge = refined_argmin(L.mean(-1))
  rng = np.random.default_rng(seed)
  idx = rng.integers(0, S, size=(n_boot, S))
  boot = L[:, :, idx].mean(-1)                     # (W, K, n_boot)
  bpos, _ = refined_argmin(np.moveaxis(boot, 1, -1))   # (W, n_boot)
  to_lr = lambda p: log2_grid[0] + p * (log2_grid[1] - log2_grid[0])   # noqa: E731
  opt, bopt = to_lr(pos), to_lr(bpos)
  d = bopt[-1] - bopt[0]
  return Optimum(opt, np.percentile(bopt, 2.5, axis=-1), np.percentile(bopt, 97.5, axis=-1),
                 float(opt[-1] - opt[0]), float(np.percentile(d, 2.5)), float(np.percentile(d, 97.5)), edge)


def log_influence(h: np.ndarray, d: np.ndarray, optimizer: str) -> np.ndarray:
  """(..., draw) each draw's influence on log `calculus.response_at` of `response.ratio_and_se`'s ratio (the delta
  method's linear term: its mean over the draws is 0, its SD / sqrt(n) the SE): 0.5 (d / mean d - h / mean h)
  at the output that sets the optimum (Adam the logits, SGD the last hidden layer). h, d: (..., draw, L) as
  `response.per_draw` gives them."""
  g = 0.5 * (d / d.mean(-2, keepdims=True) - h / h.mean(-2, keepdims=True))
  return g[..., -1] if optimizer == "adam" else g[..., -2]


def drift_se(small: tuple, large: tuple, optimizer: str) -> float:
  """SE (octaves) of the predicted drift log2(R_small / R_large) (`calculus.response_drift`) by the delta
  method over paired draws: `small` and `large` = (h, d) of shape (draw, L) at the two widths, draw k of both
  from the same key. The same key draws the same weights wherever a leaf's shape does not change with width
  (the LeNet's dense 120-84-10 kernels; elsewhere the flat prefix of the stream is shared too): the LeNet's
  two responses are correlated (+0.23 to +0.34 per draw, 32 vs 512; the MLP's +0.00 to +0.05), so
  the difference's SE is below the two widths' SEs in quadrature (docs/calculus.md, *The predictor's probe
  inits and their SE*). NaN with fewer than two draws."""
  g = log_influence(*small, optimizer) - log_influence(*large, optimizer)
  n = g.shape[-1]
  return float(np.std(g, ddof=1) / np.sqrt(n) / np.log(2)) if n > 1 else float("nan")


def log_errors(meas: np.ndarray, pred: np.ndarray) -> np.ndarray:
  """|log(measured / predicted)|, NaN where either is not positive and finite."""
  ok = (meas > 0) & (pred > 0) & np.isfinite(meas) & np.isfinite(pred)
  with np.errstate(divide="ignore", invalid="ignore"):
    return np.where(ok, np.abs(np.log(np.where(ok, meas, 1.0) / np.where(ok, pred, 1.0))), np.nan)


def fraction_within(err: np.ndarray, tol: float = 0.1) -> tuple[float, int]:
  """(share of the finite entries below tol, how many entries)."""
  e = err[np.isfinite(err)]
  return (float(np.mean(e < tol)) if e.size else float("nan")), int(e.size)


def within_se(err: np.ndarray, rse: np.ndarray, tol: float = 0.1, z: float = 2.0) -> np.ndarray:
  """Whether |log(meas/pred)| is below max(tol, z * SE of log(meas)) (NaN where err is NaN): a miss that the
  draws' sampling error alone could make is not counted against the prediction."""
  ok = np.isfinite(err)
  return np.where(ok, err < np.maximum(tol, z * np.where(np.isfinite(rse), rse, 0.0)), np.nan)


def predicted_activations(pr, w_sq_expected=None) -> np.ndarray:
  """(L,) E[h^2] of every layer output at init that the calculus predicts for prescription `pr`
  (run.coordinate_check measures them). The predictions of the first step are elsewhere: the activations after
  it from `strided_first_step` (over (example, position) pairs), SGD's first update from `sgd_update` (with the
  own-activation component that G_batch lacks: docs/calculus.md, *Coordinate check, fourth pass*), Adam's is
  lr m.

  `w_sq_expected` (L,): the init's expected E[W^2] per kernel. The prescription's moments come from one draw,
  whose E[W^2] scatters (a 6-channel 3x3 conv has 54 weights: ~19%); the measurement averages over draws, so
  the prediction is rescaled to the expected weights with the rules' product structure: E[x_l^2] carries
  prod_{j<l} E[W_j^2]."""
  w = [r for r in pr.leaves if r.kind in PRESCRIBED_KINDS]
  c = np.ones(len(w)) if w_sq_expected is None else np.asarray(w_sq_expected, float) / [r.weight_sq for r in w]
  below = np.concatenate([[1.0], np.cumprod(c)[:-1]])           # prod_{j<l} c_j
  x_sq = np.array([r.x_sq for r in w]) * below
  w_sq = np.array([r.weight_sq for r in w]) * c
  # E[y_l^2] = fan_in E[W^2] E[x^2]; the hidden activation after layer l is the next kernel's input.
  y_sq = np.array([r.fan_in for r in w]) * w_sq * x_sq
  return np.concatenate([x_sq[1:], y_sq[-1:]])


def sgd_update(image, kernel_shapes, x, y, w_sq, lr, memo: dict | None = None) -> np.ndarray:
  """(L,) RMS of each kernel's first SGD update of a strided conv stack or a dense one (input shape `image`,
  kernels `kernel_shapes`), from the kernels over (example, position) pairs with the component of the gradient
  along each example's own activation (`calculus.strided_update`; docs/calculus.md, *The first update over
  (example, position) pairs*): it replaces the LeNet's class-pair law, whose position-averaged cross term missed
  the convolutions' coherent pairs of positions, and `calculus.first_step`'s update for the MLP. `memo`: a dict
  that keeps E|grad W|^2 per w_sq across calls on the same network and batch (it does not depend on lr; standard
  and equal-G share their init: a LeNet's took ~1 CPU s)."""
  shapes = [tuple(s) for s in kernel_shapes]
  fan_in = [int(np.prod(s[:-1])) for s in shapes]
  stack = strided_update.Stack.of_shapes(image, shapes)
  key = tuple(float(v) for v in w_sq)
  memo = {} if memo is None else memo
  if key not in memo:   # what strided_update.update_rms computes before its rms
    memo[key] = strided_update.gradient_sq(np.asarray(x), np.asarray(y), stack, w_sq)
  return strided_update.rms(memo[key], lr, fan_in, stack.widths)


# Adam's sign-step kernels at the after-step check's dense layers: rows of their own stream, enough that no entry's
# prediction moves more than 0.02 in log with the rows' seed (strided_first_step's doc)
ADAM_DENSE_ROWS = 4096
# Adam's second-order term split into the input's mean and centred parts at the hidden dense layers, and the first
# dense layer's flip term on each side of zero with the own sign step blind to the unit's state (sum_split,
# sign_sum="hidden", adam_split="first"; twenty-first session, judged on keys 2^20 + 220000 / 230000: the LeNet
# 167 -> 168 of 180, the MLP 108 -> 108). False: the twentieth session's check (sign_sum="first").
ADAM_SPLIT = True
# With ADAM_SPLIT: Adam's flip term on each side of zero at every hidden layer above the first (adam_split=True) and
# the part along h that the layer above carries taken after the flips, E[h m d] + E[h c], at the dense layers above
# the convolutions (flip_along; twenty-first session, second part): development 678 -> 686 of 720, judged on keys
# 2^20 + 240000 / 250000 the LeNet 170 -> 170 of 180, the MLP 106 -> 106: not adopted alone (docs/calculus.md, *The
# part along h after the flips*); both are on through ADAM_FLIP_SECOND since its judgement, so this switch matters
# only with ADAM_FLIP_SECOND = False.
ADAM_FLIP_ALONG = False
# With ADAM_SPLIT: ADAM_FLIP_ALONG's two and the logits' second-order term (x + dx) dW with its input's change along
# h taken after the flips too (flip_second; twenty-first session, third part): development (ten seen key sets) the
# LeNet 848 -> 858 of 900 (flip_along alone 856), the MLP 533 -> 533; judged once on keys 2^20 + 260000 / 270000
# under the rule of docs/calculus.md, *The logits' own step after the flips*: the LeNet 171 -> 173 of 180, the MLP
# 108 -> 108: adopted. False: the check with ADAM_FLIP_ALONG's setting, bit for bit.
ADAM_FLIP_SECOND = True
# SGD's after-step prediction given the logit layer's draw (`strided_response.first_steps`' logit_bins: the bins of
# the logit draws by their batch gradient |sum_b gamma_b|^2, each its own backward and logit scale); 0: the mean draw
# (issue 22, twenty-second session, helper lg11; docs/calculus.md, *SGD's step given the logit layer's draw*).
# Off: on the 20 seen key sets the LeNet went 1713 -> 1711 of 1800 and the MLP 1071 -> 1068 (the width-512 standard
# SGD dense layers out where the width-32 logits came in), at 2.5-3x the check's CPU; not judged.
LOGIT_BINS = 0


def strided_first_step(image, kernel_shapes, x, y, settings: dict) -> dict:
  """key -> (L,) E[h^2] per layer output after the first step of a strided conv stack (input shape `image`,
  kernels `kernel_shapes`) for each setting key -> (w_sq, per-kernel lr, optimizer, the biases' lr), from the
  per-layer NTK over (example, position) pairs (`calculus.strided_response`; docs/calculus.md, *After the first
  step over (example, position) pairs*), with the biases' step, the incoherent carry and the flips' coherent carry
  (*The flips' coherent carry as a mask share*: adopted in the thirteenth session) and each unit's own flip term
  under the step's mean shift (*The units' mean shift and their own flip term*: fourteenth session) and Adam's sign
  of the own component's non-zero mean (*Adam's sign of a non-centred gradient*: fourteenth session). Until the
  twelfth session the LeNet's came from an update-on-top form (each layer's E[y^2] plus the update's bound
  U m^2 lr^2), which had no cross term 2E[h0 . dh] and no propagation of the change. Since the seventeenth
  session `flip_pairs` (the coherent carry's mask after the step per token pair, in place of flip_carry's share;
  *The carry's mask after the step*) with `state_split` (SGD's flip term under a law per side of zero; *The step's
  law on each side of zero*), judged on a third key set (2^20 + 170000: the LeNet 83 -> 84 of 90, the MLP 53 -> 54
  of 54; on 2^20 + 150000 it had lost one LeNet entry, on 160000 gained four). Judged and not passed:
  `flip_rescale` (fourteenth session). `draw_spread` (seventeenth: SGD's flip cost over the draws' own scale)
  passed its rule with both (the LeNet 78 -> 81 of 90 on keys 2^20 + 160000) and is not passed here: it costs
  3-5x this whole check inside the main job's 3-minute transfer grid, and the term alone took one entry away
  (*The flip cost over the draws' own scale*). `split_mask` (seventeenth session, helper lw) (the
  carry's after-step mask under SGD's law per side of zero; *The mask after the step under the law on each side of
  zero*): passed its rule on 2^20 + 180000 (the LeNet 83 -> 85 of 90, the MLP 54 -> 54, 1.2x this check's CPU
  time) and is not passed here: no gain on the nine development key sets (745 -> 745 of 810, MLP 482 -> 480 of
  486, known before the judgement), and the judged gain is one prediction counted twice at about one SE.
  `carry_square=("adam",)` (eighteenth session, helper lg: the incoherent carry with the flipped change's own
  square, change + net - 2E[hc]; *The incoherent carry's square after the flips*) failed its rule on 2^20 + 190000:
  the LeNet 82 -> 85 of 90 but the MLP 53 -> 52 (its 512 standard Adam logits); every width-128 Adam logit comes
  inside with it, and the width-512 standard Adam entries go out (a compensation there, located, not modelled).
  `sign_sum` (eighteenth session, second part: Adam's second-order term dW^T dx through the sum of a dense layer's
  input) is right in sign at the LeNet 512's dense0 where the regression is not, and worse there in total (the
  first-order own step and cross are over-predicted at that width): not judged. `sign_sum="first"` with
  `carry_square` (nineteenth session, helper lg3: the sum law at the first dense layer only; development 828 -> 844
  of 900, MLP 536 -> 535) judged on 2^20 + 200000: the LeNet 84 -> 85 of 90, the MLP 53 -> 53, but 1.025x this
  check's CPU time against its rule's 1.01x: not passed (*Adam's first-order excess is no saturation*). With each
  layer's step law computed once (the same bits, 0.991x the CPU time pooled) the same pair was judged again on
  fresh keys 2^20 + 210000 under a rule fixed first: the LeNet 83 -> 86 of 90, the MLP 53 -> 53: **adopted** (both
  passed below since the nineteenth session). Since the twentieth session (helper lg5) Adam's dense layers take
  their sign-step kernels from `ADAM_DENSE_ROWS` rows of their own stream (`dense_rows`) in place of 1024 of the
  shared one: at 1024 the prediction's s.d. over the rows' seed reached 0.09 in log (the LeNet 512 standard Adam
  dense layers), at 4096 every entry's is <= 0.02, the criterion fixed before scoring (docs/calculus.md, *The
  prediction's row-seed spread and a row count chosen by it*). Since the twenty-first session (helper lg7;
  `ADAM_SPLIT`) Adam's second-order term at the hidden dense layers takes the sum law on the input's mean and the
  regression on its centred rest (`sum_split`, `sign_sum="hidden"`), and the first dense layer's flip term the law
  on each side of zero with the own sign step blind to the unit's state (`adam_split="first"`): development 676 ->
  678 of 720, MLP 426 -> 427 of 432; judged once on keys 2^20 + 220000 and 230000 under a rule fixed first: the
  LeNet 167 -> 168 of 180, the MLP 108 -> 108 (docs/calculus.md, *The flips of a step that is mostly a per-unit
  shift*). Later the same session (helpers lg8, lg9; `ADAM_FLIP_SECOND`) the flip term on each side of zero at
  every hidden layer above the first (`adam_split=True`), the part along h carried into the layer above taken after
  the flips (`flip_along`), and the logits' second-order term likewise (`flip_second`): judged once on keys 2^20 +
  260000 and 270000 under a rule fixed first, the LeNet 171 -> 173 of 180, the MLP 108 -> 108 (docs/calculus.md,
  *The logits' own step after the flips*).
  Settings with the same w_sq share their kernels."""
  stack = strided_update.Stack.of_shapes(image, [tuple(s) for s in kernel_shapes])
  groups = {}
  for key, (w_sq, lr, opt, bias_lr) in settings.items():
    groups.setdefault(tuple(float(v) for v in w_sq), []).append((key, lr, opt, bias_lr))
  out = {}
  for w_sq, rows in groups.items():
    res = strided_response.first_steps(np.asarray(x), np.asarray(y), stack, w_sq, [(lr, o, b) for _, lr, o, b in rows],
                                       incoherent_carry=True, flip_pairs=True, flip_net=True, sign_mean=True,
                                       state_split=True, carry_square=("adam",), dense_rows=ADAM_DENSE_ROWS,
                                       logit_bins=LOGIT_BINS, **_adam_options())
    out.update({key: r.act1 for (key, _, _, _), r in zip(rows, res)})
  return out


def _adam_options() -> dict:
  """`strided_response.first_steps`' Adam options under ADAM_SPLIT, ADAM_FLIP_ALONG and ADAM_FLIP_SECOND."""
  if not ADAM_SPLIT:
    return dict(sign_sum="first")
  if ADAM_FLIP_ALONG or ADAM_FLIP_SECOND:
    return dict(sum_split=True, sign_sum="hidden", adam_split=True, flip_along=True, flip_second=ADAM_FLIP_SECOND)
  return dict(sum_split=True, sign_sum="hidden", adam_split="first")

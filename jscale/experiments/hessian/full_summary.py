"""The full-order prediction's Figure 1 summary (`full_order_summary`): the shape `hessian_check --json` prints.

Per batch size: predicted / exact pooled over every weight block of every setup, median / p5 / p95, the same with
the exact side's measurement noise removed (`summary.noise_removed`: `median_nr`, `p5_nr`, `p95_nr`), the same
per loss (`by_loss`), the number of blocks pooled and of blocks left out because the exact side equals the
prediction by construction (`tautological_blocks`, `Family.tautological`), and the paper's leading-order form
under `leading` (same keys, same blocks). The bias blocks under `bias` (same keys, by loss, their own
`tautological_blocks`: blocks whose exact side has no spread, such as the quadratic loss's last bias block, a
constant), counted apart so that the kernel blocks' numbers stay comparable with the runs before them.
`guarded`: each setup whose cross-entropy coupling had factors set to 1 (`gains.guarded`: a loss sample too small,
or a factor too noisy to apply), its setup fields and the reasons, so a summary never hides a correction it skipped.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from jscale.experiments.hessian.family import Family
from jscale.experiments.hessian.records import Record
from jscale.experiments.hessian.summary import noise_removed


def _stats(ratio: np.ndarray, rel_se: np.ndarray) -> dict:
  ok = np.isfinite(ratio) & (ratio > 0)
  r, se = ratio[ok], rel_se[ok]
  if r.size == 0:
    return {k: None for k in ("median", "p5", "p95", "median_nr", "p5_nr", "p95_nr")} | {"blocks": 0}
  nr = noise_removed(np.log(r), se)
  return {"median": float(np.median(r)), "p5": float(np.percentile(r, 5)), "p95": float(np.percentile(r, 95)),
          "median_nr": nr["median_nr"], "p5_nr": nr["p5_nr"], "p95_nr": nr["p95_nr"], "blocks": int(r.size)}


def _pool(family: Family, recs: Sequence[Record], field: str):
  """(ratios, relative SEs, losses) over the non-tautological weight blocks, and the tautological count."""
  ratio, rse, loss, taut = [], [], [], 0
  for r in recs:
    keep = ~family.tautological(r.setup, r.batch)
    taut += int((~keep).sum())
    pred = getattr(r, field)
    ratio.append((pred / r.exact_w)[keep])
    rse.append((r.exact_w_se / r.exact_w)[keep])
    loss += [r.setup.loss] * int(keep.sum())
  cat = lambda a: np.concatenate(a) if a else np.zeros(0)
  return cat(ratio), cat(rse), np.array(loss), taut


def _pool_bias(recs: Sequence[Record]):
  """(ratios, relative SEs, losses) over the bias blocks with a spread, and the count of constant ones."""
  ratio, rse, loss, taut = [], [], [], 0
  for r in recs:
    if r.full_b is None or r.exact_b_se is None:
      continue
    se = r.exact_b_se / r.exact_b
    keep = se > 1e-9
    taut += int((~keep).sum())
    ratio.append((r.full_b / r.exact_b)[keep])
    rse.append(se[keep])
    loss += [r.setup.loss] * int(keep.sum())
  cat = lambda a: np.concatenate(a) if a else np.zeros(0)
  return cat(ratio), cat(rse), np.array(loss), taut


def full_order_summary(family: Family, seed: int, recs: Sequence[Record], family_name: str | None = None) -> dict:
  """{"family", "seed", "batch_sizes": {B: {median.., *_nr, by_loss, blocks, tautological_blocks, leading}},
  "guarded": [{setup fields.., "notes"}]}."""
  out = {}
  for b in sorted({r.batch for r in recs}):
    rs = [r for r in recs if r.batch == b and r.full_w is not None]
    ratio, rse, loss, taut = _pool(family, rs, "full_w")
    entry = _stats(ratio, rse)
    entry["by_loss"] = {k: _stats(ratio[loss == k], rse[loss == k]) for k in sorted(set(loss.tolist()))}
    entry["tautological_blocks"] = taut
    lr, lse, lloss, _ = _pool(family, rs, "leading_w")
    entry["leading"] = _stats(lr, lse)
    entry["leading"]["by_loss"] = {k: _stats(lr[lloss == k], lse[lloss == k]) for k in sorted(set(lloss.tolist()))}
    br, bse, bloss, btaut = _pool_bias(rs)
    entry["bias"] = _stats(br, bse)
    entry["bias"]["by_loss"] = {k: _stats(br[bloss == k], bse[bloss == k]) for k in sorted(set(bloss.tolist()))}
    entry["bias"]["tautological_blocks"] = btaut
    entry["setups"] = len(rs)
    out[str(b)] = entry
  guarded, seen = [], set()
  for r in recs:   # one entry per setup: its batch sizes share one loss sample, hence the same notes
    if r.notes and r.setup not in seen:
      seen.add(r.setup)
      guarded.append({**family.setup_json(r.setup), "notes": list(r.notes)})
  return {"family": family_name or family.name.lower(), "seed": int(seed), "batch_sizes": out, "guarded": guarded}

"""Honest standard errors under heavy tails: independent replicates of one narrow deep setup (the same Q, rounds
from independent keys) spread as their reported SEs say. A narrow 6-layer net is where the per-draw block sizes
are heaviest-tailed (a few draws carry much of a block)."""
import jax
import numpy as np
import pytest

from jscale.experiments.hessian.mlp_family import MLPFamily, MLPSetup

REPLICATES = 24  # the spread's own relative error is ~1/sqrt(2 (R - 1)) = 15% per block; pooled over blocks less


def _replicates(loss):
  fam = MLPFamily()
  setup = MLPSetup((8, 12, 8, 10, 8, 6), "fan_in", loss, "normal", 5)
  out = {1: [], 1024: []}
  for rep in range(REPLICATES):
    m = fam.start(setup, jax.random.PRNGKey(7), examples=8, round_draws=64, draws=256, max_bytes=2 ** 30)
    m.kr = jax.random.fold_in(m.kr, 1000 + rep)  # same setup and Q, independent draws
    for i in range(4):
      m.draw_round(i)
    for b in out:
      e = m.exact(b)[0]
      out[b].append((e.mean, e.stderr))
  return out


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["quadratic", "xent"])
def test_replicate_spread_matches_reported_se(loss):
  ratios = []
  for b, reps in _replicates(loss).items():
    means, ses = np.array([r[0] for r in reps]), np.array([r[1] for r in reps])
    rms = np.sqrt(np.mean(ses ** 2, 0))
    keep = rms > 0  # the quadratic loss's last block at batch 1 is its control variate's exact mean (SE 0)
    ratios.append(means.std(0, ddof=1)[keep] ** 2 / rms[keep] ** 2)
  pooled = float(np.sqrt(np.mean(np.concatenate(ratios))))
  # Variance ratio pooled over 9-10 blocks and both batch sizes: [0.8, 1.25] is ~2 sd of the pooled estimate.
  assert 0.8 <= pooled <= 1.25, pooled

"""The transfer experiment: its statistics on curves with a known optimum, its grids as the issue specifies
them, and (slow) a tiny run through its report section and transfer.json."""
import json
import os

import numpy as np
import pytest

from jscale import sweeps
from jscale.experiments.transfer import analysis, section


def _parabolas(vertex_steps, K=12, S=5, noise=0.0, seed=0):
  """(W, K, S) losses: a parabola in grid steps with its vertex at `vertex_steps[w]`, plus noise."""
  rng = np.random.default_rng(seed)
  k = np.arange(K)
  base = np.stack([0.1 * (k - v) ** 2 + 0.3 for v in vertex_steps])
  return base[:, :, None] + noise * rng.standard_normal((len(vertex_steps), K, S))


def test_refined_argmin_finds_a_parabolas_vertex_between_grid_points():
  pos, edge = analysis.refined_argmin(_parabolas([4.3, 7.5])[:, :, 0])
  np.testing.assert_allclose(pos, [4.3, 7.5], atol=1e-9)   # a parabola through 3 points is exact
  assert not edge.any()


def test_drift_and_intervals_on_shifted_curves():
  grid = np.log2(0.25) + np.arange(12) - 6.0
  o = analysis.optimum(_parabolas([5.0, 3.5], noise=0.01), grid)
  # the vertex moved 1.5 grid steps (octaves) down; noise 0.01 on curvature 0.2 moves it by ~0.05
  assert o.drift == pytest.approx(-1.5, abs=0.15)
  assert o.drift_lo <= o.drift <= o.drift_hi
  assert np.all(o.lo <= o.log2_lr) and np.all(o.log2_lr <= o.hi)


def test_diverged_points_count_as_infinite_loss():
  L = _parabolas([6.0])
  L[0, 5, 0] = np.nan                      # one seed diverged at the best grid point's neighbour
  o = analysis.optimum(L, np.arange(12.0))
  assert o.log2_lr[0] != pytest.approx(5.0)   # the point with a diverged seed is not the optimum
  assert np.isfinite(o.log2_lr[0])


def test_edge_minimum_is_flagged():
  o = analysis.optimum(_parabolas([-3.0]), np.arange(12.0))
  assert o.at_edge[0] and o.log2_lr[0] == 0.0


def test_grids_as_specified():
  exp = sweeps.get("transfer")
  for name in ("quick", "full"):
    g = exp.grid(name)
    assert g["lr_octaves"] == 12
    assert "scripts/sweep.py" in exp.doc
  full = exp.grid("full")
  assert full["widths"][0] == 32 and full["widths"][-1] == 512        # 16x
  assert len(full["seeds"]) >= 4
  assert set(full["seeds"]).isdisjoint({0, 1})                          # dev seeds are not judged
  assert exp.grid("gpu")["widths"][-1] == 4096
  # the normalised equal-G's judgement: seeds no other grid ran (10-13 developed it, 20-23 were seen)
  jn = exp.grid("judge_normalised")
  others = {s for g in ("quick", "full", "gpu", "judge") for s in exp.grid(g)["seeds"]}
  assert len(jn["seeds"]) >= 4 and set(jn["seeds"]).isdisjoint(others | {0, 1})
  assert jn["widths"][0] == 32 and jn["widths"][-1] == 512
  # the 8+-seed judgement: 4 seeds did not pin a 0.5-octave drift down; seeds no other grid ran
  j12 = exp.grid("judge_12_seeds")
  assert len(j12["seeds"]) >= 8 and set(j12["seeds"]).isdisjoint(others | set(jn["seeds"]) | {0, 1})
  assert j12["widths"][0] == 32 and j12["widths"][-1] == 512
  # judged once more on seeds no run had used (0-51 were all seen during development)
  j52 = exp.grid("judge_seeds_52")
  assert len(j52["seeds"]) >= 8 and min(j52["seeds"]) >= 52 and set(j52["seeds"]).isdisjoint(others)
  assert j52["widths"][0] == 32 and j52["widths"][-1] == 512
  # and on 24 more, none seen: 12 left equal-G's intervals across the band
  j64 = exp.grid("judge_seeds_64")
  assert len(j64["seeds"]) >= 24 and set(j64["seeds"]).isdisjoint(others | set(jn["seeds"]) | set(j12["seeds"])
                                                                 | set(j52["seeds"]) | set(range(64)))
  assert j64["widths"][0] == 32 and j64["widths"][-1] == 512
  # the 64-probe-init predictor's judgement: seeds no grid had run (every seed below 88 was seen)
  j88 = exp.grid("judge_seeds_88")
  seen = {s for g in exp.grids if g != "judge_seeds_88" for s in exp.grid(g)["seeds"]}
  assert len(j88["seeds"]) >= 24 and min(j88["seeds"]) >= 88 and set(j88["seeds"]).isdisjoint(seen)
  assert j88["widths"][0] == 32 and j88["widths"][-1] == 512
  # SGD's response at the last hidden layer, judged once: seeds no grid had run (every seed below 112 was seen)
  j112 = exp.grid("judge_seeds_112")
  seen = {s for g in exp.grids if g != "judge_seeds_112" for s in exp.grid(g)["seeds"]}
  assert len(j112["seeds"]) >= 24 and min(j112["seeds"]) >= 112 and set(j112["seeds"]).isdisjoint(seen)
  assert j112["widths"][0] == 32 and j112["widths"][-1] == 512


@pytest.mark.slow
def test_tiny_run_writes_transfer_json(tmp_path):
  from jscale.experiments.transfer import config, run
  d = run.experiment(str(tmp_path / "transfer"), widths=(32, 64), models_=("mlp",), seeds=(0, 1),
                     lr_centers=config.LR_CENTERS, lr_octaves=4, epochs=1, batch_size=128, coord_steps=2)
  s = section.build(sweeps.load(d))
  with open(os.path.join(d, "transfer.json")) as f:
    out = json.load(f)
  assert len(out["results"]) == 6 and out["widths"] == [32, 64]
  for e in out["results"]:
    assert len(e["optimal_lr"]) == 2 and e["predicted_drift_octaves"] is not None
  leaves = out["coordinate_check_per_leaf"]["mlp"]["activations after step 1"]
  assert len(leaves) == 3 and all(v["median"] is not None for v in leaves)
  assert "transfer" in s.title


def test_training_chunks_are_equal_and_bounded():
  from jscale.experiments.transfer import run
  assert run.n_chunks(288) == 1 and run.n_chunks(576) == 1       # the full grid: one call, as before
  assert run.n_chunks(1728) == 3 and run.n_chunks(864) == 2
  assert run.n_chunks(577) == 577                                 # a prime: one configuration per call
  for c in (144, 288, 864, 1728, 1000):
    n = run.n_chunks(c)
    assert c % n == 0 and c // n <= run.MAX_CONFIGS


def test_judge_grids_136_and_160_are_fresh():
  # judged once each: training seeds no other grid runs (every seed below 136 was seen before judge_seeds_136,
  # every seed below 160 before judge_seeds_160)
  exp = sweeps.get("transfer")
  for name, first in (("judge_seeds_136", 136), ("judge_seeds_160", 160)):
    j = exp.grid(name)
    seen = {s for g in exp.grids if g != name for s in exp.grid(g)["seeds"]}
    assert len(j["seeds"]) >= 24 and min(j["seeds"]) >= first and set(j["seeds"]).isdisjoint(seen)
    assert j["widths"] == (32, 128, 512)


@pytest.mark.slow
def test_training_program_keeps_the_engines_loss_and_divergence_bit_for_bit():
  """run.train_program returns only (train_loss, diverged): the engine's other metrics left out, XLA drops their
  arithmetic (less compile and compute); the two kept are the full program's bit for bit, a diverging rate
  included."""
  import itertools

  import jax
  import jax.numpy as jnp

  from jscale import datasets, models, train as train_lib
  from jscale.experiments.transfer import config, run
  ds = datasets.get("digits", seed=0, standardize=True)
  data = datasets.Data(jnp.asarray(ds.x_train[:64]), jnp.asarray(ds.y_train[:64], jnp.int32), jnp.zeros((0, 64)),
                       jnp.zeros((0,), jnp.int32))
  net = models.mlp((64, 8, 8, 10))
  octs = np.array([-2, 60])   # the second diverges (its parameters overflow)
  lrs = np.array([[config.LR_CENTERS[f"{r}/{o}"] * 2.0 ** octs for r in run.PARAMETRIZATIONS]
                  for o in run.OPTIMIZERS])
  rows = [(c, i, k, 0) for c in range(2) for i in (0, 2) for k in range(2)]
  rng = np.random.default_rng(0)
  pres = {key: (None, rng.uniform(0.5, 2, 3).astype(np.float32), rng.uniform(0.5, 2, 3).astype(np.float32), 1.0)
          for key in itertools.product(run.PARAMETRIZATIONS, run.OPTIMIZERS)}
  keys = jax.vmap(jax.random.key)(jnp.arange(len(rows)))
  hp = run.train_hparams(rows, lrs, pres)
  loss, diverged = run.train_program(net, 1, 32)(keys, hp, data)
  spec = train_lib.TrainSpec(model=net, kernel_inits=("he_normal",), optimizer=run.OPTIMIZERS, epochs=1,
                             batch_size=32)
  full = jax.jit(jax.vmap(train_lib.make_train(spec), in_axes=(0, 0, None)))(keys, hp, data)
  np.testing.assert_array_equal(np.asarray(loss), np.asarray(full.train_loss))
  np.testing.assert_array_equal(np.asarray(diverged), np.asarray(full.diverged))
  assert np.asarray(diverged).any() and not np.asarray(diverged).all()

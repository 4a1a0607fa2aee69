"""The hessian experiment's held-out Figure 1 (issue 20: the summary and the report give the numbers on setups of
a seed no development used, beside the development seed): its settings, its table column and its headline."""
import pytest

from jscale.experiments.hessian import section
from jscale.experiments.hessian.settings import HessianSettings

GRID = {"setups": 3, "batch": 16, "draws": 8, "seed": 0, "fig2_draws": 0, "fig2_minibatch": 32}


def test_holdout_settings_are_the_development_settings_on_another_seed():
  s = HessianSettings.from_grid({**GRID, "holdout_seed": 3, "holdout_setups": 2, "lenet_setups": 4,
                                 "lenet_holdout_seed": 2, "lenet_holdout_setups": 1})
  assert (s.mlp.holdout.seed, s.mlp.holdout.setups, s.mlp.holdout.draws) == (3, 2, 8)
  assert (s.lenet.holdout.seed, s.lenet.holdout.setups, s.lenet.holdout.draws) == (2, 1, s.lenet.figure1.draws)
  assert HessianSettings.from_grid(GRID).mlp.holdout is None  # none unless asked for


@pytest.mark.parametrize("bad", [{"holdout_setups": 2}, {"holdout_setups": 2, "holdout_seed": 0},
                                 {"lenet_holdout_setups": 1, "lenet_holdout_seed": 0}, {"holdout_setups": -1}])
def test_a_holdout_on_the_development_seed_or_without_one_is_refused(bad):
  with pytest.raises(ValueError, match="holdout"):
    HessianSettings.from_grid({**GRID, **bad})


def _full(seed, med, losses=("quadratic", "xent")):
  e = {"median": med, "p5": 0.9, "p95": 1.1, "median_nr": med, "p5_nr": 0.95, "p95_nr": 1.05, "blocks": 10}
  entry = {**e, "tautological_blocks": 1, "by_loss": {k: dict(e) for k in losses},
           "leading": {**e, "by_loss": {k: dict(e) for k in losses}}}
  return {"family": "mlp", "seed": seed, "batch_sizes": {"1": entry, "1024": entry}}


def test_the_table_puts_the_held_out_seed_beside_the_development_seed():
  t = section._full_order_table(_full(0, 1.01), "MLP", {**_full(3, 0.97, ("xent",)), "setups": 20})
  assert t.header[-1] == "held-out seed 3: noise removed (blocks)" and "20 setups of seed 3" in t.caption
  rows = {(r[0], r[1]): r for r in t.rows}
  assert rows[("1024", "xent")][-1] == f"{section.fmt(0.97)} [{section.fmt(0.95)}, {section.fmt(1.05)}] (10)"
  assert rows[("1", "quadratic")][-1] == "-"  # no quadratic setup among the held-out ones
  assert len(section._full_order_table(_full(0, 1.01), "MLP").header) == 7  # no column without a held-out run
  assert "set to 1" not in t.caption   # nothing guarded, nothing said
  guarded = {**_full(0, 1.01), "guarded": [{"widths": [4, 3], "notes": ["layer 0 same: ... set to 1: 8 draws < 64"]}]}
  assert "in 1 cross-entropy setup(s) the softmax's coupling factors were set to 1" in \
      section._full_order_table(guarded, "MLP").caption


def test_the_headline_quotes_both_seeds():
  cfg = {"setups": 5, "lenet_setups": 0, "draws": 64, "target_rel_se": 0.05, "full_order": _full(0, 1.01),
         "holdout_full_order": {**_full(3, 0.97), "setups": 20}}
  h = section._headline(cfg)
  assert "mlp (seed 0, development): batch 1 " in h.measured and "held out (seed 3, 20 setups): batch 1 " in h.measured
  assert h.numbers["mlp_holdout_b1024_median_nr"] == 0.97 and h.numbers["mlp_b1024_median_nr"] == 1.01

"""The full-order summary's JSON shape (what `hessian_check --json` prints) and its tautological-block rule."""
import numpy as np

from jscale.experiments.hessian.full_summary import full_order_summary
from jscale.experiments.hessian.mlp_family import MLPFamily, MLPSetup
from jscale.experiments.hessian.records import Record

KEYS = {"median", "p5", "p95", "median_nr", "p5_nr", "p95_nr", "blocks"}


def _rec(setup, batch, ratio, taut_last=False, notes=()):
  exact = np.array([1.0, 2.0, 4.0])
  full = exact * np.asarray(ratio)
  bse = exact * 0.02
  if taut_last:
    full[-1] = exact[-1]
    bse[-1] = 0.0  # a constant bias block (the quadratic loss's last): no spread, equal by construction
  z = np.zeros(3)
  return Record(setup, batch, exact, exact, z, z, z, z, exact * 0.1, exact * 0.02, 1.0, exact_b_se=bse, full_w=full,
                full_b=full * 1.5, notes=notes)


def test_shape_by_loss_and_tautological_blocks():
  fam = MLPFamily()
  sq = MLPSetup((4, 5, 6, 3), "fan_in", "quadratic", "normal", 1)
  sx = MLPSetup((4, 5, 6, 3), "fan_in", "xent", "normal", 2)
  recs = [_rec(sq, 1, [0.9, 1.1, 5.0], taut_last=True), _rec(sq, 8, [0.8, 1.0, 1.2]),
          _rec(sx, 1, [2.0, 2.0, 2.0]), _rec(sx, 8, [0.5, 0.5, 0.5])]
  out = full_order_summary(fam, 3, recs, "mlp")
  assert set(out) == {"family", "seed", "batch_sizes", "guarded"} and out["family"] == "mlp" and out["seed"] == 3
  assert out["guarded"] == []   # no record carries a guarded factor
  b1, b8 = out["batch_sizes"]["1"], out["batch_sizes"]["8"]
  for e in (b1, b8):
    assert KEYS <= set(e) and {"by_loss", "tautological_blocks", "leading"} <= set(e)
    assert set(e["by_loss"]) == {"quadratic", "xent"} and KEYS <= set(e["by_loss"]["xent"])
  # batch 1: the quadratic last block (ratio 1 by construction) is left out and counted
  assert b1["tautological_blocks"] == 1 and b1["blocks"] == 5 and b1["by_loss"]["quadratic"]["blocks"] == 2
  assert np.isclose(b1["by_loss"]["quadratic"]["median"], 1.0) and np.isclose(b1["by_loss"]["xent"]["median"], 2.0)
  assert b8["tautological_blocks"] == 0 and b8["blocks"] == 6 and np.isclose(b8["by_loss"]["xent"]["p95"], 0.5)
  # bias blocks apart (the kernel numbers above do not see them); constant ones left out and counted
  assert KEYS <= set(b1["bias"]) and b1["bias"]["tautological_blocks"] == 1 and b1["bias"]["blocks"] == 5
  assert np.isclose(b1["bias"]["by_loss"]["xent"]["median"], 3.0) and b8["bias"]["tautological_blocks"] == 0


def test_guarded_factors_reach_the_summary_once_per_setup():
  # A skipped correction must show: the setup whose coupling factor was set to 1 is listed with its reason, once
  # (both of its batch sizes carry the same notes), and a setup without notes is not.
  fam = MLPFamily()
  sx = MLPSetup((4, 5, 6, 3), "fan_in", "xent", "normal", 2)
  sq = MLPSetup((4, 5, 6, 3), "xavier", "quadratic", "normal", 1)
  note = ("layer 1 same: factor 1.7 (log-SE 0.37) set to 1: log-SE above 0.25",)
  recs = [_rec(sx, 1, [1.0, 1.0, 1.0], notes=note), _rec(sx, 8, [1.0, 1.0, 1.0], notes=note),
          _rec(sq, 1, [1.0, 1.0, 1.0]), _rec(sq, 8, [1.0, 1.0, 1.0])]
  g = full_order_summary(fam, 0, recs, "mlp")["guarded"]
  assert len(g) == 1 and g[0]["notes"] == list(note)
  assert g[0] == {**fam.setup_json(sx), "notes": list(note)}

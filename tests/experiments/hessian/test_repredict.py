"""`repredict` rebuilds a saved run's predictions from its setups alone (same keys, same loss round): on a run just
measured it must give back the predictions the run wrote, and a changed prediction must show."""
import numpy as np

from jscale.experiments.hessian import records, repredict, rounds
from jscale.experiments.hessian.mlp_family import MLPFamily, MLPSetup
from jscale.experiments.hessian.settings import Figure1Settings


def test_repredict_gives_back_the_run_predictions(monkeypatch):
  fam = MLPFamily()
  fig1 = Figure1Settings(2, 64, 16, 0, examples=4)
  setups = [MLPSetup((6, 9, 5), "fan_in", "xent", "normal", 11), MLPSetup((7, 8, 6, 4), "geometric", "quadratic",
                                                                         "uniform01", 12)]
  recs = [r for s in setups for r in rounds.measure_setup(fam, s, fig1)]
  saved = {"config": {"setups": 2, "batch": 64, "draws": 16, "seed": 0, "examples": 4},
           "records": records.records_json(fam, recs)}
  again = repredict.repredict_records(fam, [records.record_from_json(fam, d) for d in saved["records"]], saved["config"])
  for a, b in zip(recs, again):
    assert a.setup == b.setup and a.batch == b.batch
    np.testing.assert_allclose(b.full_w, a.full_w, rtol=1e-10)
    np.testing.assert_allclose(b.corrected_w, a.corrected_w, rtol=1e-10)
    np.testing.assert_array_equal(b.exact_w, a.exact_w)
    assert b.notes == a.notes   # the guard's reasons survive the JSON and the re-prediction
  # 16 draws: the cross-entropy setup's couplings are below the guard's minimum sample, so they are set to 1 and
  # the run says so (the quadratic setup has no coupling, hence no notes)
  assert recs[0].notes and all("< 64" in n for n in recs[0].notes) and recs[2].notes == ()
  assert records.records_json(fam, recs)[0]["coupling_notes"] == list(recs[0].notes)
  # a run saved before the notes existed gets them from today's prediction
  old = [records.record_from_json(fam, {k: v for k, v in d.items() if k != "coupling_notes"}) for d in saved["records"]]
  assert old[0].notes == () and repredict.repredict_records(fam, old, saved["config"])[0].notes == recs[0].notes
  # A different prediction (no pair-cosine spread) must come through.
  from jscale.theory import full_order
  orig = full_order.predict_wick
  monkeypatch.setattr(full_order, "predict_wick", lambda *a, **k: orig(*a, **{**k, "pair_cosine": False}))
  _, out = repredict.repredict(fam, saved, "mlp")
  changed = repredict.repredict_records(fam, [records.record_from_json(fam, d) for d in saved["records"]],
                                        saved["config"])
  assert out["batch_sizes"]["64"]["blocks"] == 5
  assert not np.allclose(changed[1].full_w, recs[1].full_w)   # batch 64: the spread matters
  np.testing.assert_allclose(changed[0].full_w, recs[0].full_w, rtol=1e-10)  # batch 1: it does not

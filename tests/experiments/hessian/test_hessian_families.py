"""The family interface: one rounds driver, one records writer, one resume path and one summary serve every
network family: a toy family written only against `Family` (what a new family must provide), and the MLP and
LeNet families run through the same `run.run_family`."""
import dataclasses
import json
import math
import os
from typing import ClassVar, NamedTuple

import numpy as np
import pytest

from jscale.experiments.hessian import records, rounds, run, summary
from jscale.experiments.hessian.family import Family, Measurement, Predicted
from jscale.experiments.hessian.lenet_family import LeNetFamily
from jscale.experiments.hessian.mlp_family import MLPFamily
from jscale.experiments.hessian.settings import FamilyRun, Figure1Settings, Figure2Settings
from jscale.theory import pairs, predict

DRAWN = {}  # toy setup -> the round indices its measurement was asked to draw


class ToySetup(NamedTuple):
  width: int
  seed: int


class ToyMeasurement(Measurement):
  """Two layers; after k rounds each block's relative SE is 1 / sqrt(k width), its mean (1 + l) / B."""

  def __init__(self, setup, round_draws):
    self.setup, self.round_draws, self.rounds = setup, round_draws, 0
    DRAWN[setup] = []

  def draw_round(self, index):
    DRAWN[self.setup].append(index)
    self.rounds += 1

  def exact(self, batch):
    mean = np.array([1.0, 2.0]) / batch
    se = mean / math.sqrt(self.rounds * self.setup.width)
    est = pairs.MeanEstimate(mean, se, 2 * se)
    return est, est

  def predict(self, batch):
    p = predict.BlockPrediction(np.array([1.0, 4.0]) / batch, np.array([1.0, 2.0]) / batch)
    return Predicted(p, p, p.weight)


@dataclasses.dataclass(frozen=True)
class ToyFamily(Family):
  widths: tuple = (2, 5, 30)

  name: ClassVar[str] = "Toy"
  prefix: ClassVar[str] = "toy_"
  setup_dir: ClassVar[str] = "toy_setups"
  control_variates: ClassVar[bool] = True
  per_layer: ClassVar[bool] = True
  fig2_net: ClassVar = None

  def sample_setups(self, num, seed):
    return [ToySetup(self.widths[i], 100 * seed + i) for i in range(num)]

  def check_setup(self, setup):
    if setup.width < 1:
      raise ValueError(f"bad toy width {setup.width}")
    return setup

  def start(self, setup, key, *, examples, round_draws, draws, max_bytes):
    return ToyMeasurement(setup, 2 if round_draws is None else round_draws)

  def setup_json(self, setup):
    return {"toy_width": setup.width, "seed": setup.seed}

  def setup_from_json(self, d):
    return ToySetup(int(d["toy_width"]), int(d["seed"]))

  def layer_names(self, setup):
    return ["a", "b"]

  def heatmap_problem(self, net, *, loss, batch, seed, max_bytes):
    raise NotImplementedError

  def net_json(self, net):
    return {}

  def net_layers(self, net):
    return []


def test_a_new_family_needs_only_the_interface(tmp_path):
  """The driver stops each setup at the first whole round where every weight block's relative SE at both
  batch sizes is at most the target (here 1 / sqrt(k w) <= 0.21: 12 rounds for w = 2, 5 for w = 5), after at
  least `draws` draws (2 rounds for w = 30), never past `max_draws`; rounds get indices 0, 1, 2, ... The
  records JSON opens with the family's fields, reads back equal, and a killed run resumes per setup."""
  fam = ToyFamily()
  fig1 = Figure1Settings(3, 8, 4, seed=1, examples=2, target_rel_se=0.21, max_draws=40)
  recs = rounds.figure1(fam, fig1, workers=2)
  assert [r.batch for r in recs] == [1, 8] * 3
  assert [r.draws for r in recs[::2]] == [24, 10, 4]
  assert [DRAWN[r.setup] for r in recs[::2]] == [list(range(12)), list(range(5)), list(range(2))]
  capped = rounds.figure1(fam, Figure1Settings(3, 8, 4, seed=1, target_rel_se=0.21, max_draws=20), workers=1)
  assert [r.draws for r in capped[::2]] == [20, 10, 4]
  r = recs[1]
  np.testing.assert_array_equal(r.exact_w, [1 / 8, 2 / 8])
  np.testing.assert_array_equal(r.exact_w_se_plain, 2 * r.exact_w_se)
  np.testing.assert_array_equal(r.corrected_w, [1 / 8, 4 / 8])
  # one summary for every family: pooled over 3 setups x 2 blocks, and per layer
  s = summary.ratio_summary(recs, fig1.target_rel_se)["batch_sizes"]["8"]
  assert s["blocks"] == 6 and s["setups"] == 3 and s["median_corrected"] == 1.5
  assert summary.layer_summary(fam, recs)["8"]["b"]["median"] == 2.0
  # one records writer and reader
  js = records.records_json(fam, recs)
  assert list(js[0])[:3] == ["toy_width", "seed", "batch"] and "exact_w_se_plain" in js[0]
  back = [records.record_from_json(fam, d) for d in json.loads(json.dumps(js))]
  for a, b in zip(recs, back):
    assert a.setup == b.setup and a.draws == b.draws
    np.testing.assert_array_equal(a.exact_w_se_plain, b.exact_w_se_plain)
  # one resume path
  part = FamilyRun(fam, fig1, Figure2Settings(0, 1))
  d = str(tmp_path / "run")
  first = run.run_family(d, part)
  assert sorted(os.listdir(os.path.join(d, "toy_setups"))) == ["0000.json", "0001.json", "0002.json"]
  os.remove(os.path.join(d, "toy_setups", "0001.json"))
  DRAWN.clear()
  again = run.run_family(d, part)
  assert list(DRAWN) == [ToySetup(5, 101)] and again.resumed == 2
  assert json.load(open(os.path.join(d, "toy_fig1_records.json")))["layers"] == again.layers == first.layers


def _rounds_ok(fam, recs, fig1, round_draws):
  """Every setup stopped by the driver's rule: at least `draws`, whole rounds, within the cap, and either on
  target at both batch sizes or one round short of the cap."""
  for r1, rb in zip(recs[::2], recs[1::2]):
    assert r1.draws == rb.draws and r1.draws % round_draws == 0 and fig1.draws <= r1.draws <= fig1.draw_cap
    worst = max(float(np.max(r1.rel_se)), float(np.max(rb.rel_se)))
    assert worst <= fig1.target_rel_se or r1.draws + round_draws > fig1.draw_cap, (fam.name, worst, r1.draws)
    assert len(r1.exact_w) == len(fam.layer_names(r1.setup))


@pytest.mark.slow   # test_repro_hessian runs both families through the experiment in the default suite
def test_both_families_run_through_one_driver(tmp_path, monkeypatch):
  """The MLP and the LeNet through the same `run_family`: records, per-setup files, the stopping rule, the
  JSON round trip, and a resume that recomputes only the missing setup, to the same numbers."""
  fig1 = Figure1Settings(2, 4, 4, seed=0, examples=3, target_rel_se=0.5, max_draws=12)
  for fam in (MLPFamily(), LeNetFamily((2, 3), (4, 6))):
    d = str(tmp_path / fam.name)
    part = FamilyRun(fam, fig1, Figure2Settings(0, 2))
    res = run.run_family(d, part)
    data = json.load(open(os.path.join(d, f"{fam.prefix}fig1_records.json")))
    assert data["records"] == res.records and ("layers" in data) == fam.per_layer
    recs = [records.record_from_json(fam, r) for r in res.records]
    assert [r.batch for r in recs] == [1, 4, 1, 4]
    assert [r.setup for r in recs[::2]] == fam.sample_setups(2, 0)
    assert all(list(j)[:len(fam.setup_json(r.setup))] == list(fam.setup_json(r.setup)) for j, r in
               zip(res.records, recs))
    _rounds_ok(fam, recs, fig1, round_draws=4)
    os.remove(os.path.join(d, fam.setup_dir, "0001.json"))
    calls = []
    real = rounds.measure_setup
    monkeypatch.setattr(rounds, "measure_setup", lambda f, s, *a, **k: calls.append(s) or real(f, s, *a, **k))
    again = run.run_family(d, part)
    monkeypatch.setattr(rounds, "measure_setup", real)
    assert calls == [recs[2].setup] and again.resumed == 1
    for a, b in zip(res.records, again.records):
      assert {k: v for k, v in a.items() if k != "seconds"} == {k: v for k, v in b.items() if k != "seconds"}

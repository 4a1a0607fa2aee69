"""The `lenet` experiment: its registered grids, a plan that does not fit the model, its section's statistics,
and its runs through jscale.sweeps into a report section. make_train on the LeNet itself is tested in
tests/models/test_lenet_make_train.py."""
import dataclasses

import numpy as np
import pytest

from jscale import experiments, initializers, report, sweeps  # noqa: F401  (experiments: registers the built-ins)
from jscale.experiments.lenet import config as lenet_config, section as lenet_section
from jscale.experiments.sources.paper import PAPER_SCHEMES
from jscale.experiments.sources.tutorial import TUTORIAL_SIGMAS


def test_plan_refuses_what_does_not_fit_the_model():
  """A model whose input does not fit the data, and a layer_scale of the wrong length."""
  exp = sweeps.get("lenet")
  bad = sweeps.Experiment(**{**{f: getattr(exp, f) for f in ("name", "data", "data_options", "model",
                                                              "optimizer", "epochs")},
                             "model_options": {"image": (4, 4, 1)}})
  with pytest.raises(ValueError, match=r"takes inputs of shape \(4, 4, 1\) \(16 features"):
    sweeps.make_plan(bad, sweeps.product(seed=(0,)))
  with pytest.raises(ValueError, match="needs 5 entries.*conv0/kernel"):
    sweeps.make_plan(exp, sweeps.product(layer_scale=((1.0, 1.0, 1.0, 1.0),)))


def test_lenet_experiment_is_registered_with_its_grids():
  exp = sweeps.get("lenet")
  assert exp.model == "lenet" and exp.data == "digits_raw"
  quick, full = exp.grid("quick"), exp.grid("full")
  assert quick.size == 1 * 8 * 2 and full.size == 2 * 10 * 8
  cells = list(zip(*[full.axes[a] for a in ("init", "sigma")]))
  assert [c for c in cells if c[0] != "normal:1"] == [(s, 1.0) for s in PAPER_SCHEMES]
  # The schemes are the paper's four (jscale.initializers.SCHEMES, arithmetic = xavier).
  alias = {"arithmetic": "xavier"}
  for s in PAPER_SCHEMES:
    assert initializers.get(s).name == initializers.get(initializers.SCHEMES[alias.get(s, s)]).name
  with pytest.raises(ValueError, match="data must be one of"):
    sweeps.get("lenet", data="iris")


def test_section_statistics():
  """Normalisation by each seed's worst scheme, and the G spread, on hand-made numbers."""
  loss = np.array([[2.0, 1.0, 4.0, 1.0], [1.0, np.nan, 1.0, 1.0]])
  np.testing.assert_allclose(lenet_section.normalised_losses(loss)[0], [0.5, 0.25, 1.0, 0.25])
  assert np.all(np.isnan(lenet_section.normalised_losses(loss)[1]))   # a diverged scheme: the worst is unknown
  g = np.array([[0.1, 0.2, 0.4], [0.3, 0.3, 0.3], [0.1, 0.0, 0.2]])
  np.testing.assert_allclose(lenet_section.g_spread(g)[:2], [4.0, 1.0])
  assert np.isnan(lenet_section.g_spread(g)[2])


@pytest.mark.slow
def test_quick_grid_end_to_end(tmp_path):
  """The registered quick grid through jscale.sweeps into a run directory, and its report section."""
  from jscale.report import document
  plan = sweeps.make_plan("lenet", "quick")
  res = sweeps.run(plan, str(tmp_path / "lenet"), progress=False)
  assert res.metrics["test_acc"].shape == (16, lenet_config.EPOCHS)
  assert res.metrics["g_ratio"].shape == (16, lenet_config.EPOCHS, 5)
  assert not res.diverged.any()
  section = lenet_section.build(sweeps.load(str(tmp_path / "lenet")))
  assert {v.cell["sigma"] for v in section.verdicts if "sigma" in v.cell} == set(TUTORIAL_SIGMAS)
  figures = [p.path for p in section.parts if isinstance(p, document.Figure)]
  assert len(figures) == 3 and all(open(f, "rb").read(4) == b"\x89PNG" for f in figures)
  # Minibatch 32 with sigma 0.1 learns the digits; sigma 0.01 starts from vanishing signals and lags behind.
  acc = {(p["init"], p["sigma"]): [] for p in res.points}
  for p, a in zip(res.points, res.final("test_acc")):
    acc[(p["init"], p["sigma"])].append(a)
  assert np.mean(acc[("normal:1", 0.1)]) > 0.9 > np.mean(acc[("normal:1", 0.01)])


def test_full_batch_with_fewer_epochs_than_the_tutorial_is_shown_not_judged(tmp_path):
  """Full batch is one Adam step per epoch: below the tutorial's 200 epochs its cells get no verdict (not like
  with like), while minibatch cells are judged; 2 epochs, one sigma, one seed keep this small."""
  exp = dataclasses.replace(sweeps.get("lenet"), epochs=2, grids={"quick": sweeps.product(batch_size=(None, 32)) *
                                                                   sweeps.zipped(init=("normal:1",), sigma=(0.1,)) *
                                                                   sweeps.product(seed=range(1))})
  sweeps.run(sweeps.make_plan(exp, "quick", devices=1), str(tmp_path / "lenet"), progress=False)
  section = lenet_section.build(sweeps.load(str(tmp_path / "lenet")))
  judged = [(v.cell["batch_size"], v.verdict) for v in section.verdicts if "sigma" in v.cell]
  assert judged == [(32, "too few seeds")]
  md = report.render_section(section, str(tmp_path))
  assert "not judged: 2 Adam steps (tutorial: 200)" in md

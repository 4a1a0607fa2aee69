"""The `convnet_lr` experiment: its registered grids and network, the section's lr choice and paired tests on
hand-made numbers, a tiny run through the engine into its report section, and CIFAR-10 through the TFDS mock."""
import dataclasses

import numpy as np
import pytest
import tensorflow_datasets as tfds

from jscale import datasets, experiments, sweeps  # noqa: F401  (experiments: registers the built-ins)
from jscale.experiments.convnet_lr import section
from jscale.experiments.sources.paper import PAPER_SCHEMES


def test_registered_grids_and_network():
  exp = sweeps.get("convnet_lr")
  full, quick = exp.grid("full"), exp.grid("quick")
  assert full.axes["init"] == PAPER_SCHEMES and quick.axes["init"] == PAPER_SCHEMES
  assert len(full.axes["seed"]) >= 40                          # the paper's 40 seeds per init
  assert all(np.log2(x) == int(np.log2(x)) for x in full.axes["lr"])   # a power-of-two grid
  model = sweeps.experiment.model_of(sweeps.experiment.resolve(exp, full.points()[0]), 10)
  # Mixed kernel sizes, as AlexNet's: 4x4, 3x3, 2x2 convs and linear layers, on 24 x 24 digits.
  assert [s[:2] for s in model.kernel_shapes[:3]] == [(4, 4), (3, 3), (2, 2)]
  assert model.input_shape == (24, 24, 1) and exp.output_std == 0.05
  with pytest.raises(ValueError, match="data must be one of"):
    sweeps.get("convnet_lr", data="mnist")


def test_best_lr_counts_diverged_seeds_as_infinite_loss():
  final = np.array([[[0.5, 0.6, 0.7], [0.1, np.nan, np.nan], [0.3, 0.3, 0.3]]])   # (1 scheme, 3 lrs, 3 seeds)
  assert section.best_lr_index(final).tolist() == [2]    # lr 1 has the lowest single loss but diverged twice


def test_paired_test_against_scipy_and_its_sign():
  from scipy import stats as sps
  rng = np.random.default_rng(0)
  ref = rng.uniform(0.1, 0.3, 30)
  other = ref + 0.05 + 0.01 * rng.standard_normal(30)
  other[3] = np.nan                                      # a diverged seed: its pair is dropped and counted
  t = section.paired_test(other, ref)
  ok = np.isfinite(other)
  assert t["n"] == 29 and t["n_dropped"] == 1
  assert t["p_w"] == pytest.approx(sps.wilcoxon(other[ok] - ref[ok]).pvalue)
  assert t["p_t"] == pytest.approx(sps.ttest_rel(other[ok], ref[ok]).pvalue)
  assert t["ci"][0] < 0.05 < t["ci"][1] and section.significant_better(t)
  assert not section.significant_better(section.paired_test(ref, other))   # geometric higher: not "better"


def test_claim_verdicts():
  sig = {"n": 30, "mean": 0.1, "p_w": 1e-4, "ci": (0.05, 0.15)}
  none = {"n": 30, "mean": 0.01, "p_w": 0.4, "ci": (-0.02, 0.04)}
  tests = lambda e, m, f: {"early": e, "mid": m, "final": f}
  assert section.claim_verdict("arithmetic", tests(sig, sig, sig), 30).verdict == "holds"
  assert section.claim_verdict("arithmetic", tests(sig, sig, none), 30).verdict == "does not hold"
  assert section.claim_verdict("fan_out", tests(none, sig, none), 30).verdict == "holds"
  assert section.claim_verdict("fan_out", tests(sig, sig, sig), 30).verdict == "does not hold"   # "only at mid"
  assert section.claim_verdict("fan_in", tests(sig, sig, sig), 5).verdict == "too few seeds"
  assert section.claim_verdict("fan_in", tests(sig, sig, sig), 30).kind == "transfer"


@pytest.mark.slow
def test_tiny_run_into_its_section(tmp_path):
  """Two epochs, two lrs, 4 seeds: the section builds, with its figure, tables, three claims and a headline."""
  from jscale.report import document
  exp = dataclasses.replace(sweeps.get("convnet_lr"), epochs=2,
                            grids={"t": sweeps.product(init=PAPER_SCHEMES, lr=(0.0625, 0.25), seed=range(4))})
  sweeps.run(sweeps.make_plan(exp, "t"), str(tmp_path / "convnet_lr"), progress=False)
  s = section.build(sweeps.load(str(tmp_path / "convnet_lr")))
  assert [v.claim for v in s.verdicts] == [section.CLAIM_TEXT[k] for k in ("arithmetic", "fan_in", "fan_out")]
  assert all(v.verdict == "too few seeds" for v in s.verdicts)        # 2 judged seeds
  figs = [p for p in s.parts if isinstance(p, document.Figure)]
  assert len(figs) == 1 and "tiny" in figs[0].caption
  assert set(s.headline.numbers) >= {f"{k}.best_log2_lr" for k in PAPER_SCHEMES}


def test_cifar10_through_the_tfds_mock():
  with tfds.testing.mock_data(num_examples=6):
    ds = datasets.get("cifar10", crop=24, n_train=4, standardize=True)
    exp = sweeps.get("convnet_lr", data="cifar10")
  assert ds.x_train.shape == (4, 24 * 24 * 3) and ds.x_test.shape == (6, 24 * 24 * 3)
  assert exp.data == "cifar10" and exp.model_options["image"] == (24, 24, 3)
  np.testing.assert_allclose(ds.x_train.mean(0), 0.0, atol=1e-5)     # z-scored with training statistics

"""`Results` accessors give what config.json records, unchanged, for a sweep (tests/written_sweeps.py: the engine's
own layout) and for a custom experiment's results (`write_results`)."""
import dataclasses
import os

import numpy as np

from jscale import experiments, sweeps  # noqa: F401  (experiments: registers the built-ins)
from written_sweeps import write_sweep


def _ones(p, epochs, layers):
  return {"test_acc": 0.5, "g_ratio": 1.0}


def test_sweep_accessors_read_the_recorded_values(tmp_path):
  exp = dataclasses.replace(sweeps.get("init_schemes"), epochs=1)
  grid = sweeps.product(dataset=("iris", "two_moons"), init=("geometric",), lr=(1.0,), seed=(0, 1))
  r = write_sweep(str(tmp_path / "e"), exp, grid, _ones)
  cfg = r.config
  assert r.is_sweep and r.n_configs == 4
  assert [r.settings(i) for i in range(4)] == cfg["configs"]
  assert r.grid_axes == ["dataset", "init", "lr", "seed"]
  assert len(r.groups) == 2 == len(cfg["groups"])                # one compiled program per data set
  for g, raw in zip(r.groups, cfg["groups"]):
    assert (g.indices, g.widths, g.epochs, g.n_layers, g.x0_sq) == (raw["indices"], raw["spec"]["widths"],
                                                                    raw["epochs"], raw["n_layers"], raw["x0_sq"])
    assert g.input_layernorm is True and g.data_name == raw["data"][0] and g.data_source == raw["data_source"]
  assert [g.data_name for g in r.groups] == ["iris", "two_moons"]
  assert r.widths == [4, 384, 64, 3]                               # the first group's: iris's 4 features, 3 classes
  assert r.data_sources == [g["data_source"] for g in cfg["groups"]]
  assert r.x0_sq == cfg["groups"][0]["x0_sq"]
  assert r.model() is None                                         # the MLP of `hidden`
  assert r.recorded("base_seed") == cfg["base_seed"] and r.recorded("nope", 7) == 7


def test_model_is_rebuilt_from_the_settings(tmp_path):
  grid = sweeps.product(batch_size=(32,)) * sweeps.zipped(init=("geometric",), sigma=(1.0,)) * sweeps.product(seed=(0,))
  r = write_sweep(str(tmp_path / "lenet"), dataclasses.replace(sweeps.get("lenet"), epochs=1), grid, _ones)
  m = r.model()
  assert m.kernel_names == ["conv0/kernel", "conv1/kernel", "dense0/kernel", "dense1/kernel", "dense2/kernel"]
  assert m.input_shape == (8, 8, 1) and r.widths == [64, 10]      # a model's widths: input features, classes


def test_custom_results_accessors(tmp_path):
  d = os.path.join(str(tmp_path), "custom")
  sweeps.write_results(d, axes={"seed": [0, 1]}, metrics={"acc": (("seed",), np.array([0.5, 0.6]))},
                       widths=[2, 8, 2], width=8, seeds=[0, 1])
  r = sweeps.load(d)
  assert not r.is_sweep and r.groups == [] and r.data_sources == []
  assert r.widths == [2, 8, 2] and r.recorded("width") == 8
  assert "seeds" in r.recorded_names and "depth" not in r.recorded_names

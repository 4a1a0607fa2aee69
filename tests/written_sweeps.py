"""Sweep run directories written by the engine's own writer with numbers the test chooses instead of trained ones.

`write_sweep` plans the experiment's grid (`sweeps.make_plan`: the data, the groups, config.json), starts the run
(`store.start_sweep`), writes every chunk (`store.write_chunk`, checksummed) and assembles it (`sweeps.load`):
exactly the files `sweeps.run` leaves, so a report section reads the layout a real run produces, while the
numbers are constructed so that its verdicts and counts are known beforehand. No training, no compilation.
"""
from typing import Callable, Mapping

import numpy as np

from jscale import sweeps
from jscale.sweeps import store
from jscale.train import Metrics


def write_sweep(run_dir: str, experiment, grid,
                values: Callable[[Mapping, int, int], Mapping[str, np.ndarray]]) -> sweeps.Results:
  """`values(point, epochs, n_layers)` gives one configuration's metrics by name, each broadcast to (epochs,)
  (g_ratio: (epochs, n_layers)); a metric it leaves out is NaN, as the engine writes one it did not measure
  (diverged: False). Returns the assembled results."""
  cfg = sweeps.make_plan(experiment, grid, devices=1).to_json()
  store.start_sweep(run_dir, cfg)
  for cid, chunk in enumerate(cfg["chunks"]):
    group = cfg["groups"][chunk["group"]]
    epochs, layers = group["epochs"], group["n_layers"]
    rows = [values(cfg["points"][i], epochs, layers) for i in chunk["indices"]]
    arrays = {}
    for name in Metrics._fields:
      shape = (epochs, layers) if name == "g_ratio" else (epochs,)
      dtype = bool if name == "diverged" else np.float32
      fill = False if name == "diverged" else np.nan
      arrays[name] = np.stack([np.broadcast_to(np.asarray(r.get(name, fill), dtype), shape) for r in rows])
    store.write_chunk(run_dir, cid, chunk["indices"], Metrics(**arrays), seconds=0.0)
  return sweeps.load(run_dir)

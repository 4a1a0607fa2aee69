"""Run scripts/sweep.py's main with small test experiments registered (the tests start it as a subprocess).

  python tests/sweep_driver.py [sweep.py flags...]

Registers `_tiny_a` and `_tiny_b` (training sweeps, seconds each) and `_tiny_custom` (a custom experiment)
beside the built-in experiments, then runs `scripts/sweep.py`'s `main` under `jscale.cli.run`.
`JSCALE_TEST_STOP_AFTER=NAME` stops the process (SystemExit 3, as a kill would) right after experiment
NAME finished, to test that `--resume` finishes the main job.
"""
import importlib.util
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def _register():
  from jscale import experiments  # noqa: F401  (the built-ins first: the main job's order)
  from jscale import sweeps
  from jscale.sweeps import store
  base = dict(data="two_moons", data_options={"n": 120}, hidden=(8,), epochs=3, optimizer="sgd", lr=0.1)
  sweeps.register(sweeps.Experiment(name="_tiny_a", grids={
      "quick": sweeps.product(batch_size=(None, 16), sigma=(0.5, 1e25), seed=range(3))}, **base))
  sweeps.register(sweeps.Experiment(name="_tiny_b", grids={
      "quick": sweeps.product(lr=(0.05, 0.1), seed=range(4))}, **base))

  def run_custom(exp_dir, n=3):
    store.write_results(exp_dir, axes={"i": list(range(n))}, metrics={"square": (("i",), np.arange(n) ** 2)})

  sweeps.register(sweeps.CustomExperiment(name="_tiny_custom", run=run_custom, grids={"quick": {"n": 3}}))


def _load_sweep():
  spec = importlib.util.spec_from_file_location("sweep_cli", os.path.join(HERE, "..", "scripts", "sweep.py"))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def _stop_after(name):
  from jscale import sweeps
  run, resume = sweeps.run, sweeps.resume

  def wrap(f):
    def go(plan_or_dir, *a, **kw):
      res = f(plan_or_dir, *a, **kw)
      exp = plan_or_dir.experiment.name if hasattr(plan_or_dir, "experiment") else os.path.basename(plan_or_dir)
      if exp == name:
        print(f"STOPPED after {name}", flush=True)
        os._exit(3)   # as abrupt as a kill: no cleanup, no report
      return res
    return go

  sweeps.run, sweeps.resume = wrap(run), wrap(resume)


if __name__ == "__main__":
  _register()
  if os.environ.get("JSCALE_TEST_STOP_AFTER"):
    _stop_after(os.environ["JSCALE_TEST_STOP_AFTER"])
  from jscale import cli
  cli.run(lambda: _load_sweep().main(sys.argv[1:]))

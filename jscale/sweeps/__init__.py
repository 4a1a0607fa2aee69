"""Sweeps: hundreds of training configurations in one compiled program, sharded over every device.

Command line (thin wrapper over this package):

  python scripts/sweep.py --grid quick                         # every registered experiment, small grids
  python scripts/sweep.py --experiment sigma --grid full --out runs/sigma_full
  python scripts/sweep.py --resume runs/sigma_full             # finish an interrupted run

Library:

  from jscale import sweeps
  sweeps.names()                                   # registered experiments: ["sigma", ...]
  exp = sweeps.get("sigma")                        # an `Experiment`
  plan = sweeps.make_plan(exp, "quick", devices=None, chunk_size=None, max_bytes=None, group_size=None)
  res = sweeps.run(plan, "runs/sigma_quick")       # -> `Results`; writes the run directory
  res = sweeps.resume("runs/sigma_quick")          # only the chunks not yet on disk
  res = sweeps.load("runs/sigma_quick")
  res.metrics["test_acc"]                          # (n_configs, epochs); dims in res.dims
  res.grid("test_acc")                             # (array (2, 4, 4, 200), ("batch_size", "sigma", "seed", "epoch"))
  res.points[i], res.diverged, res.diverged_epoch  # axis values, divergence mask, first NaN epoch
  print(sweeps.format_table(res.summary()))        # mean +- std over seeds per (batch_size, sigma)

Experiments (`experiment.py`, grids in `grid.py`): an `Experiment` dataclass holds one default for every setting --
  data:      data (a `jscale.datasets` name), data_options, data_seed
  model:     hidden (input/output widths come from the data), activation, input_layernorm, output_std,
             kernel_init, bias_init
  optimizer: optimizer (sgd | momentum | adam | adamw), momentum, lr, weight_decay
  schedule:  epochs, batch_size (None = full batch)
  scales:    init_scale (alias sigma), layer_scale (per layer; axis `layer_scale.<l>` sets one layer),
             input_scale (alias feature_scale), output_scale
  seeds:     seed (per configuration), base_seed (mixed into every key)
-- and `grids={"quick": Grid, "full": Grid}`. A `Grid` is built from `product(axis=values, ...)` and
`zipped(a=..., b=...)` blocks, multiplied with `*`; any setting (or alias) is an axis. Traced axes
(seed, init_scale, layer_scale, input_scale, output_scale, lr, weight_decay, kernel_init) run inside one
program; static axes (batch_size, optimizer, data, hidden, epochs, ...) make one program per value.
Unknown experiments, axes, initializers or bad values raise ValueError before any compute, as does a grid
whose single configuration cannot fit in memory.

Experiments that are not training grids (forward-only statistics, a bespoke loop: `activations`,
`symmetry`) register a `CustomExperiment(name, run, grids)` whose `run(exp_dir, **settings)` writes the
same results format; scripts/sweep.py runs both kinds and `make_plan` refuses a custom one clearly.

Adding an experiment: a folder `jscale/experiments/NAME/` (see `jscale/experiments/__init__.py`) that
registers an `Entry(name, make, section)` with `register`; the engine itself knows no experiment.

Run directory: `store.py` (the only reader and writer of config.json, chunks/*.npz, metrics.npz with named
axes, summary.csv; `files.py`: its atomic file primitives), `lock.py` (one writer per run directory or shard;
stale locks taken over), `results.py` (the `Results` type and its accessors, no file I/O). A grid into chunks sized
to memory: `plan.py` (a frozen `Plan`) with `cost.py` (a configuration's FLOPs and bytes); which devices:
`devices.py`; one compiled program per group, sharded over the devices: `executor.py`; `--shard I/N`: `shards.py`;
the run and resume loop, determinism and multi-host TPU pods (`jax.distributed.initialize()`): `runner.py`; the
main job's jobs (which experiments run, resume, and in which process or shard): `jobs.py`. The training step
itself: `jscale.train`.
"""
from jscale.sweeps.experiment import CustomExperiment, Experiment
from jscale.sweeps.grid import Grid, log_spaced, product, zipped
from jscale.sweeps.registry import Entry, entry, get, names, register, replaced, sections, unregister
from jscale.sweeps.runner import Plan, make_plan, resume, run
from jscale.sweeps.store import Results, ResultsMissing, load, write_results
from jscale.sweeps.summary import format_table

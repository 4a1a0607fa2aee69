"""The source experiments jscale reproduces, one folder each; importing this package registers them.

Each folder `jscale/experiments/<name>/` owns everything about its experiment:
  config.py    `make_experiment(**options)`: grids and protocol; pure: importing it reads no file and no
               environment variable
  run.py       its own run code, when it is not a plain training sweep of the engine (`jscale.sweeps`)
  section.py   `build(results) -> jscale.report.Section`: its part of report.md
  __init__.py  `sweeps.register(sweeps.Entry(name, config.make_experiment, section.build))`

The numbers a section compares against live in `jscale/experiments/sources/`, one module per source document
with its citation (docs/sources.md), so no experiment imports another: two experiments reproducing one source
(sigma and lenet: the tutorial) read the same numbers there. The engine (`jscale.sweeps`) and the report
(`jscale.report`) know no experiment by name. To add one, write its folder and add its name to the import line
below (the order is the order the main job runs and reports them).
"""
from jscale.experiments import (sigma, feature_weight, init_schemes, activations, symmetry, hessian,  # noqa: F401
                                lenet, convnet_lr, resnet, transfer)
from jscale.sweeps import get, names, sections  # noqa: F401  (the registered experiments and their sections)

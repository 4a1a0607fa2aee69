"""The source experiments jscale reproduces, one folder each; importing this package registers them.

Each folder `jscale/experiments/<name>/` owns everything about its experiment:
  config.py    `make_experiment(**options)`: grids, protocol, and the source's numbers with their citation
               (docs/sources.md); pure: importing it reads no file and no environment variable
  run.py       its own run code, when it is not a plain training sweep of the engine (`jscale.sweeps`)
  section.py   `build(results) -> jscale.report.Section`: its part of report.md
  __init__.py  `sweeps.register(sweeps.Entry(name, config.make_experiment, section.build))`

The engine (`jscale.sweeps`) and the report (`jscale.report`) know no experiment by name. To add one,
write its folder and add its name to the import line below (the order is the order the main job runs
and reports them).
"""
from jscale.experiments import (sigma, feature_weight, init_schemes, activations, symmetry, hessian,  # noqa: F401
                                lenet)
from jscale.sweeps import get, names, sections  # noqa: F401  (the registered experiments and their sections)

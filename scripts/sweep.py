"""Run registered experiments and write OUT/report.md: `jscale.cli.sweep` (its docstring has every flag).

  python scripts/sweep.py --grid quick                          # every experiment's quick grid + report.md
  python scripts/sweep.py --grid full --out runs/full           # the whole reproduction (see report.md)
  python scripts/sweep.py --resume runs/full                    # finish an interrupted main job

The same command after `pip install .`, from any directory: `jscale sweep ...` or `python -m jscale sweep ...`.
"""
from jscale.cli.sweep import *  # noqa: F401,F403  (the tests call its functions through this file)
from jscale.cli.sweep import main

if __name__ == "__main__":
  from jscale import cli
  cli.run(main)

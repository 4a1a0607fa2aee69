"""Rebuild `report.md` in a run directory from the experiments' saved results.

  python scripts/report.py RUN_DIR [--experiments sigma symmetry ...]

The tool is `jscale.cli.report` (its docstring has every flag); after `pip install .`, from any directory:
`jscale report ...` or `python -m jscale report ...`.
"""
from jscale.cli.report import *  # noqa: F401,F403  (the tests call its functions through this file)
from jscale.cli.report import main

if __name__ == "__main__":
  from jscale import cli
  cli.run(main)

"""On a borrowed GPU (or TPU): the default test suite, scripts/bench.py and the main job, written to one JSON.

The tool is `jscale.cli.gpu_report` (its docstring has every flag); after `pip install .`, from any directory:
`jscale gpu-report ...` or `python -m jscale gpu-report ...`.
"""
from jscale.cli.gpu_report import *  # noqa: F401,F403  (the tests call its functions through this file)
from jscale.cli.gpu_report import main

if __name__ == "__main__":
  from jscale import cli
  cli.run(main)

"""A measured roofline of the training step on this machine (issue 11's CPU-efficiency question).

The tool is `jscale.cli.roofline` (its docstring has every flag); after `pip install .`, from any directory:
`jscale roofline ...` or `python -m jscale roofline ...`.
"""
from jscale.cli.roofline import *  # noqa: F401,F403  (the tests call its functions through this file)
from jscale.cli.roofline import main

if __name__ == "__main__":
  from jscale import cli
  cli.run(main)

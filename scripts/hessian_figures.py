"""The paper's Hessian figures, one subcommand each (PNG + JSON under --out, by default a new run

The tool is `jscale.cli.hessian_figures` (its docstring has every flag); after `pip install .`, from any directory:
`jscale hessian-figures ...` or `python -m jscale hessian-figures ...`.
"""
from jscale.cli.hessian_figures import *  # noqa: F401,F403  (the tests call its functions through this file)
from jscale.cli.hessian_figures import main

if __name__ == "__main__":
  from jscale import cli
  cli.run(main)

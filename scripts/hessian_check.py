"""Figure 1 summary: predicted / exact average squared singular value of the diagonal Hessian blocks.

The tool is `jscale.cli.hessian_check` (its docstring has every flag); after `pip install .`, from any directory:
`jscale hessian-check ...` or `python -m jscale hessian-check ...`.
"""
from jscale.cli.hessian_check import *  # noqa: F401,F403  (the tests call its functions through this file)
from jscale.cli.hessian_check import main

if __name__ == "__main__":
  from jscale import cli
  cli.run(main)

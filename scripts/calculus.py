"""Use the scaling calculus before you train: `jscale.cli.calculus` (its docstring has every flag).

  python scripts/calculus.py --widths 784,300,100,10 --init geometric
  python scripts/calculus.py --compare he_normal,glorot_normal,geometric
  python scripts/calculus.py --model lenet --init geometric --json

The same command after `pip install .`, from any directory: `jscale calculus ...` or `python -m jscale calculus ...`.
"""
from jscale.cli.calculus import *  # noqa: F401,F403  (the tests call its functions through this file)
from jscale.cli.calculus import main

if __name__ == "__main__":
  from jscale import cli
  cli.run(main)

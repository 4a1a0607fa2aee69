"""Benchmark the sweep engine against a per-configuration loop and the machine's matmul peak.

The tool is `jscale.cli.bench` (its docstring has every flag); after `pip install .`, from any directory:
`jscale bench ...` or `python -m jscale bench ...`.
"""
from jscale.cli.bench import *  # noqa: F401,F403  (the tests call its functions through this file)
from jscale.cli.bench import main

if __name__ == "__main__":
  from jscale import cli
  cli.run(main)

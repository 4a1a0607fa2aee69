"""Store a full run's summaries in results/main and rewrite the numbers README and docs/sources.md quote.

  python scripts/quote.py RUN_DIR

The tool is `jscale.cli.quote` (its docstring has every flag); after `pip install .`, from any directory:
`jscale quote ...` or `python -m jscale quote ...`.
"""
from jscale.cli.quote import main

if __name__ == "__main__":
  from jscale import cli
  cli.run(main)

"""`python -m jscale TOOL ...`: the `jscale` command (jscale.cli) without the console script."""
from jscale.cli import main

main()

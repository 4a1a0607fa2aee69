"""The command lines' argument parser: argparse with jscale's refusal format. Plain argparse answers a mistyped
flag value (`--devices abc`) with its whole usage block and `__main__.py: error: ...` under `python -m jscale`;
every other refusal of jscale's is one `error: ...` line and exit status 2, so the parser's are too. `prog` is the
command the user typed (`jscale sweep`, `scripts/sweep.py`), so `--help` shows a command that works."""
from __future__ import annotations

import argparse
import re
import sys

from jscale import cli


class Parser(argparse.ArgumentParser):
  def __init__(self, *args, **kwargs):
    if cli.current_prog is not None:
      kwargs.setdefault("prog", cli.current_prog)
    super().__init__(*args, **kwargs)
    # argparse takes a value that starts with '-' for a flag unless it looks like one negative number, so
    # `--widths -5,3` got "expected one argument" instead of the widths' own message; no jscale flag looks like a
    # number, so any '-digit...' token is a value.
    self._negative_number_matcher = re.compile(r"^-\d[\d.,eE+-]*$")

  def changed(self, args, dests) -> list[str]:
    """The flags among `dests` (argparse dest names) that `args` sets away from their defaults, as `--flag`, in the
    order given: what a mode refuses when it would silently ignore them."""
    return [f"--{d.replace('_', '-')}" for d in dests if getattr(args, d) != self.get_default(d)]

  def error(self, message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(cli.USAGE_ERROR)

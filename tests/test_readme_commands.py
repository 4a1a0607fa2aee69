"""Every command line the README shows (`python scripts/TOOL.py ...`, `jscale TOOL ...`) parses with the tool's
own parser as written, and every `--grid NAME` and `--experiment NAME` it names exists: a renamed flag or grid
would otherwise leave a newcomer's first copy-and-paste failing. Parsing only: nothing runs."""
from __future__ import annotations

import importlib
import os
import re
import shlex

import pytest

from jscale import cli
from jscale.cli import parser

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
COMMAND = re.compile(r"(?:python scripts/(\w+)\.py|(?:python -m )?jscale ([a-z][\w-]*))([^`\n#&|]*)")


def readme_commands(text: str) -> list[tuple[str, list[str]]]:
  """(tool, argv) of every distinct command in `text` that names a tool (`jscale TOOL ...` placeholders are
  skipped)."""
  tools = {m: t for t, m in cli.TOOLS.items()}
  found = []
  for script, tool, rest in COMMAND.findall(text):
    name = tools.get(script) if script else (tool if tool in cli.TOOLS else None)
    if name is not None and "..." not in rest and (name, shlex.split(rest.strip())) not in found:
      found.append((name, shlex.split(rest.strip())))
  return found


class _Parsed(Exception):
  pass


def parse_only(tool: str, argv: list[str]):
  """The namespace the tool's parser makes of `argv` (it stops there: no validation past parsing, no compute)."""
  original = parser.Parser.parse_args

  def stop(self, args=None, namespace=None):
    raise _Parsed(original(self, args, namespace))

  parser.Parser.parse_args = stop
  try:
    importlib.import_module(f"jscale.cli.{cli.TOOLS[tool]}").main(argv)
  except _Parsed as p:
    return p.args[0]
  finally:
    parser.Parser.parse_args = original
  raise AssertionError(f"jscale {tool} never parsed its arguments")


with open(README, encoding="utf-8") as _f:
  TEXT = _f.read()
COMMANDS = readme_commands(TEXT)


def test_the_readme_shows_commands_of_every_kind():
  assert {t for t, _ in COMMANDS} >= {"sweep", "report", "calculus", "hessian-check", "hessian-figures", "bench",
                                      "roofline", "gpu-report", "quote"}


def test_extraction():
  assert readme_commands("run `python scripts/sweep.py --grid quick  # x` or `jscale calculus --json`, "
                         "`python -m jscale TOOL ...`") == [("sweep", ["--grid", "quick"]), ("calculus", ["--json"])]


@pytest.mark.parametrize("tool,argv", COMMANDS, ids=[f"{t} {' '.join(a)}" for t, a in COMMANDS])
def test_readme_command_parses(tool, argv, capsys):
  try:
    parse_only(tool, argv)
  except SystemExit as e:   # the parser's refusal: `error: ...` on stderr
    pytest.fail(f"README's `jscale {tool} {' '.join(argv)}` is refused: {capsys.readouterr().err.strip()}")


def test_readme_grids_and_experiments_exist():
  from jscale import sweeps
  # the built-in experiments (a test's own, registered for its module, start with "_")
  grids = {name: set(sweeps.get(name).grids) for name in sweeps.names() if not name.startswith("_")}
  for tool, argv in COMMANDS:
    if tool == "sweep":
      args = parse_only(tool, argv)
      for name in (args.experiment or list(grids)):
        assert name in grids, f"README: `--experiment {name}`"
        assert (args.grid or "quick") in grids[name], f"README: experiment {name} has no grid {args.grid!r}"
  named = set(re.findall(r"--grid\s+`?(\w+)", TEXT))
  missing = named - set().union(*grids.values())
  assert not missing, f"README names grids no experiment has: {sorted(missing)}"

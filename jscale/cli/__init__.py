"""jscale's command lines: `jscale TOOL ...` (installed with the package), `python -m jscale TOOL ...`, or the
thin `scripts/TOOL.py` wrappers in a checkout; the same code and flags every way.

  jscale sweep --grid quick             run experiments, write report.md          (jscale.cli.sweep)
  jscale report RUN_DIR                 rebuild report.md                          (jscale.cli.report)
  jscale quote RUN_DIR                  store a full run in results/main, rewrite the quoted numbers (jscale.cli.quote)
  jscale calculus --widths 784,300,10   the scaling calculus of one network        (jscale.cli.calculus)
  jscale hessian-check / hessian-figures   Figures 1-2 against exact Hessians
  jscale bench / roofline               the engine's speed, where a step's time goes
  jscale gpu-report                     suite + bench + main job on a borrowed accelerator -> one JSON

How they end: a refused input is one line `error: ...` on stderr and exit status 2. jscale validates every input
before any compute and raises ValueError (TypeError for a wrong type) with a message naming the parameter, the
value and what is allowed; a script's user should see that message, not a Python traceback. A flag the chosen
mode would ignore is refused too. Ctrl-C ends a tool with one line `interrupted: ...` (the sweep's names the
`--resume` command that finishes the run) and exit status 130. `JSCALE_TRACEBACK=1` shows the traceback too
(for debugging jscale itself). Every tool runs under jscale's precision policy (`jscale.precision.apply_default`:
float32 matmuls at "highest" unless the user chose)."""
from __future__ import annotations

import importlib
import os
import sys
from typing import Callable

USAGE_ERROR = 2
# tool name -> module with `main(argv)`; `scripts/<module>.py` is the same tool in a checkout.
TOOLS = {"sweep": "sweep", "report": "report", "calculus": "calculus", "hessian-check": "hessian_check",
         "hessian-figures": "hessian_figures", "bench": "bench", "roofline": "roofline", "quote": "quote",
         "gpu-report": "gpu_report"}
# How the running tool was invoked (`jscale sweep`), for its --help and error lines (jscale.cli.parser); None: the
# script's own name, argparse's default.
current_prog: str | None = None


INTERRUPTED = 130   # the shell's status for a process ended by Ctrl-C (128 + SIGINT)


class Interrupted(KeyboardInterrupt):
  """Ctrl-C, carrying what the tool kept and how to go on (`run` prints it on one line)."""


def run(main: Callable[[], int | None]) -> None:
  """`sys.exit(main())` under jscale's precision policy, turning validation errors into `error: ...` and exit
  status 2, and Ctrl-C into one `interrupted` line and status 130 (a traceback would bury what to do next)."""
  from jscale import precision
  try:
    precision.apply_default()
    code = main()
  except (ValueError, TypeError, OSError) as e:   # OSError: a path the OS refused (a file where a folder goes, ...)
    if os.environ.get("JSCALE_TRACEBACK"):
      raise
    print(f"error: {e}", file=sys.stderr)
    sys.exit(USAGE_ERROR)
  except KeyboardInterrupt as e:
    if os.environ.get("JSCALE_TRACEBACK"):
      raise
    print(f"\ninterrupted{': ' + str(e) if str(e) else ''}", file=sys.stderr)
    sys.exit(INTERRUPTED)
  sys.exit(code if isinstance(code, int) else 0)   # a tool may return its results (bench: a dict)


def main(argv=None) -> None:
  """The `jscale` console command: `jscale TOOL [flags]`."""
  argv = list(sys.argv[1:] if argv is None else argv)
  if not argv or argv[0] in ("-h", "--help"):
    print(__doc__.split("\n\n")[0] + "\n\ntools: " + ", ".join(TOOLS))
    sys.exit(0 if argv else USAGE_ERROR)
  tool, rest = argv[0], argv[1:]
  if tool not in TOOLS and tool.replace("_", "-") in TOOLS:   # the scripts' spelling: scripts/hessian_check.py
    tool = tool.replace("_", "-")
  if tool not in TOOLS:
    print(f"error: unknown tool {tool!r}; valid: {', '.join(TOOLS)}", file=sys.stderr)
    sys.exit(USAGE_ERROR)
  module = importlib.import_module(f"jscale.cli.{TOOLS[tool]}")
  extra = {"prog": "jscale sweep"} if tool == "sweep" else {}   # how run.json records the command
  global current_prog
  current_prog = f"jscale {tool}"
  try:
    run(lambda: module.main(rest, **extra))
  finally:
    current_prog = None

"""Rebuild `report.md` in a run directory from the experiments' saved results.

  python scripts/report.py RUN_DIR [--experiments sigma symmetry ...]

RUN_DIR is what scripts/sweep.py wrote with --out: one sub-directory per experiment. Each experiment's
results are read from RUN_DIR/<experiment>/ by the results store (`jscale/sweeps/store.py`); missing ones
are listed as "not run". One experiment's own folder (RUN_DIR/<experiment>, holding config.json) is refused
with the command to use instead. Exits 1 if any section failed to build, 2 for a bad input.
"""
import os
import sys

from jscale import experiments, report
from jscale.report.document import check_not_experiment_dir
from jscale.cli.parser import Parser



def check_run_dir(run_dir: str, names) -> None:
  """Refuse, before writing anything, a path that is not a run directory holding some experiment's results."""
  if not os.path.isdir(run_dir):
    raise ValueError(f"run directory {run_dir!r} " + ("is not a directory" if os.path.exists(run_dir) else
                                                      "does not exist"))
  check_not_experiment_dir(run_dir)   # one experiment's folder -> the command to use instead
  if not any(os.path.isfile(os.path.join(run_dir, d, "config.json")) for d in os.listdir(run_dir)):
    raise ValueError(f"{run_dir!r} holds no experiment's results (no <experiment>/config.json inside; "
                     f"registered experiments: {', '.join(names)}); point it at the --out directory of "
                     "scripts/sweep.py")


def main(argv=None) -> int:
  sections = experiments.sections()
  ap = Parser(description=__doc__.splitlines()[0])
  ap.add_argument("run_dir", help="the run directory (one sub-directory per experiment)")
  ap.add_argument("--experiments", nargs="+", default=None,
                  help=f"sections to build, in order (default: all registered: {' '.join(sections)})")
  ap.add_argument("--title", default="jscale: the source experiments, reproduced")
  args = ap.parse_args(argv)
  if args.experiments is not None:
    unknown = [n for n in args.experiments if n not in sections]
    if unknown:
      raise ValueError(f"--experiments: no report section registered for {unknown}; registered: {list(sections)}")
    sections = {n: sections[n] for n in args.experiments}
  check_run_dir(args.run_dir, list(sections))
  return report.build_report(args.run_dir, sections, title=args.title).print_summary()


if __name__ == "__main__":
  from jscale import cli
  cli.run(main)

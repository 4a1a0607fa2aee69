"""Rebuild `report.md` in a run directory from the experiments' saved results.

  python scripts/report.py RUN_DIR [--experiments sigma symmetry ...]

Each experiment's results are read from RUN_DIR/<experiment>/ by the results store
(`jscale/sweeps/store.py`); missing ones are listed as "not run". Exits 1 if any section failed to build.
"""
import argparse
import sys

from jscale import experiments, report


def main(argv=None) -> int:
  sections = experiments.sections()
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("run_dir", help="the run directory (one sub-directory per experiment)")
  ap.add_argument("--experiments", nargs="+", default=None,
                  help=f"sections to build, in order (default: all registered: {' '.join(sections)})")
  ap.add_argument("--title", default="jscale: the source experiments, reproduced")
  args = ap.parse_args(argv)
  if args.experiments is not None:
    unknown = [n for n in args.experiments if n not in sections]
    if unknown:
      ap.error(f"no report section registered for {unknown}; registered: {list(sections)}")
    sections = {n: sections[n] for n in args.experiments}
  try:
    res = report.build_report(args.run_dir, sections, title=args.title)
  except ValueError as e:
    ap.error(str(e))
  return res.print_summary()


if __name__ == "__main__":
  from jscale import cli
  cli.run(main)

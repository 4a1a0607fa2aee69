"""Store a full run's summaries in the repository and rewrite the numbers the docs quote from them.

  python scripts/quote.py RUN_DIR [--store results/main] [--readme README.md] [--sources docs/sources.md]

RUN_DIR is the main job's --out directory, after its report.md was written (each experiment's headline.json and
verdicts.json come from the report). Replaces STORE with this run's small JSON summaries, then rewrites the
quoted blocks of README ("Reproductions") and docs/sources.md from STORE only. Exits 2 on a bad input (nothing
written).
"""
import os
import sys

from jscale.report import quote
from jscale.cli.parser import Parser



def rewrite(path: str, block: str) -> None:
  with open(path, encoding="utf-8") as f:
    text = f.read()
  new = quote.replace_block(text, block, path)
  if new != text:
    with open(path + ".tmp", "w", encoding="utf-8") as f:
      f.write(new)
    os.replace(path + ".tmp", path)


def main(argv=None) -> int:
  ap = Parser(description=__doc__.splitlines()[0])
  ap.add_argument("run_dir", help="the full main job's run directory (with its report.md)")
  ap.add_argument("--store", default="results/main", help="where the summaries are kept (default results/main)")
  ap.add_argument("--readme", default="README.md")
  ap.add_argument("--sources", default="docs/sources.md")
  ap.add_argument("--any-grid", action="store_true", help="store a run that is not the full grid (tests)")
  a = ap.parse_args(argv)
  try:
    if not os.path.isdir(a.run_dir):
      raise ValueError(f"run directory {a.run_dir!r} " + ("is not a directory" if os.path.exists(a.run_dir) else
                                                          "does not exist"))
    for flag, p in (("--readme", a.readme), ("--sources", a.sources)):
      if not os.path.isfile(p):   # the defaults are the checkout's: relative to the repository root
        raise ValueError(f"{flag} {p}: no such file (run from the repository root, or pass --readme, --sources "
                         "and --store)")
      with open(p, encoding="utf-8") as f:
        quote.replace_block(f.read(), "", p)   # both have their markers, before anything is written
    names = quote.store_run(a.run_dir, a.store, require_grid=None if a.any_grid else "full")
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  rewrite(a.readme, quote.render_table(a.store))
  rewrite(a.sources, quote.render_lines(a.store))
  print(f"stored {len(names)} experiments ({', '.join(names)}) in {a.store}; rewrote {a.readme} and {a.sources}")
  return 0


if __name__ == "__main__":
  sys.exit(main())

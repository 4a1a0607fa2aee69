"""`report.md`: a title, a summary of what ran, then one section per experiment, from saved results.

The report is a generic builder: it knows no experiment. The caller passes the section builders
(`jscale.sweeps.sections()` after `import jscale.experiments`: every registered experiment's), each
`builder(results) -> Section` where `results` is that experiment's `jscale.sweeps.Results`, loaded
from RUN_DIR/<experiment>/ by the results store. A `Section` is a title and a list of parts: markdown
text (str), `Table(header, rows, caption)` or `Figure(path, caption)`, and its verdicts against a source's
numbers (written to RUN_DIR/<experiment>/verdicts.json). An experiment whose results are
missing is listed as "not run"; a builder that raises is listed as "failed" with its error (the rest of
the report is still written, and `build_report` says which ones failed).
"""
from __future__ import annotations

import dataclasses
import os
import sys
import traceback
from typing import Any, Callable, Mapping, NamedTuple, Sequence

from jscale import host
from jscale.report.format import fmt
from jscale.sweeps import store
from jscale.sweeps.compile_clock import compile_wall, share_text


class Table(NamedTuple):
  header: Sequence[str]
  rows: Sequence[Sequence[Any]]
  caption: str = ""


class Figure(NamedTuple):
  path: str
  caption: str = ""


class Headline(NamedTuple):
  """What README's "Reproductions" table and docs/sources.md quote from an experiment: `what` (the protocol in a
  few words: source, seeds), `measured` (its headline numbers, as text written from this run's numbers), `source`
  (the source's numbers or claim), `numbers` (the same headline numbers by name, for tests and tools).
  `build_report` writes it to RUN_DIR/<experiment>/headline.json; `jscale quote` stores and quotes it."""
  what: str
  measured: str
  source: str
  numbers: Mapping[str, float] = {}

  def to_json(self) -> dict:
    return {"what": self.what, "measured": self.measured, "source": self.source,
            "numbers": {k: (None if v is None or v != v else float(v)) for k, v in dict(self.numbers).items()}}


@dataclasses.dataclass
class Section:
  """`verdicts`: the section's comparisons with a source's numbers (`stats.Verdict`, `stats.Claim`), None when the
  experiment has no source numbers. `build_report` writes them to RUN_DIR/<experiment>/verdicts.json.
  `headline`: the numbers the docs quote (`Headline`), None when the section gives none."""
  title: str
  parts: list = dataclasses.field(default_factory=list)
  verdicts: list | None = None
  headline: Headline | None = None


def render_table(t: Table) -> str:
  head = "| " + " | ".join(str(h) for h in t.header) + " |"
  sep = "|" + "|".join("---" for _ in t.header) + "|"
  body = ["| " + " | ".join(fmt(c) for c in row) + " |" for row in t.rows]
  cap = [f"*{t.caption}*", ""] if t.caption else []
  return "\n".join(cap + [head, sep] + body)


def render_section(s: Section, report_dir: str) -> str:
  out = [f"## {s.title}", ""]
  for p in s.parts:
    if isinstance(p, Table):
      out += [render_table(p), ""]
    elif isinstance(p, Figure):
      rel = os.path.relpath(p.path, report_dir).replace(os.sep, "/")
      # The caption is printed once, under the figure; the alt text only names the file.
      out += [f"![{os.path.splitext(os.path.basename(p.path))[0]}]({rel})", ""]
      if p.caption:
        out += [f"*{p.caption}*", ""]
    elif isinstance(p, str):
      out += [p, ""]
    else:
      raise TypeError(f"section {s.title!r}: a part must be str, Table or Figure, got {type(p).__name__}")
  return "\n".join(out)


def _run_info_text(run_dir: str) -> str:
  runs = store.run_info(run_dir)
  if not runs:
    return ""
  lines = ["Written by:"]
  for r in runs:
    where = host.summary(r.get("host"))   # the low digits of float32 results follow the CPU (jscale/host.py)
    lines.append(f"- `{r.get('command', '?')}` (grid {r.get('grid', '?')}): {fmt(r.get('wall_time_s'), 1)} s "
                 f"wall time on {', '.join(r.get('devices') or ['?'])}" + (f" ({where})" if where else ""))
    if r.get("compile"):   # recorded since issue 23: JAX's compilation events (jscale.sweeps.compile_clock)
      lines.append(f"  - {share_text(r['compile'])}; per experiment: " + "; ".join(
          f"{name} {compile_wall(t):.1f} s compiling {t['programs']} programs of {t['wall_s']:.1f} s"
          for name, t in (r.get("experiment_times") or {}).items()))
  return "\n".join(lines)


VERDICTS_JSON = "verdicts.json"
HEADLINE_JSON = "headline.json"


def write_headline(exp_dir: str, headline: Headline | None) -> None:
  """EXP_DIR/headline.json (atomically); a section without a headline removes a stale file."""
  path = os.path.join(exp_dir, HEADLINE_JSON)
  if headline is None:
    if os.path.exists(path):
      os.remove(path)
    return
  store.write_json(path, headline.to_json())


def write_verdicts(exp_dir: str, verdicts) -> str | None:
  """EXP_DIR/verdicts.json (atomically) from a section's `Verdict`s; a section without source numbers
  (verdicts None) removes a stale file, so a file there always belongs to the report beside it."""
  path = os.path.join(exp_dir, VERDICTS_JSON)
  if verdicts is None:
    if os.path.exists(path):
      os.remove(path)
    return None
  store.write_json(path, [v.to_json() for v in verdicts])
  return path


def _tally(verdicts, kind: str) -> str:
  """The section's verdicts of one kind (stats.REPRODUCTION or stats.TRANSFER; a verdict without a kind is a
  reproduction) counted by word."""
  if verdicts is None:
    return "-"
  counts = {}
  for v in verdicts:
    if getattr(v, "kind", "reproduction") == kind:
      counts[v.verdict] = counts.get(v.verdict, 0) + 1
  return ", ".join(f"{k} {n}" for k, n in counts.items()) or "none"


class ReportResult(NamedTuple):
  path: str
  built: list
  not_run: list
  failed: dict   # experiment -> error text

  def print_summary(self, note: str = "") -> int:
    """Say where report.md is and what it holds (failures on stderr); return the exit status."""
    print(f"wrote {os.path.abspath(self.path)}{note}: built {self.built or 'none'}; "
          f"not run {self.not_run or 'none'}; failed {list(self.failed) or 'none'}")
    for name, err in self.failed.items():
      print(f"  {name}: {err}", file=sys.stderr)
    return 1 if self.failed else 0


def check_not_experiment_dir(run_dir: str) -> None:
  """ValueError when `run_dir` is one experiment's folder (it holds config.json) rather than a run directory
  holding one folder per experiment: every section would read "not run" and say nothing of the results."""
  cfg = os.path.join(run_dir, store.CONFIG_JSON)
  if not os.path.isfile(cfg):
    return
  try:
    name = store.read_json(cfg)["experiment"]
  except (ValueError, AttributeError, KeyError, TypeError) as e:
    raise ValueError(f"{run_dir!r} holds a config.json that names no experiment ({type(e).__name__}: {e}): a "
                     "damaged experiment folder, not a run directory (point report.py at the --out directory of "
                     "scripts/sweep.py)") from None
  parent = os.path.dirname(os.path.abspath(run_dir))
  raise ValueError(f"{run_dir!r} is one experiment's folder (its config.json is experiment {name!r}), not a run "
                   f"directory; build its section with: python scripts/report.py {parent} --experiments {name}")


def build_report(run_dir: str, sections: Mapping[str, Callable[[store.Results], Section]], *,
                 title: str = "jscale: the source experiments, reproduced", preamble: str = "") -> ReportResult:
  """Write RUN_DIR/report.md: a summary, then one section per entry of `sections` (in its order)."""
  if not os.path.isdir(run_dir):
    raise ValueError(f"run directory {run_dir!r} does not exist")
  check_not_experiment_dir(run_dir)
  if not sections:
    raise ValueError("no report sections given")
  names = list(sections)
  built, not_run, failed, bodies, tally = [], [], {}, [], {}
  for name in names:
    exp_dir = os.path.join(run_dir, name)
    verdicts, headline = None, None
    try:
      section = sections[name](store.load(exp_dir))
      bodies.append(render_section(section, run_dir))
      verdicts, headline = section.verdicts, section.headline
      built.append(name)
    except store.ResultsMissing as e:
      not_run.append(name)
      bodies.append(f"## {name}\n\n**not run**: {e}.\n")
    except Exception as e:  # noqa: BLE001 -- one broken section must not hide the others
      failed[name] = "".join(traceback.format_exception_only(type(e), e)).strip()
      bodies.append(f"## {name}\n\n**failed to build this section**: `{failed[name]}`\n")
    write_verdicts(exp_dir, verdicts)
    if os.path.isdir(exp_dir):
      write_headline(exp_dir, headline)
    tally[name] = (_tally(verdicts, "reproduction"), _tally(verdicts, "transfer"))
  extra = sorted(d for d in os.listdir(run_dir) if os.path.isdir(os.path.join(run_dir, d))
                 and d not in names and os.path.isfile(os.path.join(run_dir, d, "config.json")))
  summary = [f"# {title}", "", preamble, "", _run_info_text(run_dir), "",
             f"Run directory: `{os.path.abspath(run_dir)}`. Every number below was measured in this run "
             "(seeds and grid stated per section); source documents' numbers are printed beside them.", "",
             "Verdicts (each experiment's verdicts.json): a *reproduction* compares a source's run with runs in "
             "like settings; a *transfer test* asks whether a source's claim carries over to other settings (another "
             "network, data set or scale: holds / does not hold). They are counted apart.", "",
             "| experiment | status | reproductions | transfer tests |", "|---|---|---|---|"]
  summary += [f"| {n} | {'built' if n in built else 'not run' if n in not_run else 'FAILED'} | {tally[n][0]} | "
              f"{tally[n][1]} |" for n in names]
  if extra:
    summary += ["", f"Results without a registered section: {', '.join(extra)}."]
  path = os.path.join(run_dir, "report.md")
  store.write_text(path, "\n".join(summary) + "\n\n" + "\n".join(bodies))
  return ReportResult(path, built, not_run, failed)

"""One source for the numbers the docs quote: a full run's small summaries kept in the repository, and the
README / docs/sources.md blocks written from them.

  store_run(run_dir, store_dir)   copy each experiment's headline.json and verdicts.json (what `build_report`
                                  wrote) and the run's record into STORE_DIR/<experiment>.json, run.json
  render_table(store_dir)         README's "Reproductions" table, from the store only
  render_lines(store_dir)         docs/sources.md's measured numbers, from the store only
  replace_block(text, block)      the text with the block between BEGIN and END replaced

Nothing here knows an experiment by name: each section's `Headline` says what it quotes. `jscale quote RUN_DIR`
(jscale/cli/quote.py) does all of it in one command; tests/report/test_quote.py fails when README or
docs/sources.md quote anything else than the store.
"""
from __future__ import annotations

import glob
import os

from jscale import host
from jscale.report.document import HEADLINE_JSON, VERDICTS_JSON
from jscale.sweeps import compile_clock, store

BEGIN = "<!-- quoted: begin (written by `python scripts/quote.py RUN_DIR` from results/main; do not edit) -->"
END = "<!-- quoted: end -->"
RUN = "run.json"


def store_run(run_dir: str, store_dir: str, *, require_grid: str | None = "full") -> list[str]:
  """Copy the run's per-experiment headline and verdicts (small JSON) into `store_dir`, replacing what was
  there; returns the experiments stored. ValueError before writing anything when the run has no report yet, is
  incomplete (an experiment of its recorded plan missing, or one without its finished results), or when an
  experiment's grid is not `require_grid` (None: any)."""
  if not os.path.isdir(run_dir):
    raise ValueError(f"run directory {run_dir!r} does not exist")
  exps = sorted(d for d in os.listdir(run_dir) if os.path.isfile(os.path.join(run_dir, d, store.CONFIG_JSON)))
  if not exps:
    raise ValueError(f"{run_dir!r} holds no experiment's results (no <experiment>/config.json)")
  if not os.path.isfile(os.path.join(run_dir, "report.md")):
    raise ValueError(f"{run_dir!r} has no report.md: run `python scripts/report.py {run_dir}` first (it writes "
                     "the headline.json files quoted here)")
  # Storing replaces the whole store: a run killed part way (then reported) would drop the unfinished
  # experiments' stored numbers, so only a complete run is stored.
  configs = {n: store.read_json(os.path.join(run_dir, n, store.CONFIG_JSON)) for n in exps}
  planned = [e.get("name") for e in (store.main_plan(run_dir) or {}).get("experiments", [])]
  unfinished = [n for n in planned if n not in exps] + [n for n in exps if "metrics" not in configs[n]]
  if unfinished:
    raise ValueError(f"{run_dir!r} is incomplete ({', '.join(unfinished)} not finished): finish it with `python "
                     f"scripts/sweep.py --resume {run_dir}` and `python scripts/report.py {run_dir}`, then quote it")
  records = {}
  for name in exps:
    d = os.path.join(run_dir, name)
    cfg = configs[name]
    grid = cfg.get("grid_name") or (cfg.get("grid") or {}).get("name") or cfg.get("grid_label")
    grid = grid if isinstance(grid, str) else _run_grid(run_dir, name)
    if require_grid is not None and grid != require_grid:
      raise ValueError(f"{name}: grid {grid!r}, not {require_grid!r}: the docs quote the full main job only "
                       "(pass --any-grid to store it anyway)")
    rec = {"experiment": name, "grid": grid}
    for key, fname in (("headline", HEADLINE_JSON), ("verdicts", VERDICTS_JSON)):
      path = os.path.join(d, fname)
      rec[key] = store.read_json(path) if os.path.isfile(path) else None
    records[name] = rec
  os.makedirs(store_dir, exist_ok=True)
  for old in glob.glob(os.path.join(store_dir, "*.json")):
    os.remove(old)
  info = store.run_info(run_dir)
  store.write_json(os.path.join(store_dir, RUN), {
      "experiments": exps, "invocations": [{k: i.get(k) for k in ("command", "grid", "wall_time_s", "devices",
                                                                  "compile", "experiment_times", "host") if k in i}
                                           for i in info]})
  for name, rec in records.items():
    store.write_json(os.path.join(store_dir, f"{name}.json"), rec)
  return exps


def _run_grid(run_dir: str, name: str):
  plan = store.main_plan(run_dir) or {}
  for e in plan.get("experiments", []):
    if e.get("name") == name:
      return e.get("grid")
  grids = {i.get("grid") for i in store.run_info(run_dir)}
  return grids.pop() if len(grids) == 1 else None


def load_store(store_dir: str) -> tuple[dict | None, list[dict]]:
  """(run record, per-experiment records in the run's order); (None, []) for an empty or missing store."""
  path = os.path.join(store_dir, RUN)
  if not os.path.isfile(path):
    return None, []
  run = store.read_json(path)
  return run, [store.read_json(os.path.join(store_dir, f"{n}.json")) for n in run["experiments"]
               if os.path.isfile(os.path.join(store_dir, f"{n}.json"))]


def tally(verdicts, kind: str) -> str:
  if verdicts is None:
    return "-"
  counts = {}
  for v in verdicts:
    if v.get("kind", "reproduction") == kind:
      counts[v["verdict"]] = counts.get(v["verdict"], 0) + 1
  return ", ".join(f"{k} {n}" for k, n in counts.items()) or "none"


def _cell(text: str) -> str:
  return str(text).replace("|", "\\|").replace("\n", " ")


def _run_line(run: dict) -> str:
  inv = run.get("invocations") or [{}]
  wall = sum(float(i.get("wall_time_s") or 0) for i in inv)
  cmds = "; ".join(f"`{i.get('command')}`" for i in inv if i.get("command"))
  devs = ", ".join(sorted({d for i in inv for d in (i.get("devices") or [])}))
  hosts = "; ".join(dict.fromkeys(host.summary(i.get("host")) for i in inv if i.get("host")))
  line = (f"Stored run (`results/main/`): {cmds or 'command not recorded'}, {wall:.0f} s wall time on {devs or '?'}"
          + (f" ({hosts})" if hosts else "") + ".")
  return line + _times_line(inv, wall)


def _times_line(invocations, wall: float) -> str:
  """Per-experiment wall time, slowest first, and the compile share (where the run recorded them)."""
  times, programs, compile_s, compile_w = {}, 0, 0.0, 0.0
  for i in invocations:
    for name, t in (i.get("experiment_times") or {}).items():
      times[name] = times.get(name, 0.0) + float(t.get("wall_s") or 0.0)
    c = i.get("compile") or {}
    programs += int(c.get("programs") or 0)
    compile_s += float(c.get("compile_s") or 0.0)
    compile_w += compile_clock.compile_wall(c)
  if not times:
    return ""
  # the share is of wall time: seconds with a compilation running (threads compile beside the computing)
  notes = ([f"{100 * compile_w / wall:.0f}%"] if wall > 0 else []) + (
      [f"{compile_s:.0f} s summed over threads"] if compile_s - compile_w >= 0.5 else [])
  share = f" ({'; '.join(notes)})" if notes else ""
  per = ", ".join(f"{n} {t:.0f} s" for n, t in sorted(times.items(), key=lambda kv: -kv[1]))
  return f" By experiment: {per}; compiling {compile_w:.0f} s over {programs} programs{share}."


def render_table(store_dir: str) -> str:
  """README's table: one row per stored experiment (its headline, and its verdicts counted by kind)."""
  run, recs = load_store(store_dir)
  if run is None:
    return ("No stored run yet: after `python scripts/sweep.py --grid full --out runs/full`, "
            "`python scripts/quote.py runs/full` stores its summaries in `results/main/` and writes this table.")
  rows = ["| experiment | protocol | measured | source | reproductions | transfer tests |",
          "|---|---|---|---|---|---|"]
  for r in recs:
    h = r.get("headline") or {}
    rows.append(f"| `{r['experiment']}` | {_cell(h.get('what', '-'))} | {_cell(h.get('measured', '-'))} | "
                f"{_cell(h.get('source', '-'))} | {tally(r.get('verdicts'), 'reproduction')} | "
                f"{tally(r.get('verdicts'), 'transfer')} |")
  return _run_line(run) + "\n\n" + "\n".join(rows)


def render_lines(store_dir: str) -> str:
  """docs/sources.md's measured numbers: one line per stored experiment with a headline."""
  run, recs = load_store(store_dir)
  if run is None:
    return "No stored run yet (see README, \"Reproductions\")."
  lines = [_run_line(run), ""]
  lines += [f"- `{r['experiment']}` ({r['headline']['what']}): {r['headline']['measured']}" for r in recs
            if r.get("headline")]
  return "\n".join(lines)


def replace_block(text: str, block: str, where: str = "the file") -> str:
  """`text` with everything between BEGIN and END replaced by `block`; ValueError when the markers are missing."""
  i, j = text.find(BEGIN), text.find(END)
  if i < 0 or j < i:
    raise ValueError(f"{where} has no quoted block ({BEGIN} ... {END})")
  return text[:i + len(BEGIN)] + "\n" + block.strip() + "\n" + text[j:]


def quoted_block(text: str) -> str:
  """What lies between BEGIN and END ('' when there is no block)."""
  i, j = text.find(BEGIN), text.find(END)
  return "" if i < 0 or j < i else text[i + len(BEGIN):j].strip()

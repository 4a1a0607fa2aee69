"""The quoted numbers: README's and docs/sources.md's blocks are what results/main (the stored full run) renders,
and `scripts/quote.py RUN_DIR` stores a run and rewrites both blocks in one command."""
import json
import os
import shutil

import pytest

from jscale.cli import quote as quote_cli
from jscale.report import quote

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STORE = os.path.join(ROOT, "results", "main")


@pytest.mark.parametrize("doc, render", [("README.md", quote.render_table), ("docs/sources.md", quote.render_lines)])
def test_docs_quote_exactly_the_stored_run(doc, render):
  """Edit a quoted number by hand, or store a new run without rewriting the docs, and this fails."""
  with open(os.path.join(ROOT, doc), encoding="utf-8") as f:
    text = f.read()
  assert quote.BEGIN in text and quote.END in text
  assert quote.quoted_block(text) == render(STORE).strip()


def _fake_run(tmp_path, grid="full"):
  run = tmp_path / "run"
  for name, headline, verdicts in (
      ("alpha", {"what": "proto A", "measured": "acc 0.912", "source": "0.95", "numbers": {"acc": 0.912}},
       [{"verdict": "reproduces", "kind": "reproduction"}, {"verdict": "does not hold", "kind": "transfer"}]),
      ("beta", None, None)):
    d = run / name
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"grid_name": grid, "axes": {}, "metrics": {}}))   # finished
    if headline:
      (d / "headline.json").write_text(json.dumps(headline))
    if verdicts:
      (d / "verdicts.json").write_text(json.dumps(verdicts))
  (run / "report.md").write_text("# report\n")
  (run / "run.json").write_text(json.dumps({"invocations": [{
      "command": "sweep --grid full", "grid": grid, "wall_time_s": 12.0, "devices": ["cpu:0"],
      "compile": {"programs": 7, "compile_s": 3.0},
      "experiment_times": {"alpha": {"wall_s": 2.5}, "beta": {"wall_s": 9.4}},
      "host": {"cpu": "Xeon X", "cpu_family_model": "6/85", "logical_cpus": 2, "jax": "0.9.9"}}]}))
  return str(run)


def _docs(tmp_path):
  paths = []
  for name in ("README.md", "sources.md"):
    p = tmp_path / name
    p.write_text(f"intro\n\n{quote.BEGIN}\nold numbers 0.999\n{quote.END}\n\noutro\n")
    paths.append(str(p))
  return paths


def test_one_command_stores_the_run_and_rewrites_both_blocks(tmp_path):
  run = _fake_run(tmp_path)
  readme, sources = _docs(tmp_path)
  store = str(tmp_path / "store")
  assert quote_cli.main([run, "--store", store, "--readme", readme, "--sources", sources]) == 0
  assert sorted(os.listdir(store)) == ["alpha.json", "beta.json", "run.json"]
  text = open(readme).read()
  assert "0.999" not in text and text.startswith("intro") and text.rstrip().endswith("outro")
  assert "| `alpha` | proto A | acc 0.912 | 0.95 | reproduces 1 | does not hold 1 |" in text
  assert "| `beta` | - | - | - | - | - |" in text
  assert "`sweep --grid full`, 12 s wall time on cpu:0 (Xeon X (family/model 6/85), 2 logical CPUs, jax 0.9.9)." in text
  assert json.load(open(os.path.join(store, "run.json")))["invocations"][0]["host"]["cpu"] == "Xeon X"  # stored too
  # The run's per-experiment times, slowest first, and its compile share (3 s of 12) come along.
  assert "By experiment: beta 9 s, alpha 2 s; compiling 3 s over 7 programs (25%)." in text
  assert "- `alpha` (proto A): acc 0.912" in open(sources).read()
  # A second run replaces the store: nothing of the first is left behind.
  shutil.rmtree(os.path.join(run, "beta"))
  assert quote_cli.main([run, "--store", store, "--readme", readme, "--sources", sources]) == 0
  assert sorted(os.listdir(store)) == ["alpha.json", "run.json"]
  assert "`beta`" not in open(readme).read()


def test_refuses_quick_runs_missing_reports_and_missing_markers_before_writing(tmp_path, capsys):
  readme, sources = _docs(tmp_path)
  store = str(tmp_path / "store")
  quick = _fake_run(tmp_path / "q", grid="quick")
  assert quote_cli.main([quick, "--store", store, "--readme", readme, "--sources", sources]) == 2
  assert "not 'full'" in capsys.readouterr().err and not os.path.exists(store)
  assert quote_cli.main([quick, "--store", store, "--readme", readme, "--sources", sources, "--any-grid"]) == 0
  run = _fake_run(tmp_path / "r")
  os.remove(os.path.join(run, "report.md"))
  assert quote_cli.main([run, "--store", store, "--readme", readme, "--sources", sources]) == 2
  assert "no report.md" in capsys.readouterr().err
  bare = tmp_path / "bare.md"
  bare.write_text("no markers\n")
  run = _fake_run(tmp_path / "s")
  assert quote_cli.main([run, "--store", store, "--readme", str(bare), "--sources", sources]) == 2
  assert "no quoted block" in capsys.readouterr().err


def test_refuses_an_incomplete_run_before_touching_the_store(tmp_path, capsys):
  """A full run killed part way and then reported must not replace the store: the unfinished experiments' stored
  numbers would be lost. Unfinished: an experiment without its results' "metrics" (a sweep with chunks left), or
  one of the recorded plan's experiments that never started."""
  readme, sources = _docs(tmp_path)
  store_dir = tmp_path / "store"
  store_dir.mkdir()
  (store_dir / "gamma.json").write_text("{}")   # a previous run's experiment, which must survive
  args = ["--store", str(store_dir), "--readme", readme, "--sources", sources]
  run = _fake_run(tmp_path / "a")
  cfg = os.path.join(run, "beta", "config.json")
  json.dump({"grid_name": "full"}, open(cfg, "w"))   # beta started, its chunks not all done
  assert quote_cli.main([run, *args]) == 2
  assert "incomplete (beta not finished)" in capsys.readouterr().err
  run = _fake_run(tmp_path / "b")
  with open(os.path.join(run, "run.json")) as f:
    info = json.load(f)
  info["plan"] = {"experiments": [{"name": n, "grid": "full"} for n in ("alpha", "beta", "gamma")]}
  with open(os.path.join(run, "run.json"), "w") as f:
    json.dump(info, f)
  assert quote_cli.main([run, *args]) == 2
  assert "incomplete (gamma not finished)" in capsys.readouterr().err
  assert sorted(os.listdir(store_dir)) == ["gamma.json"]
  shutil.rmtree(os.path.join(run, "alpha"))   # a plan whose every experiment finished is stored
  info["plan"]["experiments"] = info["plan"]["experiments"][1:2]
  with open(os.path.join(run, "run.json"), "w") as f:
    json.dump(info, f)
  assert quote_cli.main([run, *args]) == 0
  assert sorted(os.listdir(store_dir)) == ["beta.json", "run.json"]

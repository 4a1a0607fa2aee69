"""What a new user meets beyond a refused flag (the bad flags themselves are test_cli_battery.py's): Ctrl-C ends a
tool with one line saying what was kept and how to go on, and a sweep interrupted mid-run is finished by
`--resume`; `--help` shows the command that was typed; a data set that is not on disk is one `error:` line. All
in-process, through `jscale.cli.main` as the console command runs it."""
from __future__ import annotations

import os
import sys
import types

import numpy as np
import pytest

from jscale import cli, sweeps
from jscale.sweeps import store


def _lines(err: str) -> list[str]:
  return [line for line in err.splitlines() if line.strip()]


def _main(run):
  """`run()`, a KeyboardInterrupt that escapes failing the test (not stopping the session as Ctrl-C would)."""
  try:
    run()
  except KeyboardInterrupt:
    pytest.fail("Ctrl-C escaped the tool as a KeyboardInterrupt: a traceback for the user")


def test_ctrl_c_mid_sweep_says_how_to_resume_and_resume_finishes(tmp_path, capsys, monkeypatch):
  monkeypatch.delenv("JSCALE_TRACEBACK", raising=False)
  calls = []

  def run(exp_dir, n=2):
    calls.append(n)
    if len(calls) == 1:
      raise KeyboardInterrupt   # the user's Ctrl-C, in the middle of the experiment
    store.write_results(exp_dir, axes={"i": list(range(n))}, metrics={"v": (("i",), np.arange(n))})

  sweeps.register(sweeps.CustomExperiment(name="_ctrl_c", run=run, grids={"quick": {"n": 2}}))
  out = str(tmp_path / "run")
  try:
    with pytest.raises(SystemExit) as e:
      _main(lambda: cli.main(["sweep", "--experiment", "_ctrl_c", "--out", out, "--no-progress", "--no-report"]))
    err = capsys.readouterr().err
    assert e.value.code == 130 and "Traceback" not in err, err
    assert _lines(err) == [f"interrupted: the finished chunks are kept in {out}; finish the run with "
                           f"`jscale sweep --resume {out}`"]
    with pytest.raises(SystemExit) as e:
      cli.main(["sweep", "--resume", out, "--no-progress", "--no-report"])
    assert e.value.code == 0, capsys.readouterr().err
    assert calls == [2, 2] and store.finished_grid(os.path.join(out, "_ctrl_c")) == "quick"
  finally:
    sweeps.unregister("_ctrl_c")


def test_ctrl_c_in_any_tool_is_one_line_and_status_130(capsys, monkeypatch):
  monkeypatch.delenv("JSCALE_TRACEBACK", raising=False)

  def interrupted():
    raise KeyboardInterrupt

  with pytest.raises(SystemExit) as e:
    _main(lambda: cli.run(interrupted))
  assert e.value.code == 130 and _lines(capsys.readouterr().err) == ["interrupted"]


@pytest.mark.parametrize("tool", sorted(cli.TOOLS))
def test_help_shows_the_command_typed(tool, capsys):
  # argparse names the program after sys.argv[0]: `python -m jscale sweep --help` printed `usage: __main__.py`.
  with pytest.raises(SystemExit) as e:
    cli.main([tool, "--help"])
  assert e.value.code == 0
  assert capsys.readouterr().out.startswith(f"usage: jscale {tool} ")


def test_calculus_data_not_on_disk_is_one_error_line(capsys, monkeypatch):
  # A tfds data set that was never prepared used to end the tool through SystemExit: exit status 1, no `error:`.
  def load(*a, **kw):
    raise AssertionError("Dataset mnist: could not find data in /nowhere.\nPlease call download_and_prepare().")

  monkeypatch.setitem(sys.modules, "tensorflow_datasets", types.SimpleNamespace(load=load))
  with pytest.raises(SystemExit) as e:
    cli.main(["calculus", "--data", "mnist", "--widths", "784,4", "--batch", "2"])
  lines = _lines(capsys.readouterr().err)
  assert e.value.code == 2 and len(lines) == 1, lines
  assert lines[0].startswith("error: --data mnist: could not read it") and "download=True" in lines[0]


def test_hessian_figures_keeps_an_earlier_runs_results(tmp_path, capsys):
  # A second `fig2 --out D` used to overwrite D/fig2.json, an earlier run's exact Hessians.
  (tmp_path / "fig2.json").write_text('{"earlier": 1}')
  with pytest.raises(SystemExit) as e:
    cli.main(["hessian-figures", "fig2", "--out", str(tmp_path)])
  lines = _lines(capsys.readouterr().err)
  assert e.value.code == 2 and len(lines) == 1 and "already holds fig2's results" in lines[0], lines
  assert (tmp_path / "fig2.json").read_text() == '{"earlier": 1}' and os.listdir(tmp_path) == ["fig2.json"]

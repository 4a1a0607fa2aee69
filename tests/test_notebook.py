"""notebooks/colab_tpu.ipynb executes end to end on CPU with the quick grid (so it cannot rot), and what it
prints is what its run saved: one summary row per (batch size, sigma) with the means of the saved metrics."""
import math
import os

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

from jscale import sweeps

NOTEBOOK = os.path.join(os.path.dirname(__file__), "..", "notebooks", "colab_tpu.ipynb")


def _printed_table(outputs: str) -> tuple[list[str], list[list[str]]]:
  """The summary table the notebook prints (`sweeps.format_table`): header cells and data rows."""
  lines = outputs.splitlines()
  start = next(i for i, l in enumerate(lines) if l.split()[:3] == ["batch_size", "sigma", "n"])
  head = lines[start].split()
  rows = []
  for line in lines[start + 2:]:
    cells = line.split()
    if len(cells) < len(head) or not cells[2].isdigit():
      break
    rows.append(cells)
  return head, rows


@pytest.mark.slow  # 19-20 s: trains the real quick grid for 200 epochs; the default suite was over 5 minutes
def test_colab_notebook_runs_on_cpu_quick_grid(tmp_path, monkeypatch):
  monkeypatch.setenv("JSCALE_NOTEBOOK_GRID", "quick")
  monkeypatch.setenv("JSCALE_NOTEBOOK_OUT", str(tmp_path / "run"))
  monkeypatch.setenv("MPLBACKEND", "Agg")
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  # The real quick grid trains 200 epochs: there compute, not compiling, dominates, so XLA optimises as usual
  # (tests/conftest.py turns its optimisation passes off for the small test programs).
  monkeypatch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", "").replace("--xla_backend_optimization_level=0", ""))
  nb = nbformat.read(NOTEBOOK, as_version=4)
  NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
  outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
  run = tmp_path / "run"
  assert {"config.json", "metrics.npz", "summary.csv"} <= set(os.listdir(run))
  res = sweeps.load(str(run))
  # The quick grid: 2 batch sizes x 4 sigmas x 4 seeds, every configuration's metrics saved.
  assert res.n_configs == 32
  acc = res.final("test_acc")
  assert acc.shape[0] == 32
  ok = ~res.diverged
  assert np.all(np.isfinite(acc[ok])) and np.all((acc[ok] >= 0) & (acc[ok] <= 1))
  assert np.all(np.isfinite(res.final("train_loss")[ok]))
  # The printed table: one row per (batch size, sigma) = 8, their n adding up to the 32 configurations,
  # the diverged counts matching the saved flags, and each row's test accuracy the mean of the saved ones.
  head, rows = _printed_table(outputs)
  assert len(rows) == 8, rows
  n_col, div_col, acc_col = head.index("n"), head.index("diverged"), head.index("test_acc")
  assert sum(int(r[n_col]) for r in rows) == 32
  assert sum(int(r[div_col]) for r in rows) == int(res.diverged.sum())
  grid, dims = res.grid("test_acc")
  assert dims == ("batch_size", "sigma", "seed", "epoch")
  final = grid[..., -1]
  batch_sizes, sigmas = res.axes["batch_size"], res.axes["sigma"]
  for row in rows:
    b = batch_sizes.index(None if row[0] == "full" else int(row[0]))
    k = next(i for i, x in enumerate(sigmas) if math.isclose(x, float(row[1]), rel_tol=1e-3))
    v = final[b, k][np.isfinite(final[b, k])]
    assert int(row[n_col]) == final.shape[2]
    assert math.isclose(float(row[acc_col]), v.mean(), rel_tol=1e-3), (row, v)   # printed to 4 digits
  assert f"results in {os.path.abspath(run)}" in outputs

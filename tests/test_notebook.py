"""notebooks/colab_tpu.ipynb executes end to end on CPU with the quick grid (so it cannot rot)."""
import os

import nbformat
from nbclient import NotebookClient

NOTEBOOK = os.path.join(os.path.dirname(__file__), "..", "notebooks", "colab_tpu.ipynb")


def test_colab_notebook_runs_on_cpu_quick_grid(tmp_path, monkeypatch):
  monkeypatch.setenv("JSCALE_NOTEBOOK_GRID", "quick")
  monkeypatch.setenv("JSCALE_NOTEBOOK_OUT", str(tmp_path / "run"))
  monkeypatch.setenv("MPLBACKEND", "Agg")
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  nb = nbformat.read(NOTEBOOK, as_version=4)
  NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
  outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
  assert "32 configurations" in outputs
  assert "diverged" in outputs and "results in" in outputs
  assert sorted(os.listdir(tmp_path / "run")) == ["chunks", "config.json", "metrics.npz", "summary.csv"]

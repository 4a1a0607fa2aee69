"""The Colab notebook's install cell: a clear error when there is nothing to install from, the right pip
target otherwise (its cells run here without installing anything)."""
import json
import os

import pytest

NOTEBOOK = os.path.join(os.path.dirname(__file__), "..", "notebooks", "colab_tpu.ipynb")


def _install_namespace(repo_url: str) -> dict:
  cells = json.load(open(NOTEBOOK))["cells"]
  src = "".join(cells[2]["source"])
  # Define the cell's functions without running its install step.
  ns = {"REPO_URL": repo_url}
  exec(src.split("\nif importlib.util.find_spec")[0], ns)
  return ns


def test_nothing_to_install_from_is_a_clear_error(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)      # not a checkout, no upload
  with pytest.raises(RuntimeError, match="set REPO_URL"):
    _install_namespace("")["install_target"]()


def test_targets(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert _install_namespace("https://example.org/me/jscale.git")["install_target"]() == [
      "git+https://example.org/me/jscale.git"]
  (tmp_path / "jscale-0.1.0-py3-none-any.whl").write_bytes(b"")
  assert _install_namespace("")["install_target"]() == ["jscale-0.1.0-py3-none-any.whl"]
  monkeypatch.chdir(os.path.dirname(NOTEBOOK))  # inside the repository: an editable install of it
  target = _install_namespace("")["install_target"]()
  assert target[0] == "-e" and os.path.isfile(os.path.join(target[1], "pyproject.toml"))


def test_no_placeholder_url():
  assert "OWNER" not in open(NOTEBOOK).read()

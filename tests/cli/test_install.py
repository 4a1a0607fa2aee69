"""After a plain (not editable) `pip install .` the command lines work from any directory: `python -m jscale TOOL`
and the `jscale` console command run the installed package, every subpackage included (experiments, their
sources, the command lines), not the checkout."""
import os
import subprocess
import sys
import sysconfig

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
  target = tmp_path_factory.mktemp("install") / "site"
  out = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), REPO],
                       capture_output=True, text=True)
  assert out.returncode == 0, out.stderr[-3000:]
  return str(target)


def _run(installed, args, cwd):
  # -S: no site processing, so the checkout's editable install is invisible; the dependencies come from this
  # interpreter's site-packages, put on the path by hand after the installed copy.
  path = os.pathsep.join([installed, sysconfig.get_paths()["purelib"]])
  env = {**os.environ, "PYTHONPATH": path, "JAX_PLATFORMS": "cpu"}
  return subprocess.run([sys.executable, "-S", *args], capture_output=True, text=True, cwd=cwd, env=env)


def test_installed_package_is_the_one_imported(installed, tmp_path):
  out = _run(installed, ["-c", "import jscale, jscale.experiments, jscale.cli.sweep; print(jscale.__file__)"],
             tmp_path)
  assert out.returncode == 0, out.stderr
  assert out.stdout.strip().startswith(installed)


def test_python_m_jscale_from_another_directory(installed, tmp_path):
  out = _run(installed, ["-m", "jscale", "--help"], tmp_path)
  assert out.returncode == 0 and "sweep" in out.stdout and "calculus" in out.stdout, out.stderr
  out = _run(installed, ["-m", "jscale", "sweep", "--experiment", "nope", "--out", str(tmp_path / "o")], tmp_path)
  assert out.returncode == 2 and out.stderr.startswith("error: unknown experiment 'nope'"), out.stderr
  out = _run(installed, ["-m", "jscale", "report", str(tmp_path / "missing")], tmp_path)
  assert out.returncode == 2 and "does not exist" in out.stderr, out.stderr


def test_console_script_is_installed(installed):
  script = os.path.join(installed, "bin", "jscale")
  assert os.path.isfile(script)
  assert "jscale.cli" in open(script).read()

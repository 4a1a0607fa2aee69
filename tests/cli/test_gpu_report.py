"""scripts/gpu_report.py: one command runs the suite, bench and the main job and writes one JSON. Tried here on
the CPU with tiny sizes (a GPU is not needed to check the plumbing); its flags are refused clearly."""
import importlib.util
import json
import os

import pytest

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # tests/


def _tool():
  spec = importlib.util.spec_from_file_location("gpu_report_cli", os.path.join(HERE, "..", "scripts", "gpu_report.py"))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def test_device_file_names():
  tool = _tool()
  assert tool.device_slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
  assert tool.device_slug("cpu") == "cpu" and tool.device_slug("  ") == "device"


@pytest.mark.parametrize("flags,says", [(["--skip", "tests,lunch"], "--skip must name"),
                                        (["--timeout-s", "0"], "--timeout-s must be"),
                                        (["--bench-args", "--sizes '2"], "--bench-args")])
def test_bad_flags(flags, says):
  with pytest.raises(ValueError, match=says):
    _tool().parse_args(flags)


def test_bench_is_asked_for_json():
  args = _tool().parse_args(["--bench-args", "--sizes 2"])
  assert args.bench_args == ["--sizes", "2", "--json"]


@pytest.mark.slow
def test_tiny_report_on_the_cpu(tmp_path):
  """Every step runs (a one-file suite, bench at 2 configurations, one quick experiment) and lands in the JSON
  with its outcome and figures."""
  out = tmp_path / "report.json"
  code = _tool().main(["--out", str(out), "--pytest-args", "tests/test_checks.py -q",
                       "--bench-args", "--sizes 2 --mlp-sizes 2 --epochs 2 --mlp-train 64 --repeats 1 --no-naive "
                                       "--no-progress",
                       "--grid", "quick", "--experiment", "activations", "--timeout-s", "900"])
  report = json.loads(out.read_text())
  assert code == 0, report
  assert report["platform"] == "cpu" and report["device"]
  tests = report["steps"]["tests"]
  assert tests["passed"] and tests["counts"]["passed"] > 0
  results = report["steps"]["bench"]["figures"]["results"]
  assert {r["network"] for r in results} == {"moons", "mlp784"} and all(r["speedup_vs_loop"] > 0 for r in results)
  main = report["steps"]["main"]
  assert main["returncode"] == 0 and main["wall_time_s"] > 0
  assert main["compile"]["programs"] > 0 and "activations" in main["experiment_times"]

"""scripts/bench.py runs on both networks with the new executor layout, reports the matmul peak of the
precision in use, prints a table (not a dict) without --json, and refuses bad flags clearly."""
import importlib.util
import json
import os

import pytest

from jscale import precision

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # tests/


def _bench():
  spec = importlib.util.spec_from_file_location("bench_cli", os.path.join(HERE, "..", "scripts", "bench.py"))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


TINY = ["--sizes", "2", "--mlp-sizes", "1", "--epochs", "2", "--mlp-train", "64", "--repeats", "1", "--no-naive"]


@pytest.mark.slow
def test_both_networks_table_and_json(capsys):
  bench = _bench()
  try:
    out = bench.main(TINY + ["--precision", "highest"])
    table = capsys.readouterr().out
    js = bench.main(TINY + ["--precision", "highest", "--json"])
    printed = json.loads(capsys.readouterr().out)
  finally:
    precision.set_precision("highest")
  assert "engine s" in table and "vs loop" in table and "{" not in table   # a table, not a Python dict
  for res in (out, js, printed):
    assert {r["network"] for r in res["results"]} == {"moons", "mlp784"}
    assert res["networks"]["mlp784"]["widths"] == [784, 300, 100, 10]
    assert res["networks"]["mlp784"]["batch_size"] == 32 and "synthetic" in res["networks"]["mlp784"]["data"]
    assert set(res["matmul_peak_gflops"]) == {"highest"}
    for r in res["results"]:
      assert r["precision"] == "highest" and r["t_engine_s"] > 0 and r["speedup_vs_loop"] > 0
      # fraction_of_peak is rounded to 3 decimals (abs error <= 5e-4) and useful_gflops / peak to 2 decimals each
      assert r["fraction_of_peak"] == pytest.approx(r["useful_gflops"] / r["matmul_peak_gflops"], rel=0.02, abs=5e-4)
      assert r["cpu_engine_s"] > 0 and r["cpu_loop_s"] > 0
      assert r["loop_ratio_ceiling"] == pytest.approx(r["cpu_loop_s"] * res["n_devices"] / r["cpu_engine_s"], rel=0.01)
      assert r["speedup_bound"] == pytest.approx(r["t_loop_s"] * res["n_devices"] / r["cpu_engine_s"], rel=0.01)
      # one repeat: the cores busy are that repeat's CPU over its wall, so the bound and the speedup agree through them
      assert r["engine_cores_busy"] > 0 and r["loop_cores_busy"] > 0
      assert r["speedup_vs_loop"] == pytest.approx(
          r["speedup_bound"] * r["engine_cores_busy"] / res["n_devices"], rel=0.02)
      cpu_peak = res["matmul_peak_gflops_per_cpu_second"]["highest"]
      assert r["cpu_fraction_of_peak"] == pytest.approx(r["useful_gflops_per_cpu_second"] / cpu_peak, rel=0.02, abs=5e-4)
      # the same FLOPs over the engine's CPU seconds and over its wall seconds
      assert r["useful_gflops_per_cpu_second"] * r["cpu_engine_s"] == pytest.approx(
          r["useful_gflops"] * r["t_engine_s"], rel=0.02)


@pytest.mark.parametrize("flags,says", [(["--network", "resnet"], "--network must name"),
                                        (["--sizes", "0"], "--sizes must be"),
                                        (["--mlp-train", "10"], "--mlp-train must be")])
def test_bad_flags(flags, says):
  with pytest.raises(ValueError, match=says):
    _bench().parse_args(flags)


def test_table_row_format():
  bench = _bench()
  row = {"network": "moons", "precision": "highest", "configs": 64, "t_engine_s": 1.5, "t_loop_s": 3.0,
         "t_naive_vmap_s": None, "speedup_vs_loop": 2.0, "speedup_vs_naive_vmap": None, "useful_gflops": 80.0,
         "matmul_peak_gflops": 160.0, "fraction_of_peak": 0.5}
  line = bench.format_row(row)
  assert line.split() == ["moons", "highest", "64", "1.500", "3.000", "-", "2.00x", "-", "80.0", "160.0", "0.500"]
  assert len(bench.format_header()) == len(line)   # header and rows share the column widths

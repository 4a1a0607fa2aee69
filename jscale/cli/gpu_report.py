"""Every speed question about a borrowed accelerator, answered by one command and one JSON file.

  python scripts/gpu_report.py                         # on the GPU machine: suite, bench, main job -> one JSON
  python scripts/gpu_report.py --out results/bench/h100.json
  python scripts/gpu_report.py --pytest-args "tests/test_checks.py" --bench-args "--sizes 2 --mlp-sizes 1 \\
      --epochs 2 --mlp-train 64 --repeats 1" --grid quick --experiment activations   # a try-out on a CPU

Three steps, each in its own process (so one that fails or hangs is recorded and the next still runs):
  1. the default test suite (`python -m pytest tests -q -x`, or --pytest-args): its exit status, the
     pytest summary line and its seconds;
  2. `scripts/bench.py --json` with --bench-args (default: both networks, both precisions, 256, 1024 and
     4096 configurations, the per-config loop timed on 64 and scaled): every figure bench reports;
  3. the main job `scripts/sweep.py --grid full` (--grid, --experiment) into a fresh directory: its wall
     time and the compile accounting of its run.json (programs, compile and other seconds per experiment).
The JSON (default `results/bench/<device>.json`, the device name in lower case with non-alphanumerics as
'-') holds the device, jax's version, the load average before and after, each step's outcome and figures.
--skip STEP (tests, bench, main) leaves a step out. Each step has a time limit (--timeout-s, per step).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time

from jscale.cli import paths, sweep
from jscale.cli.parser import Parser

STEPS = ("tests", "bench", "main")
BENCH_ARGS = ("--sizes 256,1024,4096 --mlp-sizes 256,1024,4096 --precision auto --skip-loop-above 64 "
              "--naive-up-to 4096")


def parse_args(argv=None):
  p = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--out", default=None, help="the JSON to write (default results/bench/<device>.json)")
  p.add_argument("--pytest-args", default="tests -q -x", help="what the suite step runs (default 'tests -q -x')")
  p.add_argument("--bench-args", default=BENCH_ARGS, help=f"scripts/bench.py's flags (default '{BENCH_ARGS}')")
  p.add_argument("--grid", default="full", help="the main job's grid (default full)")
  p.add_argument("--experiment", default=None, help="the main job's experiments (default: every one)")
  p.add_argument("--skip", default="", help=f"comma-separated steps to leave out: {', '.join(STEPS)}")
  p.add_argument("--timeout-s", type=float, default=3600.0, help="time limit of each step (default 3600 s)")
  args = p.parse_args(argv)
  args.skip = {s.strip() for s in args.skip.split(",") if s.strip()}
  bad = args.skip - set(STEPS)
  if bad:
    raise ValueError(f"--skip must name some of {', '.join(STEPS)}, got {', '.join(sorted(bad))}")
  if not args.timeout_s > 0:
    raise ValueError(f"--timeout-s must be > 0, got {args.timeout_s}")
  for flag in ("pytest_args", "bench_args"):
    try:
      setattr(args, flag, shlex.split(getattr(args, flag)))
    except ValueError as e:
      raise ValueError(f"--{flag.replace('_', '-')}: {e}") from None
  if "--json" not in args.bench_args:
    args.bench_args.append("--json")
  # What would fail at the end of an hour of steps is refused now: a --out the OS would not take (the whole
  # report lost), bench's flags (step 2), the main job's experiments (step 3; its grid: check_main_job).
  if args.out is not None:
    paths.out_file(args.out, "--out")
  if "bench" not in args.skip:
    from jscale.cli import bench
    try:
      bench.parse_args(args.bench_args)
    except ValueError as e:
      raise ValueError(f"--bench-args: {e}") from None
  if args.experiment is not None and "main" not in args.skip:
    sweep.check_experiment_names([args.experiment])
  return args


def check_main_job(args, root) -> None:
  """Every selected experiment has --grid: asked in a process of its own on the CPU (building the experiments
  starts JAX, which in this process would hold the GPU's memory while the steps run)."""
  code = ("import sys; from jscale.cli.sweep import experiment_names; from jscale.sweeps import registry; "
          "names = experiment_names([sys.argv[2]]) or registry.names(); "
          "[registry.get(n).grid(sys.argv[1]) for n in names]")
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
  p = subprocess.run([sys.executable, "-c", code, args.grid, args.experiment or ""], capture_output=True, text=True,
                     timeout=args.timeout_s, env=env)
  if p.returncode != 0:
    last = (p.stderr.strip().splitlines() or ["(no output)"])[-1]
    raise ValueError(f"--grid {args.grid}: {last.partition(': ')[2] or last}")


def device_slug(kind: str) -> str:
  """'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3' (a file name)."""
  return re.sub(r"[^a-z0-9]+", "-", kind.lower()).strip("-") or "device"


def device_info(timeout_s: float) -> dict:
  """The device, asked in a process of its own: JAX in this one would hold the GPU's memory (it preallocates)
  while the steps run."""
  code = ("import json, jax; d = jax.devices()[0]; print(json.dumps({'device': str(d.device_kind), "
          "'platform': d.platform, 'n_devices': jax.device_count(), 'jax_version': jax.__version__}))")
  p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout_s)
  if p.returncode != 0:
    raise ValueError(f"cannot start JAX to name the device: {p.stderr.strip().splitlines()[-1:]}")
  return json.loads(p.stdout.strip().splitlines()[-1])


def _run(cmd, timeout_s, env=None) -> dict:
  """A step's process: exit status, seconds, stdout, and the tail of stderr."""
  t = time.perf_counter()
  try:
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
    out = {"returncode": p.returncode, "stdout": p.stdout, "stderr_tail": p.stderr[-4000:]}
  except subprocess.TimeoutExpired as e:
    out = {"returncode": None, "timed_out": True, "stdout": e.stdout or "",
           "stderr_tail": (e.stderr or "")[-4000:] if isinstance(e.stderr, str) else ""}
  out["seconds"] = round(time.perf_counter() - t, 1)
  out["command"] = " ".join(shlex.quote(c) for c in cmd)
  return out


def _say(msg: str) -> None:
  print(f"gpu-report: {msg}", file=sys.stderr, flush=True)


def run_tests(args, root) -> dict:
  r = _run([sys.executable, "-m", "pytest", *args.pytest_args], args.timeout_s)
  lines = [ln for ln in r.pop("stdout").splitlines() if ln.strip()]
  summary = next((ln.strip("= ") for ln in reversed(lines) if re.search(r"\b(passed|failed|error)", ln)), None)
  counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", summary or "")}
  return {**r, "passed": r["returncode"] == 0, "summary": summary, "counts": counts}


def run_bench(args, root) -> dict:
  r = _run([sys.executable, os.path.join(root, "scripts", "bench.py"), *args.bench_args], args.timeout_s)
  out = r.pop("stdout")
  try:
    r["figures"] = json.loads(out)
  except json.JSONDecodeError:
    r["figures"], r["stdout_tail"] = None, out[-4000:]
  return r


def run_main_job(args, root, run_dir) -> dict:
  cmd = [sys.executable, os.path.join(root, "scripts", "sweep.py"), "--grid", args.grid, "--out", run_dir,
         "--no-progress"]
  if args.experiment:
    cmd += ["--experiment", args.experiment]
  r = _run(cmd, args.timeout_s)
  r["stdout_tail"] = r.pop("stdout")[-4000:]
  path = os.path.join(run_dir, "run.json")
  if os.path.isfile(path):
    with open(path) as f:
      inv = (json.load(f).get("invocations") or [{}])[-1]
    r.update({k: inv.get(k) for k in ("wall_time_s", "compile", "experiment_times", "devices", "precision", "host")})
  r["run_dir"] = run_dir
  return r


def main(argv=None) -> int:
  args = parse_args(argv)
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  if "main" not in args.skip:
    check_main_job(args, root)
  info = device_info(args.timeout_s)
  path = args.out or os.path.join(root, "results", "bench", f"{device_slug(info['device'])}.json")
  paths.out_file(path, "the report's path")
  report = {**info, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cpu_count": os.cpu_count(),
            "loadavg_1m": {"start": round(os.getloadavg()[0], 2)}, "steps": {}}
  with tempfile.TemporaryDirectory(prefix="jscale-gpu-report-") as tmp:
    for step in STEPS:
      if step in args.skip:
        report["steps"][step] = {"skipped": True}
        continue
      _say(f"{step} ...")
      if step == "tests":
        res = run_tests(args, root)
      elif step == "bench":
        res = run_bench(args, root)
      else:
        res = run_main_job(args, root, os.path.join(tmp, "main-job"))
      report["steps"][step] = res
      _say(f"{step}: exit {res['returncode']} in {res['seconds']} s")
  report["loadavg_1m"]["end"] = round(os.getloadavg()[0], 2)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp_path = path + ".tmp"
  with open(tmp_path, "w") as f:
    json.dump(report, f, indent=1)
  os.replace(tmp_path, path)   # whole or absent: a killed report never leaves half a file
  print(path)
  print(summary_text(report))
  failed = [s for s, r in report["steps"].items() if not r.get("skipped") and r.get("returncode") != 0]
  return 1 if failed else 0


def summary_text(report: dict) -> str:
  """A few lines: the suite's outcome, bench's engine-vs-loop and fractions of peak, the main job's time."""
  lines = [f"{report['device']} ({report['platform']}, {report['n_devices']} device(s)), jax {report['jax_version']}"]
  t = report["steps"].get("tests", {})
  if not t.get("skipped"):
    lines.append(f"suite: {'passed' if t.get('passed') else 'FAILED'} ({t.get('summary')}) in {t.get('seconds')} s")
  b = report["steps"].get("bench", {})
  for r in (b.get("figures") or {}).get("results", []):
    lines.append(f"bench {r['network']} {r['precision']} C={r['configs']}: {r['speedup_vs_loop']}x the loop, "
                 f"{r['fraction_of_peak']} of peak")
  m = report["steps"].get("main", {})
  if not m.get("skipped"):
    comp = m.get("compile") or {}
    lines.append(f"main job: exit {m.get('returncode')}, {m.get('wall_time_s')} s wall, "
                 f"{comp.get('compile_s')} s compiling {comp.get('programs')} programs")
  return "\n".join(lines)


if __name__ == "__main__":
  from jscale import cli
  cli.run(main)

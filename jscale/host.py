"""Which machine a figure came from: the CPU's model and generation, its logical CPUs, the JAX build.

Why: float32 reductions and matrix products are computed in different orders on different CPUs (vector width,
the kernels a library picks), so a stored run's low digits follow the host (the same commit's main job on an AMD
EPYC and an Intel Xeon gave the ResNet's 16-block geometric accuracy 0.201 and 0.142: near-divergent training
amplifies the last bit). `describe()` goes into every run's `run.json` and the report's run line, so a
difference between two stored runs can be traced to the host instead of to the code, silently.
"""
from __future__ import annotations

import os
import platform


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
  """The CPU's marketing name (`/proc/cpuinfo`'s "model name", else `platform.processor()`), or "unknown"."""
  return _model_name(_cpuinfo(cpuinfo))


def describe(cpuinfo: str = "/proc/cpuinfo") -> dict:
  """{"cpu", "cpu_family_model" ("6/167" on x86 Linux, None elsewhere), "logical_cpus", "jax", "jaxlib"}."""
  import jax
  import jaxlib
  info = _cpuinfo(cpuinfo)
  fam, model = info.get("cpu family"), info.get("model")
  return {"cpu": _model_name(info), "cpu_family_model": f"{fam}/{model}" if fam and model else None,
          "logical_cpus": os.cpu_count(), "jax": jax.__version__, "jaxlib": jaxlib.__version__}


def summary(h: dict | None) -> str:
  """One line for a report: "Intel(R) Xeon(R) Processor (family/model 6/167), 2 logical CPUs, jax 0.10.2"."""
  if not h:
    return ""
  fm = f" (family/model {h['cpu_family_model']})" if h.get("cpu_family_model") else ""
  return f"{h.get('cpu', '?')}{fm}, {h.get('logical_cpus', '?')} logical CPUs, jax {h.get('jax', '?')}"


def _model_name(info: dict) -> str:
  return info.get("model name") or platform.processor() or "unknown"


def _cpuinfo(path: str) -> dict:
  """The first processor's fields of /proc/cpuinfo ({} where there is none: macOS, Windows)."""
  try:
    with open(path) as f:
      text = f.read().split("\n\n", 1)[0]
  except OSError:
    return {}
  out = {}
  for line in text.splitlines():
    k, sep, v = line.partition(":")
    if sep:
      out[k.strip()] = v.strip()
  return out

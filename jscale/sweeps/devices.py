"""Which devices a sweep shards over: every local (or every process's) device, one host device per CPU core,
and the `--devices N` checks made before JAX starts."""
from __future__ import annotations

import os
from typing import Sequence

import jax

from jscale import checks


def use_cpu_cores(n: int | None = None) -> int | None:
  """Expose `n` host CPU devices (default: one per core) so the CPU engine shards configurations over cores.

  XLA:CPU runs a vmapped grid as batched ops whose intermediates (configs x examples x width) overflow
  the cores' caches, and splits each small op across threads; one device per core, each training its
  configurations one at a time (`default_group_size`), keeps a configuration's activations in its
  core's L2 and the cores busy (scripts/bench.py measures both layouts). Only the CPU platform reads
  this setting: on GPU/TPU it changes nothing. A no-op, returning None, when XLA_FLAGS already sets a
  device count or JAX's backends are already initialised; else returns the count it set.
  """
  if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
    return None
  n = (os.cpu_count() or 1) if n is None else n
  try:
    jax.config.update("jax_num_cpu_devices", int(n))
  except RuntimeError:  # backends already up (a notebook, a test): keep what is there
    return None
  return int(n)


def default_group_size(devices: Sequence) -> int | None:
  """CPU: 1 (each device trains its configurations one after another, cache-resident); else None (vmap all)."""
  return 1 if devices and devices[0].platform == "cpu" else None


def select_devices(n: int | None = None) -> list:
  """The devices a sweep shards over: every local device, or the first `n`. With several processes
  (`jax.distributed`), every process's devices (the first `n` of each: `n` counts per process)."""
  checks.optional(checks.positive_int)(n, "devices")
  if jax.process_count() > 1:
    by_process: dict[int, list] = {}
    for d in jax.devices():
      by_process.setdefault(d.process_index, []).append(d)
    fewest = min(len(v) for v in by_process.values())
    if n is not None and n > fewest:
      raise ValueError(f"asked for {n} devices per process but a process has only {fewest}")
    return [d for p in sorted(by_process) for d in by_process[p][:n]]
  devs = jax.local_devices()
  if n is None:
    return list(devs)
  if n > len(devs):
    hint = (" On CPU, start Python with XLA_FLAGS=--xla_force_host_platform_device_count=N "
            "(scripts/sweep.py --devices N does this for you)." if devs[0].platform == "cpu" else "")
    raise ValueError(f"asked for {n} devices but only {len(devs)} are visible: {devs}.{hint}")
  return list(devs[:n])


def accelerator_plugin_installed() -> bool:
  """Whether JAX may start on a GPU/TPU here (a plugin is installed, or JAX_PLATFORMS names one); tells,
  without starting JAX, whether `--devices N` will count accelerators or CPU cores."""
  platforms = os.environ.get("JAX_PLATFORMS", "").lower()
  if platforms:
    return any(p.strip() not in ("", "cpu") for p in platforms.split(","))
  import importlib.metadata
  names = {(d.metadata["Name"] or "").lower().replace("_", "-") for d in importlib.metadata.distributions()}
  return any(n.startswith(("jax-cuda", "jax-rocm", "libtpu", "jax-tpu")) for n in names)


def check_device_request(n, *, platform: str | None = None) -> None:
  """`--devices N` before JAX starts (platform None) or once it has (platform known): an int >= 1, and on CPU
  at most one device per core -- host devices beyond the cores only time-slice them (N x the compute)."""
  if n is None:
    return
  checks.positive_int(n, "--devices")
  cores = os.cpu_count() or 1
  on_cpu = platform == "cpu" if platform is not None else not accelerator_plugin_installed()
  if on_cpu and n > cores:
    raise ValueError(f"--devices {n}: this machine has {cores} CPU core(s) and JAX runs on its CPU, where each "
                     f"device is one core: at most {cores} (more would only time-slice the same cores)")

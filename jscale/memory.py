"""Device memory: how much a device can spare (`available_bytes`) and the guard every entry point runs before
compute (`check_bytes`), so a job that cannot fit is refused with its estimate instead of dying in an XLA
out-of-memory error. Used by the calculus (`inspect`), the theory (exact blocks) and the sweep planner."""
from __future__ import annotations

import math
import os
import jax

_FALLBACK = 8 * 2 ** 30
# Share of the free memory one entry point may plan to use: XLA's own workspace and fragmentation need the rest.
_SHARE = 0.7


def available_bytes(device=None) -> int:
  """Free memory of `device` (default: the first device): the allocator's limit less what is in use on an
  accelerator, the host's MemAvailable on CPU. The one probe behind every memory guard (calculus entry points,
  the sweep planner)."""
  dev = jax.devices()[0] if device is None else device
  try:
    stats = dev.memory_stats() or {}
  except Exception:  # noqa: BLE001 - a backend without memory stats: fall through to the host
    stats = {}
  if "bytes_limit" in stats:
    return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  try:
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))
  except (ValueError, OSError):  # a platform without these (macOS has no SC_AVPHYS_PAGES)
    return _FALLBACK


def check_bytes(estimate: float, what: str, limit: float | None = None) -> None:
  """ValueError when `estimate` bytes exceed `limit` (default: a share of `available_bytes()`)."""
  limit = _SHARE * available_bytes() if limit is None else limit
  if estimate > limit:
    raise ValueError(f"{what} needs about {_fmt(estimate)} ({int(estimate)} bytes) of memory, more than the "
                     f"{_fmt(limit)} this device can spare; use smaller widths or a smaller batch")


def _fmt(n: float) -> str:
  for unit, size in (("TiB", 2 ** 40), ("GiB", 2 ** 30), ("MiB", 2 ** 20)):
    if n >= size:
      return f"{n / size:.3g} {unit}"
  return f"{math.ceil(n / 1024)} KiB"

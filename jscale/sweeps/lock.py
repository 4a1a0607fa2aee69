"""One writer per run directory: lock files that name their holder (pid, host, shard), refuse a second live
writer with the holder's pid, and are taken over when their writer is gone (a killed run).

Lock files in a run directory: `.lock` (the whole run), `.lock.shard-I-of-N` (shard I of N); short-lived locks
of any other name (`jscale.sweeps.store` names them: one update of run.json, one assembly) wait rather than
refuse. The files the lock guards are read and written by jscale/sweeps/store.py only, whose `lock_file`
adds to this one the removal of temporary files killed writers left.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from typing import Iterator

LOCK = ".lock"


def shard_lock_name(shard: tuple[int, int] | None = None) -> str:
  """The lock file of one writer: `.lock` (the whole run) or `.lock.shard-I-of-N` (shard I of N)."""
  return LOCK if shard is None else f"{LOCK}.shard-{shard[0]}-of-{shard[1]}"


def _shard_of_lock(name: str) -> tuple[int, int] | None | bool:
  """(I, N) for a shard's lock file, None for the whole run's, False for other files."""
  if name == LOCK:
    return None
  prefix = LOCK + ".shard-"
  if name.startswith(prefix):
    i, _, n = name[len(prefix):].partition("-of-")
    if i.isdigit() and n.isdigit():
      return int(i), int(n)
  return False


@contextlib.contextmanager
def lock_file(run_dir: str, shard: tuple[int, int] | None = None, *, name: str | None = None,
                wait_s: float = 0.0) -> Iterator[None]:
  """Hold a lock file in `run_dir` while writing. A second live writer is refused with the holder's pid (or
  waited for up to `wait_s` seconds); a lock left by a process that no longer runs on this host (a killed
  run) is taken over.

  Writers of one sweep: the whole run (`shard` None, RUN_DIR/.lock) excludes every other writer; shard I
  of N (RUN_DIR/.lock.shard-I-of-N) excludes a second writer of the same shard, the whole run, and shards
  of another N (whose chunks overlap), but runs beside the other shards of the same N on purpose.
  `name`: a lock of that file name only (short critical sections: run.json updates, assembly)."""
  os.makedirs(run_dir, exist_ok=True)
  lock = name or shard_lock_name(shard)
  path = os.path.join(run_dir, lock)
  me = {"pid": os.getpid(), "host": socket.gethostname(), "shard": list(shard) if shard else None}
  deadline = time.monotonic() + wait_s
  while True:
    try:
      fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      holder = _lock_holder(path)
      if holder is not None and _alive(holder):
        if time.monotonic() < deadline:
          time.sleep(0.05)
          continue
        raise ValueError(f"{run_dir} is being written by another process (pid {holder.get('pid')} on "
                         f"{holder.get('host')}{_shard_text(holder)}); wait for it to finish, or stop it "
                         "first") from None
      with contextlib.suppress(FileNotFoundError):
        os.remove(path)   # stale: its writer is gone
      continue
    with os.fdopen(fd, "w") as f:
      json.dump(me, f)
    break
  try:
    if name is None:
      _refuse_overlapping_writers(run_dir, shard, lock)
    yield
  finally:
    if _lock_holder(path) == me:
      with contextlib.suppress(FileNotFoundError):
        os.remove(path)


def _shard_text(holder: dict) -> str:
  shard = holder.get("shard")
  return f", shard {shard[0]} of {shard[1]}" if shard else ""


def _refuse_overlapping_writers(run_dir: str, shard: tuple[int, int] | None, mine: str) -> None:
  """Checked after taking our own lock, so of two writers starting at once at least one sees the other."""
  for f in sorted(os.listdir(run_dir)):
    other = _shard_of_lock(f)
    if f == mine or other is False:
      continue
    overlaps = shard is None or other is None or other[1] != shard[1]
    holder = _lock_holder(os.path.join(run_dir, f))
    if overlaps and holder is not None and _alive(holder):
      what = "the whole run" if other is None else f"shard {other[0]} of {other[1]}"
      raise ValueError(f"{run_dir} is being written by another process (pid {holder.get('pid')} on "
                       f"{holder.get('host')}, {what}), whose chunks overlap this writer's; wait for it to "
                       "finish, or stop it first")


def _lock_holder(path: str) -> dict | None:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None   # being written this instant, or garbage: treated as stale if it stays so


def _alive(holder: dict) -> bool:
  return alive(holder.get("pid"), holder.get("host"))


def alive(pid, host: str | None) -> bool:
  """Whether process `pid` of `host` still runs. Another host's processes cannot be checked from here: they are
  assumed alive (so nothing of theirs is ever taken over or removed)."""
  if host != socket.gethostname():
    return True
  try:
    os.kill(int(pid), 0)
  except (ProcessLookupError, ValueError, TypeError):
    return False
  except PermissionError:
    return True
  return True

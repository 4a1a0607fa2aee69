"""Atomic files: how every file of a run directory is written so that a reader sees the old file or the new one,
never half of one, and how the temporary files of a writer killed mid-write are recognised and removed. Only the
results store (`store.py`) writes through these."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import uuid
from typing import Mapping

import numpy as np

from jscale.sweeps import lock as lock_lib

# Temporary files name their writer: `<file>.<pid>-<8 hex>-<host tag><suffix>`; the host tag (8 hex of the
# host name's sha256) tells whether that pid can be checked from here.
HOST_TAG = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
TEMP_RE = re.compile(r"\.(\d+)-[0-9a-f]{8}-([0-9a-f]{8})\.tmp(\.npz)?$")


def json_default(o):
  if isinstance(o, np.integer):
    return int(o)
  if isinstance(o, np.floating):
    return float(o)
  if isinstance(o, np.ndarray):
    return o.tolist()
  if isinstance(o, (set, frozenset)):
    return sorted(o)
  return str(o)


def jsonable(v):
  """Plain JSON types all the way down (numpy scalars and arrays, tuples, mapping keys as strings)."""
  if isinstance(v, np.generic):
    return v.item()
  if isinstance(v, np.ndarray):
    return v.tolist()
  if isinstance(v, Mapping):
    return {str(k): jsonable(x) for k, x in v.items()}
  if isinstance(v, (list, tuple)):
    return [jsonable(x) for x in v]
  return v


def temp_name(path: str, suffix: str = ".tmp") -> str:
  """A temporary name no other writer uses (two processes never share one), naming its writer (pid, host tag)."""
  return f"{path}.{os.getpid()}-{uuid.uuid4().hex[:8]}-{HOST_TAG}{suffix}"


def remove_dead_temps(run_dir: str, subdirs=()) -> list[str]:
  """Remove the temporary files (in `run_dir` and its `subdirs`) of writers that no longer run: a writer killed
  mid-write (kill -9) leaves one, which nothing reads. Those of a live process, or of another host (whose
  processes cannot be checked from here), stay. Returns the paths removed."""
  removed = []
  for d in (run_dir,) + tuple(os.path.join(run_dir, sub) for sub in subdirs):
    try:
      names = os.listdir(d)
    except OSError:
      continue
    for f in names:
      m = TEMP_RE.search(f)
      if m and m.group(2) == HOST_TAG and not lock_lib.alive(m.group(1), socket.gethostname()):
        with contextlib.suppress(FileNotFoundError):
          os.remove(os.path.join(d, f))
          removed.append(os.path.join(d, f))
  return removed


def write_json(path: str, obj):
  """Atomically: a reader sees the old file or the new one, never half of one."""
  tmp = temp_name(path)
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=1, default=json_default)
  os.replace(tmp, path)


def write_text(path: str, text: str) -> None:
  """Atomically, like `write_json`: a kill mid-write leaves the previous file, never half of one (and a temp
  file that the next writer lock removes)."""
  tmp = temp_name(path)
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, path)


def read_json(path: str) -> dict:
  try:
    with open(path) as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f"{path} is not valid JSON ({e}): the file is damaged") from None


def sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def atomic_savez(path: str, **arrays) -> str:
  """Write an .npz atomically (a file exists only once it is complete); return its sha256."""
  tmp = temp_name(path, ".tmp.npz")
  np.savez(tmp, **arrays)
  digest = sha256(tmp)
  os.replace(tmp, path)
  return digest

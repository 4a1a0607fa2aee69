"""Shards and resumes of one run directory: shard I of N's chunks, and the check that a resume (or a shard
joining a run) computes what the run started computing."""
from __future__ import annotations

import json


def parse_shard(shard) -> tuple[int, int] | None:
  """None, "I/N" or (I, N) with 0 <= I < N -> (I, N); shard 0 of 1 is the whole run (None)."""
  if shard is None:
    return None
  if isinstance(shard, str):
    i, sep, n = shard.partition("/")
    if not sep or not i.strip().isdigit() or not n.strip().isdigit():
      raise ValueError(f"shard must be I/N with integers 0 <= I < N (e.g. 0/4), got {shard!r}")
    shard = (int(i), int(n))
  if (not isinstance(shard, (tuple, list)) or len(shard) != 2
      or not all(isinstance(v, int) and not isinstance(v, bool) for v in shard)):
    raise ValueError(f"shard must be I/N or (I, N) with integers 0 <= I < N, got {shard!r}")
  i, n = shard
  if not (n >= 1 and 0 <= i < n):
    raise ValueError(f"shard must be I/N with 0 <= I < N and N >= 1, got {i}/{n}")
  return None if n == 1 else (i, n)


def shard_chunks(n_chunks: int, shard: tuple[int, int] | None) -> list[int]:
  """The chunks shard I of N computes: c % N == I (the chunk plan is fixed once config.json exists)."""
  return list(range(n_chunks)) if shard is None else [c for c in range(n_chunks) if c % shard[1] == shard[0]]


def check_same_run(old: dict, new: dict, run_dir: str) -> None:
  """Refuse to continue `run_dir` (resume, or a shard joining it) when what it computes changed: the
  configurations, any data draw, or the matmul precision (devices may differ: a configuration's numbers do
  not depend on them)."""
  for field in ("points", "configs"):
    if json.loads(json.dumps(new[field])) != old[field]:
      raise ValueError(f"cannot continue {run_dir}: the experiment's {field} changed since the run started "
                       "(another grid, option or code version); start a new run directory")
  draws = lambda cfg: [(g.get("data_seeds"), g.get("data_fingerprints", g.get("data_fingerprint")))
                       for g in cfg["groups"]]
  if draws(new) != draws(old):
    raise ValueError(f"cannot continue {run_dir}: its data changed since the run started (data seeds and "
                     f"fingerprints per group: now {draws(new)}, recorded {draws(old)})")
  was, now = old.get("precision", "highest"), new.get("precision", "highest")
  if was != now:
    raise ValueError(f"cannot continue {run_dir}: it was computed at matmul precision {was!r}, now {now!r} is in "
                     f"force; set it back (jscale.precision.set_precision({was!r}) or --precision {was})")

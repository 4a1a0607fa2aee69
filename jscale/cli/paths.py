"""The command lines' output paths, checked before any compute: a directory flag (`--out`) that names a regular
file or lies under one (`/dev/null/x`), or whose nearest existing folder is not writable, would otherwise fail
with an OS error after the work it was meant to keep."""
from __future__ import annotations

import os


def _nearest_existing(path: str) -> str:
  p = os.path.abspath(path)
  while not os.path.lexists(p):
    p = os.path.dirname(p)
  return p


def _why_not_a_folder(path: str) -> str | None:
  if os.path.exists(path) and not os.path.isdir(path):
    return "exists and is not a directory"
  base = _nearest_existing(path)
  if not os.path.isdir(base):
    return f"cannot be created, {base} is not a directory"
  if not os.access(base, os.W_OK | os.X_OK):
    return f"cannot be written, {base} is not writable"
  return None


def out_dir(path: str, flag: str) -> str:
  """`path` if it is a directory or can be made one; else ValueError naming `flag`, the path and why."""
  why = _why_not_a_folder(path)
  if why:
    raise ValueError(f"{flag} {path}: {why} (give a folder to write into)")
  return path


def out_file(path: str, flag: str) -> str:
  """`path` if a file can be written there; else ValueError naming `flag`, the path and why."""
  if os.path.isdir(path):
    raise ValueError(f"{flag} {path}: is a directory (give a file name)")
  folder = os.path.dirname(os.path.abspath(path))
  why = _why_not_a_folder(folder)
  if why:
    raise ValueError(f"{flag} {path}: its folder {folder} {why}")
  return path

"""Figure 1's records: one per setup and batch size, their JSON form, and the per-setup files a run resumes from.

A record holds a setup's exact expected block sizes with their standard errors and the predictions beside
them. `records_json` is the one JSON writer for every family (the family's setup fields first, then the same
measured fields); each finished setup is written at once to `<setup_dir>/NNNN.json` (atomically, through the
store) with the settings it was measured under, so a killed run, started again on the same directory,
reads back the setups whose file matches (`load_done`) instead of recomputing them.
"""
from __future__ import annotations

import os
from typing import Mapping, NamedTuple, Sequence

import numpy as np

from jscale.experiments.hessian.family import Family
from jscale.sweeps import store


class Record(NamedTuple):
  setup: object             # the family's setup
  batch: int
  exact_w: np.ndarray       # (L,) expectation over draws
  exact_b: np.ndarray
  batch1_w: np.ndarray      # (L,) batch-1 model, s(1) / B
  corrected_w: np.ndarray   # (L,) with cross-example terms
  corrected_b: np.ndarray
  batch1_b: np.ndarray
  leading_w: np.ndarray     # (L,) paper's leading-order form / B
  exact_w_se: np.ndarray    # (L,) standard error of exact_w
  seconds: float
  exact_b_se: np.ndarray | None = None      # (L,) standard error of exact_b
  exact_w_se_plain: np.ndarray | None = None  # (L,) standard error of the plain mean (no control variate)
  draws: int = 0            # draws of (weights, examples) averaged
  examples: int = 0         # examples per draw
  full_w: np.ndarray | None = None  # (L,) the full-order prediction (`jscale.theory.full_order`)
  full_b: np.ndarray | None = None
  notes: tuple = ()         # the full order's guarded coupling factors, and why (`Predicted.notes`)

  @property
  def rel_se(self) -> np.ndarray:
    """Relative standard error of each weight block's exact value."""
    return np.asarray(self.exact_w_se) / np.asarray(self.exact_w)


def records_json(family: Family, recs: Sequence[Record]) -> list[dict]:
  """`recs` as JSON-ready dicts, one per record (what `figures.ratio_histogram` plots)."""
  opt = lambda a: None if a is None else np.asarray(a).tolist()
  out = []
  for r in recs:
    d = {**family.setup_json(r.setup), "batch": r.batch, "exact_w": r.exact_w.tolist(),
         "exact_w_se": r.exact_w_se.tolist(), "batch1_w": r.batch1_w.tolist(), "corrected_w": r.corrected_w.tolist(),
         "leading_w": r.leading_w.tolist(), "exact_b": r.exact_b.tolist(), "corrected_b": r.corrected_b.tolist(),
         "batch1_b": r.batch1_b.tolist(), "exact_b_se": opt(r.exact_b_se), "full_w": opt(r.full_w),
         "full_b": opt(r.full_b)}
    if family.control_variates:
      d["exact_w_se_plain"] = opt(r.exact_w_se_plain)
    d.update(exact_w_rel_se_max=float(np.max(r.rel_se)), draws=r.draws, examples=r.examples, seconds=r.seconds)
    if r.notes:
      d["coupling_notes"] = list(r.notes)
    out.append(d)
  return out


def record_from_json(family: Family, d: Mapping) -> Record:
  """Inverse of one `records_json` entry (resuming a run from its per-setup files). Without control
  variates the plain SE is the SE."""
  arr = lambda k: None if d.get(k) is None else np.asarray(d[k], np.float64)
  return Record(setup=family.setup_from_json(d), batch=int(d["batch"]), exact_w=arr("exact_w"), exact_b=arr("exact_b"),
                batch1_w=arr("batch1_w"), corrected_w=arr("corrected_w"), corrected_b=arr("corrected_b"),
                batch1_b=arr("batch1_b"), leading_w=arr("leading_w"), exact_w_se=arr("exact_w_se"),
                seconds=float(d["seconds"]), exact_b_se=arr("exact_b_se"),
                exact_w_se_plain=arr("exact_w_se_plain" if family.control_variates else "exact_w_se"),
                draws=int(d.get("draws", 0)), examples=int(d.get("examples", 0)), full_w=arr("full_w"),
                full_b=arr("full_b"), notes=tuple(d.get("coupling_notes", ())))


def setup_path(exp_dir: str, family: Family, i: int) -> str:
  return os.path.join(exp_dir, family.setup_dir, f"{i:04d}.json")


def load_done(exp_dir: str, family: Family, sampled: Sequence, settings: Mapping) -> dict:
  """{index: (r1, rb)} of the setups already measured in `exp_dir` with these settings and this setup."""
  done = {}
  for i, s in enumerate(sampled):
    path = setup_path(exp_dir, family, i)
    if not os.path.isfile(path):
      continue
    d = store.read_json(path)
    recs = [record_from_json(family, r) for r in d.get("records", [])]
    if d.get("settings") == settings and len(recs) == 2 and recs[0].setup == s:
      done[i] = (recs[0], recs[1])
  return done


def write_setup(exp_dir: str, family: Family, i: int, settings: Mapping, recs: Sequence[Record]) -> None:
  store.write_json(setup_path(exp_dir, family, i),
                   {"index": i, "settings": settings, "records": records_json(family, recs)})

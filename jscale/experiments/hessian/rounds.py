"""Figure 1's driver, one for every family: rounds of draws per setup until the exact side is precise enough,
and the sampled setups measured a few at a time.

`measure_setup` draws rounds (`Family.start(...).draw_round`) until at least `draws` draws are in and, with a
target, every weight block's relative standard error at batch 1 and at the minibatch is at most the target
(or the next round would pass `max_draws`): narrow layers make the block sizes heavy-tailed over weight draws
(per-draw relative std 1-7), which is why a setup needs hundreds to thousands of draws. Batch 1 and the
minibatch come from the same draws. `figure1` samples the family's setups and measures them (`measure_all`).
"""
from __future__ import annotations

import concurrent.futures
import itertools
import os
import time
from typing import Callable, Mapping, Sequence

import jax
import numpy as np

from jscale import checks
from jscale.experiments.hessian.family import Family
from jscale.experiments.hessian.records import Record
from jscale.experiments.hessian.settings import Figure1Settings


def measure_setup(family: Family, setup, fig1: Figure1Settings, on_round: Callable | None = None, *,
                  key=None) -> tuple[Record, Record]:
  """(batch-1 record, batch-`fig1.batch` record) of `setup`, from `key` (default: its own,
  `PRNGKey(setup.seed)`). `on_round(draws_so_far, max_rel_se)` is called after each round (progress)."""
  family.check_setup(setup)
  t0 = time.time()
  key = jax.random.PRNGKey(setup.seed) if key is None else key
  m = family.start(setup, key, examples=fig1.examples, round_draws=fig1.round_draws, draws=fig1.draws,
                   max_bytes=fig1.max_bytes)
  n = 0
  for index in itertools.count():
    m.draw_round(index)
    n += m.round_draws
    worst = max(float(np.max(e.stderr / np.abs(e.mean))) for e in (m.exact(b)[0] for b in (1, fig1.batch)))
    if on_round is not None:
      on_round(n, worst)
    if n >= fig1.draws and (fig1.target_rel_se is None or worst <= fig1.target_rel_se
                            or n + m.round_draws > fig1.draw_cap):
      break
  recs = []
  for b in (1, fig1.batch):
    ew, eb = m.exact(b)
    p = m.predict(b)
    recs.append(Record(setup=setup, batch=b, exact_w=ew.mean, exact_b=eb.mean, batch1_w=p.batch1.weight,
                       corrected_w=p.corrected.weight, corrected_b=p.corrected.bias, batch1_b=p.batch1.bias,
                       leading_w=p.leading_w, exact_w_se=ew.stderr, seconds=time.time() - t0, exact_b_se=eb.stderr,
                       exact_w_se_plain=ew.raw_stderr, draws=n, examples=fig1.examples,
                       full_w=None if p.full is None else p.full.weight, full_b=None if p.full is None else p.full.bias,
                       notes=p.notes))
  return recs[0], recs[1]


def figure1(family: Family, fig1: Figure1Settings, *, progress: bool = False, done: Mapping[int, tuple] | None = None,
            on_record: Callable | None = None, on_setup: Callable | None = None,
            workers: int | None = None) -> list[Record]:
  """Records at batch 1 and at `fig1.batch` for every setup `family` samples (`fig1.setups`, `fig1.seed`).

  `done[i] = (r1, rb)`: setups already measured (a resumed run) are taken as they are, not recomputed.
  `on_record(i, r1, rb)` is called as each setup finishes (write it to disk there), `on_setup(records_so_far)`
  too (the whole-list hook). `progress`: a tqdm bar over setups (stderr). `workers`: setups at once."""
  sampled = family.sample_setups(fig1.setups, fig1.seed)
  run = lambda s, on_round: measure_setup(family, s, fig1, on_round)
  return measure_all(sampled, run, done=done, on_record=on_record, on_setup=on_setup,
                     progress=family.progress_label if progress else None, workers=workers)


def default_workers() -> int:
  """Setups measured at once: one per CPU core, at most 4 (each round holds up to `pairs.DEFAULT_MAX_BYTES`)."""
  return max(1, min(os.cpu_count() or 1, 4))


def measure_all(sampled: Sequence, run: Callable, *, done: Mapping[int, tuple] | None = None,
                on_record: Callable | None = None, on_setup: Callable | None = None,
                progress: str | None = None, workers: int | None = None) -> list:
  """[r1, rb, r1, rb, ...] over `sampled`: `done[i]` as it is (a resumed run), else `run(setup, on_round)`;
  `on_record(i, r1, rb)` as each finishes, `on_setup(records_so_far)` after each (the finished setups' records
  in setup order); `progress`: a tqdm bar's label.

  `workers` setups run at once in threads (default `default_workers()`). Why: a setup is a chain of small
  per-layer programs, each too small to keep every core busy, and each new padded shape is compiled in the
  thread that first meets it; two setups at once overlap one's compilation with the other's compute. JAX
  releases the GIL while compiling and executing. Each setup draws from its own key in its own thread, so the
  records do not depend on `workers` (tested bitwise). The hooks run in this (the calling) thread."""
  done = dict(done or {})
  workers = default_workers() if workers is None else checks.positive_int(workers, "workers")
  bar = None
  if progress:
    from tqdm.auto import tqdm
    bar = tqdm(total=len(sampled), initial=len(done), desc=progress, unit="setup", dynamic_ncols=True)

  def post(i):
    if bar is None:
      return None
    return lambda n, worst: bar.set_postfix_str(f"setup {i}: {n} draws, max rel SE {worst:.3f}")

  finished = dict(done)
  todo = [i for i in range(len(sampled)) if i not in done]
  try:
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
      futures = {pool.submit(run, sampled[i], post(i)): i for i in todo}
      try:
        for fut in concurrent.futures.as_completed(futures):
          i = futures[fut]
          r1, rb = fut.result()
          finished[i] = (r1, rb)
          if on_record is not None:
            on_record(i, r1, rb)
          if bar is not None:
            bar.update(1)
          if on_setup is not None:
            on_setup([r for j in sorted(finished) for r in finished[j]])
      except BaseException:
        for f in futures:  # a failed setup (or Ctrl-C) cancels the setups still queued
          f.cancel()
        raise
  finally:
    if bar is not None:
      bar.close()
  return [r for i in range(len(sampled)) for r in finished[i]]

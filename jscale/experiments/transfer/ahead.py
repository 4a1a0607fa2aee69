"""Compiling the transfer experiment's programs ahead of their use, in one background thread.

Per (model, width) the experiment runs four programs whose shapes are known before it starts: the probe draws,
the response, the coordinate check and the training (run.py). Compiled where they are first called, each held
the main thread for its whole XLA compile (one core of the two: 40% of the full grid's wall time was
compiling), while the main thread's own work (the prescriptions' tracing, the calculus's numpy, the training)
left the other core partly idle. Here one worker thread lowers and compiles them in the order the experiment
needs them, from the arguments' shapes alone, while the main thread computes; JAX releases the GIL while it
compiles. The main thread runs the compiled executables: the same programs as compiling at the call (the
lowering sees the same shapes and dtypes; tested bit for bit), on the same thread as before, so the numbers do
not depend on the worker. One worker, not more: two cores, and the main thread has work for both at times.
"""
from __future__ import annotations

import concurrent.futures
from typing import Any, Callable, Hashable

import jax


def abstract(tree) -> Any:
  """The shapes and dtypes of an argument pytree (`jax.ShapeDtypeStruct` leaves), what lowering needs."""
  return jax.tree.map(lambda v: jax.ShapeDtypeStruct(v.shape, v.dtype), tree)


class Ahead:
  """`submit(key, jitted, *args)` queues `jitted.lower(*args).compile()` (args: arrays or `abstract` ones);
  `take(key)` waits for it and returns the compiled program (its error, if compiling failed), or None if
  nothing was submitted under `key`. Use as a context manager: leaving it cancels what is still queued."""

  def __init__(self):
    self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="transfer-compile")
    self._futures: dict[Hashable, concurrent.futures.Future] = {}

  def submit(self, key: Hashable, jitted: Callable, *args) -> None:
    if key in self._futures:
      raise ValueError(f"a program is already submitted under {key!r}")
    self._futures[key] = self._pool.submit(lambda: jitted.lower(*args).compile())

  def take(self, key: Hashable):
    fut = self._futures.pop(key, None)
    return None if fut is None else fut.result()

  def close(self) -> None:
    for fut in self._futures.values():
      fut.cancel()
    self._futures.clear()
    self._pool.shutdown(wait=True)

  def __enter__(self) -> "Ahead":
    return self

  def __exit__(self, *exc) -> None:
    self.close()

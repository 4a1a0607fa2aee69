"""One compiled program per distinct computation, however many closures describe it.

  run = program_cache.jit(lambda leaves, x: ...)   # a closure built afresh on every call
  run(leaves, x)                                    # compiles
  program_cache.jit(same_body)(leaves, x)           # same computation: traced and lowered, not compiled again

`jax.jit` caches compiled programs by the Python function, so a closure made on every call (as
`calculus.inspect` builds its measuring pass around the model it is given) compiles again even when the
computation is the one compiled a moment ago: the transfer experiment inspects the He and the μP parameters
of every network, the same shapes through the same graph, and compiled each pass twice. Here the key is the
computation itself: the lowered StableHLO text (shapes, dtypes, every operation and every constant, so two
closures over different constants never share a program) and the arguments' shardings. Tracing and lowering
still happen on every call (a small part of compiling: XLA's own compile is most of it). Only the last
`MAX_PROGRAMS` programs are kept, so a long session does not keep every executable it ever built alive.
"""
from __future__ import annotations

import collections
import hashlib
import threading
from typing import Callable

import jax

MAX_PROGRAMS = 16
_programs: "collections.OrderedDict[str, jax.stages.Compiled]" = collections.OrderedDict()
_lock = threading.Lock()


def _key(lowered, args) -> str:
  h = hashlib.sha256(lowered.as_text(debug_info=False).encode())
  for leaf in jax.tree_util.tree_leaves(args):
    h.update(str(getattr(leaf, "sharding", None)).encode())
  return h.hexdigest()


def jit(fn: Callable) -> Callable:
  """`jax.jit(fn)`, except that a call whose lowered program was compiled before (by any `jit(...)` of this
  module in this process) runs that compiled program. Positional array arguments only."""
  jitted = jax.jit(fn)

  def call(*args):
    lowered = jitted.lower(*args)
    key = _key(lowered, args)
    with _lock:
      compiled = _programs.get(key)
      if compiled is not None:
        _programs.move_to_end(key)
    if compiled is None:
      compiled = lowered.compile()
      with _lock:
        _programs[key] = compiled
        while len(_programs) > MAX_PROGRAMS:
          _programs.popitem(last=False)
    return compiled(*args)

  return call


def clear() -> None:
  """Forget every kept program (tests that count compilations start from here)."""
  with _lock:
    _programs.clear()

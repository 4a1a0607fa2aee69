"""jscale.sweeps.compile_clock: compile work summed over threads against the wall time with a compilation
running (threads that compile at once overlap; one thread's programs do not)."""
import random
import threading

import jax
import jax.numpy as jnp
import pytest

from jscale.report import quote
from jscale.sweeps import compile_clock
from jscale.sweeps.compile_clock import CompileClock


_SALT = random.random()   # new constants in every test process: the suite's persistent cache must not serve them


def _program(seed: int):
  """A program XLA takes a noticeable time to compile (a chain of distinct ops), a new one per seed and per
  process: a fresh closure and constants, so neither the in-memory nor the persistent cache serves it."""
  def f(x):
    for i in range(12):
      x = jnp.sin(x * (seed + i + 1.5 + _SALT)) @ jnp.full((16, 16), 1.0 / (seed + i + 2))
    return x
  return jax.jit(f).lower(jax.ShapeDtypeStruct((16, 16), jnp.float32))


def test_union_seconds_merges_overlaps_and_nesting():
  # (0, 2) and (1, 3) overlap to 3 s; (1.5, 1.8) is inside; (5, 6) apart: 4 s, against 6.3 s summed
  assert compile_clock.union_seconds([(5, 6), (0, 2), (1.5, 1.8), (1, 3)]) == pytest.approx(4.0)
  assert compile_clock.union_seconds([]) == 0.0


def test_one_thread_wall_equals_summed_and_threads_overlap():
  with CompileClock() as one:
    _program(1).compile()
    _program(2).compile()
  s = one.summary()
  assert s["programs"] == 2
  # one thread: its trace, lowering and compile events follow each other, so the union is their sum (to the
  # rounding of the summary and the perf_counter reads around the events, 1 ms)
  assert s["compile_wall_s"] == pytest.approx(s["compile_s"], abs=0.02)
  barrier = threading.Barrier(2)

  def work(seed):
    lowered = _program(seed)
    barrier.wait()   # both compiles start together
    lowered.compile()

  with CompileClock() as two:
    threads = [threading.Thread(target=work, args=(seed,)) for seed in (3, 4)]
    for t in threads:
      t.start()
    for t in threads:
      t.join()
  s = two.summary()
  assert s["programs"] == 2
  # the two XLA compiles run at once (JAX releases the GIL there): their intervals overlap, so the wall time
  # with a compilation running is well below the summed seconds, and never above the clock's wall time
  assert s["compile_wall_s"] < 0.9 * s["compile_s"]
  assert s["compile_wall_s"] <= s["wall_s"] + 1e-6
  assert s["compute_s"] == pytest.approx(max(s["wall_s"] - s["compile_wall_s"], 0.0), abs=0.02)
  assert "summed over threads" in compile_clock.share_text(s)


def test_share_text_and_quote_take_the_wall_seconds():
  s = {"programs": 5, "cache_hits": 0, "compile_s": 30.0, "compile_wall_s": 20.0, "wall_s": 80.0,
       "compute_s": 60.0}
  assert compile_clock.share_text(s) == ("compiling 5 programs 20.0 s of wall time (25% of 80.0 s; 30.0 s summed "
                                         "over threads), 60.0 s the rest")
  # a summary written before compile_wall_s was recorded reads as one thread
  old = {"programs": 5, "compile_s": 30.0, "wall_s": 80.0, "compute_s": 50.0}
  assert compile_clock.share_text(old) == "30.0 s compiling 5 programs (38% of 80.0 s), 50.0 s the rest"
  line = quote._times_line([{"compile": s, "experiment_times": {"a": {"wall_s": 80.0}}}], 80.0)
  assert line == " By experiment: a 80 s; compiling 20 s over 5 programs (25%; 30 s summed over threads)."

"""How much of a job is compilation: JAX's own compilation events, summed while a `CompileClock` is open.

  with CompileClock() as clock:
    run_the_experiment()
  clock.summary()   # {"programs": 12, "compile_s": 31.2, "trace_s": 2.0, "lower_s": 1.1, "xla_s": 28.1,
                    #  "compile_wall_s": 30.5, "cache_hits": 0, "wall_s": 80.4, "compute_s": 49.2}

JAX reports, for every program it builds, the seconds spent tracing the Python function to a jaxpr
(`/jax/core/compile/jaxpr_trace_duration`), lowering it to StableHLO (`.../jaxpr_to_mlir_module_duration`) and
compiling it with XLA or loading it from the persistent compilation cache (`.../backend_compile_duration`: one
event per program built, the count reported as `programs`; `cache_hits` of them came from the cache).
`compile_s` is the three summed; `compute_s` is the rest of the wall time (training, data, writing files).
Events from every thread count (the hessian experiment compiles in worker threads, the transfer experiment
compiles its programs ahead in one); clocks may nest (the main job's clock holds each experiment's).

With threads, `compile_s` sums overlapping seconds (two threads compiling for 10 s count 20 s, and a worker's
compile may overlap the main thread's computing), so it is compile work, not wall time. `compile_wall_s` is the
wall time during which at least one compilation was running (the union of the events' intervals over threads):
what the job's compile share of its wall time is taken from (`share_text`); it is at most `wall_s`, and equal to
`compile_s` when one thread compiles at a time.
"""
from __future__ import annotations

import threading
import time

import jax

_EVENTS = {"/jax/core/compile/jaxpr_trace_duration": "trace_s",
           "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower_s",
           "/jax/core/compile/backend_compile_duration": "xla_s"}
_CACHE_HIT = "/jax/compilation_cache/cache_hits"
_lock = threading.Lock()
_open: list["CompileClock"] = []
_registered = False


_traces = threading.local()   # this thread's recent trace intervals (start, end): nested traces are inside


def _unnested(seconds: float) -> float:
  """A trace event's seconds less those of the traces inside it: a function that calls another jitted
  function traces it inside its own trace, and JAX reports both (the inner one first)."""
  end = time.perf_counter()
  start = end - seconds
  stack = getattr(_traces, "stack", None)
  if stack is None:
    stack = _traces.stack = []
  inner = 0.0
  while stack and stack[-1][0] >= start:
    s, e = stack.pop()
    inner += e - s
  stack.append((start, end))
  return seconds - inner


def _on_duration(event: str, seconds: float, **_) -> None:
  field = _EVENTS.get(event)
  if field is None:
    return
  end = time.perf_counter()   # JAX reports a duration when it ends
  interval = (end - seconds, end)
  if field == "trace_s":
    seconds = _unnested(seconds)
  with _lock:
    for clock in _open:
      clock.totals[field] += seconds
      clock.intervals.append(interval)
      if field == "xla_s":
        clock.totals["programs"] += 1


def union_seconds(intervals) -> float:
  """The length of the union of (start, end) intervals."""
  total, reach = 0.0, float("-inf")
  for start, end in sorted(intervals):
    if end > reach:
      total += end - max(start, reach)
      reach = end
  return total


def _on_event(event: str, **_) -> None:
  if event == _CACHE_HIT:
    with _lock:
      for clock in _open:
        clock.totals["cache_hits"] += 1


def _register() -> None:
  """Once per process: JAX's listeners cannot be removed one by one in every version, so one pair stays and
  dispatches to the open clocks."""
  global _registered
  with _lock:
    if not _registered:
      jax.monitoring.register_event_duration_secs_listener(_on_duration)
      jax.monitoring.register_event_listener(_on_event)
      _registered = True


class CompileClock:
  """Context manager: compilation events and wall time between enter and exit (see the module doc)."""

  def __init__(self):
    self.totals = {"programs": 0, "cache_hits": 0, "trace_s": 0.0, "lower_s": 0.0, "xla_s": 0.0}
    self.intervals: list[tuple[float, float]] = []
    self.wall_s = 0.0
    self._t0 = None

  def __enter__(self) -> "CompileClock":
    _register()
    self._t0 = time.perf_counter()
    with _lock:
      _open.append(self)
    return self

  def __exit__(self, *exc) -> None:
    with _lock:
      _open.remove(self)
    self.wall_s = time.perf_counter() - self._t0

  @property
  def compile_s(self) -> float:
    return self.totals["trace_s"] + self.totals["lower_s"] + self.totals["xla_s"]

  @property
  def compile_wall_s(self) -> float:
    with _lock:
      return union_seconds(self.intervals)

  def summary(self) -> dict:
    """JSON-able: programs, cache_hits, compile_s (trace_s + lower_s + xla_s, summed over threads),
    compile_wall_s (the wall time with a compilation running), wall_s, compute_s (wall_s less compile_wall_s)."""
    r = lambda v: round(v, 2)
    cw = self.compile_wall_s
    return {"programs": self.totals["programs"], "cache_hits": self.totals["cache_hits"],
            "compile_s": r(self.compile_s), "trace_s": r(self.totals["trace_s"]),
            "lower_s": r(self.totals["lower_s"]), "xla_s": r(self.totals["xla_s"]), "compile_wall_s": r(cw),
            "wall_s": r(self.wall_s), "compute_s": r(max(self.wall_s - cw, 0.0))}


def compile_wall(s: dict) -> float:
  """A summary's wall seconds with a compilation running: compile_wall_s, or compile_s in summaries written
  before it was recorded (one thread compiling at a time, mostly)."""
  v = s.get("compile_wall_s")
  return float(s.get("compile_s") or 0.0) if v is None else float(v)


def share_text(s: dict) -> str:
  """One line: '31.2 s compiling 12 programs (39% of 80.4 s), 49.2 s the rest', and where threads compiled
  at once or beside the computing, the summed seconds: '... 12 programs (30.5 s of wall, 38% of 80.4 s; 31.2 s
  summed over threads), ...'."""
  cw = compile_wall(s)
  share = cw / s["wall_s"] if s.get("wall_s") else float("nan")
  hits = f", {s['cache_hits']} from the compilation cache" if s.get("cache_hits") else ""
  if abs(float(s["compile_s"]) - cw) < 0.05:
    head = f"{cw:.1f} s compiling {s['programs']} programs{hits} ({share:.0%} of {s['wall_s']:.1f} s)"
  else:
    head = (f"compiling {s['programs']} programs{hits} {cw:.1f} s of wall time ({share:.0%} of {s['wall_s']:.1f} s; "
            f"{s['compile_s']:.1f} s summed over threads)")
  return f"{head}, {s['compute_s']:.1f} s the rest"

"""The experiment registry: names -> how to build the experiment, and its report section.

The registry knows no experiment by name: `import jscale.experiments` registers the built-in ones, and the
registry's readers (`names`, `entry`, `get`, `sections`) do that import on their first call, so `sweeps.names()`
lists them without it (discovery of the package, not a dependency on any experiment). Users register their own
the same way:

  register(Entry("mine", make=lambda **options: Experiment(name="mine", ...), section=build_section))
  register(Experiment(name="mine", ...))        # shorthand: a fixed experiment, no options, no section
  get("mine")                                   # -> the Experiment (make(**options))
  get("init_schemes", libsvm=("dna.scale",))    # options are passed to `make`

An experiment's module is pure: importing it reads no file and no environment variable. Anything that
depends on the machine (which data sets are prepared, LIBSVM files named on the command line) is an
option of `make`, resolved when the experiment is planned, and recorded in config.json so that a resumed
run rebuilds the same experiment.
"""
from __future__ import annotations

import contextlib
import dataclasses
import inspect
import re
from typing import Any, Callable, Iterator, Mapping

from jscale.sweeps.experiment import CustomExperiment, Experiment


@dataclasses.dataclass(frozen=True)
class Entry:
  """A registered experiment. `make(**options)` returns its `Experiment` or `CustomExperiment`;
  `section(results) -> jscale.report.Section` builds its report section (None: no section)."""
  name: str
  make: Callable[..., Experiment | CustomExperiment]
  section: Callable[[Any], Any] | None = None
  doc: str = ""

  def options(self) -> dict[str, Any]:
    """The options `make` accepts, with their defaults."""
    return {k: p.default for k, p in inspect.signature(self.make).parameters.items()
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}

  def build(self, **options) -> Experiment | CustomExperiment:
    known = self.options()
    unknown = sorted(set(options) - set(known))
    if unknown:
      raise ValueError(f"experiment {self.name!r} has no option {', '.join(unknown)}; "
                       f"its options: {', '.join(known) or 'none'}")
    try:
      exp = self.make(**options)
    except TypeError as e:  # a wrong type for an option, caught by `make` only when it is used
      given = ", ".join(f"{k}={v!r}" for k, v in options.items()) or "no options"
      raise TypeError(f"experiment {self.name!r}: cannot build it with {given}: {e}") from None
    if not isinstance(exp, (Experiment, CustomExperiment)) or exp.name != self.name:
      raise ValueError(f"experiment {self.name!r}: make() returned {exp!r}, not an experiment of that name")
    return exp


_REGISTRY: dict[str, Entry] = {}


def _check_grids(exp: Experiment | CustomExperiment) -> None:
  """The grids' structure (cheap, at registration): a mapping grid name -> Grid (custom: -> settings)."""
  from jscale.sweeps.grid import Grid
  if not isinstance(exp.grids, Mapping):
    raise ValueError(f"experiment {exp.name!r}: grids must be a mapping grid name -> "
                     f"{'settings' if isinstance(exp, CustomExperiment) else 'Grid'}, got {exp.grids!r}")
  for gname, grid in exp.grids.items():
    _check_name(gname, f"experiment {exp.name!r}: grid name")
    want = Mapping if isinstance(exp, CustomExperiment) else Grid
    if not isinstance(grid, want):
      raise ValueError(f"experiment {exp.name!r}: grid {gname!r} must be a {want.__name__} "
                       f"({'keyword settings of run' if want is Mapping else 'from sweeps.product / zipped'}), "
                       f"got {type(grid).__name__}")


def _check(exp: Experiment | CustomExperiment) -> None:
  """Validate every grid when the experiment is built (`get`): a broken experiment fails before any compute,
  not mid-sweep."""
  from jscale.sweeps import experiment as exp_lib
  _check_grids(exp)
  if isinstance(exp, CustomExperiment):
    if not callable(exp.run):
      raise ValueError(f"experiment {exp.name!r}: run must be callable, got {exp.run!r}")
    for settings in exp.grids.values():
      exp_lib.bind_settings(exp, settings)
  else:
    for grid in exp.grids.values():
      exp_lib.validate(exp, grid)


# An experiment's name is its run directory's name (OUT/<name>/) and a command-line word.
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def _check_name(name, what: str = "experiment name") -> None:
  if not isinstance(name, str) or not _NAME.fullmatch(name) or set(name) == {"."}:
    raise ValueError(f"{what} must be letters, digits, '_', '-' or '.' (a directory name, not starting with "
                     f"'-' or '.'), got {name!r}")


def register(entry: Entry | Experiment | CustomExperiment) -> Entry:
  """Register (or replace) an experiment; returns its `Entry`. A fixed experiment (an `Experiment` or
  `CustomExperiment` object) has its name and grids' structure checked now, its settings when `get` builds it
  (as an `Entry`'s experiment, built with its options)."""
  if isinstance(entry, (Experiment, CustomExperiment)):
    exp = entry
    _check_name(exp.name)
    _check_grids(exp)
    entry = Entry(exp.name, lambda: exp, None, exp.doc)
  if not isinstance(entry, Entry):
    raise ValueError(f"register expects an Entry, Experiment or CustomExperiment, got {type(entry).__name__}")
  _check_name(entry.name)
  for field in ("make", "section"):
    f = getattr(entry, field)
    if not callable(f) and not (field == "section" and f is None):
      raise ValueError(f"experiment {entry.name!r}: {field} must be callable"
                       f"{' or None' if field == 'section' else ''}, got {f!r}")
  _REGISTRY[entry.name] = entry
  return entry


def unregister(name: str) -> Entry | None:
  """Remove experiment `name` (a test's own, say); returns its entry, None if it was not registered."""
  return _REGISTRY.pop(name, None)


@contextlib.contextmanager
def replaced(experiments: Mapping[str, Experiment | CustomExperiment]) -> Iterator[None]:
  """Within the block, each named registered experiment is built as the given experiment object instead (e.g.
  smaller grids for a test), keeping its section and registration order; restored on exit."""
  saved = {name: entry(name) for name in experiments}
  try:
    for name, exp in experiments.items():
      _REGISTRY[name] = dataclasses.replace(saved[name], make=_fixed(exp))
    yield
  finally:
    _REGISTRY.update(saved)


def _fixed(exp):
  return lambda: exp


_BUILTINS_LOADED = False


def _load_builtins() -> None:
  """Import jscale.experiments once (it registers the built-in experiments); the engine names none of them."""
  global _BUILTINS_LOADED
  if not _BUILTINS_LOADED:
    _BUILTINS_LOADED = True
    import importlib
    importlib.import_module("jscale.experiments")


def names() -> list[str]:
  """Registered experiments, in registration order (the order the main job runs and reports them)."""
  _load_builtins()
  return list(_REGISTRY)


def entry(name: str) -> Entry:
  _load_builtins()
  if not isinstance(name, str) or name not in _REGISTRY:
    hint = "" if _REGISTRY else " (import jscale.experiments to register the built-in experiments)"
    raise ValueError(f"unknown experiment {name!r}; registered: {', '.join(names()) or 'none'}{hint}")
  return _REGISTRY[name]


def get(name: str | Experiment | CustomExperiment, **options) -> Experiment | CustomExperiment:
  """The experiment `name` built with `options` (an experiment object is returned as it is)."""
  if isinstance(name, (Experiment, CustomExperiment)):
    if options:
      raise ValueError("options apply to a registered experiment's name, not to an experiment object")
    return name
  exp = entry(name).build(**options)
  _check(exp)
  return exp


def sections() -> Mapping[str, Callable]:
  """name -> section builder of every registered experiment that has one, in registration order."""
  _load_builtins()
  return {n: e.section for n, e in _REGISTRY.items() if e.section is not None}

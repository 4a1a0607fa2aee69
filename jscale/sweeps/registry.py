"""The experiment registry: names -> how to build the experiment, and its report section.

The registry knows no experiment by name: `import jscale.experiments` registers the built-in ones
(scripts/sweep.py and scripts/report.py do), and users register their own the same way:

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

import dataclasses
import inspect
from typing import Any, Callable, Mapping

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
    exp = self.make(**options)
    if not isinstance(exp, (Experiment, CustomExperiment)) or exp.name != self.name:
      raise ValueError(f"experiment {self.name!r}: make() returned {exp!r}, not an experiment of that name")
    return exp


_REGISTRY: dict[str, Entry] = {}


def _check(exp: Experiment | CustomExperiment) -> None:
  """Validate every grid now: a broken experiment fails when registered, not mid-sweep."""
  from jscale.sweeps import experiment as exp_lib
  if isinstance(exp, CustomExperiment):
    if not callable(exp.run):
      raise ValueError(f"experiment {exp.name!r}: run must be callable, got {exp.run!r}")
    for settings in exp.grids.values():
      exp_lib.bind_settings(exp, settings)
  else:
    for grid in exp.grids.values():
      exp_lib.validate(exp, grid)


def register(entry: Entry | Experiment | CustomExperiment) -> Entry:
  """Register (or replace) an experiment; returns its `Entry`."""
  if isinstance(entry, (Experiment, CustomExperiment)):
    exp = entry
    entry = Entry(exp.name, lambda: exp, None, exp.doc)
  if not isinstance(entry, Entry):
    raise ValueError(f"register expects an Entry, Experiment or CustomExperiment, got {type(entry).__name__}")
  if not isinstance(entry.name, str) or not entry.name or "/" in entry.name:
    raise ValueError(f"experiment name must be a non-empty string without '/', got {entry.name!r}")
  _REGISTRY[entry.name] = entry
  return entry


def names() -> list[str]:
  """Registered experiments, in registration order (the order the main job runs and reports them)."""
  return list(_REGISTRY)


def entry(name: str) -> Entry:
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
  return {n: e.section for n, e in _REGISTRY.items() if e.section is not None}

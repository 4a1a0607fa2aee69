"""The hessian experiment's settings, typed and checked once when they are made: one family's Figure 1
(`Figure1Settings`) and Figure 2 (`Figure2Settings`), a family's part of the run (`FamilyRun`), and the whole
experiment (`HessianSettings`), read from the flat keyword grids of `config.py` (`HessianSettings.from_grid`)."""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from jscale import checks
from jscale.experiments.hessian.family import Family
from jscale.experiments.hessian.lenet_family import LeNetFamily
from jscale.experiments.hessian.mlp_family import MLPFamily
from jscale.theory import pairs

DEFAULT_TARGET = 0.05  # the relative SE a summary counts setups against when the run had no target


@dataclasses.dataclass(frozen=True)
class Figure1Settings:
  """Figure 1 on one family: `setups` sampled setups (deterministic in `seed`; 0: none), each measured at
  batch 1 and at `batch` from the same draws: at least `draws` draws of (weights, `examples` examples), in
  rounds of `round_draws` (None: the family's default), and with `target_rel_se` more rounds until every
  weight block's relative SE is at most the target, or the next round would pass `max_draws` (None: 16 x
  draws). One round's working memory is refused beyond `max_bytes`."""
  setups: int
  batch: int
  draws: int
  seed: int = 0
  examples: int = pairs.DEFAULT_EXAMPLES
  target_rel_se: float | None = None
  max_draws: int | None = None
  round_draws: int | None = None
  max_bytes: int = pairs.DEFAULT_MAX_BYTES

  def __post_init__(self):
    checks.int_at_least(self.setups, "setups", 0)
    checks.int_at_least(self.batch, "batch", 2)
    checks.int_at_least(self.draws, "draws", 3)
    checks.int_at_least(self.seed, "seed", 0)
    checks.int_at_least(self.examples, "examples", 2)
    checks.optional(checks.in_range)(self.target_rel_se, "target_rel_se", 0, 1, lo_open=True, hi_open=True)
    checks.optional(checks.int_at_least)(self.max_draws, "max_draws", self.draws)
    checks.optional(checks.positive_int)(self.round_draws, "round_draws")
    checks.positive_int(self.max_bytes, "max_bytes")

  @property
  def draw_cap(self) -> int:
    """Most draws of a setup."""
    return int(self.max_draws) if self.max_draws is not None else 16 * self.draws

  @property
  def summary_target(self) -> float:
    """The relative SE the summary counts setups against."""
    return self.target_rel_se if self.target_rel_se is not None else DEFAULT_TARGET

  def resume_key(self) -> dict:
    """What a per-setup file records of these settings: a resumed run reuses a setup only if they match."""
    return {"batch": self.batch, "draws": self.draws, "examples": self.examples,
            "target_rel_se": self.target_rel_se, "max_draws": self.max_draws, "seed": self.seed}


@dataclasses.dataclass(frozen=True)
class Figure2Settings:
  """Figure 2 on one family's fixed network: exact heat maps at batch 1 (mean over `draws` draws; 0: no
  Figure 2) and at `minibatch` (one draw); with `evenness_draws`, also the diagonal's evenness from pairs of
  examples, with standard errors (the families that measure it)."""
  draws: int
  minibatch: int
  evenness_draws: int = 0

  def __post_init__(self):
    checks.int_at_least(self.draws, "Figure 2 draws", 0)
    checks.positive_int(self.minibatch, "Figure 2 minibatch")
    checks.int_at_least(self.evenness_draws, "evenness draws", 0)


@dataclasses.dataclass(frozen=True)
class FamilyRun:
  """One family's part of the experiment: Figure 1 (off with `figure1.setups == 0`), Figure 2 (off with
  `figure2.draws == 0`) and Figure 1 again on a held-out seed's setups (`holdout`, None: none): a seed no
  development of the prediction used, judged beside the development seed (docs/calculus.md says which)."""
  family: Family
  figure1: Figure1Settings
  figure2: Figure2Settings
  holdout: Figure1Settings | None = None


# The grids' flat keywords (config.py, scripts/sweep.py): the MLP's settings bare, the LeNet's prefixed.
GRID_REQUIRED = ("setups", "batch", "draws", "seed", "fig2_draws", "fig2_minibatch")
GRID_DEFAULTS = {"examples": pairs.DEFAULT_EXAMPLES, "target_rel_se": DEFAULT_TARGET, "max_draws": None,
                 "lenet_setups": 0, "lenet_draws": 64, "lenet_max_draws": None, "lenet_examples": 4,
                 "lenet_fig2_draws": 0, "lenet_fig2_minibatch": 64, "lenet_evenness_draws": 256,
                 "lenet_channels": None, "lenet_hidden": None, "lenet_varied": False,
                 "holdout_seed": None, "holdout_setups": 0, "lenet_holdout_seed": None, "lenet_holdout_setups": 0}


def _holdout(fig1: Figure1Settings, setups: int, seed, what: str) -> Figure1Settings | None:
  """`fig1` on `setups` setups of a held-out `seed` (None without setups); the seed must differ from the
  development one (the same setups would be judged twice)."""
  checks.int_at_least(setups, f"{what}holdout_setups", 0)
  if not setups:
    return None
  if seed is None or int(seed) == fig1.seed:
    raise ValueError(f"{what}holdout_seed must be given and differ from the development seed {fig1.seed}, got {seed}")
  return dataclasses.replace(fig1, setups=int(setups), seed=int(seed))


@dataclasses.dataclass(frozen=True)
class HessianSettings:
  """The whole experiment: the MLPs and the strided LeNet. Batch, seed and the relative-SE target are shared."""
  mlp: FamilyRun
  lenet: FamilyRun

  @classmethod
  def from_grid(cls, grid: Mapping[str, Any]) -> "HessianSettings":
    """From a grid's flat keywords (`GRID_REQUIRED`, and `GRID_DEFAULTS` where left out); ValueError naming
    an unknown or missing one."""
    unknown = sorted(set(grid) - set(GRID_REQUIRED) - set(GRID_DEFAULTS))
    missing = [k for k in GRID_REQUIRED if k not in grid]
    if unknown or missing:
      raise ValueError(f"hessian settings: unknown {unknown}, missing {missing}; valid: "
                       f"{', '.join(GRID_REQUIRED + tuple(GRID_DEFAULTS))}")
    g = {**GRID_DEFAULTS, **grid}
    shared = dict(batch=g["batch"], seed=g["seed"], target_rel_se=g["target_rel_se"])
    fig1 = Figure1Settings(g["setups"], draws=g["draws"], examples=g["examples"], max_draws=g["max_draws"], **shared)
    mlp = FamilyRun(MLPFamily(), fig1, Figure2Settings(g["fig2_draws"], g["fig2_minibatch"]),
                    _holdout(fig1, g["holdout_setups"], g["holdout_seed"], ""))
    checks.positive_int(mlp.figure1.setups, "setups")
    fig1 = Figure1Settings(g["lenet_setups"], draws=g["lenet_draws"], examples=g["lenet_examples"],
                           max_draws=g["lenet_max_draws"], **shared)
    lenet = FamilyRun(LeNetFamily(g["lenet_channels"], g["lenet_hidden"], varied=bool(g["lenet_varied"])), fig1,
                      Figure2Settings(g["lenet_fig2_draws"], g["lenet_fig2_minibatch"], g["lenet_evenness_draws"]),
                      _holdout(fig1, g["lenet_holdout_setups"], g["lenet_holdout_seed"], "lenet_"))
    return cls(mlp, lenet)

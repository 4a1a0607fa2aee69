"""What the Figures 1-2 protocol needs of a network family, so that it is written once for every family.

A `Family` (MLPs, the strided LeNet; CNNs and residual blocks later) says how to sample its setups, how to
start measuring one (`Measurement`: rounds of draws, the exact estimates they give, the prediction), how a
setup reads and writes as JSON, and how to draw Figure 2's heat maps on its fixed network (`HeatmapProblem`).
Everything else, the rounds driver with its stopping rule (`rounds`), the per-setup files that make a run
resumable and the records JSON (`records`), the summaries (`summary`) and the heat-map loops (`heatmaps`),
is the same code for every family.
"""
from __future__ import annotations

import abc
from typing import Any, NamedTuple, Sequence

import numpy as np

from jscale.theory import pairs, predict


class Predicted(NamedTuple):
  """A setup's prediction at one batch size."""
  batch1: predict.BlockPrediction     # the batch-1 model applied to a minibatch, s(1) / B
  corrected: predict.BlockPrediction  # with the cross-example terms
  leading_w: np.ndarray               # the paper's leading-order form of the weight blocks (/ B)
  full: predict.BlockPrediction | None = None  # the full-order prediction (`jscale.theory.full_order`)
  notes: tuple = ()  # couplings' factors the full order set to 1, and why (`gains.guarded`)


class Measurement(abc.ABC):
  """One setup's exact side in progress: the rounds drawn so far and what they estimate."""
  round_draws: int  # draws per round

  @abc.abstractmethod
  def draw_round(self, index: int) -> None:
    """Draw round `index` (0, 1, ...) and keep its statistics; each round has its own key."""

  @abc.abstractmethod
  def exact(self, batch: int) -> tuple[pairs.MeanEstimate, pairs.MeanEstimate]:
    """(weight blocks, bias blocks): the expected average squared singular value at minibatch `batch` from
    the rounds so far, with standard errors."""

  @abc.abstractmethod
  def predict(self, batch: int) -> Predicted:
    """The prediction at minibatch `batch` (after the rounds: cross-entropy's loss statistics come from them)."""


class HeatmapDraw(NamedTuple):
  weights: np.ndarray          # (L, L) average squared singular value of every (weight i, weight j) block
  bias_diag: np.ndarray | None  # (L,) of the bias blocks, when the family reports them
  out_hessians: np.ndarray     # (B, n_L, n_L) per-example output Hessians


class HeatmapProblem(abc.ABC):
  """Figure 2 on one fixed network, for one loss, batch and seed: every scheme sees the same keys."""
  q: Any  # the quadratic loss's Q (n_L, n_L)

  @abc.abstractmethod
  def draw_keys(self, draws: int) -> Sequence:
    """One key per draw, the same for every scheme."""

  @abc.abstractmethod
  def measure(self, key, scheme: str) -> HeatmapDraw:
    """Draw (weights by `scheme`, inputs, targets) from `key` and measure the exact blocks."""

  @abc.abstractmethod
  def predict(self, scheme: str, loss: predict.LossStats) -> predict.BlockPrediction:
    """The predicted diagonal, given the loss statistics of the draws."""


class Family(abc.ABC):
  """A network family of the Hessian checks. Subclasses set the class attributes below."""
  name: str             # a figure row's label ("MLP", "LeNet")
  prefix: str           # of the run directory's files: "" -> fig1_records.json, "lenet_" -> lenet_fig1_records.json
  setup_dir: str        # run-directory folder of the per-setup files (resume)
  control_variates: bool  # the exact side uses control variates: records carry the plain SE beside theirs
  per_layer: bool       # every setup has the same weight layers, so a per-layer summary is meaningful

  @property
  def progress_label(self) -> str:
    return f"{self.name} hessian setups"

  @abc.abstractmethod
  def sample_setups(self, num: int, seed: int) -> list:
    """`num` setups, deterministic in `seed`; a setup is a hashable record with a `seed` field."""

  @abc.abstractmethod
  def check_setup(self, setup) -> Any:
    """The setup, or ValueError naming what is wrong with it."""

  @abc.abstractmethod
  def start(self, setup, key, *, examples: int, round_draws: int | None, draws: int,
            max_bytes: int) -> Measurement:
    """Start measuring `setup` from `key`: rounds of `round_draws` draws (None: the family's default for
    at least `draws` draws) of `examples` examples, each round within `max_bytes`."""

  @abc.abstractmethod
  def setup_json(self, setup) -> dict:
    """The setup's fields that open each of its records in JSON."""

  @abc.abstractmethod
  def setup_from_json(self, d) -> Any:
    """Inverse of `setup_json`."""

  def resume_fields(self) -> dict:
    """What besides the Figure 1 settings must match for a per-setup file to be reused (sampling ranges)."""
    return {}

  @abc.abstractmethod
  def layer_names(self, setup) -> list[str]:
    """The setup's weight layers, in order."""

  def tautological(self, setup, batch: int) -> np.ndarray:
    """Per weight layer: True where the exact side equals the full-order prediction by construction (a
    control variate whose known mean is the prediction), so that the pooled ratios leave it out."""
    return np.zeros(len(self.layer_names(setup)), bool)

  # Figure 2
  fig2_net: Any  # the fixed network of the heat maps

  @abc.abstractmethod
  def heatmap_problem(self, net, *, loss: str, batch: int, seed: int, max_bytes: int) -> HeatmapProblem:
    """Check `net` and the memory of its exact Hessian (refused with the estimate), and fix the keys."""

  @abc.abstractmethod
  def net_json(self, net) -> dict:
    """How Figure 2's JSON names the network ({"widths": ...} or {"config": ...})."""

  @abc.abstractmethod
  def net_layers(self, net) -> list:
    """What the heat maps' figure names the network by (widths for an MLP, layer names for a LeNet)."""

  def heatmap_title(self, net) -> str | None:
    """The heat maps' figure title (None: the figure's default)."""
    return None

  def evenness(self, *, batches: Sequence[int], draws: int, seed: int, examples: int) -> dict | None:
    """Figure 2's evenness check with standard errors (from pairs of examples) at `batches`, per scheme, or
    None for a family that does not measure it."""
    return None

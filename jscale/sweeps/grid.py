"""Grids: which settings vary and over which values, as a product of (zipped) blocks of axes."""
from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any, Sequence


def tupled(v):
  return tuple(tupled(x) for x in v) if isinstance(v, (list, tuple)) else v


@dataclasses.dataclass(frozen=True)
class Grid:
  """Axes and their values: a product of blocks, each block one axis or several axes zipped together.

  product(sigma=(0.01, 0.1), seed=range(4))           8 configurations, dims ("sigma", "seed")
  zipped(input_scale=(1/255, 1), layer_scale.0=...)   one dim named "input_scale+layer_scale.0"
  g1 * g2                                             the product of two grids (dims concatenated)
  Configurations are ordered C-style: the first dim varies slowest.
  """
  blocks: tuple  # tuple of tuples of (axis_name, values_tuple); axes in a block have equal lengths

  @property
  def dims(self) -> tuple[str, ...]:
    return tuple("+".join(name for name, _ in block) for block in self.blocks)

  @property
  def shape(self) -> tuple[int, ...]:
    return tuple(len(block[0][1]) for block in self.blocks)

  @property
  def axes(self) -> dict[str, tuple]:
    return {name: values for block in self.blocks for name, values in block}

  @property
  def size(self) -> int:
    return math.prod(self.shape)

  def __mul__(self, other: "Grid") -> "Grid":
    return Grid(self.blocks + other.blocks)

  def points(self) -> list[dict[str, Any]]:
    """Every configuration's axis values, in order."""
    per_block = [[{name: values[i] for name, values in block} for i in range(len(block[0][1]))]
                 for block in self.blocks]
    return [dict(kv for d in combo for kv in d.items()) for combo in itertools.product(*per_block)]

  def to_json(self) -> dict:
    return {"dims": list(self.dims), "shape": list(self.shape),
            "blocks": [[[name, list(values)] for name, values in block] for block in self.blocks]}


def product(**axes) -> Grid:
  return Grid(tuple(((name, _values(name, v)),) for name, v in axes.items()))


def zipped(**axes) -> Grid:
  block = tuple((name, _values(name, v)) for name, v in axes.items())
  lengths = {len(v) for _, v in block}
  if len(lengths) > 1:
    raise ValueError(f"zipped axes need equal lengths, got {({n: len(v) for n, v in block})}")
  return Grid((block,))


def _values(name, values) -> tuple:
  if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, range)) and not hasattr(values, "tolist"):
    raise ValueError(f"axis {name!r}: values must be a sequence, got {values!r}")
  values = values.tolist() if hasattr(values, "tolist") else list(values)
  if not values:
    raise ValueError(f"axis {name!r} has no values")
  return tuple(tupled(v) for v in values)


def log_spaced(lo: float, hi: float, n: int) -> tuple[float, ...]:
  """n values from lo to hi, evenly spaced in log, rounded to 4 significant digits (stable labels)."""
  return tuple(float(f"{lo * (hi / lo) ** (i / (n - 1)):.4g}") for i in range(n))

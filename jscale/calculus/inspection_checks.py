"""What `inspect` refuses before it measures: non-finite inputs, a loss that fails or is not real-valued, and
examples that interact inside the model.

`inspect` measures example b's own gradient through the model applied to x[b:b+1], so a model whose output
for one example depends on the other examples' values (batch statistics: `h - h.mean(0)`, a Flax BatchNorm
applied with `mutable=['batch_stats']`) would give wrong numbers (G_meas = 0 for a batch-normalised layer)
without a word. A model that only depends on the batch's *size* (a dropout mask of shape `h.shape` drawn
with a fixed key) is not refused: each example still sees one fixed mask.
"""
from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jscale import program_cache

# Examples compared by the interaction check: enough to change a batch mean, small enough to cost nothing.
_PROBE = 4
# Row 0's output may move by float rounding only: XLA may reorder a reduction when other rows change.
_RTOL = 1e-4


def check_finite(x, leaves: Sequence, paths: Sequence[str]) -> None:
  """Refuse NaN or inf in the batch x or in any float parameter leaf, naming the leaf."""
  for what, v in [("x", x)] + [(f"params leaf '{p}'", l) for p, l in zip(paths, leaves)]:
    a = np.asarray(v)
    bad = ~np.isfinite(a)
    if bad.any():
      kinds = sorted({"NaN" if np.isnan(e) else "inf" for e in a[bad].ravel()[:1000]})
      raise ValueError(f"inspect: {what} must be finite, got {int(bad.sum())} {'/'.join(kinds)} "
                       f"value(s) of {a.size} (shape {a.shape})")


def check_loss(fn: Callable, leaves, x, loss: Callable | None) -> None:
  """Trace `loss(fn(leaves, x))` without compute: a loss that raises is reported as the loss's failure, and
  one that does not return real per-example losses is refused (TypeError for integers or complex)."""
  if loss is None:
    return
  B = x.shape[0]
  try:
    per = jax.eval_shape(lambda l, x_: loss(fn(l, x_)), leaves, x)
  except Exception as e:  # noqa: BLE001 - report the user's loss failing on the model's outputs
    raise ValueError(f"inspect: loss(outputs) failed on the outputs of apply_fn(params, x): "
                     f"{type(e).__name__}: {e}") from e
  shape, dtype = getattr(per, "shape", None), getattr(per, "dtype", None)
  if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
    raise TypeError(f"inspect: loss must return real floating-point per-example losses of shape ({B},), got "
                    f"{dtype if dtype is not None else type(per).__name__}")
  if shape != (B,):
    raise ValueError(f"inspect: loss must map the outputs to per-example losses of shape ({B},), got {shape}")


def check_independent_examples(fn: Callable, leaves, x) -> None:
  """Refuse a model whose output for one example changes when the other examples change.

  On the first `_PROBE` examples: the outputs of the batch (x_0, x_1, ..) and of (x_0, 2 x_1 + 1, ..) must
  agree on example 0 (float rounding aside). Costs one compiled forward pass on `_PROBE` examples."""
  k = min(_PROBE, x.shape[0])
  if k < 2:
    return  # one example cannot interact with another
  a = np.asarray(x[:k] if isinstance(x, np.ndarray) else jax.device_get(x)[:k])   # host: no compiled slices
  b = np.concatenate([a[:1], 2 * a[1:] + 1], axis=0).astype(a.dtype)
  run = program_cache.jit(fn)   # a fresh closure per inspect: compiled once per computation
  try:
    out_a, out_b = (jax.tree_util.tree_leaves(run(leaves, v)) for v in (a, b))
  except Exception as e:  # noqa: BLE001 - a model tied to one batch size: it must also run on fewer examples
    raise ValueError(f"inspect: apply_fn(params, x) failed on the first {k} examples of x ({type(e).__name__}: "
                     f"{e}); inspect applies the model to single examples too, so it must accept any batch "
                     "size") from e
  for i, (oa, ob) in enumerate(zip(out_a, out_b)):
    ra, rb = np.asarray(oa, np.float64)[0], np.asarray(ob, np.float64)[0]
    scale = max(float(np.max(np.abs(ra), initial=0.0)), 1e-30)
    if not np.all(np.isfinite(ra) == np.isfinite(rb)) or np.max(np.abs(ra - rb), initial=0.0) > _RTOL * scale:
      raise ValueError(
          f"inspect: examples interact inside apply_fn: output {i} for example 0 changed when the other "
          f"examples of the batch changed (by up to {np.nanmax(np.abs(ra - rb)):.3g}, outputs ~{scale:.3g}). "
          "The calculus measures each example's own gradient, so batch statistics (h - h.mean(0), BatchNorm "
          "in training mode) are not supported: apply the model in inference mode (use_running_average=True) "
          "or without the batch statistic")


def check(fn: Callable, leaves, x, paths: Sequence[str], loss: Callable | None) -> None:
  """Every check above, in order of cost."""
  check_finite(x, leaves, paths)
  check_loss(fn, leaves, x, loss)
  check_independent_examples(fn, leaves, x)

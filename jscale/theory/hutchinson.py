"""Matrix-free Hutchinson estimate of a diagonal Hessian block's average squared singular value.

For a symmetric block H (d x d) and a Rademacher probe v (entries +-1, zero outside the block),
E ||H v||^2 = tr(H^2), so the mean of ||H v_k||^2 / d over K probes estimates the average squared
singular value tr(H^2) / d, with standard error std_k(||H v_k||^2 / d) / sqrt(K). Each H v is one
Hessian-vector product, `jax.jvp` of `jax.grad` of the loss restricted to that parameter leaf (forward
over reverse: one forward and one backward pass, O(P) memory). Rademacher probes have lower variance
than Gaussian ones: Var = 2 (tr H^4 - sum_i (H^2)_ii^2) instead of 2 tr H^4.

Probes are vmapped; the whole estimator is a pure function of (params, args, key), so it vmaps over
setups of equal shapes too (see `hutchinson_setups`).
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from jscale import checks
from jscale.theory import hessian as hess


class Estimate(NamedTuple):
  mean: jax.Array    # estimated tr(H_ll^2) / d
  stderr: jax.Array  # its standard error (sample std over probes / sqrt(num_probes))


def probe_bytes(widths, batch: int, num_probes: int, itemsize: int = 4) -> int:
  """Working memory of `diagonal` (probes vmapped): per probe, the probe and the forward-over-reverse
  pass (activations, their tangents and cotangents, 4 copies of B x sum(widths)) on the largest leaf,
  with a factor 2 for temporaries."""
  leaf = max(a * b for a, b in zip(widths[:-1], widths[1:]))
  return 2 * itemsize * num_probes * (3 * leaf + 4 * batch * sum(widths))


def check_index(params, index) -> int:
  """The leaf index as an int, refused (ValueError naming it and the valid range) when out of range."""
  n = len(jax.tree.leaves(params))
  if isinstance(index, bool) or not isinstance(index, int) and not hasattr(index, "__index__"):
    raise TypeError(f"leaf index must be an int, got {index!r}")
  if not 0 <= int(index) < n:
    raise ValueError(f"leaf index {index} is out of range: the parameters have {n} leaves (w0, b0, w1, ...), "
                     f"valid indices 0..{n - 1}")
  return int(index)


def _replace_leaf(params, index: int, value):
  leaves, treedef = jax.tree.flatten(params)
  leaves = list(leaves)
  leaves[index] = value
  return jax.tree.unflatten(treedef, leaves)


def block_hvp(loss: Callable, params, args: tuple, index: int) -> Callable:
  """v -> H_ll v for the leaf `index` (leaf order w0, b0, w1, ...): a jvp of the restricted gradient."""
  index = check_index(params, index)
  theta = jax.tree.leaves(params)[index]
  grad = jax.grad(lambda t: loss(_replace_leaf(params, index, t), *args))
  return lambda v: jax.jvp(grad, (theta,), (v,))[1]


def block_sq_sv(loss: Callable, params, args: tuple, index: int, key, num_probes: int = 64) -> Estimate:
  """Hutchinson estimate of tr(H_ll^2) / d for the diagonal block of parameter leaf `index`."""
  checks.int_at_least(num_probes, "num_probes (for a standard error)", 2)
  index = check_index(params, index)
  theta = jax.tree.leaves(params)[index]
  d = theta.size
  hvp = block_hvp(loss, params, args, index)
  probes = jax.random.rademacher(key, (num_probes,) + theta.shape, theta.dtype)
  z = jax.vmap(lambda v: jnp.sum(jnp.square(hvp(v))) / d)(probes)
  return Estimate(jnp.mean(z), jnp.std(z, ddof=1) / jnp.sqrt(num_probes))


def diagonal(loss: Callable, params, args: tuple, key, num_probes: int = 64) -> tuple[Estimate, Estimate]:
  """Estimates for every weight and every bias diagonal block: (weights, biases), fields of shape (L,)."""
  n = len(jax.tree.leaves(params))
  keys = jax.random.split(key, n)
  est = [block_sq_sv(loss, params, args, i, keys[i], num_probes) for i in range(n)]
  stack = lambda es: Estimate(jnp.stack([e.mean for e in es]), jnp.stack([e.stderr for e in es]))
  w = hess.weight_rows(params)
  return stack([est[i] for i in w]), stack([est[i + 1] for i in w])


def hutchinson_setups(loss: Callable, params_S, args_S: tuple, keys_S, num_probes: int = 64):
  """`diagonal` vmapped over a leading setup axis S of params, args and keys (equal shapes)."""
  return jax.vmap(lambda p, a, k: diagonal(loss, p, a, k, num_probes))(params_S, args_S, keys_S)

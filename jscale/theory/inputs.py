"""The input laws the Hessian checks draw examples from, and their exact statistics.

Two laws of i.i.d. entries, independent examples: "normal" (N(0, 1) entries, centred) and "uniform01"
(U[0, 1] entries, uncentred like pixel intensities). The prediction needs their `predict.InputStats`
(`law_stats`, exact); the pair sampler's control variates need E||x||^4 (`fourth_moment`).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jscale import checks
from jscale.theory import predict

KINDS = ("normal", "uniform01")


def check_kind(kind: str) -> str:
  return checks.one_of(kind, "input kind", KINDS)


def sample_inputs(key, kind: str, batch: int, n_0: int, dtype=jnp.float32) -> jax.Array:
  """normal: N(0, 1) entries (centred); uniform01: U[0, 1] entries (uncentred, like pixel intensities)."""
  if kind == "normal":
    return jax.random.normal(key, (batch, n_0), dtype)
  if kind == "uniform01":
    return jax.random.uniform(key, (batch, n_0), dtype)
  raise ValueError(f"unknown input kind {kind!r}; valid: {', '.join(KINDS)}")


def law_stats(kind: str, n_0: int) -> predict.InputStats:
  """Exact `predict.InputStats` of the input law: N(0, 1) entries as `predict.gaussian_input_stats`; U[0, 1]
  entries from E x = 1/2, E x^2 = 1/3, E x^4 = 1/5: S = n/3, R = n/5 + n (n - 1)/9, E x.x' = n/4,
  E (x.x')^2 = n/9 + n (n - 1)/16, T = n^2/9, and E|x||x'| x.x' = n |E |x| x_1|^2 = n^2/12 + n/40 to O(1)
  (delta method on |x|; within 0.1% of a Monte Carlo at n = 8-80)."""
  if kind == "normal":
    return predict.gaussian_input_stats(n_0)
  if kind == "uniform01":
    n = float(n_0)
    return predict.InputStats(n / 3, n / 5 + n * (n - 1) / 9, n / 4, n / 9 + n * (n - 1) / 16, n * n / 9,
                              n * n / 12 + n / 40)
  raise ValueError(f"unknown input kind {kind!r}; valid: {', '.join(KINDS)}")


def fourth_moment(kind: str, n_0: int) -> float:
  """E||x_0||^4 of the input law: N(0, 1) entries n (n + 2); U[0, 1] entries n/5 + n (n - 1)/9."""
  if kind == "normal":
    return float(n_0 * (n_0 + 2))
  if kind == "uniform01":
    return n_0 / 5 + n_0 * (n_0 - 1) / 9
  raise ValueError(f"unknown input kind {kind!r}")

"""Random losses on a network's outputs, split as the Gauss-Newton identity needs them.

A loss here is `mean_b ell(out_b, target_b; q)`: a per-example convex `ell` of the network output `out_b`
(n_L logits) composed with the network. Two kinds, picked by a static string:

- "quadratic": ell = 1/2 (o - t)^T Q (o - t) with a random PSD `Q` (the paper's "random loss": its
  output Hessian Q is fixed, whatever the network does).
- "xent": softmax cross-entropy against a target distribution `t` (one-hot random labels); its output
  Hessian diag(p) - p p^T depends on the logits. `q` is unused (pass any (n_L, n_L) array).

Everything that varies across setups (params, x, target, q) is an array argument, so losses vmap.
"""
from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jscale import mlp

KINDS = ("quadratic", "xent")


def check_kind(kind: str) -> str:
  if kind not in KINDS:
    raise ValueError(f"unknown loss kind {kind!r}; valid: {', '.join(KINDS)}")
  return kind


def per_example(kind: str) -> Callable:
  """`ell(out_O, target_O, q_OxO) -> scalar` for one example."""
  check_kind(kind)
  if kind == "quadratic":
    def ell(out, target, q):
      r = out - target
      return 0.5 * r @ q @ r
  else:
    def ell(out, target, q):
      del q
      return -jnp.sum(target * jax.nn.log_softmax(out))
  return ell


def make_loss(kind: str, activation="relu") -> Callable:
  """`loss(params, x_BxD, target_BxO, q_OxO) -> scalar`: mean of `ell` over the batch."""
  ell = per_example(kind)

  def loss(params, x, target, q):
    out = mlp.apply_mlp(params, x, activation)
    return jnp.mean(jax.vmap(ell, in_axes=(0, 0, None))(out, target, q))

  return loss


def output_hessians(kind: str, out_BxO, target_BxO, q_OxO) -> jax.Array:
  """Per-example output Hessians d^2 ell / d out^2, shape (B, O, O)."""
  ell = per_example(kind)
  return jax.vmap(jax.hessian(ell), in_axes=(0, 0, None))(out_BxO, target_BxO, q_OxO)


@functools.partial(jax.jit, static_argnums=(1, 2))
def flat_normals(key, size: int, dtype=jnp.float32):
  """`size` N(0, 1) draws, flat: one compiled program per (size, dtype), shared by every array of that many
  entries. XLA:CPU compiles a threefry draw for 0.7-2 s; a flat draw cut and reshaped is the same numbers as
  the shape drawn directly (threefry is counter-based), so callers draw flat at a few sizes (powers of two)."""
  return jax.random.normal(key, (size,), dtype)


def random_quadratic(key, n_out: int, dtype=jnp.float32) -> jax.Array:
  """Q = A^T A / n_out with A i.i.d. N(0, 1): a random PSD matrix with E[Q] = I.

  A is `jax.random.normal(key, (n_out, n_out))`, cut from a flat draw of the next power of two (the same
  numbers: threefry is counter-based), so the Figure 1 setups' 20-odd output widths share a few compiled
  draws instead of one each (XLA:CPU compiles a draw in ~0.7 s); the product is formed in float64 on the host."""
  n = int(n_out) * int(n_out)
  flat = np.asarray(flat_normals(key, 1 << max(n - 1, 0).bit_length(), jnp.dtype(dtype)), np.float64)
  a = flat[:n].reshape(n_out, n_out)
  # Cast on the host: jnp.asarray(float64, float32) casts on the device, one compiled program per width.
  return jnp.asarray(np.asarray(a.T @ a / n_out, jnp.dtype(dtype)))


def quadratic_factor(q) -> np.ndarray:
  """A with A^T A = Q (symmetric square root, float64 eigh; negative rounding eigenvalues clipped): the output
  factor of the quadratic loss, whose output Hessian is Q."""
  lam, v = np.linalg.eigh(np.asarray(q, np.float64))
  return (v * np.sqrt(np.clip(lam, 0.0, None))) @ v.T


def random_targets(key, kind: str, batch: int, n_out: int, dtype=jnp.float32) -> jax.Array:
  """Quadratic: N(0, 1) targets; xent: one-hot uniform random labels. Shape (batch, n_out)."""
  check_kind(kind)
  if kind == "quadratic":
    return jax.random.normal(key, (batch, n_out), dtype)
  labels = jax.random.randint(key, (batch,), 0, n_out)
  return jax.nn.one_hot(labels, n_out, dtype=dtype)

"""Exact Hessian blocks of an MLP loss, their average squared singular values, and Gauss-Newton blocks.

Three ways to the same diagonal blocks, so that each can referee the others:

1. `hessian` / `blocks`: `jax.hessian` of the loss with respect to the `jscale.mlp` parameter tuple.
   `jax.hessian(loss)(params)[i].w[j].w` is the (W_i, W_j) block with shape (n_i, n_{i+1}, n_j, n_{j+1});
   `blocks(H)` flattens every (leaf, leaf) pair to a matrix, leaves ordered w_0, b_0, w_1, b_1, ...
   Exact but O(P^2) memory: `hessian` refuses (with the estimate) when the result would not fit.
2. `gauss_newton_blocks`: (1/B) sum_b J_b^T H_b J_b with J_b = d out_b / d theta from `jax.jacrev` of the
   network output and H_b = d^2 ell / d out^2 from `losses.output_hessians`: no Hessian of the network.
   For a piecewise-linear network (ReLU) the diagonal blocks of 1. and 2. agree exactly (the paper's
   Appendix F, docs/sources.md: the network above layer l is linear in y_l almost everywhere); for tanh
   they do not.
3. `diagonal_sq_sv`: the average squared singular value of every diagonal block without forming it, from
   the Kronecker form that the identity gives, H_{W_l} = (1/B) sum_b (x_b x_b^T) kron M_b with
   M_b = J_b^T H_b J_b and J_b = d out_b / d y_l (n_L x n_{l+1}):
       ||H_{W_l}||_F^2 = (1/B^2) sum_{b,b'} (x_b . x_b')^2 <M_b, M_b'>_F,
       ||H_{b_l}||_F^2 = ||(1/B) sum_b M_b||_F^2.
   Memory O(B n_{l+1}^2) instead of O((n_l n_{l+1})^2): this is what Figure 1 uses at batch 1024.

The average squared singular value of a block is ||H_ij||_F^2 / min(d_i, d_j) (the number of singular
values); on the diagonal that is tr(H_ii^2) / d_i.
"""
from __future__ import annotations

import contextlib
import functools
import math
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jscale import mlp
from jscale.theory import losses

DEFAULT_MAX_BYTES = 2 ** 30  # 1 GiB for the P x P result; working memory is a small multiple of it
PIECEWISE_LINEAR = ("relu", "leaky_relu", "identity", "linear")


def num_params(params) -> int:
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(params))


def hessian_bytes(params, dtype=None) -> int:
  """Bytes of the dense P x P Hessian of a scalar loss w.r.t. `params` (P = number of parameters)."""
  leaves = jax.tree.leaves(params)
  itemsize = jnp.dtype(dtype if dtype is not None else leaves[0].dtype).itemsize
  return num_params(params) ** 2 * itemsize


def _gib(n: int) -> str:
  return f"{n / 2 ** 30:.3g} GiB"


def check_memory(what: str, need: int, max_bytes: int, advice: str):
  """Refuse (ValueError with the estimate) before any compute when `need` bytes exceed `max_bytes`."""
  if need > max_bytes:
    raise ValueError(f"{what} needs about {_gib(need)} but max_bytes is {_gib(max_bytes)}: {advice}")
  return need


def diagonal_bytes(widths: Sequence[int], batch: int, itemsize: int = 4) -> int:
  """Working memory of `diagonal_sq_sv` on one minibatch: every layer's J (B, n_L, n) and the largest
  M (B, n, n), its flattened copy and the Gram matrices (B, B), with a factor 2 for temporaries."""
  o, m = widths[-1], max(widths[1:])
  return 2 * itemsize * (batch * o * sum(widths[1:]) + 2 * batch * m * m + 2 * batch * batch + batch * sum(widths))


def gauss_newton_bytes(params, batch: int, itemsize: int = 4) -> int:
  """Memory of `gauss_newton_blocks`: the Jacobian (B, n_L, P) and every P_i x P_j block (P x P)."""
  p = num_params(params)
  o = jax.tree.leaves(params)[-1].shape[-1]
  return itemsize * (batch * o * p + p * p)


def hessian(loss: Callable, params, *args, x64: bool = False, max_bytes: int = DEFAULT_MAX_BYTES):
  """`jax.hessian(loss)(params, *args)`, refusing up front when the result would exceed `max_bytes`.

  With `x64=True` the computation runs in float64 (`jax.enable_x64`), parameters and array arguments
  cast up; use it for identity checks, where float32 rounding (~1e-7 relative) would hide small errors.
  Returns the nested pytree: `H[i].w[j].w` is the (W_i, W_j) block.
  """
  dtype = jnp.float64 if x64 else jax.tree.leaves(params)[0].dtype
  need = hessian_bytes(params, dtype)
  if need > max_bytes:
    widths = mlp.widths_of(params) if isinstance(params, tuple) and params and hasattr(params[0], "w") else None
    raise ValueError(
        f"the exact Hessian needs {_gib(need)} ({num_params(params)} parameters squared, "
        f"{jnp.dtype(dtype).itemsize} bytes each; network widths {widths}) but max_bytes is {_gib(max_bytes)}. "
        "Use diagonal_sq_sv (Kronecker form of the diagonal blocks) or jscale.theory.hutchinson instead, "
        "or raise max_bytes.")
  ctx = jax.enable_x64(True) if x64 else contextlib.nullcontext()
  with ctx:
    cast = (lambda a: jnp.asarray(a, jnp.float64)) if x64 else jnp.asarray
    params = jax.tree.map(cast, params)
    args = jax.tree.map(lambda a: cast(a) if jnp.issubdtype(jnp.asarray(a).dtype, jnp.floating) else a, args)
    # Under jit: run eagerly, jax.hessian dispatches (and compiles) every primitive on its own, 5x slower.
    return jax.jit(jax.hessian(loss))(params, *args)


def blocks(h, params) -> list[list[jax.Array]]:
  """The pytree from `hessian` as a list of lists of matrices, `blocks[i][j]` of shape (d_i, d_j)."""
  leaves = jax.tree.leaves(params)
  treedef = jax.tree.structure(params)
  rows = treedef.flatten_up_to(h)
  out = []
  for i, row in enumerate(rows):
    cols = treedef.flatten_up_to(row)
    out.append([jnp.reshape(c, (leaves[i].size, leaves[j].size)) for j, c in enumerate(cols)])
  return out


def dense(block_list) -> jax.Array:
  """Assemble `blocks(...)` into the full P x P matrix (leaf order w0, b0, w1, ...)."""
  return jnp.block(block_list)


def sq_sv(block: jax.Array) -> jax.Array:
  """Average squared singular value of one block: ||B||_F^2 / min(rows, cols)."""
  return jnp.sum(jnp.square(block)) / min(block.shape)


def sq_sv_matrix(block_list) -> jax.Array:
  """Heat-map matrix S[i, j] = sq_sv(blocks[i][j]) over all leaves (weights and biases)."""
  return jnp.array([[sq_sv(b) for b in row] for row in block_list])


def weight_rows(params) -> list[int]:
  """Indices of the weight leaves in leaf order (biases are the others)."""
  return [2 * l for l in range(len(params))]


def split_sq_sv(s_matrix: jax.Array, params):
  """(weights L x L, biases L x L) sub-matrices of a full `sq_sv_matrix`."""
  w = np.array(weight_rows(params))
  return s_matrix[np.ix_(w, w)], s_matrix[np.ix_(w + 1, w + 1)]


# ---------------------------------------------------------------------------------------------------
# Gauss-Newton blocks, computed without any second derivative of the network.

def gauss_newton_blocks(kind: str, params, x, target, q, activation="relu",
                        max_bytes: int = DEFAULT_MAX_BYTES) -> list[list[jax.Array]]:
  """Generalised Gauss-Newton matrix (1/B) sum_b J_b^T H_b J_b, as blocks like `blocks(hessian(...))`.

  J_b = d out_b / d theta by `jax.jacrev` of the network output (first derivatives only); H_b is the
  per-example output Hessian of the loss `kind` (see `losses`). Matches `losses.make_loss(kind)`.
  Refuses (ValueError with the estimate) when the Jacobian and the blocks would exceed `max_bytes`.
  """
  check_memory(f"gauss_newton_blocks ({num_params(params)} parameters, batch {x.shape[0]})",
               gauss_newton_bytes(params, x.shape[0], jnp.dtype(x.dtype).itemsize), max_bytes,
               "use diagonal_sq_sv or hutchinson for big networks, or raise max_bytes")
  return _gauss_newton_blocks(kind, activation, params, x, target, q)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _gauss_newton_blocks(kind, activation, params, x, target, q):
  out = mlp.apply_mlp(params, x, activation)
  h_bxoxo = losses.output_hessians(kind, out, target, q)
  jac = jax.jacrev(lambda p: mlp.apply_mlp(p, x, activation))(params)  # leaves (B, O, *leaf.shape)
  b, o = out.shape
  flat = [jnp.reshape(j, (b, o, -1)) for j in jax.tree.leaves(jac)]
  return [[jnp.einsum("boi,bop,bpj->ij", ji, h_bxoxo, jj) / b for jj in flat] for ji in flat]


# ---------------------------------------------------------------------------------------------------
# Diagonal blocks in Kronecker form (exact for piecewise-linear networks, any size that fits B n^2).

class DiagSqSv(NamedTuple):
  """Average squared singular value of each diagonal block: `weight` and `bias` of shape (L,).

  `weight_batch1` / `bias_batch1`: the same for the batch-1 Hessian of each example (the b = b' terms,
  ||x_b||^4 tr(M_b^2) / (n_l n_{l+1})), averaged over the examples: the batch-1 quantity for free."""
  weight: jax.Array
  bias: jax.Array
  weight_batch1: jax.Array
  bias_batch1: jax.Array


def _forward_with_taps(params, x_D, taps, act):
  """One example's logits with `taps[l]` added to the pre-activation y_l (zero taps: the usual net)."""
  h = x_D
  for l, layer in enumerate(params):
    y = h @ layer.w + layer.b + taps[l]
    h = act(y) if l < len(params) - 1 else y
  return h


def upper_jacobians(params, x_BxD, activation="relu"):
  """(layer inputs x_l (B, n_l), J_l = d out / d y_l (B, n_L, n_{l+1})) for every weight layer l."""
  act = mlp.get_activation(activation)
  _, trace = mlp.apply_mlp(params, x_BxD, activation, return_trace=True)
  taps = tuple(jnp.zeros(layer.b.shape, layer.b.dtype) for layer in params)
  jac_fn = jax.jacrev(lambda t, xx: _forward_with_taps(params, xx, t, act))
  jacs = jax.vmap(jac_fn, in_axes=(None, 0))(taps, x_BxD)  # tuple over l of (B, n_L, n_{l+1})
  return trace.inputs, jacs


def diagonal_sq_sv(kind: str, params, x, target, q, activation="relu",
                   max_bytes: int = DEFAULT_MAX_BYTES) -> DiagSqSv:
  """Average squared singular value of every diagonal Hessian block, from the Kronecker form.

  Exact (equal to `sq_sv` of the `jax.hessian` block up to rounding) for piecewise-linear activations,
  where the diagonal blocks equal the Gauss-Newton blocks; raises for others (tanh), where they do not.
  Cost per layer O(B^2 n_{l+1}^2) time and O(B n_{l+1}^2) memory (refused, with the estimate, beyond
  `max_bytes`: the check reads shapes only, so it runs at trace time, before compute). Pure and
  jittable/vmappable over (params, x, target, q).
  """
  name = activation if isinstance(activation, str) else getattr(activation, "__name__", "")
  if name not in PIECEWISE_LINEAR:
    raise ValueError(f"diagonal_sq_sv relies on the Gauss-Newton identity, exact only for piecewise-linear "
                     f"activations {PIECEWISE_LINEAR}; got {activation!r} (use hessian() or hutchinson)")
  widths = (params[0].w.shape[0],) + tuple(layer.w.shape[1] for layer in params)
  check_memory(f"diagonal_sq_sv at batch {x.shape[0]} on widths {widths}",
               diagonal_bytes(widths, x.shape[0], jnp.dtype(x.dtype).itemsize), max_bytes,
               "lower the batch (jscale.theory.pairs measures the expectation from pairs of examples), "
               "or raise max_bytes")
  return _diagonal_sq_sv(kind, activation, params, x, target, q)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _diagonal_sq_sv(kind, activation, params, x, target, q) -> DiagSqSv:
  out = mlp.apply_mlp(params, x, activation)
  h_bxoxo = losses.output_hessians(kind, out, target, q)
  inputs, jacs = upper_jacobians(params, x, activation)
  b = x.shape[0]
  sw, sb, sw1, sb1 = [], [], [], []
  for x_bxn, j_bxoxm in zip(inputs, jacs):
    n_in, n_out = x_bxn.shape[1], j_bxoxm.shape[2]
    m_bxmxm = jnp.einsum("bom,bop,bpk->bmk", j_bxoxm, h_bxoxo, j_bxoxm)
    # <M_b, M_b'>_F from the upper triangle (M is symmetric): half the work of the full flattening.
    iu, ju = np.triu_indices(n_out)
    m_flat = m_bxmxm[:, iu, ju] * jnp.where(iu == ju, 1.0, math.sqrt(2.0)).astype(m_bxmxm.dtype)
    gram_m = m_flat @ m_flat.T
    gram_x = x_bxn @ x_bxn.T
    sw.append(jnp.sum(jnp.square(gram_x) * gram_m) / float(b * b * n_in * n_out))
    sb.append(jnp.sum(jnp.square(jnp.mean(m_bxmxm, axis=0))) / n_out)
    sw1.append(jnp.mean(jnp.square(jnp.diag(gram_x)) * jnp.diag(gram_m)) / float(n_in * n_out))
    sb1.append(jnp.mean(jnp.diag(gram_m)) / n_out)
  return DiagSqSv(*(jnp.stack(v) for v in (sw, sb, sw1, sb1)))


def diagonal_from_blocks(block_list, params) -> DiagSqSv:
  """`DiagSqSv` read off exact blocks (the referee for `diagonal_sq_sv`)."""
  w = weight_rows(params)
  nan = jnp.full(len(w), jnp.nan)
  return DiagSqSv(jnp.stack([sq_sv(block_list[i][i]) for i in w]),
                  jnp.stack([sq_sv(block_list[i + 1][i + 1]) for i in w]), nan, nan)

r"""Exact Hessian blocks of a network loss, dense or convolutional: the blocks, their average squared singular
values, and the Gauss-Newton form that makes them affordable.

A network here is `apply(params, x) -> (B, n_L)` over any pytree of parameters (`jscale.mlp`'s Dense tuple,
the LeNet's {"conv0": {"kernel", "bias"}, ...} dict); `mlp_apply(activation)` is the MLP's. Three ways to the
same diagonal blocks, so that each can referee the others:

1. `hessian` / `blocks`: `jax.hessian` of the loss with respect to the parameter pytree. For an MLP
   `jax.hessian(loss)(params)[i].w[j].w` is the (W_i, W_j) block with shape (n_i, n_{i+1}, n_j, n_{j+1});
   `blocks(H)` flattens every (leaf, leaf) pair to a matrix, leaves in `jax.tree.leaves` order (w_0, b_0,
   w_1, ... for an MLP). Exact but O(P^2) memory: `hessian` refuses (with the estimate) when it would not fit.
2. The Gauss-Newton form (1/B) sum_b J_b^T H_b J_b with J_b = d out_b / d theta (first derivatives only) and
   H_b = d^2 ell / d out^2 (`losses.output_hessians`): `gauss_newton_blocks`. For a piecewise-linear network
   the output is piecewise linear in every leaf (the leaf enters one layer linearly, the rest is linear almost
   everywhere), so the DIAGONAL blocks of 1. and 2. agree exactly (the paper's Appendix F, docs/sources.md);
   for tanh they do not. A conv leaf is no exception: with weight sharing d out_b / d W sums
   x_{b,p}^T kron J_{b,p} over the output positions p, which the per-example Jacobian already sums.
   With factors U_b = A_b d out_b / d theta_l (A_b^T A_b = H_b, `output_factors`),
       ||H_l||_F^2 / d_l = (1/B^2) sum_{b,b'} f_l(b, b'),   f_l(b, b') = ||U_b U_b'^T||_F^2 / d_l   (n_L x n_L),
   which `factor_diagonal_sq_sv` sums without forming a d_l x d_l block (`diagonal_block` forms one, refused
   when it would not fit; the matrix-free `hutchinson.block_sq_sv` works on any pytree).
3. MLPs only, `diagonal_sq_sv`: the Kronecker form the identity gives, H_{W_l} = (1/B) sum_b (x_b x_b^T) kron M_b
   with M_b = J_b^T H_b J_b and J_b = d out_b / d y_l (n_L x n_{l+1}):
       ||H_{W_l}||_F^2 = (1/B^2) sum_{b,b'} (x_b . x_b')^2 <M_b, M_b'>_F,   ||H_{b_l}||_F^2 = ||(1/B) sum_b M_b||_F^2.
   Memory O(B n_{l+1}^2) instead of O((n_l n_{l+1})^2).

The average squared singular value of a block is ||H_ij||_F^2 / min(d_i, d_j) (the number of singular
values); on the diagonal that is tr(H_ii^2) / d_i.
"""
from __future__ import annotations

import contextlib
import functools
import math
from typing import Callable, NamedTuple, Sequence

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np

from jscale import mlp
from jscale.theory import losses

DEFAULT_MAX_BYTES = 2 ** 30  # 1 GiB for the P x P result; working memory is a small multiple of it
PIECEWISE_LINEAR = ("relu", "leaky_relu", "identity", "linear")


# ---------------------------------------------------------------------------------------------------
# Sizes and the memory guard every entry point of the theory runs before compute.

def num_params(params) -> int:
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(params))


def hessian_bytes(params, dtype=None) -> int:
  """Bytes of the dense P x P Hessian of a scalar loss w.r.t. `params` (P = number of parameters)."""
  leaves = jax.tree.leaves(params)
  itemsize = jnp.dtype(dtype if dtype is not None else leaves[0].dtype).itemsize
  return num_params(params) ** 2 * itemsize


def diagonal_bytes(widths: Sequence[int], batch: int, itemsize: int = 4) -> int:
  """Working memory of `diagonal_sq_sv` on one minibatch: every layer's J (B, n_L, n) and the largest
  M (B, n, n), its flattened copy and the Gram matrices (B, B), with a factor 2 for temporaries."""
  o, m = widths[-1], max(widths[1:])
  return 2 * itemsize * (batch * o * sum(widths[1:]) + 2 * batch * m * m + 2 * batch * batch + batch * sum(widths))


def gauss_newton_bytes(params, batch: int, n_out: int, itemsize: int = 4) -> int:
  """Memory of `gauss_newton_blocks`: the Jacobian (B, n_L, P) and every P_i x P_j block (P x P)."""
  p = num_params(params)
  return itemsize * (batch * n_out * p + p * p)


def factor_bytes(params, examples: int, n_out: int, itemsize: int = 4) -> int:
  """Working memory of the Gauss-Newton factors for `examples` examples: the per-example output Jacobians
  and factors (2 E n_L P), the largest leaf's (E n_L)^2 Gram and its square, a factor 2 for temporaries."""
  p = num_params(params)
  return 2 * itemsize * (2 * examples * n_out * p + 2 * (examples * n_out) ** 2)


def block_bytes(params, name: str, itemsize: int = 4) -> int:
  """Bytes of the d x d diagonal block of leaf `name`."""
  d = dict(zip(leaf_names(params), (leaf.size for leaf in jax.tree.leaves(params))))
  if name not in d:
    raise ValueError(f"unknown leaf {name!r}; leaves: {', '.join(d)}")
  return d[name] ** 2 * itemsize


def _gib(n: int) -> str:
  return f"{n / 2 ** 30:.3g} GiB"


def check_memory(what: str, need: int, max_bytes: int, advice: str):
  """Refuse (ValueError with the estimate) before any compute when `need` bytes exceed `max_bytes`. Unlike
  `jscale.memory.check_bytes` the limit is the caller's `max_bytes`, and the advice names the cheaper form."""
  if need > max_bytes:
    raise ValueError(f"{what} needs about {_gib(need)} but max_bytes is {_gib(max_bytes)}: {advice}")
  return need


def leaf_names(params) -> list[str]:
  """'/'-joined key paths of the leaves, in `jax.tree.leaves` order (e.g. 'conv0/bias', 'conv0/kernel')."""
  flat, _ = jax.tree_util.tree_flatten_with_path(params)
  return ["/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path) for path, _ in flat]


@functools.lru_cache(maxsize=None)
def mlp_apply(activation: str = "relu") -> Callable:
  """`apply(params, x)` of a `jscale.mlp` network; one function per activation, so jitted callers that take
  it as a static argument compile once."""
  return lambda params, x: mlp.apply_mlp(params, x, activation)


# ---------------------------------------------------------------------------------------------------
# 1. Whole Hessians and their blocks.

def hessian(loss: Callable, params, *args, x64: bool = False, max_bytes: int = DEFAULT_MAX_BYTES):
  """`jax.hessian(loss)(params, *args)`, refusing up front when the result would exceed `max_bytes`.

  With `x64=True` the computation runs in float64 (`jax.enable_x64`), parameters and array arguments
  cast up; use it for identity checks, where float32 rounding (~1e-7 relative) would hide small errors.
  Returns the nested pytree: `H[i].w[j].w` is the (W_i, W_j) block of an MLP.
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
  """Assemble `blocks(...)` into the full P x P matrix (leaf order)."""
  return jnp.block(block_list)


def sq_sv(block: jax.Array) -> jax.Array:
  """Average squared singular value of one block: ||B||_F^2 / min(rows, cols)."""
  return jnp.sum(jnp.square(block)) / min(block.shape)


def sq_sv_matrix(block_list) -> jax.Array:
  """Heat-map matrix S[i, j] = sq_sv(blocks[i][j]) over all leaves (weights and biases)."""
  return jnp.array([[sq_sv(b) for b in row] for row in block_list])


def flat_sq_sv_matrix(loss: Callable, params, *args) -> jax.Array:
  """`sq_sv_matrix(blocks(jax.hessian(loss)(params, *args), params))` from the Hessian of the flat parameter
  vector (`ravel_pytree`, leaves in `jax.tree.leaves` order): every block's ||H_ij||_F^2 is one product of the
  squared P x P Hessian with a 0/1 leaf-indicator matrix. Jittable; no memory check (call `hessian_bytes` first:
  it needs twice the P x P matrix).

  Why: XLA:CPU compiles `jax.hessian` over a pytree of L leaves as L^2 separately shaped blocks, each with its
  own reduction: Figure 2's 24-96-12-48-8 net took 7-8 s to compile per batch size, this form 3 s (load 7, same
  process). The entries are the same derivatives; only the order of each block's sum of squares differs, so the
  matrix equals the pytree form to float32 rounding (3e-7 relative measured; tested at 1e-6)."""
  theta, unravel = jax.flatten_util.ravel_pytree(params)
  h = jax.hessian(lambda v: loss(unravel(v), *args))(theta)
  sizes = [int(leaf.size) for leaf in jax.tree.leaves(params)]
  seg = np.repeat(np.eye(len(sizes), dtype=np.dtype(theta.dtype)), sizes, axis=0)  # (P, leaves)
  return (seg.T @ (h * h) @ seg) / np.minimum.outer(sizes, sizes).astype(np.dtype(theta.dtype))


def weight_rows(params) -> list[int]:
  """Indices of an MLP's weight leaves in leaf order (biases are the others)."""
  return [2 * l for l in range(len(params))]


def split_sq_sv(s_matrix: jax.Array, params):
  """(weights L x L, biases L x L) sub-matrices of an MLP's full `sq_sv_matrix`."""
  w = np.array(weight_rows(params))
  return s_matrix[np.ix_(w, w)], s_matrix[np.ix_(w + 1, w + 1)]


# ---------------------------------------------------------------------------------------------------
# 2. The Gauss-Newton form, any network: blocks, factors and the diagonal from pairs of factors.

def gauss_newton_blocks(apply: Callable, kind: str, params, x, target, q, *,
                        max_bytes: int = DEFAULT_MAX_BYTES) -> list[list[jax.Array]]:
  """Generalised Gauss-Newton matrix (1/B) sum_b J_b^T H_b J_b, as blocks like `blocks(hessian(...))`.

  J_b = d out_b / d theta by `jax.jacrev` of `apply` (first derivatives only); H_b is the per-example output
  Hessian of the loss `kind` (see `losses`). Refuses (ValueError with the estimate) when the Jacobian and the
  blocks would exceed `max_bytes`."""
  b, o = x.shape[0], q.shape[-1]
  check_memory(f"gauss_newton_blocks ({num_params(params)} parameters, batch {b})",
               gauss_newton_bytes(params, b, o, jnp.dtype(x.dtype).itemsize), max_bytes,
               "use diagonal_sq_sv (never forms a block) or hutchinson for big networks, or raise max_bytes")
  return _gauss_newton_blocks(apply, kind, params, x, target, q)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _gauss_newton_blocks(apply, kind, params, x, target, q):
  out = apply(params, x)
  h_bxoxo = losses.output_hessians(kind, out, target, q)
  jac = jax.jacrev(lambda p: apply(p, x))(params)  # leaves (B, O, *leaf.shape)
  b, o = out.shape
  flat = [jnp.reshape(j, (b, o, -1)) for j in jax.tree.leaves(jac)]
  return [[jnp.einsum("boi,bop,bpj->ij", ji, h_bxoxo, jj) / b for jj in flat] for ji in flat]


def output_factors(kind: str, out_BxO, a_q) -> jax.Array:
  """A_b with A_b^T A_b = H_b (B, n_L, n_L): Q^{1/2} (`a_q`) for the quadratic loss, diag(sqrt p)(I - 1 p^T)
  for softmax cross-entropy."""
  losses.check_kind(kind)
  b, o = out_BxO.shape
  if kind == "quadratic":
    return jnp.broadcast_to(jnp.asarray(a_q, out_BxO.dtype), (b, o, o))
  p = jax.nn.softmax(out_BxO, axis=-1)
  return jnp.sqrt(p)[:, :, None] * (jnp.eye(o, dtype=out_BxO.dtype) - p[:, None, :])


def leaf_factors(apply: Callable, params, x, kind: str, a_q) -> list:
  """U_b = A_b d out_b / d theta for every leaf, each (B, n_L, d_leaf), in `jax.tree.leaves` order."""
  out = apply(params, x)
  a = output_factors(kind, out, a_q)
  jac = jax.vmap(lambda xb: jax.jacrev(lambda p: apply(p, xb[None])[0])(params))(x)  # leaves (B, O, *leaf)
  b, o = out.shape
  return [jnp.einsum("bpo,bod->bpd", a, j.reshape(b, o, -1)) for j in jax.tree.leaves(jac)]


def factor_pairs(u_BxOxD) -> jax.Array:
  """f(b, b') = ||U_b U_b'^T||_F^2 / d for one leaf: (B, B)."""
  b, o, d = u_BxOxD.shape
  flat = u_BxOxD.reshape(b * o, d)
  c = (flat @ flat.T).reshape(b, o, b, o)
  return jnp.sum(c * c, axis=(1, 3)) / d


def _factor_a_q(kind, q, dtype):
  o = q.shape[-1]
  return jnp.asarray(losses.quadratic_factor(q), dtype) if kind == "quadratic" else jnp.zeros((o, o), dtype)


def check_factor_memory(params, examples: int, n_out: int, max_bytes: int):
  return check_memory(f"the Gauss-Newton factors of {num_params(params)} parameters at {examples} examples",
                      factor_bytes(params, examples, n_out), max_bytes,
                      "use fewer examples per draw (pairs of examples give any batch size), or raise max_bytes")


def factor_diagonal_sq_sv(apply: Callable, kind: str, params, x, target, q, *,
                          max_bytes: int = DEFAULT_MAX_BYTES) -> dict:
  """{leaf name: average squared singular value of its diagonal Hessian block} for the minibatch x (exact
  for piecewise-linear networks; equal to `sq_sv` of the `jax.hessian` block, tested). Refuses (ValueError
  with the estimate) before compute when the factors exceed `max_bytes`. `target` enters the loss value,
  not its curvature."""
  del target
  check_factor_memory(params, x.shape[0], q.shape[-1], max_bytes)
  return dict(zip(leaf_names(params), _diag_from_factors(apply, kind, params, x, _factor_a_q(kind, q, x.dtype))))


@functools.partial(jax.jit, static_argnums=(0, 1))
def _diag_from_factors(apply, kind, params, x, a_q):
  return [jnp.mean(factor_pairs(u)) for u in leaf_factors(apply, params, x, kind, a_q)]


def diagonal_block(apply: Callable, kind: str, params, x, target, q, *, name: str,
                   max_bytes: int = DEFAULT_MAX_BYTES) -> jax.Array:
  """The (d x d) diagonal Hessian block of leaf `name`, formed from the Gauss-Newton factors. Refused before
  any compute (ValueError with the estimate) when d^2 floats exceed `max_bytes`: then use
  `factor_diagonal_sq_sv` (its average squared singular value without the block) or `hutchinson.block_sq_sv`."""
  need = block_bytes(params, name) + factor_bytes(params, x.shape[0], q.shape[-1])
  check_memory(f"the diagonal block of {name!r}", need, max_bytes,
               "use hessian.factor_diagonal_sq_sv or hutchinson.block_sq_sv (matrix-free), or raise max_bytes")
  del target
  u = leaf_factors(apply, params, x, kind, _factor_a_q(kind, q, x.dtype))[leaf_names(params).index(name)]
  return jnp.einsum("bod,boe->de", u, u) / x.shape[0]


# ---------------------------------------------------------------------------------------------------
# 3. MLP diagonal blocks in Kronecker form (exact for piecewise-linear networks, any size that fits B n^2).

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


def diagonal_sq_sv(kind: str, params, x, target, q, activation="relu", *,
                   max_bytes: int = DEFAULT_MAX_BYTES) -> DiagSqSv:
  """Average squared singular value of every diagonal Hessian block of an MLP, from the Kronecker form.

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
  """`DiagSqSv` read off exact MLP blocks (the referee for `diagonal_sq_sv`)."""
  w = weight_rows(params)
  nan = jnp.full(len(w), jnp.nan)
  return DiagSqSv(jnp.stack([sq_sv(block_list[i][i]) for i in w]),
                  jnp.stack([sq_sv(block_list[i + 1][i + 1]) for i in w]), nan, nan)

r"""Exact diagonal Hessian blocks of any network `apply(params, x)` (the strided LeNet above all), and the
calculus's prediction for the LeNet's conv and dense blocks.

Exact side (Gauss-Newton identity, any pytree of parameters). For a piecewise-linear network the output is
piecewise linear in every leaf theta_l (the leaf enters linearly one layer, the rest is linear almost
everywhere), so the diagonal block of theta_l equals its Gauss-Newton block (the paper's Appendix F; the tests
check it against `jax.hessian` on a LeNet):
    H_l = (1/B) sum_b U_b^T U_b,   U_b = A_b d out_b / d theta_l   (n_L x d_l),  A_b^T A_b = H_b.
A conv leaf is no exception: with weight sharing, d out_b / d W = sum_p x_{b,p}^T kron J_{b,p} over the output
positions p, which the per-example Jacobian already sums. Hence, exactly,
    ||H_l||_F^2 / d_l = (1/B^2) sum_{b,b'} f_l(b, b'),   f_l(b, b') = ||U_b U_b'^T||_F^2 / d_l   (n_L x n_L),
and `pairs`' decomposition E s_l(B) = E f(b, b) / B + (1 - 1/B) E f(b, b') holds unchanged (the examples are
i.i.d. given the weights), so a few examples per draw give the expectation at batch 1024. Memory: the factors
U (E n_L P floats for E examples, P parameters) and the (E n_L)^2 Gram; never a d_l x d_l block, unless
`diagonal_block` is asked for one (refused, with the estimate, when it would not fit; the matrix-free
`hutchinson.block_sq_sv` works on any pytree and is the way there).

Prediction (`predict_lenet`) [derived, leading order in width; the paper's Proposition 4 extended to
stride = kernel convolutions and to a minibatch]. Write a conv layer's input as patches x_{b,p} (k n_l
entries, one per output position p, disjoint for stride = kernel) and V_{b,p} = A_b d out_b / d y_{b,p}
(n_L x n_{l+1}). Then U_b U_b'^T = sum_{p,p'} (x_{b,p} . x_{b',p'}) V_{b,p} V_{b',p'}^T and ||.||_F^2 is a sum
over four positions (p, p', q, q'). The backward factors of distinct positions go through independent zero-mean
weight slices somewhere above (other taps of the next conv, other rows of the first dense layer), so in
expectation only pairings of the positions survive (Wick). The pairing {p = q, p' = q'} sums to
(x_b . x_b')^2 <V V^T, V V^T>-terms over the WHOLE layer input x_b (the patches tile it); the other two carry
<M_pp, M_qq> or tr((V_p V_q^T)^2) of two different positions, smaller by O(n_L / n_{l+1}) per pair, the order the
paper also leaves out. At leading order V_{b,p} V_{b,p}^T ~ (n_{l+1} E[dy_l^2]) A_b A_b^T / (tr H / n_L), hence
with S_l = E||x_l||^2 (the whole input) and E[dy_l^2] from the calculus (`calculus.predict` on the LeNet's
Conv / Act / Flatten / Linear list; dy_out^2 = sqrt(E (tr H)^2) / n_L):
    s_l(1) = S_l^2 (n_{l+1} E[dy_l^2])^2 sh / (k n_l n_{l+1}),          sh = E tr(H^2) / E (tr H)^2,
    s_l(B) = [R_l / B + (1 - 1/B) P_l m_l c] (n_{l+1} E[dy_l^2])^2 sh / (k n_l n_{l+1}),
with R_l = E||x_l||^4, P_l = E(x_b . x_b')^2 (exact input statistics at l = 0; S_l^2 and (r_l S_l)^2 above, r_l
the calculus's correlation between two examples' entries, `calculus.relu_corr`), c = E tr(H_b H_b') /
E tr(H_b^2), and m_l = prod_{l <= k < L-1} (1 - theta_k / pi)^2, theta_k = arccos r_k: the squared fraction of
units active in both examples relative to one (4 P(both > 0)^2 per ReLU; the MLP recursion's e2 / h2 at leading
order). Biases: rho_{l+1}^2 (n_{l+1} E[dy_l^2])^2 sh [1/B + (1 - 1/B) m_l c] / n_{l+1}. A dense layer is the case
k = rho = 1 (`predict.predict_leading` at batch 1, up to R_0 for S_0^2 at the input layer).
Where it is approximate: (1) leading order in width: E||x||^4 = S^2 (1 + O(1/n)) per ReLU layer, the O(n_L / n)
parts of E tr(M^2) and the two dropped pairings (`predict.predict_sq_sv` keeps the first two for MLPs; no such
full-order recursion exists here yet: it needs the backward moments of pairs of positions by the level where
their paths meet); (2) forward and backward quantities independent (the calculus's A3); (3) Gaussian weights.
Measured on 10 sampled LeNets (hessian experiment, full grid): predicted / exact median 0.39 at batch 1 (every
layer under-predicted, 0.31 conv0 to 0.48 last layer, where the one approximation is R = S^2); at batch 1024 the
dropped cross-position pairings dominate the convs (conv0 0.005, conv1 0.04, dense layers 0.19-0.58).
"""
from __future__ import annotations

import functools
import math
import time
from typing import Callable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jscale import calculus, initializers
from jscale.models import lenet as lenet_lib
from jscale.theory import hessian as hess
from jscale.theory import losses, pairs, predict
from jscale.theory import setups as setups_lib

SCHEMES = initializers.SCHEMES
DEFAULT_MAX_BYTES = hess.DEFAULT_MAX_BYTES


# ---------------------------------------------------------------------------------------------------
# Leaves and memory

def leaf_names(params) -> list[str]:
  """'/'-joined key paths of the leaves, in `jax.tree.leaves` order (e.g. 'conv0/bias', 'conv0/kernel')."""
  flat, _ = jax.tree_util.tree_flatten_with_path(params)
  return ["/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path) for path, _ in flat]


def factor_bytes(params, examples: int, n_out: int, itemsize: int = 4) -> int:
  """Working memory of the exact pair statistics for one draw of `examples` examples: the per-example output
  Jacobians and factors (2 E n_L P), the largest leaf's (E n_L)^2 Gram and its square, a factor 2 for
  temporaries."""
  p = hess.num_params(params)
  return 2 * itemsize * (2 * examples * n_out * p + 2 * (examples * n_out) ** 2)


def block_bytes(params, name: str, itemsize: int = 4) -> int:
  """Bytes of the d x d diagonal block of leaf `name`."""
  d = dict(zip(leaf_names(params), (leaf.size for leaf in jax.tree.leaves(params))))
  if name not in d:
    raise ValueError(f"unknown leaf {name!r}; leaves: {', '.join(d)}")
  return d[name] ** 2 * itemsize


# ---------------------------------------------------------------------------------------------------
# Exact, for any apply(params, x) -> (B, n_L)

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


def diagonal_sq_sv(apply: Callable, kind: str, params, x, target, q, max_bytes: int = DEFAULT_MAX_BYTES) -> dict:
  """{leaf name: average squared singular value of its diagonal Hessian block} for the minibatch x (exact
  for piecewise-linear networks; equal to `sq_sv` of the `jax.hessian` block, tested). Refuses (ValueError
  with the estimate) before compute when the factors exceed `max_bytes`. `target` enters the loss value,
  not its curvature."""
  del target
  o = q.shape[-1]
  check_factor_memory(params, x.shape[0], o, max_bytes)
  a_q = jnp.asarray(pairs.quadratic_factor(q), x.dtype) if kind == "quadratic" else jnp.zeros((o, o), x.dtype)
  return dict(zip(leaf_names(params), _diag_from_factors(apply, kind, params, x, a_q)))


@functools.partial(jax.jit, static_argnums=(0, 1))
def _diag_from_factors(apply, kind, params, x, a_q):
  return [jnp.mean(factor_pairs(u)) for u in leaf_factors(apply, params, x, kind, a_q)]


def check_factor_memory(params, examples: int, n_out: int, max_bytes: int):
  return hess.check_memory(f"the Gauss-Newton factors of {hess.num_params(params)} parameters at {examples} examples",
                           factor_bytes(params, examples, n_out), max_bytes,
                           "use fewer examples per draw (pairs of examples give any batch size), or raise max_bytes")


def gauss_newton_blocks(apply: Callable, kind: str, params, x, target, q,
                        max_bytes: int = DEFAULT_MAX_BYTES) -> list[list[jax.Array]]:
  """(1/B) sum_b J_b^T H_b J_b as blocks like `hessian.blocks` (leaves in `jax.tree.leaves` order), from
  first derivatives only; refused (ValueError with the estimate) beyond `max_bytes`."""
  p = hess.num_params(params)
  b, o = x.shape[0], q.shape[-1]
  hess.check_memory(f"gauss_newton_blocks ({p} parameters, batch {b})", 4 * (b * o * p + p * p), max_bytes,
                    "use diagonal_sq_sv (never forms a block) or hutchinson, or raise max_bytes")
  out = apply(params, x)
  h = losses.output_hessians(kind, out, target, q)
  jac = jax.jacrev(lambda pp: apply(pp, x))(params)
  flat = [j.reshape(b, o, -1) for j in jax.tree.leaves(jac)]
  return [[jnp.einsum("boi,bop,bpj->ij", ji, h, jj) / b for jj in flat] for ji in flat]


def diagonal_block(apply: Callable, kind: str, params, x, target, q, name: str,
                   max_bytes: int = DEFAULT_MAX_BYTES) -> jax.Array:
  """The (d x d) diagonal Hessian block of leaf `name`, formed from the Gauss-Newton factors. Refused before
  any compute (ValueError with the estimate) when d^2 floats exceed `max_bytes`: then use `diagonal_sq_sv`
  (its average squared singular value without the block) or `hutchinson.block_sq_sv` (matrix-free)."""
  need = block_bytes(params, name) + factor_bytes(params, x.shape[0], q.shape[-1])
  hess.check_memory(f"the diagonal block of {name!r}", need, max_bytes,
                    "use convnet.diagonal_sq_sv or hutchinson.block_sq_sv (matrix-free), or raise max_bytes")
  del target
  o = q.shape[-1]
  a_q = jnp.asarray(pairs.quadratic_factor(q), x.dtype) if kind == "quadratic" else jnp.zeros((o, o), x.dtype)
  u = leaf_factors(apply, params, x, kind, a_q)[leaf_names(params).index(name)]
  return jnp.einsum("bod,boe->de", u, u) / x.shape[0]


# ---------------------------------------------------------------------------------------------------
# The LeNet's weight layers, leaves and the calculus's layer list

def weight_layers(config: lenet_lib.LeNetConfig) -> list[str]:
  return list(config.check().kernel_shapes())


def weight_sq(config: lenet_lib.LeNetConfig, init) -> list[float]:
  """E[W^2] of every weight layer (one spec, or one per layer), from the initializers' own moments."""
  shapes = config.check().kernel_shapes()
  inits = lenet_lib._per_layer(init, len(shapes))
  return [float(ini.second_moment(s)) for ini, s in zip(inits, shapes.values())]


def calculus_layers(config: lenet_lib.LeNetConfig, wsq: Sequence[float]) -> tuple:
  """The LeNet as a `jscale.calculus` layer list (Conv stride = kernel, ReLU, Flatten, Linear) with fixed E[W^2]."""
  config.check()
  layers, i = [], 0
  for n, k in zip(config.channels, config.kernels):
    layers += [calculus.Conv(int(n), tuple(k), weight_sq=wsq[i]), calculus.Act("relu")]
    i += 1
  layers.append(calculus.Flatten())
  for n in config.hidden:
    layers += [calculus.Linear(int(n), weight_sq=wsq[i]), calculus.Act("relu")]
    i += 1
  layers.append(calculus.Linear(int(config.n_out), weight_sq=wsq[i]))
  return tuple(layers)


def predict_lenet(config: lenet_lib.LeNetConfig, wsq: Sequence[float], inputs: predict.InputStats,
                  loss: predict.LossStats, batch_size: int = 1, corrected: bool = True) -> predict.Prediction:
  """Leading-order prediction of every weight layer's diagonal-block average squared singular value (weight
  and bias, shape (L,)) at minibatch `batch_size` (module docstring). `inputs`: statistics of the whole
  flattened image; `corrected=False` drops the cross-example term (the batch-1 model s(1) / B)."""
  if int(batch_size) != batch_size or batch_size < 1:
    raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
  if len(wsq) != len(weight_layers(config)) or any(not (w > 0 and math.isfinite(w)) for w in wsq):
    raise ValueError(f"wsq must hold one finite E[W^2] > 0 per weight layer, got {list(wsq)}")
  h, w, c = config.image
  n0 = h * w * c
  r0 = inputs.dot / inputs.sq_norm
  pred = calculus.predict(calculus_layers(config, wsq), c, (h, w), x0_sq=inputs.sq_norm / n0,
                          dy_out_sq=math.sqrt(loss.trace_sq) / config.n_out, x0_corr=min(max(r0, -1.0), 1.0))
  x_sq, dy_sq = np.asarray(pred.moments.x_sq, np.float64), np.asarray(pred.moments.dy_sq, np.float64)
  L = len(wsq)
  r = [r0]
  for _ in range(L - 1):
    r.append(calculus.relu_corr(r[-1]))
  theta = np.arccos(np.clip(r, -1.0, 1.0))
  frac = (1 - theta / math.pi) ** 2  # 4 P(both active)^2 for the ReLU after layer l
  mask = np.array([np.prod(frac[l:L - 1]) for l in range(L)])
  sh = loss.tr_sq / loss.trace_sq
  cross_h = loss.tr_cross / loss.tr_sq
  inv_b = 1.0 / batch_size
  cross = (1.0 - inv_b) if corrected else 0.0
  wt, bs = [], []
  for l, info in enumerate(pred.layers):
    s = info.rho_in * info.n_in * x_sq[l]
    big_r, big_p = (inputs.sq_norm_sq, inputs.dot_sq) if l == 0 else (s * s, (r[l] * s) ** 2)
    back = (info.n_out * dy_sq[l]) ** 2 * sh
    wt.append((big_r * inv_b + cross * big_p * mask[l] * cross_h) * back / (info.k * info.n_in * info.n_out))
    bs.append(info.rho_out ** 2 * back * (inv_b + cross * mask[l] * cross_h) / info.n_out)
  return predict.Prediction(np.array(wt), np.array(bs))


# ---------------------------------------------------------------------------------------------------
# Figure 1 on the LeNet: sampled channel counts, exact expectation from pairs of examples

IMAGE = (8, 8, 1)
DEFAULT_ROUND = 32
KERNELS = ((2, 2), (2, 2))
N_OUT = 10


class LeNetSetup(NamedTuple):
  channels: tuple   # conv output channels
  hidden: tuple     # dense hidden widths
  scheme: str       # a key of SCHEMES
  loss: str         # a losses.KINDS entry
  seed: int

  def config(self) -> lenet_lib.LeNetConfig:
    return lenet_lib.LeNetConfig(IMAGE, tuple(self.channels), KERNELS, tuple(self.hidden), N_OUT).check()

  @property
  def label(self) -> str:
    return f"LeNet c{'-'.join(map(str, self.channels))} h{'-'.join(map(str, self.hidden))}"


def check_setup(s: LeNetSetup) -> LeNetSetup:
  s.config()
  if s.scheme not in SCHEMES:
    raise ValueError(f"unknown scheme {s.scheme!r}; valid: {', '.join(SCHEMES)}")
  losses.check_kind(s.loss)
  return s


def sample_setups(num: int, seed: int = 0, channels=(4, 16), hidden=(16, 128), losses_=losses.KINDS) -> list:
  """`num` LeNet setups on 8x8x1 random images: conv channels log-uniform in `channels`, dense hidden widths
  log-uniform in `hidden`, scheme and loss uniform. Deterministic in `seed`."""
  if num < 1:
    raise ValueError(f"num must be >= 1, got {num}")
  rng = np.random.default_rng(seed + 7919)  # not the MLP setups' stream
  draw = lambda lo, hi, n: tuple(int(min(max(v, lo), hi)) for v in
                                 np.exp(rng.uniform(math.log(lo), math.log(hi + 1), n)).astype(int))
  return [LeNetSetup(draw(*channels, 2), draw(*hidden, 2), str(rng.choice(list(SCHEMES))),
                     str(rng.choice(list(losses_))), int(rng.integers(2 ** 31 - 1))) for _ in range(num)]


def _patches(x_HxWxC, kernel) -> jax.Array:
  """The stride = kernel patches of one example's feature map, (positions, k C): the rows a conv's kernel
  multiplies (the order inside a patch does not matter to their dot products)."""
  h, w, c = x_HxWxC.shape
  kh, kw = kernel
  return x_HxWxC.reshape(h // kh, kh, w // kw, kw, c).transpose(0, 2, 1, 3, 4).reshape((h // kh) * (w // kw), -1)


def _lenet_taps(params, x_HxWxC, taps):
  """One example's logits with `taps[l]` added to weight layer l's pre-activation, and every layer's input as
  patches (positions, k n_l) (a dense layer: one position)."""
  convs = sorted((k for k in params if k.startswith("conv")), key=lambda k: int(k[4:]))
  denses = sorted((k for k in params if k.startswith("dense")), key=lambda k: int(k[5:]))
  h, ins, l = x_HxWxC, [], 0
  for name in convs:
    w = params[name]["kernel"]
    ins.append(_patches(h, w.shape[:2]))
    y = jax.lax.conv_general_dilated(h[None], w, w.shape[:2], "VALID",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))[0] + params[name]["bias"]
    h = jax.nn.relu(y + taps[l])
    l += 1
  h = h.reshape(-1)
  for i, name in enumerate(denses):
    ins.append(h[None])
    y = h @ params[name]["kernel"] + params[name]["bias"] + taps[l][0]
    h = jax.nn.relu(y) if i < len(denses) - 1 else y
    l += 1
  return h, ins


def lenet_pair_stats(params, x, kind, a_q, dims=None) -> jax.Array:
  """Exact f(b, b') of every weight layer's kernel and bias block for the LeNet on examples x (E, H, W, C), from
  the position structure instead of the full parameter Jacobian: with patches x_{b,p} and
  V_{b,p} = A_b d out_b / d y_{b,p}, U_b U_b'^T = sum_{p,p'} (x_{b,p} . x_{b',p'}) V_{b,p} V_{b',p'}^T (kernel) and
  sum_{p,p'} V_{b,p} V_{b',p'}^T (bias). Returns (L, 2, E, E): [kernel f, bias f]; equal to `factor_pairs` of
  `leaf_factors` (tested), about 10x cheaper on the LeNet. `dims` = (kernel entries, bias entries) per layer, the
  true block sizes when `params` are zero-padded (default: the shapes')."""
  shapes = {k: v["kernel"].shape for k, v in params.items()}
  names = sorted(shapes, key=lambda s: (not s.startswith("conv"), int(s.lstrip("convdense"))))
  taps0 = _zero_taps(params, x.shape[1:])
  out, ins = jax.vmap(lambda xb: _lenet_taps(params, xb, taps0))(x)
  jac = jax.vmap(lambda xb: jax.jacrev(lambda t: _lenet_taps(params, xb, t)[0])(taps0))(x)  # per l (E, O, *tap)
  if isinstance(kind, str):
    a = output_factors(kind, out, a_q)
  else:  # a traced 0/1 flag (1: cross-entropy), so that one compiled program serves both losses
    a = jnp.where(kind > 0, output_factors("xent", out, a_q), output_factors("quadratic", out, a_q))
  e, o = out.shape
  res = []
  for l, name in enumerate(names):
    m = shapes[name][-1]
    v = jnp.einsum("bpo,bo...->bp...", a, jac[l]).reshape(e, o, -1, m).transpose(0, 2, 1, 3)  # (E, rho, O, m)
    xp = ins[l]  # (E, rho, D)
    d, mb = (xp.shape[-1] * m, m) if dims is None else (dims[0][l], dims[1][l])
    gx = jnp.einsum("epd,fqd->epfq", xp, xp)
    c = jnp.einsum("epfq,epom,fqrm->efor", gx, v, v)
    vs = jnp.sum(v, axis=1)  # (E, O, m): sum over positions, for the bias
    cb = jnp.einsum("eom,frm->efor", vs, vs)
    res.append(jnp.stack([jnp.sum(c * c, axis=(2, 3)) / d, jnp.sum(cb * cb, axis=(2, 3)) / mb]))
  return jnp.stack(res)


def pair_bytes(config: lenet_lib.LeNetConfig, examples: int, itemsize: int = 4) -> int:
  """Working memory of `lenet_pair_stats` for one draw: the taps' Jacobian (E n_L x every pre-activation), the
  patches, and the largest (E rho)^2 n_L^2 product of V's, with a factor 3 for temporaries."""
  h, w, c = config.check().image
  acts, patches, biggest, e, o = 0, h * w * c, 0, examples, config.n_out
  for n, (kh, kw) in zip(config.channels, config.kernels):
    h, w = h // kh, w // kw
    acts += h * w * n
    patches += h * w * n
    biggest = max(biggest, (e * h * w) ** 2 * o * o)
  for n in tuple(config.hidden) + (o,):
    acts += n
    biggest = max(biggest, e * e * o * o)
  return 3 * itemsize * (e * o * acts + e * patches + biggest)


def _zero_taps(params, image_shape):
  """Zero taps of every weight layer's pre-activation shape for one example (conv: (h, w, c); dense: (1, n))."""
  h, w = image_shape[:2]
  taps = []
  for name in sorted((k for k in params if k.startswith("conv")), key=lambda k: int(k[4:])):
    kh, kw, _, c = params[name]["kernel"].shape
    h, w = h // kh, w // kw
    taps.append(jnp.zeros((h, w, c), params[name]["kernel"].dtype))
  for name in sorted((k for k in params if k.startswith("dense")), key=lambda k: int(k[5:])):
    taps.append(jnp.zeros((1, params[name]["kernel"].shape[-1]), params[name]["kernel"].dtype))
  return taps


# The shapes draws are computed in: the smallest that fits (padded units are exact zeros, see `padded_config`).
PAD_CONFIGS = (lenet_lib.LeNetConfig(IMAGE, (4, 4), KERNELS, (16, 16), N_OUT),
               lenet_lib.LeNetConfig(IMAGE, (16, 16), KERNELS, (128, 128), N_OUT))


def padded_config(config: lenet_lib.LeNetConfig) -> lenet_lib.LeNetConfig:
  """The shape a LeNet's draws are computed in: the smallest of PAD_CONFIGS that holds it (one compiled program
  for every such setup, scheme and loss), else the LeNet itself. Padded units have zero weights in and out, so
  their pre-activation, output and every Jacobian row are exact zeros and they add nothing to any sum (tested)."""
  for pad in PAD_CONFIGS:
    if (config.image == pad.image and tuple(config.kernels) == pad.kernels and config.n_out == pad.n_out
        and len(config.channels) == len(pad.channels) and len(config.hidden) == len(pad.hidden)
        and all(a <= b for a, b in zip(config.channels, pad.channels))
        and all(a <= b for a, b in zip(config.hidden, pad.hidden))):
      return pad
  return config


def _layer_masks(padded: lenet_lib.LeNetConfig, widths_in, widths_out):
  """name -> 0/1 mask of the true (traced widths) corner of each padded kernel."""
  shapes = padded.kernel_shapes()
  masks = {}
  for l, (name, shape) in enumerate(shapes.items()):
    cols = jnp.arange(shape[-1]) < widths_out[l]
    if name == "dense0":  # rows are the flattened (h, w, c) conv output: the channel is row % c_pad
      rows = (jnp.arange(shape[0]) % padded.channels[-1]) < widths_in[l]
    else:
      rows = jnp.arange(shape[-2]) < widths_in[l]
    masks[name] = (rows[:, None] & cols[None, :]).astype(jnp.float32)
  return masks


@functools.partial(jax.jit, static_argnums=(0, 2))
def _round(padded, loss, examples, stds, widths_in, widths_out, entries, a_q, keys):
  """Per draw: (same-example mean, pair mean) of f for every weight layer's kernel and bias, (R, L, 4) in
  `pairs.FIELDS` order, and the softmax probabilities (R, E, n_L) (cross-entropy's loss statistics).
  `loss`: 1.0 for cross-entropy, 0.0 for the quadratic loss (traced). Weights: N(0, stds[l]^2) on the true
  corner (widths_in / widths_out, traced) of the padded shapes, zero elsewhere; biases zero. The four schemes
  are normal initialisers, so a scheme is its `stds`. `entries`: the true kernel sizes (the blocks'
  dimensions)."""
  shapes = padded.kernel_shapes()
  masks = _layer_masks(padded, widths_in, widths_out)
  dims = (entries, widths_out)

  def one(key):
    kp, kx = jax.random.split(key)
    params = {}
    for l, (name, shape, k) in enumerate(zip(shapes, shapes.values(), jax.random.split(kp, len(shapes)))):
      m = masks[name].reshape((1,) * (len(shape) - 2) + masks[name].shape)
      params[name] = {"kernel": stds[l] * m * jax.random.normal(k, shape, jnp.float32),
                      "bias": jnp.zeros(shape[-1], jnp.float32)}
    x = jax.random.normal(kx, (examples,) + tuple(padded.image), jnp.float32)
    out = lenet_lib.apply_lenet(params, x)
    f = lenet_pair_stats(params, x, loss, a_q, dims)  # (L, 2, E, E)
    dm = jnp.einsum("lkef,ef->lk", f, jnp.eye(examples)) / examples
    pm = (jnp.sum(f, axis=(2, 3)) - examples * dm) / (examples * (examples - 1))
    return jnp.stack([dm[:, 0], pm[:, 0], dm[:, 1], pm[:, 1]], -1), jax.nn.softmax(out, axis=-1)

  return jax.vmap(one)(keys)


def exact_round(setup: LeNetSetup, key, draws: int, examples: int, a_q,
                max_bytes: int = pairs.DEFAULT_MAX_BYTES, pad: bool = True):
  """One round: `draws` draws of (weights, `examples` N(0, 1) images), stats (R, L, 4) float64 and probs,
  computed in the padded shape (`padded_config`; `pad=False`: in the LeNet's own shape)."""
  config = setup.config()
  padded = padded_config(config) if pad else config
  hess.check_memory(f"{draws} draws x {examples} examples on {setup.label} (computed as {padded.channels}/"
                    f"{padded.hidden})", draws * pair_bytes(padded, examples), max_bytes,
                    "lower round_draws or examples, or raise max_bytes")
  init = SCHEMES[setup.scheme]
  if initializers.get(init).name.split(":")[0] not in ("he_normal", "glorot_normal", "geometric", "lecun_normal"):
    raise ValueError(f"exact_round draws normal weights; scheme {setup.scheme!r} ({init}) is not a normal initializer")
  stds = jnp.sqrt(jnp.asarray(weight_sq(config, init), jnp.float32))
  shapes = list(config.kernel_shapes().values())
  w_in = [s[-2] for s in shapes]
  w_in[len(config.channels)] = config.channels[-1]  # dense0's rows are (position, channel): mask by channel
  w_in, w_out = jnp.asarray(w_in, jnp.float32), jnp.asarray([s[-1] for s in shapes], jnp.float32)
  entries = jnp.asarray([float(np.prod(s)) for s in shapes], jnp.float32)
  xent = jnp.asarray(float(setup.loss == "xent"), jnp.float32)
  st, probs = _round(padded, xent, int(examples), stds, w_in, w_out, entries, a_q, jax.random.split(key, draws))
  return np.asarray(st, np.float64), np.asarray(probs, np.float64)


def _mean_se(v_DxL):
  v = np.asarray(v_DxL, np.float64)
  return v.mean(0), v.std(0, ddof=1) / math.sqrt(v.shape[0])


def input_stats(config: lenet_lib.LeNetConfig) -> predict.InputStats:
  """Statistics of one N(0, 1) image, flattened (exact)."""
  return predict.gaussian_input_stats(int(np.prod(config.image)))


def run_setup(setup: LeNetSetup, batch: int, draws: int, key, *, examples: int = pairs.DEFAULT_EXAMPLES,
              target_rel_se: float | None = None, max_draws: int | None = None, round_draws: int | None = None,
              max_bytes: int = pairs.DEFAULT_MAX_BYTES, on_round: Callable | None = None) -> tuple:
  """(batch-1 `setups.Record`, batch-`batch` Record) of a LeNet setup, weight layers in order conv0, conv1,
  dense0, ... The exact side is the plain mean over draws (SE: std / sqrt(draws)); with `target_rel_se`,
  rounds continue until every weight block's relative SE is at most the target at both batch sizes, or
  `max_draws`. `Record.setup` is the LeNetSetup; `batch1_w` / `leading_w` the batch-1 model s(1)/B,
  `corrected_w` with the cross-example term."""
  check_setup(setup)
  if batch < 2 or draws < 3 or examples < 2:
    raise ValueError(f"run_setup needs batch >= 2, draws >= 3, examples >= 2; got {batch}, {draws}, {examples}")
  max_draws = int(max_draws) if max_draws is not None else 16 * draws
  if max_draws < draws:
    raise ValueError(f"max_draws ({max_draws}) must be >= draws ({draws})")
  config = setup.config()
  if round_draws is None:  # as many draws per round as fit in max_bytes, at most 32 (a 2-core CPU's sweet spot)
    round_draws = max(1, min(draws, DEFAULT_ROUND, max_bytes // pair_bytes(config, examples)))
  round_draws = int(round_draws)
  t0 = time.time()
  kq, kr = jax.random.split(key)
  q = losses.random_quadratic(kq, config.n_out, jnp.float32)
  a_q = jnp.asarray(pairs.quadratic_factor(q) if setup.loss == "quadratic" else np.zeros((config.n_out,) * 2),
                    jnp.float32)
  stats, probs, n = [], None, 0
  while True:
    st, pr = exact_round(setup, jax.random.fold_in(kr, len(stats)), round_draws, examples, a_q, max_bytes)
    stats.append(st)
    probs = pr if probs is None else probs
    n += round_draws
    all_st = np.concatenate(stats)
    worst = max(float(np.max(se / np.abs(m))) for m, se in
                (_mean_se(pairs.combine(all_st, b)[0]) for b in (1, batch)))
    if on_round is not None:
      on_round(n, worst)
    if n >= draws and (target_rel_se is None or worst <= target_rel_se or n + round_draws > max_draws):
      break
  wsq = weight_sq(config, SCHEMES[setup.scheme])
  ins = input_stats(config)
  ls = predict.constant_loss_stats(q) if setup.loss == "quadratic" else setups_lib._xent_loss_stats(probs)
  recs = []
  for b in (1, batch):
    vw, vb = pairs.combine(all_st, b)
    (ew, ew_se), (eb, eb_se) = _mean_se(vw), _mean_se(vb)
    p1 = predict_lenet(config, wsq, ins, ls, b, corrected=False)
    pc = predict_lenet(config, wsq, ins, ls, b)
    recs.append(setups_lib.Record(setup, b, ew, eb, p1.weight, pc.weight, pc.bias, p1.bias, p1.weight, ew_se,
                                  time.time() - t0, eb_se, ew_se, n, examples))
  return recs[0], recs[1]


def figure1(num_setups: int, batch: int, draws: int, seed: int = 0, progress: bool = False, *,
            examples: int = pairs.DEFAULT_EXAMPLES, target_rel_se: float | None = None, max_draws: int | None = None,
            done: Mapping[int, tuple] | None = None, on_record: Callable | None = None, workers: int | None = None,
            **sample_kw) -> list:
  """Records at batch 1 and `batch` of every sampled LeNet setup (`run_setup`); `done[i] = (r1, rb)` are reused
  (a resumed run), `on_record(i, r1, rb)` is called as each finishes; `workers` setups at once
  (`setups.measure_all`)."""
  sampled = sample_setups(num_setups, seed, **sample_kw)
  run = lambda s, on_round: run_setup(s, batch, draws, jax.random.PRNGKey(s.seed), examples=examples,
                                      target_rel_se=target_rel_se, max_draws=max_draws, on_round=on_round)
  return setups_lib.measure_all(sampled, run, done, on_record, progress="LeNet hessian setups" if progress else None,
                                workers=workers)


def records_json(recs: Sequence) -> list[dict]:
  """LeNet records as JSON-ready dicts (the MLP records' fields, with channels / hidden for widths)."""
  opt = lambda a: None if a is None else np.asarray(a).tolist()
  return [{"model": "lenet", "channels": list(r.setup.channels), "hidden": list(r.setup.hidden),
           "widths": list(r.setup.channels) + list(r.setup.hidden), "layers": weight_layers(r.setup.config()),
           "scheme": r.setup.scheme, "loss": r.setup.loss, "input": "normal", "seed": r.setup.seed, "batch": r.batch,
           "exact_w": r.exact_w.tolist(), "exact_w_se": r.exact_w_se.tolist(), "batch1_w": r.batch1_w.tolist(),
           "corrected_w": r.corrected_w.tolist(), "leading_w": r.leading_w.tolist(), "exact_b": r.exact_b.tolist(),
           "corrected_b": r.corrected_b.tolist(), "batch1_b": r.batch1_b.tolist(), "exact_b_se": opt(r.exact_b_se),
           "exact_w_rel_se_max": float(np.max(r.rel_se)), "draws": r.draws, "examples": r.examples,
           "seconds": r.seconds} for r in recs]


def record_from_json(d: Mapping):
  arr = lambda k: None if d.get(k) is None else np.asarray(d[k], np.float64)
  setup = LeNetSetup(tuple(d["channels"]), tuple(d["hidden"]), d["scheme"], d["loss"], int(d["seed"]))
  return setups_lib.Record(setup, int(d["batch"]), arr("exact_w"), arr("exact_b"), arr("batch1_w"),
                           arr("corrected_w"), arr("corrected_b"), arr("batch1_b"), arr("leading_w"),
                           arr("exact_w_se"), float(d["seconds"]), arr("exact_b_se"), arr("exact_w_se"),
                           int(d.get("draws", 0)), int(d.get("examples", 0)))


# ---------------------------------------------------------------------------------------------------
# Figure 2 on the LeNet: block heat maps per scheme, and the diagonal's evenness with standard errors

FIG2_CONFIG = lenet_lib.LeNetConfig(IMAGE, (4, 8), KERNELS, (32, 16), N_OUT)


def _kernel_rows(params) -> list[int]:
  names = leaf_names(params)
  return [names.index(f"{n}/kernel") for n in sorted({k.split("/")[0] for k in names},
                                                      key=lambda s: (not s.startswith("conv"), int(s[-1])))]


def heatmaps(config: lenet_lib.LeNetConfig = FIG2_CONFIG, schemes=tuple(SCHEMES), batch: int = 1, draws: int = 4,
             seed: int = 0, loss: str = "quadratic", max_bytes: int = DEFAULT_MAX_BYTES,
             progress: bool = False) -> dict:
  """Per scheme: the mean over `draws` of the exact (`jax.hessian`) kernel-block average squared singular value
  matrix (L x L, layers conv0, conv1, dense0, ...), its diagonal, max/min, and the leading-order predicted
  diagonal. Same keys for every scheme. Refuses before compute when the P x P Hessian exceeds `max_bytes`."""
  config.check()
  for s in schemes:
    if s not in SCHEMES:
      raise ValueError(f"unknown scheme {s!r}; valid: {', '.join(SCHEMES)}")
  shapes = jax.eval_shape(lambda k: lenet_lib.init_lenet(k, config), jax.random.PRNGKey(0))
  hess.check_memory(f"the exact Hessian of the LeNet {config.channels}/{config.hidden} "
                    f"({hess.num_params(shapes)} parameters)", 3 * hess.hessian_bytes(shapes, jnp.float32), max_bytes,
                    "use a smaller LeNet, or the diagonal only (convnet.diagonal_sq_sv), or raise max_bytes")
  kq, kd = jax.random.split(jax.random.PRNGKey(seed))
  q = losses.random_quadratic(kq, config.n_out)

  def lossfn(p, x, t):
    out = lenet_lib.apply_lenet(p, x)
    return jnp.mean(jax.vmap(losses.per_example(loss), in_axes=(0, 0, None))(out, t, q))

  def kernel_sq_sv(params, x, t):
    # The kernel-block matrix inside the program: the P x P Hessian stays on the device, and the 25 blocks'
    # sq_sv do not compile as 75 eager operations of different shapes.
    bl = hess.blocks(jax.hessian(lossfn)(params, x, t), params)
    rows = _kernel_rows(params)
    return jnp.stack([jnp.stack([hess.sq_sv(bl[i][j]) for j in rows]) for i in rows])

  hfn = jax.jit(kernel_sq_sv)
  bar = None
  if progress:
    from tqdm.auto import tqdm
    bar = tqdm(total=len(schemes) * draws, desc=f"LeNet heat maps B={batch}", dynamic_ncols=True)
  out = {}
  for scheme in schemes:
    mats, hs = [], []
    for k in jax.random.split(kd, draws):
      kp, kx, kt = jax.random.split(k, 3)
      params = lenet_lib.init_lenet(kp, config, SCHEMES[scheme])
      x = jax.random.normal(kx, (batch,) + tuple(config.image))
      t = losses.random_targets(kt, loss, batch, config.n_out)
      mats.append(np.asarray(hfn(params, x, t), np.float64))
      hs.append(np.asarray(losses.output_hessians(loss, lenet_lib.apply_lenet(params, x), t, q)))
      if bar is not None:
        bar.update(1)
    if loss == "quadratic":
      ls = predict.constant_loss_stats(q)
    elif batch == 1:  # one example per draw: pool the draws
      ls = predict.loss_stats(np.concatenate(hs))
    else:  # pair statistics within each draw (one network), averaged over draws
      ls = predict.LossStats(*np.mean([predict.loss_stats(h) for h in hs], axis=0))
    pred = predict_lenet(config, weight_sq(config, SCHEMES[scheme]), input_stats(config), ls, batch)
    m = np.mean(mats, axis=0)
    diag = np.diag(m)
    out[scheme] = {"weights": m.tolist(), "diag": diag.tolist(), "diag_max_over_min": float(diag.max() / diag.min()),
                   "predicted_diag": pred.weight.tolist(),
                   "predicted_max_over_min": float(pred.weight.max() / pred.weight.min())}
  if bar is not None:
    bar.close()
  return out


def evenness(config: lenet_lib.LeNetConfig = FIG2_CONFIG, schemes=tuple(SCHEMES), batches=(1, 1024), draws: int = 64,
             seed: int = 0, loss: str = "quadratic", examples: int = pairs.DEFAULT_EXAMPLES) -> dict:
  """Per scheme and batch size: the expected diagonal kernel blocks (pairs of examples, `draws` draws rounded up
  to whole rounds), their max/min and its standard error (delta method on log max - log min, taking the two
  layers as fixed), and the leading-order predicted diagonal. The evenness check of Figure 2 with its
  measurement error."""
  kq, kr = jax.random.split(jax.random.PRNGKey(seed))
  q = losses.random_quadratic(kq, config.n_out, jnp.float32)
  a_q = jnp.asarray(pairs.quadratic_factor(q) if loss == "quadratic" else np.zeros((config.n_out,) * 2), jnp.float32)
  out = {str(b): {} for b in batches}
  for scheme in schemes:
    setup = LeNetSetup(tuple(config.channels), tuple(config.hidden), scheme, loss, seed)
    if setup.config() != config:
      raise ValueError("evenness runs on 8x8x1 LeNets with 2x2 kernels and 10 outputs")
    rounds = [exact_round(setup, jax.random.fold_in(kr, i), DEFAULT_ROUND, examples, a_q)  # same keys, every scheme
              for i in range(-(-draws // DEFAULT_ROUND))]
    st, probs = np.concatenate([r[0] for r in rounds]), np.concatenate([r[1] for r in rounds])
    draws_done = st.shape[0]
    ls = predict.constant_loss_stats(q) if loss == "quadratic" else setups_lib._xent_loss_stats(probs)
    wsq = weight_sq(config, SCHEMES[scheme])
    for b in batches:
      m, se = _mean_se(pairs.combine(st, b)[0])
      hi, lo = int(np.argmax(m)), int(np.argmin(m))
      ratio = float(m[hi] / m[lo])
      pred = predict_lenet(config, wsq, input_stats(config), ls, b).weight
      out[str(b)][scheme] = {"diag": m.tolist(), "diag_se": se.tolist(), "max_over_min": ratio,
                             "max_over_min_se": ratio * math.hypot(se[hi] / m[hi], se[lo] / m[lo]),
                             "predicted_diag": pred.tolist(), "predicted_max_over_min": float(pred.max() / pred.min()),
                             "draws": draws_done}
  return out


def layer_summary(recs: Sequence) -> dict:
  """Per batch size and weight layer (conv0, conv1, dense0, ...): median / p5 / p95 over setups of
  predicted / exact (with the cross-example term, `r`; and the batch-1 model s(1)/B, `r_batch1`), and the
  median and largest relative SE of the exact side. LeNet records of one layer count (same depth)."""
  out = {}
  for b in sorted({r.batch for r in recs}):
    rs = [r for r in recs if r.batch == b]
    names = weight_layers(rs[0].setup.config())
    rc = np.array([r.corrected_w / r.exact_w for r in rs])
    r1 = np.array([r.batch1_w / r.exact_w for r in rs])
    rse = np.array([r.exact_w_se / r.exact_w for r in rs])
    pct = lambda a, q: float(np.percentile(a, q))
    out[str(b)] = {n: {"median": float(np.median(rc[:, l])), "p5": pct(rc[:, l], 5), "p95": pct(rc[:, l], 95),
                       "median_batch1": float(np.median(r1[:, l])), "median_rel_se": float(np.median(rse[:, l])),
                       "max_rel_se": float(np.max(rse[:, l])), "setups": len(rs)} for l, n in enumerate(names)}
  return out

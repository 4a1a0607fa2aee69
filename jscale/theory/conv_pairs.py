r"""The exact diagonal Hessian blocks of a strided LeNet from pairs of examples: `pairs` for convolutions.

The blocks are the Gauss-Newton ones (`hessian.py`: exact for ReLU nets, conv leaves included), so
    ||H_l||_F^2 / d_l = (1/B^2) sum_{b,b'} f_l(b, b'),   f_l(b, b') = ||U_b U_b'^T||_F^2 / d_l   (n_L x n_L),
and `pairs`' decomposition E s_l(B) = E f(b, b) / B + (1 - 1/B) E f(b, b') holds unchanged (the examples are
i.i.d. given the weights), so a few examples per draw give the expectation at batch 1024. `lenet_pair_stats`
computes f from the position structure (patches x_{b,p} and per-position backward factors V_{b,p}) instead of
the full parameter Jacobian (`hessian.leaf_factors`), about 10x cheaper and equal to it (tested); `exact_round`
draws a round of (weights, examples) in a padded shape shared by many LeNets (`padded_config`), so one compiled
program serves every sampled LeNet, scheme and loss. Memory: the taps' Jacobian and the (E rho)^2 n_L^2 product
of V's (`pair_bytes`), refused with the estimate beyond `max_bytes`.
"""
from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jscale import initializers
from jscale.models import lenet as lenet_lib
from jscale.theory import hessian, inputs, pairs, predict_conv

DEFAULT_ROUND = 32  # draws per round: a 2-core CPU's sweet spot on the LeNets of Figure 1
NORMAL_INITIALIZERS = ("he_normal", "glorot_normal", "geometric", "lecun_normal")


def _patches(x_HxWxC, kernel) -> jax.Array:
  """The stride = kernel patches of one example's feature map, (positions, k C): the rows a conv's kernel
  multiplies (the order inside a patch does not matter to their dot products)."""
  h, w, c = x_HxWxC.shape
  kh, kw = kernel
  return x_HxWxC.reshape(h // kh, kh, w // kw, kw, c).transpose(0, 2, 1, 3, 4).reshape((h // kh) * (w // kw), -1)


def _lenet_taps(params, x_HxWxC, taps, pools=()):
  """One example's logits with `taps[l]` added to weight layer l's pre-activation, and every layer's input as
  patches (positions, k n_l) (a dense layer: one position); `pools`: `LeNetConfig.pools`."""
  convs = sorted((k for k in params if k.startswith("conv")), key=lambda k: int(k[4:]))
  denses = sorted((k for k in params if k.startswith("dense")), key=lambda k: int(k[5:]))
  windows = lenet_lib.pool_windows(pools, len(convs))
  h, ins, l = x_HxWxC, [], 0
  for name, window in zip(convs, windows):
    w = params[name]["kernel"]
    ins.append(_patches(h, w.shape[:2]))
    y = jax.lax.conv_general_dilated(h[None], w, w.shape[:2], "VALID",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))[0] + params[name]["bias"]
    h = lenet_lib.avg_pool(jax.nn.relu(y + taps[l])[None], int(window))[0]
    l += 1
  h = h.reshape(-1)
  for i, name in enumerate(denses):
    ins.append(h[None])
    y = h @ params[name]["kernel"] + params[name]["bias"] + taps[l][0]
    h = jax.nn.relu(y) if i < len(denses) - 1 else y
    l += 1
  return h, ins


def lenet_pair_stats(params, x, kind, a_q, dims=None, pools=()) -> jax.Array:
  """Exact f(b, b') of every weight layer's kernel and bias block for the LeNet on examples x (E, H, W, C), from
  the position structure instead of the full parameter Jacobian: with patches x_{b,p} and
  V_{b,p} = A_b d out_b / d y_{b,p}, U_b U_b'^T = sum_{p,p'} (x_{b,p} . x_{b',p'}) V_{b,p} V_{b',p'}^T (kernel) and
  sum_{p,p'} V_{b,p} V_{b',p'}^T (bias). Returns (L, 2, E, E): [kernel f, bias f]; equal to
  `hessian.factor_pairs` of `hessian.leaf_factors` (tested), about 10x cheaper on the LeNet. `dims` = (kernel
  entries, bias entries) per layer, the true block sizes when `params` are zero-padded (default: the shapes').
  `pools`: `LeNetConfig.pools` (a tuple: static under jit)."""
  shapes = {k: v["kernel"].shape for k, v in params.items()}
  names = sorted(shapes, key=lambda s: (not s.startswith("conv"), int(s.lstrip("convdense"))))
  taps0 = _zero_taps(params, x.shape[1:], pools)
  out, ins = jax.vmap(lambda xb: _lenet_taps(params, xb, taps0, pools))(x)
  jac = jax.vmap(lambda xb: jax.jacrev(lambda t: _lenet_taps(params, xb, t, pools)[0])(taps0))(x)  # per l (E, O, *tap)
  a = output_factors(kind, out, a_q)
  res = []
  for l, name in enumerate(names):
    m = shapes[name][-1]
    d, mb = (ins[l].shape[-1] * m, m) if dims is None else (dims[0][l], dims[1][l])
    res.append(block_pairs(ins[l], a, jac[l], d, mb))
  return jnp.stack(res)


def block_pairs(patches_ExRxD, a_ExOxO, jac, kernel_entries, bias_entries) -> jax.Array:
  """(2, E, E): [kernel f, bias f] of one weight layer from its input patches (E, rho, D), the output factors
  A_b and the Jacobian of the outputs with respect to its pre-activations (E, O, rho, ..., m), divided by the
  block sizes (kernel and bias entries)."""
  e, o = a_ExOxO.shape[:2]
  m = jac.shape[-1]
  v = jnp.einsum("bpo,bo...->bp...", a_ExOxO, jac).reshape(e, o, -1, m).transpose(0, 2, 1, 3)  # (E, rho, O, m)
  gx = jnp.einsum("epd,fqd->epfq", patches_ExRxD, patches_ExRxD)
  c = jnp.einsum("epfq,epom,fqrm->efor", gx, v, v)
  vs = jnp.sum(v, axis=1)  # (E, O, m): sum over positions, for the bias
  cb = jnp.einsum("eom,frm->efor", vs, vs)
  return jnp.stack([jnp.sum(c * c, axis=(2, 3)) / kernel_entries, jnp.sum(cb * cb, axis=(2, 3)) / bias_entries])


def output_factors(kind, out_ExO, a_q) -> jax.Array:
  """`hessian.output_factors` for a loss named by `kind`, or by a traced 0/1 flag (1: cross-entropy), so that
  one compiled program serves both losses."""
  if isinstance(kind, str):
    return hessian.output_factors(kind, out_ExO, a_q)
  return jnp.where(kind > 0, hessian.output_factors("xent", out_ExO, a_q),
                   hessian.output_factors("quadratic", out_ExO, a_q))


def pair_means(f_Lx2xExE) -> jax.Array:
  """Per layer, (same-example mean, pair mean) of f for the kernel and the bias, (L, 4) in `pairs.FIELDS`
  order, from f over every (example, example) of one draw."""
  e = f_Lx2xExE.shape[-1]
  dm = jnp.einsum("lkef,ef->lk", f_Lx2xExE, jnp.eye(e)) / e
  pm = (jnp.sum(f_Lx2xExE, axis=(2, 3)) - e * dm) / (e * (e - 1))
  return jnp.stack([dm[:, 0], pm[:, 0], dm[:, 1], pm[:, 1]], -1)


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


def _zero_taps(params, image_shape, pools=()):
  """Zero taps of every weight layer's pre-activation shape for one example (conv: (h, w, c); dense: (1, n))."""
  h, w = image_shape[:2]
  convs = sorted((k for k in params if k.startswith("conv")), key=lambda k: int(k[4:]))
  taps = []
  for name, window in zip(convs, lenet_lib.pool_windows(pools, len(convs))):
    kh, kw, _, c = params[name]["kernel"].shape
    h, w = h // kh, w // kw
    taps.append(jnp.zeros((h, w, c), params[name]["kernel"].dtype))
    h, w = h // window, w // window
  for name in sorted((k for k in params if k.startswith("dense")), key=lambda k: int(k[5:])):
    taps.append(jnp.zeros((1, params[name]["kernel"].shape[-1]), params[name]["kernel"].dtype))
  return taps


# The shapes draws are computed in: the smallest that fits (padded units are exact zeros, see `padded_config`).
PAD_CONFIGS = (lenet_lib.LeNetConfig((8, 8, 1), (4, 4), ((2, 2), (2, 2)), (16, 16), 10),
               lenet_lib.LeNetConfig((8, 8, 1), (16, 16), ((2, 2), (2, 2)), (128, 128), 10))


def padded_config(config: lenet_lib.LeNetConfig) -> lenet_lib.LeNetConfig:
  """The shape a LeNet's draws are computed in: the smallest of PAD_CONFIGS that holds it (one compiled program
  for every such setup, scheme and loss), else the LeNet itself. Padded units have zero weights in and out, so
  their pre-activation, output and every Jacobian row are exact zeros and they add nothing to any sum (tested)."""
  for pad in PAD_CONFIGS:
    if (config.image == pad.image and tuple(config.kernels) == pad.kernels and config.n_out == pad.n_out
        and set(config.pool_windows()) == {1}
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


class _Layers(NamedTuple):
  """Per weight layer, traced (one compiled round for every LeNet in a padded shape): the weights' std, the
  true input and output widths inside the padded kernels, the true kernel sizes (the blocks' dimensions), and
  the loss as a 0/1 flag (1: cross-entropy)."""
  stds: jax.Array
  widths_in: jax.Array
  widths_out: jax.Array
  entries: jax.Array
  xent: jax.Array
  uniform: jax.Array = 0.0  # 0/1 flag: 1 draws U[0, 1] pixels (`inputs.KINDS` "uniform01") instead of N(0, 1)


def _flat_draw(sample, key, shape):
  """`sample(key, shape, float32)` drawn flat and reshaped: the same numbers (jax.random draws every shape as
  its flat counters and reshapes), but vmapped over a round's keys XLA:CPU compiles the flat form several times
  faster: the round's six shaped draws were ~15 s of its ~20 s compile, flat ~3 s (load 6, same process)."""
  return sample(key, (math.prod(shape),), jnp.float32).reshape(shape)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _round(padded, examples, layers: _Layers, a_q, keys):
  """Per draw: (same-example mean, pair mean) of f for every weight layer's kernel and bias, (R, L, 4) in
  `pairs.FIELDS` order, and the softmax probabilities (R, E, n_L) (cross-entropy's loss statistics).
  Weights: N(0, stds[l]^2) on the true corner of the padded shapes, zero elsewhere; biases zero. The schemes
  are normal initialisers, so a scheme is its `stds`."""
  shapes = padded.kernel_shapes()
  masks = _layer_masks(padded, layers.widths_in, layers.widths_out)
  dims = (layers.entries, layers.widths_out)

  def one(key):
    kp, kx = jax.random.split(key)
    params = {}
    for l, (name, shape, k) in enumerate(zip(shapes, shapes.values(), jax.random.split(kp, len(shapes)))):
      m = masks[name].reshape((1,) * (len(shape) - 2) + masks[name].shape)
      params[name] = {"kernel": layers.stds[l] * m * _flat_draw(jax.random.normal, k, shape),
                      "bias": jnp.zeros(shape[-1], jnp.float32)}
    shape = (examples,) + tuple(padded.image)
    x = jnp.where(layers.uniform > 0, _flat_draw(jax.random.uniform, kx, shape), _flat_draw(jax.random.normal, kx, shape))
    out = lenet_lib.apply_lenet(params, x, pools=padded.pools)
    f = lenet_pair_stats(params, x, layers.xent, a_q, dims, padded.pools)  # (L, 2, E, E)
    return pair_means(f), jax.nn.softmax(out, axis=-1)

  return jax.vmap(one)(keys)


def compiled_programs() -> int:
  """How many rounds are compiled in this process (one per padded shape, examples and draws per round)."""
  return _round._cache_size()


def label(config: lenet_lib.LeNetConfig) -> str:
  return f"LeNet c{'-'.join(map(str, config.channels))} h{'-'.join(map(str, config.hidden))}"


def exact_round(config: lenet_lib.LeNetConfig, init, loss: str, key, *, draws: int, examples: int, a_q,
                input_kind: str = "normal",
                max_bytes: int = pairs.DEFAULT_MAX_BYTES, pad: bool = True):
  """One round: `draws` draws of (weights by the normal initializer `init`, `examples` N(0, 1) images) for the
  loss `loss`; stats (R, L, 4) float64 and probs, computed in the padded shape (`padded_config`; `pad=False`:
  in the LeNet's own shape). `a_q`: the quadratic loss's factor (`losses.quadratic_factor`), zeros for xent."""
  config = config.check()
  padded = padded_config(config) if pad else config
  hessian.check_memory(f"{draws} draws x {examples} examples on {label(config)} (computed as {padded.channels}/"
                       f"{padded.hidden})", draws * pair_bytes(padded, examples), max_bytes,
                       "lower round_draws or examples, or raise max_bytes")
  if initializers.get(init).name.split(":")[0] not in NORMAL_INITIALIZERS:
    raise ValueError(f"exact_round draws normal weights; {init!r} is not a normal initializer")
  stds = jnp.sqrt(jnp.asarray(predict_conv.weight_sq(config, init), jnp.float32))
  shapes = list(config.kernel_shapes().values())
  w_in = [s[-2] for s in shapes]
  w_in[len(config.channels)] = config.channels[-1]  # dense0's rows are (position, channel): mask by channel
  layers = _Layers(stds, jnp.asarray(w_in, jnp.float32), jnp.asarray([s[-1] for s in shapes], jnp.float32),
                   jnp.asarray([float(np.prod(s)) for s in shapes], jnp.float32),
                   jnp.asarray(float(loss == "xent"), jnp.float32),
                   jnp.asarray(float(inputs.check_kind(input_kind) == "uniform01"), jnp.float32))
  st, probs = _round(padded, int(examples), layers, a_q, jax.random.split(key, draws))
  return np.asarray(st, np.float64), np.asarray(probs, np.float64)

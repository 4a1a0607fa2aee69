r"""One compiled exact-side program for strided LeNets of different shapes: a LeNet as a chain of slots.

`conv_pairs.exact_round` pads channels and hidden widths, but a program still has one image size, one kernel per
conv and one number of layers, and a program costs XLA:CPU 10-30 s to compile against 10-50 ms per round of
draws. Issue 20's LeNet family varies all of these (1-3 convs, kernels 2-4, 1-3 dense layers), so here every
weight layer is a *slot* of a fixed shape (`Slot`: output positions x patch entries x output channels) and a
LeNet is a placement in the slots (`layout`): its input is the flat output of the slot below (positions x
channels; slot 0: the image's pixels), its patches are gathered by an index table (a padding entry reads an
appended zero), and y = patches W (W zero outside the true corner). A stride = kernel conv is a gather of
non-overlapping patches, flatten + dense0 one patch of the whole grid, a dense layer one patch of its input.
The logits are the output layer's slot (a one-hot over slots, so the slots after it see zero weights and count
for nothing). Padded entries are exact zeros in every patch, pre-activation and Jacobian row, so the pair
statistics (`conv_pairs.block_pairs`) equal those of the LeNet in its own shape on the same draws (tested to
float rounding, `unpadded`), and every LeNet that fits `SlotShapes` shares one compiled round per (shapes,
examples, draws per round).

An average pool after a conv's ReLU (`LeNetConfig.pools`) is a traced 0/1 matrix over the slot's positions
(`Layout.pool`, the identity without one), so pooled and unpooled LeNets share the program too; the next slot's
index table reads the pooled grid.

What the padding costs is padded compute: a draw's kernels take only the LeNet's own normal numbers
(`SlotShapes.normals`, the random bits were half a round), the patch gather's transpose is a gather
(`_gather`: autodiff's scatter-add was a third of a round), and the caller keeps the slots tight (the
hessian experiment's varied family uses one union for one-conv LeNets and one for deeper ones,
`lenet_family.varied_slot_shapes`): about 0.035 s of CPU per round of 32 draws x 4 examples against 0.01-0.05 s
in each LeNet's own shape, which saves the 10-30 s compile per shape.
"""
from __future__ import annotations

import functools
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jscale import initializers
from jscale.models import lenet as lenet_lib
from jscale.theory import conv_pairs, hessian, inputs, pairs, predict_conv


class Slot(NamedTuple):
  positions: int  # output positions (a dense layer: 1)
  patch: int      # entries of one patch: taps x input channels (flatten + dense0: the whole grid)
  width: int      # output channels


class SlotShapes(NamedTuple):
  """The static shape of a round: the image's pixels (x channels), the outputs, the slots, and how many normal
  numbers a draw's weights take at most (None: every slot's whole kernel)."""
  pixels: int
  n_out: int
  slots: tuple
  normals: int | None = None

  @property
  def weight_normals(self) -> int:
    """The normal numbers drawn for the weights of one draw."""
    return self.normals if self.normals is not None else sum(s.patch * s.width for s in self.slots)

  def with_normals(self, normals: int | None) -> "SlotShapes":
    return self._replace(normals=normals)

  def input_size(self, l: int) -> int:
    """Entries of slot l's flat input (the index of its appended zero)."""
    return self.pixels if l == 0 else self.slots[l - 1].positions * self.slots[l - 1].width


def own_shapes(config: lenet_lib.LeNetConfig) -> SlotShapes:
  """The LeNet's own slots: one per weight layer, no padding."""
  config = config.check()
  h, w, c = (int(v) for v in config.image)
  slots = []
  for n, (kh, kw), p in zip(config.channels, config.kernels, config.pool_windows()):
    h, w = h // kh, w // kw
    slots.append(Slot(h * w, kh * kw * c, int(n)))
    c, h, w = int(n), h // p, w // p
  d = h * w * c
  for n in tuple(config.hidden) + (config.n_out,):
    slots.append(Slot(1, d, int(n)))
    d = int(n)
  return SlotShapes(int(np.prod(config.image)), int(config.n_out), tuple(slots))


def union(shapes: Sequence[SlotShapes]) -> SlotShapes:
  """The smallest `SlotShapes` every one of `shapes` fits in (slot by slot, the largest of each dimension)."""
  shapes = list(shapes)
  if not shapes or len({s.n_out for s in shapes}) != 1:
    raise ValueError("union needs at least one SlotShapes, all with the same n_out")
  depth = max(len(s.slots) for s in shapes)
  slots = tuple(Slot(*(max(s.slots[l][i] for s in shapes if len(s.slots) > l) for i in range(3)))
                for l in range(depth))
  return SlotShapes(max(s.pixels for s in shapes), shapes[0].n_out, slots)


def weight_count(config: lenet_lib.LeNetConfig) -> int:
  """The LeNet's kernel entries: the normal numbers one draw of its weights takes."""
  return int(sum(np.prod(s) for s in config.check().kernel_shapes().values()))


def fits(shapes: SlotShapes, config: lenet_lib.LeNetConfig) -> bool:
  own = own_shapes(config)
  return (own.pixels <= shapes.pixels and own.n_out == shapes.n_out and len(own.slots) <= len(shapes.slots)
          and all(a <= b for o, s in zip(own.slots, shapes.slots) for a, b in zip(o, s))
          and weight_count(config) <= shapes.weight_normals)


def smallest(options: Sequence[SlotShapes], config: lenet_lib.LeNetConfig) -> SlotShapes:
  """The first of `options` (cheapest first) that `config` fits; ValueError naming the LeNet if none."""
  for shapes in options:
    if fits(shapes, config):
      return shapes
  layout(options[-1], config)  # raises, saying why
  raise AssertionError("unreachable")


class Layout(NamedTuple):
  """A LeNet placed in slots (traced in the round, so that one program serves every placement)."""
  index: tuple       # per slot (positions, patch) int32: the flat input entry of every patch entry
  inverse: tuple     # per slot (input size + 1,) int32: the flat patch entry that reads each input entry
  weights: tuple     # per slot (patch, width) int32: the normal number of every kernel entry (padding: the zero)
  rows: np.ndarray   # (S,) true patch entries per slot (0 past the output layer)
  cols: np.ndarray   # (S,) true output channels per slot
  out: np.ndarray    # (S,) 1 at the output layer's slot
  pool: tuple = ()   # per slot (positions, positions) 0/1: the pooled positions' members (identity: no pool)


def layout(shapes: SlotShapes, config: lenet_lib.LeNetConfig) -> Layout:
  """Where `config`'s patches are in the slots' flat inputs. Conv patches in (tap row, tap column, channel)
  order and dense0's patch in (row, column, channel) order, the orders of the LeNet's kernels and flatten
  (`unpadded` reads the weights back in them). ValueError when the LeNet does not fit."""
  config = config.check()
  if not fits(shapes, config):
    raise ValueError(f"{conv_pairs.label(config)} (slots {own_shapes(config).slots}, {own_shapes(config).pixels} "
                     f"pixels, {weight_count(config)} kernel entries) does not fit the slots {shapes.slots} "
                     f"({shapes.pixels} pixels, {shapes.n_out} outputs, {shapes.weight_normals} kernel entries)")
  own = own_shapes(config)
  convs, depth = len(config.channels), len(own.slots)
  gh, gw = int(config.image[0]), int(config.image[1])
  c_in, stride = int(config.image[2]), int(config.image[2])  # true input channels; channel stride of the input
  index, inverse, windex, pools, offset = [], [], [], [], 0
  for l, slot in enumerate(shapes.slots):
    pool = np.eye(slot.positions, dtype=np.float32)
    widx = np.full((slot.patch, slot.width), shapes.weight_normals, np.int32)
    if l < depth:
      rows, cols = own.slots[l].patch, own.slots[l].width
      widx[:rows, :cols] = offset + np.arange(rows * cols).reshape(rows, cols)
      offset += rows * cols
    windex.append(widx)
    idx = np.full((slot.positions, slot.patch), shapes.input_size(l), np.int32)
    if l < convs:
      kh, kw = config.kernels[l]
      oh, ow = gh // kh, gw // kw
      for i, j, a, b, ch in np.ndindex(oh, ow, kh, kw, c_in):
        idx[i * ow + j, (a * kw + b) * c_in + ch] = ((i * kh + a) * gw + j * kw + b) * stride + ch
      q = config.pool_windows()[l]
      gh, gw = oh // q, ow // q
      if q > 1:  # pooled position (i // q, j // q) of the pooled grid, row-major, is the mean of its q^2
        pool = np.zeros_like(pool)
        for i, j in np.ndindex(oh, ow):
          pool[(i // q) * gw + j // q, i * ow + j] = 1.0
    elif l == convs:  # flatten + dense0: one patch of the whole grid
      for i, j, ch in np.ndindex(gh, gw, c_in):
        idx[0, (i * gw + j) * c_in + ch] = (i * gw + j) * stride + ch
    elif l < depth:
      idx[0, :c_in] = np.arange(c_in)
    if l < depth:
      c_in, stride = own.slots[l].width, slot.width
    index.append(idx)
    inverse.append(_inverse(idx, shapes.input_size(l)))
    pools.append(pool)
  pad = lambda v: np.array(list(v) + [0] * (len(shapes.slots) - depth), np.float32)
  return Layout(tuple(index), tuple(inverse), tuple(windex), pad(s.patch for s in own.slots), pad(s.width for s in own.slots),
                np.eye(len(shapes.slots), dtype=np.float32)[depth - 1], tuple(pools))


def _inverse(index, size: int) -> np.ndarray:
  """(size + 1,): for each input entry the flat patch entry that reads it (stride = kernel: at most one), the
  patch entries' count (a zero the cotangent appends) for an entry no patch reads and for the zero itself."""
  flat = index.reshape(-1)
  inv = np.full(size + 1, flat.size, np.int32)
  real = flat < size
  if np.unique(flat[real]).size != int(real.sum()):
    raise AssertionError("a patch layout reads an input entry twice")
  inv[flat[real]] = np.nonzero(real)[0]
  return inv


@jax.custom_vjp
def _gather(h, index, inverse):
  """The patches h[index] of the input with a zero appended. Its transpose is a gather too (each entry is read
  by at most one patch entry: `_inverse`), not the scatter-add autodiff would make: the scatter was most of
  a round's time (the Jacobian of 10 outputs passes back through every slot's gather)."""
  return jnp.concatenate([h, jnp.zeros((1,), h.dtype)])[index]


def _gather_fwd(h, index, inverse):
  return _gather(h, index, inverse), (index, inverse)


def _gather_bwd(res, g):
  index, inverse = res
  g_h = jnp.concatenate([g.reshape(-1), jnp.zeros((1,), g.dtype)])[inverse[:-1]]
  return g_h, None, None


_gather.defvjp(_gather_fwd, _gather_bwd)


def forward(shapes: SlotShapes, lay: Layout, weights: Sequence, x_flat, taps):
  """One example's logits (`shapes.n_out`) with `taps[l]` added to slot l's pre-activation (positions,
  width), and every slot's patches (positions, patch)."""
  h, ins, logits = x_flat, [], 0.0
  for l, slot in enumerate(shapes.slots):
    patches = _gather(h, lay.index[l], lay.inverse[l])
    y = patches @ weights[l] + taps[l]
    ins.append(patches)
    if l and slot.width >= shapes.n_out:  # a slot the output layer can be in
      logits = logits + lay.out[l] * y[0, :shapes.n_out]
    # The pool as a (traced) matrix over positions: one program serves pooled and unpooled LeNets alike (the
    # identity's products are exact), and the next slot's index table reads the pooled grid's first rows.
    # (A lax.cond skipping it for unpooled LeNets was slower per round and compiled longer.)
    # Members 0/1 and the mean's division in y's dtype: 1/9 in float32 would differ from a float64 mean.
    if slot.positions > 1:
      pool = lay.pool[l].astype(y.dtype)
      h = ((pool @ jax.nn.relu(y)) / jnp.maximum(jnp.sum(pool, axis=1, keepdims=True), 1.0)).reshape(-1)
    else:
      h = jax.nn.relu(y).reshape(-1)
  return logits, ins


def _logits_patches_jacobian(shapes: SlotShapes, lay: Layout, weights: Sequence, x_ExP):
  """Per example: the logits, every slot's patches, and the logits' Jacobian with respect to every slot's
  pre-activation (through the taps)."""
  taps0 = [jnp.zeros((s.positions, s.width), x_ExP.dtype) for s in shapes.slots]
  out, ins = jax.vmap(lambda xb: forward(shapes, lay, weights, xb, taps0))(x_ExP)
  jac = jax.vmap(lambda xb: jax.jacrev(lambda t: forward(shapes, lay, weights, xb, t)[0])(taps0))(x_ExP)
  return out, ins, jac


def pair_stats(shapes: SlotShapes, lay: Layout, weights: Sequence, x_ExP, kind, a_q):
  """(f (S, 2, E, E): `conv_pairs.lenet_pair_stats` per slot, zeros past the output layer; logits (E, n_out))
  for examples x (E, pixels). `kind`: a loss name or a traced 0/1 flag (1: cross-entropy)."""
  out, ins, jac = _logits_patches_jacobian(shapes, lay, weights, x_ExP)
  a = conv_pairs.output_factors(kind, out, a_q)
  one = lambda v: jnp.maximum(v, 1.0)  # slots past the output layer: f is 0, keep it finite
  return jnp.stack([conv_pairs.block_pairs(ins[l], a, jac[l], one(lay.rows[l] * lay.cols[l]), one(lay.cols[l]))
                    for l in range(len(shapes.slots))]), out


class _Draw(NamedTuple):
  """A LeNet's round arguments, all traced: its layout, the weights' std per slot, the flags."""
  lay: Layout
  stds: jax.Array
  xent: jax.Array     # 1: cross-entropy, 0: quadratic
  uniform: jax.Array  # 1: U[0, 1] pixels, 0: N(0, 1)


def draw(shapes: SlotShapes, d: _Draw, examples: int, key, dtype=jnp.float32):
  """(weights per slot, examples (E, pixels)) from `key`: N(0, std^2) on each slot's true corner, zeros
  elsewhere; pixels N(0, 1) or U[0, 1] (the LeNet reads the first of them, `unpadded`). The kernels' normal
  numbers are one flat draw of `shapes.weight_normals` (the true entries only, in layer order), not one per
  padded entry: the random bits are most of a round's time on a CPU, and a median LeNet of the family has 3k
  kernel entries against 116k padded ones."""
  kw, kx = jax.random.split(key)
  z = jnp.concatenate([jax.random.normal(kw, (shapes.weight_normals,), dtype), jnp.zeros((1,), dtype)])
  weights = [d.stds[l] * z[d.lay.weights[l]] for l in range(len(shapes.slots))]
  shape = (examples, shapes.pixels)
  x = jnp.where(d.uniform > 0, jax.random.uniform(kx, shape, dtype), jax.random.normal(kx, shape, dtype))
  return weights, x


def unpadded(config: lenet_lib.LeNetConfig, weights: Sequence, x_ExP):
  """The LeNet's own parameters (zero biases) and images (E, H, W, C) from a slot draw: what the slots
  compute on, in `lenet_lib.apply_lenet`'s shapes (the reference of the tests)."""
  config = config.check()
  params = {}
  for l, (name, shape) in enumerate(config.kernel_shapes().items()):
    rows = int(np.prod(shape[:-1]))
    params[name] = {"kernel": weights[l][:rows, :shape[-1]].reshape(shape),
                    "bias": jnp.zeros(shape[-1], weights[l].dtype)}
  return params, x_ExP[:, :int(np.prod(config.image))].reshape((x_ExP.shape[0],) + tuple(config.image))


@functools.partial(jax.jit, static_argnums=(0, 1))
def _round(shapes: SlotShapes, examples: int, d: _Draw, a_q, keys):
  """Per draw: (same-example mean, pair mean) of f for every slot's kernel and bias (R, S, 4) in
  `pairs.FIELDS` order, and the softmax probabilities (R, E, n_out)."""
  def one(key):
    weights, x = draw(shapes, d, examples, key)
    f, out = pair_stats(shapes, d.lay, weights, x, d.xent, a_q)
    return conv_pairs.pair_means(f), jax.nn.softmax(out, axis=-1)

  return jax.vmap(one)(keys)


def compiled_programs() -> int:
  """How many rounds are compiled in this process (one per (shapes, examples, draws per round))."""
  return _round._cache_size()


def round_bytes(shapes: SlotShapes, examples: int, itemsize: int = 4) -> int:
  """Working memory of one draw (as `conv_pairs.pair_bytes`): the taps' Jacobian, the patches, the weights and
  the largest (E rho)^2 n_out^2 product, with a factor 3 for temporaries."""
  e, o = examples, shapes.n_out
  acts = sum(s.positions * s.width for s in shapes.slots)
  patches = sum(s.positions * s.patch for s in shapes.slots)
  weights = sum(s.patch * s.width for s in shapes.slots)
  biggest = max((e * s.positions) ** 2 * o * o for s in shapes.slots)
  return 3 * itemsize * (e * o * acts + e * patches + weights + e * shapes.pixels + biggest)


def _draw_args(config: lenet_lib.LeNetConfig, lay: Layout, shapes: SlotShapes, init, loss: str, input_kind: str):
  """(`_Draw` of the LeNet in `shapes`: its layout, the weights' std per slot (0 past its depth), the loss and
  pixel flags; its depth)."""
  depth = len(own_shapes(config).slots)
  stds = np.zeros(len(shapes.slots), np.float32)
  stds[:depth] = np.sqrt(np.asarray(predict_conv.weight_sq(config, init), np.float64))
  return _Draw(jax.tree.map(jnp.asarray, lay), jnp.asarray(stds), jnp.asarray(float(loss == "xent"), jnp.float32),
               jnp.asarray(float(inputs.check_kind(input_kind) == "uniform01"), jnp.float32)), depth


def exact_round(config: lenet_lib.LeNetConfig, init, loss: str, key, *, draws: int, examples: int, a_q,
                shapes: SlotShapes, input_kind: str = "normal", max_bytes: int = pairs.DEFAULT_MAX_BYTES):
  """`conv_pairs.exact_round` computed in `shapes` (one program for every LeNet that fits): stats (R, L, 4)
  float64 of the LeNet's L weight layers and probs (R, E, n_out)."""
  config = config.check()
  lay = layout(shapes, config)
  hessian.check_memory(f"{draws} draws x {examples} examples on {conv_pairs.label(config)} (computed in slots "
                       f"{shapes.slots})", draws * round_bytes(shapes, examples), max_bytes,
                       "lower round_draws or examples, or raise max_bytes")
  if initializers.get(init).name.split(":")[0] not in conv_pairs.NORMAL_INITIALIZERS:
    raise ValueError(f"exact_round draws normal weights; {init!r} is not a normal initializer")
  d, depth = _draw_args(config, lay, shapes, init, loss, input_kind)
  st, probs = _round(shapes, int(examples), d, jnp.asarray(a_q, jnp.float32), jax.random.split(key, draws))
  return np.asarray(st, np.float64)[:, :depth], np.asarray(probs, np.float64)


@functools.partial(jax.jit, static_argnums=(0, 1, 4))
def _gains_round(shapes: SlotShapes, examples: int, d: _Draw, keys, directions: bool = False):
  """Per draw (one at a time: `lax.map`): softmax probabilities (E, n_out) and, per slot, every example's
  forward gain |x_l|^2 (the slot's patches tile its input: their squares sum to it) and backward gain
  ||d logits / d y_l||_F^2 / n_out (the Jacobian through the slot's taps), as `gains.lenet_gains`; with
  `directions` also, per slot, J_b J_b^T (E, S, n_out, n_out) and J_a J_b^T of the pairs (E/2, S, n_out, n_out)
  with J = d logits / d kernel, and the pairs' input dots x_a . x_b (E/2, S) (`gains.lenet_direction_coupling`)."""
  def one(key):
    weights, x = draw(shapes, d, examples, key)
    out, ins, jac = _logits_patches_jacobian(shapes, d.lay, weights, x)
    g = jnp.stack([jnp.sum(p * p, axis=(1, 2)) for p in ins], -1)
    k = jnp.stack([jnp.sum(j * j, axis=(1, 2, 3)) for j in jac], -1) / shapes.n_out
    if not directions:
      return jax.nn.softmax(out, axis=-1), g, k
    # The kernel's Jacobian is J_b = d logits_b / d W_l = sum_p K_{b,p} (x) x_{b,p}, so the block's output-side
    # matrices are J_a J_b^T = sum_{p,p'} (x_{a,p} . x_{b,p'}) K_{a,p} K_{b,p'}^T (a = b, and the pairs (0, 1),
    # (2, 3), ..): through the patches' Gram matrix (positions^2), never J itself (n_out x patch x width per
    # example: the padded dense slots made that 25x the plain round's time).
    a, b = slice(0, examples - 1, 2), slice(1, examples, 2)

    def outer(ja, pa, jb, pb):
      return jnp.einsum("epr,eopc,eqrc->eoq", jnp.einsum("epk,erk->epr", pa, pb), ja, jb)

    m = jnp.stack([outer(j, p, j, p) for j, p in zip(jac, ins)], 1)
    c = jnp.stack([outer(j[a], p[a], j[b], p[b]) for j, p in zip(jac, ins)], 1)
    dots = jnp.stack([jnp.sum(p[a] * p[b], axis=(1, 2)) for p in ins], -1)
    return jax.nn.softmax(out, axis=-1), g, k, m, c, dots

  return jax.lax.map(one, keys)


def loss_sample(config: lenet_lib.LeNetConfig, init, input_kind: str, key, *, draws: int, examples: int,
                shapes: SlotShapes, directions: bool = False) -> tuple:
  """`gains.lenet_loss_sample` computed in `shapes` (one program for every LeNet that fits, instead of one per
  LeNet): probabilities (D, E, n_out), forward and backward gains (D, E, L) of `draws` fresh draws; with
  `directions` also the kernel Jacobians' products and the pair dots of `_gains_round` (what
  `gains.lenet_direction_coupling` takes)."""
  config = config.check()
  d, depth = _draw_args(config, layout(shapes, config), shapes, init, "xent", input_kind)
  out = _gains_round(shapes, int(examples), d, jax.random.split(key, int(draws)), bool(directions))
  probs, g, k = (np.asarray(a, np.float64) for a in out[:3])
  if not directions:
    return probs, g[..., :depth], k[..., :depth]
  m, c, dots = (np.asarray(a, np.float64) for a in out[3:])
  return probs, g[..., :depth], k[..., :depth], m[:, :, :depth], c[:, :, :depth], dots[..., :depth]

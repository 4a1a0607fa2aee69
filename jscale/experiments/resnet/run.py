"""The resnet experiment's training: four ways to keep an unnormalised pre-activation ResNet trainable, at
several depths, trained by one pure loop (`make_train`) vmapped over seeds and output scales.

Schemes (every one the same stem conv -> D bottleneck blocks -> relu -> dropout -> dense head):
  geometric  the paper's Section 11 block (`jscale.models.resnet`): geometric init c = 2 with the calculus's
             fixed scalars (tau per conv, sigma_F, the weighted residual a, b with a^2 + b^2 = 1) and a
             learnable block scalar alpha
  fan_in     He (fan-in) init, no scalars: z = x + F(x) (the forward second moment grows with depth)
  rescale    fixed residual scaling (RescaleNet-style, Shao et al. 2020): He init, z_k = a_k x + b_k F(x) with
             a_k^2 = k / (k + 1), b_k^2 = 1 / (k + 1) for block k = 1..D (the stem counts as block 0)
  layernorm  He init, z = x + F(x) with a LayerNorm (over channels, learnable gain and bias) before each of
             the branch's ReLUs: the normalised baseline
The logits are multiplied by a fixed output scale (the paper's Section 7 scalar; swept). Dropout on the head's
input (the paper follows RescaleNet's dropout; its rate is not in jscale's copy: DROPOUT). SGD with momentum
0.9, weight decay 1e-4 (the paper's), learning rate LR decayed x0.1 for the last quarter of the steps (the
paper's 30-60-90 schedule anneals a 90-epoch run; these runs are a few epochs, so one late decay).
"""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jscale import datasets, initializers, train as train_lib
from jscale.models import lenet as lenet_lib, resnet as resnet_lib
from jscale.sweeps import store

SCHEMES = ("geometric", "fan_in", "rescale", "layernorm")
DROPOUT = 0.2
LR = 0.1
MOMENTUM = 0.9
WEIGHT_DECAY = 1e-4


class Net(NamedTuple):
  """init(key, row) -> params, apply(params, row, x, key, train, active=None) -> logits."""
  init: object
  apply: object


def resnet_config(depth: int, image=(8, 8, 1), channels: int = 16, width: int = 8) -> resnet_lib.ResNetConfig:
  """Stem conv 2x2 (stride 2) to `channels`, then `depth` non-projecting bottleneck blocks (channels -> width ->
  channels, 3x3 in the middle), relu, dense head."""
  return resnet_lib.ResNetConfig(image=tuple(image), stem_channels=channels, stem_kernel=(2, 2),
                                 blocks=((channels, width, 1),) * depth, n_out=10)


def _dropout(x, key, rate, train):
  if not train or rate == 0:
    return x
  keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), 0.0)


def conv3x3_same(x, w_9CxN):
  """3x3 SAME convolution, stride 1, as one matmul over the 9 shifted copies of the zero-padded input (the same
  sums as lax.conv_general_dilated with a (3, 3, C, N) kernel reshaped to (9C, N); faster under vmap on CPU)."""
  h, w = x.shape[1:3]
  p = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  patches = jnp.concatenate([p[:, dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)], axis=-1)
  return patches @ w_9CxN


def _layernorm(x, scale, bias):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  return (x - mu) * jax.lax.rsqrt(var + 1e-5) * scale + bias


class Row(NamedTuple):
  """One configuration as traced numbers, so every scheme, depth and output scale runs in ONE compiled program
  (vmapped rows); `depth` below the network's blocks makes the rest identities (a = 1, b = 0)."""
  geometric: jax.Array     # 1.0: geometric draws, tau / sigma_F / stem scalars and a learnable alpha; 0.0: He
  layernorm: jax.Array     # 1.0: a LayerNorm before each of the branch's ReLUs
  a: jax.Array             # (MAX_DEPTH,) shortcut weight per block
  b: jax.Array             # (MAX_DEPTH,) branch weight per block (0 beyond the depth)
  output_scale: jax.Array


def row(scheme: str, depth: int, output_scale: float, cfg: resnet_lib.ResNetConfig) -> Row:
  """The traced numbers of (scheme, depth, output_scale) on `cfg`'s (MAX_DEPTH-block) network."""
  if scheme not in SCHEMES:
    raise ValueError(f"resnet: scheme must be one of {', '.join(SCHEMES)}, got {scheme!r}")
  n = len(cfg.blocks)
  if not 1 <= depth <= n:
    raise ValueError(f"resnet: depth must be in [1, {n}], got {depth!r}")
  a, b = np.ones(n), np.zeros(n)
  if scheme == "geometric":
    sc = geometric_scalars(cfg)
    a[:depth], b[:depth] = sc["a"], sc["b"]
  elif scheme == "rescale":
    k = np.arange(1, depth + 1, dtype=np.float64)
    a[:depth], b[:depth] = np.sqrt(k / (k + 1)), np.sqrt(1 / (k + 1))
  else:
    b[:depth] = 1.0
  f = lambda v: jnp.asarray(v, jnp.float32)
  return Row(f(scheme == "geometric"), f(scheme == "layernorm"), f(a), f(b), f(output_scale))


def geometric_scalars(cfg: resnet_lib.ResNetConfig) -> dict:
  """The Section 11 block's fixed scalars on this network's block grid (jscale.models.resnet.block_scalars)."""
  _, ins, _ = cfg.shapes()
  return resnet_lib.block_scalars(cfg.block_configs()[0], ins[0][0], ins[0][1], f"geometric:c={cfg.c:g}")


def make_net(cfg: resnet_lib.ResNetConfig) -> Net:
  """init(key, row) and apply(params, row, x, key, train) of `cfg`'s network under any `Row`. Blocks are stacked
  on a leading axis and applied by lax.scan (one compiled block whatever the depth). Geometric kernels are drawn
  as `jscale.models.resnet.init_block` draws them (E[W^2] times b) and its blocks keep the learnable alpha; the
  other schemes draw He (fan-in) kernels and their alpha is fixed at 1."""
  stem, ins, head = cfg.shapes()
  n_in, depth = ins[0][0], len(cfg.blocks)
  bc = cfg.block_configs()[0]
  shapes = bc.kernel_shapes(n_in)
  names = ("conv1", "conv2", "conv3")
  geo_name = f"geometric:c={cfg.c:g}"
  geo, he = initializers.get(geo_name), initializers.get("he_normal")
  sc = geometric_scalars(cfg)
  tau_geo = jnp.asarray([sc["tau"][n] for n in names], jnp.float32)
  stem_gain_geo = math.sqrt(math.sqrt(cfg.k0 / (stem[0] * stem[1])))

  def pick(g, x_geo, x_he):
    return jax.tree.map(lambda u, v: g * u + (1 - g) * v, x_geo, x_he)

  def init_one_block(key, g):
    k_geo, k_he = jax.random.split(key)
    p = resnet_lib.init_block(k_geo, bc, n_in, geo_name)
    ks = jax.random.split(k_he, 3)
    out = {n: pick(g, p[n]["kernel"], he(k, shapes[n])).reshape(-1, shapes[n][-1]) for n, k in zip(names, ks)}
    out["alpha"] = pick(g, p["alpha"], jnp.float32(1.0))
    for n in names:
      out["ln_" + n] = {"scale": jnp.ones(shapes[n][2]), "bias": jnp.zeros(shapes[n][2])}
    return out

  def init(key, r: Row):
    k_stem, k_head, k_blocks = jax.random.split(key, 3)
    blocks = jax.vmap(init_one_block, in_axes=(0, None))(jax.random.split(k_blocks, depth), r.geometric)
    return {"stem": {"kernel": pick(r.geometric, geo(k_stem, stem), he(k_stem, stem)), "bias": jnp.zeros(stem[-1])},
            "head": {"kernel": pick(r.geometric, geo(k_head, head), he(k_head, head)), "bias": jnp.zeros(head[-1])},
            "blocks": blocks}

  def apply(params, r: Row, x, key, train, active=None):
    """`active`: None runs every block; a traced int (the same for every vmapped row) runs the first `active`
    blocks and passes x through the rest (a lax.cond, not a select: the skipped blocks cost nothing), so one
    compiled program serves every depth. The rows' a = 1, b = 0 past their depth give the same x either way."""
    g, ln = r.geometric, r.layernorm
    tau = g * tau_geo + (1 - g)
    sigma_F = g * sc["sigma_F"] + (1 - g)

    def residual(x, p, a, b):
      f = x
      for i, n in enumerate(names):
        f = ln * _layernorm(f, p["ln_" + n]["scale"], p["ln_" + n]["bias"]) + (1 - ln) * f
        f = tau[i] * jax.nn.relu(f)
        f = conv3x3_same(f, p[n]) if n == "conv2" else f @ p[n]
      alpha = g * p["alpha"] + (1 - g)     # fixed at 1 outside the geometric scheme
      return a * x + b * (sigma_F * f * alpha)

    def block(x, inputs):
      p, a, b, i = inputs
      if active is None:
        return residual(x, p, a, b), None
      return jax.lax.cond(i < active, residual, lambda x, *_: x, x, p, a, b), None

    w = params["stem"]["kernel"]
    x = lenet_lib.strided_conv_matmul((g * stem_gain_geo + (1 - g)) * x, w) + params["stem"]["bias"]
    x, _ = jax.lax.scan(block, x, (params["blocks"], r.a, r.b, jnp.arange(depth)))
    x = jax.nn.relu(x).reshape(x.shape[0], -1)
    x = _dropout(x, key, DROPOUT, train)
    return r.output_scale * (x @ params["head"]["kernel"] + params["head"]["bias"])

  return Net(init, apply)


class Curves(NamedTuple):
  train_loss: jax.Array   # (epochs,) mean minibatch loss
  test_acc: jax.Array     # (epochs,) after each epoch
  diverged: jax.Array     # (epochs,) the parameters stopped being finite during or before this epoch


def make_train(net: Net, *, epochs: int, batch_size: int, n_train: int, image=(8, 8, 1)):
  """Pure `train(key, row, data) -> Curves`: SGD momentum MOMENTUM, weight decay WEIGHT_DECAY, lr LR decayed
  x0.1 for the last quarter of the steps; minibatches from a fresh permutation each epoch. A run whose parameters stop
  being finite is frozen there and its metrics are NaN from that epoch on."""
  steps = n_train // batch_size
  total = steps * epochs
  sched = optax.piecewise_constant_schedule(LR, {(3 * total) // 4: 0.1})
  opt = optax.chain(optax.add_decayed_weights(WEIGHT_DECAY), optax.sgd(sched, momentum=MOMENTUM))

  def train(key, r: Row, data: datasets.Data, active=None) -> Curves:
    """`active`: see `Net.apply` (None: every block)."""
    def loss_fn(params, r, x, y, key):
      return train_lib.cross_entropy(net.apply(params, r, x, key, True, active), y)

    k_init, k_data = jax.random.split(key)
    params = net.init(k_init, r)
    state = opt.init(params)
    x_tr = data.x_train.reshape((-1,) + tuple(image))
    x_te = data.x_test.reshape((-1,) + tuple(image))

    def step(carry, batch):
      params, state, ok = carry
      idx, k = batch
      loss, g = jax.value_and_grad(loss_fn)(params, r, x_tr[idx], data.y_train[idx], k)
      upd, new_state = opt.update(g, state, params)
      new = optax.apply_updates(params, upd)
      good = ok & train_lib.all_finite(new) & jnp.isfinite(loss)
      keep = lambda a, b: jax.tree.map(lambda u, v: jnp.where(good, u, v), a, b)
      return (keep(new, params), keep(new_state, state), good), loss

    def epoch(carry, ekey):
      kp, kd = jax.random.split(ekey)
      idx = jax.random.permutation(kp, n_train)[:steps * batch_size].reshape(steps, batch_size)
      carry, losses = jax.lax.scan(step, carry, (idx, jax.random.split(kd, steps)))
      params, _, ok = carry
      acc = train_lib.accuracy(net.apply(params, r, x_te, None, False, active), data.y_test)
      return carry, (jnp.where(ok, losses.mean(), jnp.nan), jnp.where(ok, acc, jnp.nan), ~ok)

    _, (loss, acc, bad) = jax.lax.scan(epoch, (params, state, jnp.array(True)), jax.random.split(k_data, epochs))
    return Curves(loss, acc, bad)

  return train


def rows_by_depth(cells, chunk: int):
  """[(depth, cell indices)] in chunks of exactly `chunk` indices; a depth's last chunk repeats its last cell
  to fill up (the duplicate's result is dropped)."""
  out = []
  for depth in sorted({c[1] for c in cells}):
    idx = [i for i, c in enumerate(cells) if c[1] == depth]
    for j in range(0, len(idx), chunk):
      part = idx[j:j + chunk]
      out.append((depth, part + [part[-1]] * (chunk - len(part))))
  return out


def experiment(exp_dir: str, *, depths: Sequence[int] = (2, 4, 8, 16), seeds: Sequence[int] = tuple(range(8)),
               scheme_scale: float = 0.05, sweep_depth: int = 8,
               output_scales: Sequence[float] = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0),
               epochs: int = 6, batch_size: int = 64, channels: int = 8, width: int = 4) -> str:
  """Part A: every scheme at every depth at output scale `scheme_scale`; part B: geometric at `sweep_depth`
  over `output_scales`. Every seed its own digits split (data_seed = seed), init and minibatch order (a seed's
  key is the same in every configuration: paired). The configurations are rows of one compiled program (vmapped
  over rows and seeds) for every depth. Writes config.json + metrics.npz."""
  seeds = [int(s) for s in seeds]
  depths = [int(d) for d in depths]
  sets = [datasets.get("digits_raw", standardize=True, seed=s) for s in seeds]
  data = jax.tree.map(lambda *a: jnp.stack(a), *[datasets.to_device(d) for d in sets])
  n_train = sets[0].x_train.shape[0]
  keys = jnp.stack([jax.random.fold_in(jax.random.key(0), s) for s in seeds])
  cells = [(s, d, scheme_scale) for s in SCHEMES for d in depths] + [("geometric", sweep_depth, o)
                                                                      for o in output_scales]
  loss = np.full((len(cells), len(seeds), epochs), np.nan)
  acc, bad = loss.copy(), np.zeros(loss.shape, bool)
  # ONE compiled program for every depth: the network has max(depth) blocks and a call runs the first `active`
  # (an unbatched traced int; the rest are skipped by lax.cond). Every call takes `chunk` rows (the last call of
  # a depth repeats its last row to fill up), so the shapes never change: one XLA compile (~20 s of CPU each,
  # against ~4 s of training per call) instead of one per depth. The numbers are those of a network of exactly
  # that depth (tests/experiments/resnet: the same curves as a per-depth program).
  cfg = resnet_config(max(d for _, d, _ in cells), channels=channels, width=width)
  tr = make_train(make_net(cfg), epochs=epochs, batch_size=batch_size, n_train=n_train)
  per_row = jax.vmap(tr, in_axes=(0, None, 0, None))                   # seeds (each its own data)
  program = jax.jit(jax.vmap(per_row, in_axes=(None, 0, None, None)))  # rows -> (rows, seeds, epochs)
  for depth, idx in rows_by_depth(cells, chunk=len(SCHEMES)):
    rows = jax.tree.map(lambda *a: jnp.stack(a), *[row(cells[i][0], depth, cells[i][2], cfg) for i in idx])
    out = [np.asarray(o) for o in program(keys, rows, data, jnp.int32(depth))]
    real = sorted(set(idx))
    pos = [idx.index(i) for i in real]
    loss[real], acc[real], bad[real] = (o[pos] for o in out)
  na = len(SCHEMES) * len(depths)
  shape_a = (len(SCHEMES), len(depths), len(seeds), epochs)
  return store.write_results(
      exp_dir,
      axes={"scheme": SCHEMES, "depth": depths, "seed": seeds, "epoch": list(range(1, epochs + 1)),
            "output_scale": list(output_scales)},
      metrics={"train_loss": (("scheme", "depth", "seed", "epoch"), loss[:na].reshape(shape_a)),
               "test_acc": (("scheme", "depth", "seed", "epoch"), acc[:na].reshape(shape_a)),
               "diverged": (("scheme", "depth", "seed", "epoch"), bad[:na].reshape(shape_a)),
               "sweep_train_loss": (("output_scale", "seed", "epoch"), loss[na:]),
               "sweep_test_acc": (("output_scale", "seed", "epoch"), acc[na:]),
               "sweep_diverged": (("output_scale", "seed", "epoch"), bad[na:])},
      scheme_scale=scheme_scale, sweep_depth=sweep_depth, epochs=epochs, batch_size=batch_size, lr=LR,
      momentum=MOMENTUM, weight_decay=WEIGHT_DECAY, dropout=DROPOUT, channels=channels, width=width,
      data="digits_raw (8x8x1, z-scored)", data_source=sets[0].source, n_train=n_train)

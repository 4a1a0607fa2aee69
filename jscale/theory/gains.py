r"""Per-example forward and backward gains of a drawn ReLU net: what ties cross-entropy's output Hessian to a block.

A bias-free ReLU net is positively homogeneous: the logits of example b are z_b = K_{l,b} y_{l,b} with
K_{l,b} = d z_b / d y_{l,b} (Euler), so they grow with the gain of the weights below layer l (g_l = |x_{l,b}|^2,
the layer input's squared norm) and with the gain of the weights above it (k_l = ||K_{l,b}||_F^2 / n_L). The
layer-l block is E[g_l^2 tr((H K K^T)^2)]: its two gains and the loss's H = A^T A (a function of z) are
correlated, which a factorised prediction (E g^2 x E tr(...)) misses. `full_order.layer_output_tables` weights
each draw's output factors by these gains (`docs/calculus.md`, "Full order").
"""
from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jscale.models import lenet as lenet_lib
from jscale.theory import inputs, pairs


def mlp_gains(weights: Sequence, x, n_out: int) -> tuple[np.ndarray, np.ndarray]:
  """(forward gains g (R, E, L): |x_{l,b}|^2 of every weight layer's input; backward gains k (R, E, L):
  ||d z_b / d y_{l,b}||_F^2 / n_out, 1 at the last layer) of a round of MLP draws (`pairs.sample_round`'s
  weights, possibly zero-padded beyond the true widths; `n_out` the true output width). Built from the exact
  side's own per-layer programs (`pairs._forward`, `pairs._backward`), compiled once per padded shape, not
  once per setup."""
  ys, g, h = [], [], x
  for l, w in enumerate(weights):
    h, sq, _ = pairs._forward(h, w, l > 0)
    ys.append(h)
    g.append(np.asarray(sq, np.float64))
  r, e, o = ys[-1].shape
  dt = np.dtype(x.dtype)  # the 0/1 mask built on the host: on the device it is ~5 programs per shape
  k = jnp.asarray(np.broadcast_to((np.arange(o) < n_out).astype(dt) * np.eye(o, dtype=dt), (r, e, o, o)))
  ks = [None] * len(weights)
  for l in range(len(weights) - 1, -1, -1):
    ks[l] = np.asarray(_frob(k), np.float64) / n_out
    if l > 0:  # d z / d y_{l-1} = K_l W_l^T D_{l-1}
      k = pairs._backward(k, weights[l], ys[l - 1])
  return np.stack(g, -1), np.stack(ks, -1)


def mlp_pair_dots(weights: Sequence, x) -> np.ndarray:
  """(x_{l,b} . x_{l,b'})^2 of every weight layer's input and pair of examples of a round of MLP draws
  (R, E, E, L), from the exact side's programs (`pairs._forward`, `pairs._input_gram`): what a two-example
  term weighs its draw by (`full_order.xent_layer_output_tables`' pair weights)."""
  out, h = [], x
  for l, w in enumerate(weights):
    out.append(np.asarray(pairs._input_gram(h, l > 0), np.float64) ** 2)
    h, _, _ = pairs._forward(h, w, l > 0)
  return np.stack(out, -1)


@jax.jit
def _frob(k):
  return jnp.sum(k * k, axis=(-2, -1))


def lenet_gains(params: dict, x, pools: tuple = ()) -> tuple[np.ndarray, np.ndarray]:
  """`mlp_gains` of one strided LeNet draw (`lenet.apply_lenet` params, zero biases) on images x (E, H, W, C):
  g (E, L) the squared norm of every weight layer's whole input (all positions, after a pool), k (E, L) the
  squared Frobenius norm of d logits / d (its pre-activation, all positions) over the number of logits.
  `pools`: `LeNetConfig.pools`."""
  return tuple(np.asarray(a, np.float64) for a in _lenet_gains(params, x, tuple(pools)))


@functools.partial(jax.jit, static_argnums=2)
def _lenet_gains(params, x, pools=()):
  convs = sorted((n for n in params if n.startswith("conv")), key=lambda n: int(n[4:]))
  denses = sorted((n for n in params if n.startswith("dense")), key=lambda n: int(n[5:]))
  names = convs + denses
  windows = dict(zip(convs, lenet_lib.pool_windows(pools, len(convs))))

  def act(name, y):
    """The ReLU after weight layer `name` and its pool."""
    h = jnp.maximum(y, 0.0)
    return lenet_lib.avg_pool(h[None], int(windows[name]))[0] if name in windows else h

  def layer(name, xin):
    """Weight layer `name`'s pre-activation (zero bias) for one example's input xin."""
    w = params[name]["kernel"]
    if name.startswith("conv"):
      return jax.lax.conv_general_dilated(xin[None], w, w.shape[:2], "VALID",
                                          dimension_numbers=("NHWC", "HWIO", "NHWC"))[0]
    return xin.reshape(-1) @ w

  def from_layer(l, y):
    """The logits of one example from weight layer l's pre-activation y (with its ReLU, unless the last)."""
    h = y
    for below, name in zip(names[l:], names[l + 1:]):
      h = layer(name, act(below, h))
    return h

  def one(xe):
    g, k, h = [], [], xe
    for l, name in enumerate(names):
      xin = act(names[l - 1], h) if l > 0 else h
      g.append(jnp.sum(xin * xin))
      h = layer(name, xin)
      jac = jax.jacrev(lambda y, l=l: from_layer(l, y))(h)
      k.append(jnp.sum(jac * jac) / jac.shape[0])
    return jnp.stack(g), jnp.stack(k)

  return jax.vmap(one)(x)


def lenet_loss_sample(config: lenet_lib.LeNetConfig, weight_sq: Sequence[float], input_kind: str, key, *,
                      draws: int, examples: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Cross-entropy's loss statistics of a strided LeNet from `draws` fresh draws of (normal weights with
  E[W^2] = `weight_sq`, zero biases; `examples` images of `input_kind` pixels): softmax probabilities
  (D, E, n_out) and the forward and backward gains (D, E, L) of the same draws (`lenet_gains`)."""
  shapes = config.check().kernel_shapes()
  if len(weight_sq) != len(shapes):
    raise ValueError(f"weight_sq has {len(weight_sq)} entries for {len(shapes)} weight layers")
  stds = [float(np.sqrt(v)) for v in weight_sq]
  n_pix = int(np.prod(config.image))

  @jax.jit
  def one(k):
    kp, kx = jax.random.split(k)
    params = {name: {"kernel": std * jax.random.normal(kk, shape), "bias": jnp.zeros(shape[-1])}
              for (name, shape), std, kk in zip(shapes.items(), stds, jax.random.split(kp, len(shapes)))}
    x = inputs.sample_inputs(kx, input_kind, examples, n_pix).reshape((examples,) + tuple(config.image))
    g, kb = _lenet_gains(params, x, tuple(config.pools))
    return jax.nn.softmax(lenet_lib.apply_lenet(params, x, pools=config.pools), axis=-1), g, kb

  out = jax.lax.map(one, jax.random.split(key, draws))
  return tuple(np.asarray(a, np.float64) for a in out)

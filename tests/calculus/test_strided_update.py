"""SGD's first update over (example, position) pairs (calculus/strided_update.py) against a Monte Carlo over He
init draws of the same network on the same digits minibatch (examples 256-..., neither the transfer
experiment's judged examples 0-127 nor its development ones 128-255), and its dense case against
update_response. Tolerance per layer on E|grad|^2: 3 Monte-Carlo standard errors (256 draws: 2-7%) plus 15% for
the finite-width effects the prediction leaves (measured here: the LeNet's kernels within 3-15%, the MLP's first
two within 5-10%; the MLP's output kernel, which the own-activation component does not reach, is not asserted)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jscale import datasets, initializers
from jscale.calculus import strided_update as su
from jscale.calculus import update_response as ur
from jscale.experiments.transfer import run

DRAWS, ALLOW = 256, 0.15


def _batch(b):
  ds = datasets.get("digits", seed=0, standardize=True)
  return ds.x_train[256:256 + b], ds.y_train[256:256 + b].astype(np.int32)


@functools.lru_cache(maxsize=None)
def _monte_carlo(model: str, width: int, b: int):
  """(mean, SE) over DRAWS He inits of |grad W_l|^2 per kernel, and the prediction's inputs."""
  x, y = _batch(b)
  net = run.network(model, width)
  p0s = run.probe_draws(net, DRAWS, 2**20 + 50_000)

  def g2(p):
    loss = lambda q: jnp.mean(optax.softmax_cross_entropy_with_integer_labels(   # noqa: E731
        net.forward(q, jnp.asarray(x))[0], jnp.asarray(y)))
    return jnp.stack([jnp.sum(jnp.square(w)) for w in net.kernels(jax.grad(loss)(p))])

  with jax.default_matmul_precision("highest"):
    m = np.asarray(jax.jit(jax.vmap(g2))(p0s), np.float64)
  w_sq = [initializers.get("he_normal").second_moment(tuple(s)) for s in net.kernel_shapes]
  return m.mean(0), m.std(0, ddof=1) / np.sqrt(DRAWS), su.Stack.of_shapes(net.input_shape, net.kernel_shapes), w_sq


def _check(model, width, b, layers_off, layers=slice(None)):
  mean, se, stack, w_sq = _monte_carlo(model, width, b)
  x, y = _batch(b)
  pred = su.gradient_sq(x, y, stack, w_sq)
  tol = 3 * se / mean + ALLOW
  np.testing.assert_array_less(np.abs(mean / pred - 1)[layers], tol[layers])
  # The calculus's independent backward weights alone miss the layers named (the test can fail).
  calc = su.gradient_sq(x, y, stack, w_sq, own_activation=False)
  assert np.all(mean[layers_off] / calc[layers_off] - 1 > tol[layers_off])


def test_lenet_conv_update_over_positions_matches_monte_carlo():
  # the strided LeNet at channel multiplier 1 (6, 16 channels), 32 examples: without the own-activation
  # component conv0's E|grad|^2 is 2.2x the measured (its positions' coherent pairs)
  _check("lenet", 32, 32, [0, 1])


def test_mlp_width_32_hidden_kernel_matches_monte_carlo():
  # 64-32-32-10 on 128 examples: the hidden kernel's E|grad|^2 is 1.46x the calculus's alone (the finite-width
  # excess of issue 22's coordinate check; with the own-activation component 1.10, SE 0.03). The output kernel,
  # which the component does not reach, is left out: on these examples it is 1.26x (SE 0.04) the prediction at
  # width 32 (a finite-width effect of the logits' law, 1.05-1.06 on the development examples).
  _check("mlp", 32, 128, [1], slice(0, 2))


def test_dense_stack_without_own_activation_is_update_response():
  x, y = _batch(48)
  fan_out, w_sq = (24, 16, 10), (2 / 64, 2 / 24, 1 / 16)
  k = ur.forward_kernels(x, fan_out, w_sq)
  gg, _ = ur.logit_moments(k.y[-1], y, 10)
  want = ur.gradient_sq(k, ur.backward_kernels(k, (64, 24, 16), w_sq, gg), 48)
  got = su.gradient_sq(x, y, su.Stack((8, 8, 1), (), (), fan_out), w_sq, own_activation=False)
  np.testing.assert_allclose(got, want, rtol=1e-12)


def test_patch_kernel_sums_the_same_offset_of_both_patches():
  rng = np.random.default_rng(0)
  h = rng.standard_normal((3, 4, 4, 5))                    # (B, H, W, C) activations
  flat = h.reshape(3 * 16, 5)
  got = su.patch_kernel(flat @ flat.T, 3, (4, 4), 2, 2)
  p = su.patches(h, 2, 2).reshape(3 * 4, -1)
  np.testing.assert_allclose(got, p @ p.T, rtol=1e-12)


def test_stack_of_the_lenet_shapes():
  net = run.network("lenet", 64)
  st = su.Stack.of_shapes(net.input_shape, net.kernel_shapes)
  assert st == su.Stack((8, 8, 1), ((2, 2), (2, 2)), (12, 32), (120, 84, 10))

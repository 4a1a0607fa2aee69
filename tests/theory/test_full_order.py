"""The full-order point-pair prediction (`jscale.theory.full_order`): an MLP is the one-position case of the
conv recursion (equal to `predict.predict_sq_sv`, an independent implementation with its own tests), and on a
small strided LeNet it agrees with the exact blocks (`conv_pairs`, pairs of examples) within the Monte-Carlo SE
plus the model's stated error, where the paper's leading-order form is 2-5x low."""
import jax
import numpy as np
import pytest

from jscale.initializers import SCHEMES
from jscale.models import lenet as lenet_lib
from jscale.theory import conv_pairs, full_order, inputs, losses, pairs, predict, predict_conv


@pytest.mark.parametrize("kind", ["normal", "uniform01"])
@pytest.mark.parametrize("batch", [1, 64])
def test_mlp_is_the_one_position_case(kind, batch):
  widths, wsq = (20, 40, 12, 30, 8), [0.1, 0.05, 0.17, 0.07]
  ins = inputs.law_stats(kind, widths[0])
  q = np.random.default_rng(0).normal(size=(8, 8))
  ls = predict.constant_loss_stats(q.T @ q / 8)
  ref = predict.predict_sq_sv(widths, wsq, ins, ls, batch)
  got = full_order.predict_points(full_order.mlp_layers(widths), wsq, full_order.pixel_stats(ins), ls, batch)
  np.testing.assert_allclose(got.weight, ref.weight, rtol=1e-10)
  np.testing.assert_allclose(got.bias, ref.bias, rtol=1e-10)


def test_lenet_layers_geometry():
  cfg = lenet_lib.LeNetConfig((8, 8, 1), (4, 6), ((2, 2), (2, 2)), (16,), 10)
  ls = full_order.lenet_layers(cfg)
  assert [(l.n_in, l.n_out, l.kernel, l.grid) for l in ls] == [
      (1, 4, (2, 2), (4, 4)), (4, 6, (2, 2), (2, 2)), (6, 16, (2, 2), (1, 1)), (16, 10, (1, 1), (1, 1))]
  par, tap = full_order._parents(ls[0], ls[1])
  assert par.tolist() == [0, 0, 1, 1, 0, 0, 1, 1, 2, 2, 3, 3, 2, 2, 3, 3]
  assert tap.tolist() == [0, 1, 0, 1, 2, 3, 2, 3, 0, 1, 0, 1, 2, 3, 2, 3]


@pytest.mark.slow
def test_lenet_against_exact_blocks():
  # Quadratic loss, fan-in (He) init, 384 draws x 8 examples: the exact side's relative SE is ~8% per block. Tolerance:
  # 3 SE plus 20% for the model's stated approximations (4-point terms at their means, O(1/n) Wick terms).
  cfg = lenet_lib.LeNetConfig((8, 8, 1), (8, 8), ((2, 2), (2, 2)), (32,), 10)
  key = jax.random.PRNGKey(3)
  kq, kr = jax.random.split(key)
  q = losses.random_quadratic(kq, 10)
  a_q = np.asarray(losses.quadratic_factor(q), np.float32)
  st = np.concatenate([conv_pairs.exact_round(cfg, SCHEMES["fan_in"], "quadratic", jax.random.fold_in(kr, i),
                                              draws=64, examples=8, a_q=a_q, max_bytes=2 ** 33)[0] for i in range(6)])
  wsq = predict_conv.weight_sq(cfg, SCHEMES["fan_in"])
  ls = predict.constant_loss_stats(q)
  first = full_order.pixel_stats(inputs.law_stats("normal", 1))
  for b in (1, 1024):
    w = pairs.combine(st, b)[0]
    mean, se = w.mean(0), w.std(0) / np.sqrt(len(w))
    pred = full_order.predict_points(full_order.lenet_layers(cfg), wsq, first, ls, b).weight
    assert np.all(np.abs(pred - mean) <= 3 * se + 0.2 * mean), (b, pred / mean, se / mean)
    lead = predict_conv.predict_lenet(cfg, wsq, predict_conv.image_input_stats(cfg), ls, b).weight
    assert np.min(lead / mean) < 0.6  # the leading order misses what the full order keeps

"""rules.py's tap counts (how many kernel or window taps land on real input entries, per output position) equal
the conv / reduce_window of ones that they replaced (an XLA program compiled per shape); exact integers, so the
comparison is exact. Random configurations with strides, dilations of both kinds and negative (cropping) pads."""
import jax
import jax.numpy as jnp
import numpy as np

from jscale.calculus.rules import _counts, _window_counts


def _draw(rng, d):
  ints = lambda lo, hi: tuple(int(v) for v in rng.integers(lo, hi, d))  # noqa: E731
  return (ints(1, 8), ints(1, 4), ints(1, 3), tuple((int(a), int(b)) for a, b in rng.integers(-1, 3, (d, 2))),
          ints(1, 3), ints(1, 3))


def test_conv_tap_counts_equal_a_conv_of_ones():
  rng = np.random.default_rng(0)
  checked = 0
  while checked < 25:
    in_sp, k_sp, strides, pads, lhs, rhs = _draw(rng, int(rng.integers(1, 3)))
    try:
      ref = jax.lax.conv_general_dilated(jnp.ones((1, 1) + in_sp), jnp.ones((1, 1) + k_sp), strides, pads, lhs, rhs)
    except (ValueError, TypeError):
      continue   # a window larger than the padded input: no output, no rule asks
    np.testing.assert_array_equal(_counts(in_sp, k_sp, strides, pads, lhs, rhs),
                                  np.asarray(ref, np.float64).reshape(-1), err_msg=str((in_sp, k_sp, strides, pads)))
    checked += 1


def test_window_counts_equal_a_reduce_window_of_ones():
  rng = np.random.default_rng(1)
  checked = 0
  while checked < 15:
    in_sp, k_sp, strides, pads, base, win = _draw(rng, 2)
    params = dict(window_dimensions=(1,) + k_sp, window_strides=(1,) + strides, padding=((0, 0),) + pads,
                  base_dilation=(1,) + base, window_dilation=(1,) + win)
    try:
      ref = jax.lax.reduce_window(jnp.ones((1,) + in_sp), 0.0, jax.lax.add, params["window_dimensions"],
                                  params["window_strides"], params["padding"], base_dilation=params["base_dilation"],
                                  window_dilation=params["window_dilation"])
    except (ValueError, TypeError):
      continue
    np.testing.assert_array_equal(_window_counts((7,) + in_sp, params), np.asarray(ref, np.float64).reshape(-1),
                                  err_msg=str(params))
    checked += 1

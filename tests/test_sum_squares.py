"""`jscale.train.sum_squares`, the gradient norm's and G's per-leaf sums of squares (issue 23, round 7): a leaf of
two or more dims is summed through a matrix-vector product with ones instead of one reduction, so its summation
order changed; these tests hold it to the float64 sum and to the divergence guard's needs (non-finite in,
non-finite out). The engine's grad_norm and g_ratio against the per-step reference definition are
tests/test_train_metrics.py's."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jscale import train as T

# The leaves of 784-300-100-10 (bench's net), a conv kernel (HWIO) and a scalar.
SHAPES = [(784, 300), (300,), (300, 100), (100,), (100, 10), (10,), (5, 5, 6, 16), ()]
# Float32 sums of n <= 784 + 300 positive terms: each addition rounds by at most 2^-24 relative, so the worst case
# is ~6.5e-5; the roundings of random terms largely cancel (~sqrt(n) 2^-24 ~ 2e-6), and the engine's grad_norm
# moved by at most 2.2e-7 (docs/performance.md, round 7). A dropped leaf, row or column misses by O(1/300).
RTOL = 1e-5


def leaves(seed, scales):
  rng = np.random.default_rng(seed)
  return [np.float32(s) * rng.standard_normal(shape).astype(np.float32) for shape, s in zip(SHAPES, scales)]


@pytest.mark.parametrize("seed,scale", [(0, 1.0), (1, 1e-6), (2, 1e15)])
def test_each_leaf_against_the_float64_sum(seed, scale):
  tree = {"p": leaves(seed, [scale * 10.0 ** (-i % 3) for i in range(len(SHAPES))])}
  got = jax.jit(T.sum_squares)(tree)
  assert len(got) == len(SHAPES)
  for g, leaf in zip(got, tree["p"]):
    want = np.sum(np.square(leaf.astype(np.float64)))
    np.testing.assert_allclose(float(g), want, rtol=RTOL, err_msg=str(leaf.shape))


def test_under_vmap_each_configuration_its_own():
  stacked = [np.stack([leaf, 2 * leaf]) for leaf in leaves(3, [1.0] * len(SHAPES))]
  got = jax.jit(jax.vmap(T.sum_squares))(stacked)
  for g, leaf in zip(got, stacked):
    want = np.sum(np.square(leaf.astype(np.float64)).reshape(2, -1), axis=1)
    np.testing.assert_allclose(np.asarray(g), want, rtol=RTOL, err_msg=str(leaf.shape))


@pytest.mark.parametrize("bad,want", [(np.inf, np.inf), (-np.inf, np.inf), (np.nan, np.nan), (1e20, np.inf)])
def test_non_finite_in_non_finite_out(bad, want):
  """The divergence guard reads isfinite(grad_norm): one inf or NaN entry (or a square overflowing float32, as the
  plain sum of squares overflowed) must make its leaf's sum non-finite, wherever in the leaf it sits."""
  for index in [(0, 0), (783, 299), (400, 17)]:
    g = np.zeros((784, 300), np.float32)
    g[index] = bad
    got = float(jax.jit(T.sum_squares)([g])[0])
    if np.isnan(want):
      assert np.isnan(got), index
    else:
      assert got == want, index


def test_without_rows_the_plain_sum_bit_for_bit():
  """by_rows=False (the sampled steps' branch) is the sum the gradient norm used before round 7, unchanged."""
  tree = leaves(4, [1.0] * len(SHAPES))
  got = jax.jit(lambda t: T.sum_squares(t, by_rows=False))(tree)
  want = jax.jit(lambda t: [jnp.sum(jnp.square(leaf)) for leaf in t])(tree)
  for g, w, leaf in zip(got, want, tree):
    assert np.asarray(g).tobytes() == np.asarray(w).tobytes(), leaf.shape

"""The LeNet Figure 2's cheaper path against the one it replaced: draws on the host from flat draws
(`lenet_family.host_problem`) and the kernel-block heat map from the flat Hessian (`_Heatmap.fn`)."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jscale.experiments.hessian import lenet_family
from jscale import initializers
from jscale.initializers import SCHEMES
from jscale.models import lenet
from jscale.theory import hessian as hess
from jscale.theory import losses

TINY = lenet.LeNetConfig((4, 4, 1), (2, 3), ((2, 2), (2, 2)), (5,), 4)


def _direct(key, config, scheme, loss, batch):
  """The draws as the old Figure 2 made them: per shape, on the device."""
  kp, kx, kt = jax.random.split(key, 3)
  return (lenet.init_lenet(kp, config, SCHEMES[scheme]), jax.random.normal(kx, (batch,) + tuple(config.image)),
          losses.random_targets(kt, loss, batch, config.n_out))


def _raw(key, config, loss, batch):
  """The per-shape draws before any scaling: each kernel's N(0, 1) numbers, the images and the targets."""
  kp, kx, kt = jax.random.split(key, 3)
  shapes = config.kernel_shapes()
  return ([jax.random.normal(k, s) for k, s in zip(jax.random.split(kp, len(shapes)), shapes.values())],
          jax.random.normal(kx, (batch,) + tuple(config.image)), losses.random_targets(kt, loss, batch, config.n_out))


class HostProblemTest(chex.TestCase):

  def test_host_draws_cut_the_per_shape_draws(self):
    """The keys and cuts, bitwise: each kernel is its scheme's float32 std times the N(0, 1) numbers
    `init_lenet` draws for that shape; images and targets are `normal` / `random_targets`' draws. The
    reference is one jitted program (the default suite's budget); the slow test below compares with the old
    eager draws themselves (under jit XLA fuses the scaling into the draw and rounds it differently)."""
    cases = (("fan_in", "quadratic"), ("geometric", "xent"))
    raws = jax.jit(lambda k: [_raw(k, TINY, loss, 3) for _, loss in cases])(jax.random.PRNGKey(5))
    for (scheme, loss), (kernels, x, t) in zip(cases, raws):
      params, hx, ht = lenet_family.host_problem(jax.random.PRNGKey(5), TINY, scheme, loss, 3)
      init = initializers.get(SCHEMES[scheme])
      for (name, shape), z in zip(TINY.kernel_shapes().items(), kernels):
        np.testing.assert_array_equal(params[name]["kernel"], init.normal_std(shape) * np.asarray(z))
        np.testing.assert_array_equal(params[name]["bias"], np.zeros(shape[-1], np.float32))
      np.testing.assert_array_equal(hx, x)
      np.testing.assert_array_equal(ht, t)

  @pytest.mark.slow
  def test_host_draws_are_the_eager_draws_bit_for_bit(self):
    """Figure 2's LeNet, both losses, batch 1 and 64: the same float32 numbers as the old eager per-shape
    draws (`init_lenet`, `jax.random.normal`, `random_targets`), so the heat maps are drawn from the same
    networks and images."""
    for scheme, loss, batch in (("xavier", "quadratic", 64), ("fan_out", "xent", 1), ("geometric", "quadratic", 1)):
      want = _direct(jax.random.PRNGKey(5), lenet_family.FIG2_CONFIG, scheme, loss, batch)
      got = lenet_family.host_problem(jax.random.PRNGKey(5), lenet_family.FIG2_CONFIG, scheme, loss, batch)
      chex.assert_trees_all_equal(jax.tree.map(np.asarray, got), jax.tree.map(np.asarray, want))


@pytest.mark.slow
class HeatmapProgramTest(chex.TestCase):

  def test_flat_kernel_blocks_equal_the_pytree_hessians(self):
    """Figure 2's LeNet (float32, batch 1 and 64, the quadratic loss): the kernel-block matrix of the flat
    Hessian against `jax.hessian` over the parameter tree, blocks summed one by one, at 1e-6 relative. The
    derivatives are the same operations; only each block's sum of squares (up to 1024 x 1024 terms, all
    positive) runs in another order, whose float32 rounding is a few 1e-7 relative (4.4e-7 measured on the MLP);
    a misplaced or mis-normalised block is off by O(1). The output Hessians: bitwise (Q itself, quadratic)."""
    config = lenet_family.FIG2_CONFIG
    for batch in (1, 64):
      prob = lenet_family._Heatmap(config, loss="quadratic", batch=batch, seed=0, max_bytes=hess.DEFAULT_MAX_BYTES)
      params, x, t = lenet_family.host_problem(prob.draw_keys(1)[0], config, "xavier", "quadratic", batch)
      got, out_h = prob.fn(params, x, t, prob.q)

      def lossfn(p):
        out = lenet.apply_lenet(p, x)
        return jnp.mean(jax.vmap(losses.per_example("quadratic"), in_axes=(0, 0, None))(out, t, prob.q))

      bl = hess.blocks(jax.jit(jax.hessian(lossfn))(params), params)
      rows = lenet_family._kernel_rows(params)
      want = np.array([[float(hess.sq_sv(bl[i][j])) for j in rows] for i in rows])
      np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6)
      np.testing.assert_array_equal(np.asarray(out_h), np.broadcast_to(np.asarray(prob.q), out_h.shape))

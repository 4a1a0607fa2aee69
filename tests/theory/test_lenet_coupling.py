"""The LeNet's cross-entropy direction coupling (`gains.lenet_direction_coupling`) and the kernel-Jacobian
products it reads from the slot round (`lenet_slots.loss_sample(..., directions=True)`)."""
import jax
import numpy as np
import pytest

from jscale.initializers import SCHEMES
from jscale.models import lenet as lenet_lib
from jscale.theory import gains, lenet_slots

# A conv (8 channels) and a narrow hidden layer (3 units) under 30 outputs: the softmax saturates along the few
# directions the layers above amplify.
CONFIG = lenet_lib.LeNetConfig((8, 8, 1), (8,), ((2, 2),), (3,), 30)


def _sample(draws, examples, key=0):
  shapes = lenet_slots.own_shapes(CONFIG)
  return lenet_slots.loss_sample(CONFIG, SCHEMES["fan_in"], "normal", jax.random.PRNGKey(key), draws=draws,
                                 examples=examples, shapes=shapes, directions=True), shapes


@pytest.mark.slow  # ~10 s: the slot round compiles for this shape
def test_kernel_jacobian_products_against_jacrev():
  # J J^T and J_a J_b^T from the slots (J = sum_p K_p (x) x_p) against jax.jacrev of apply_lenet with respect to each
  # kernel on the same draw (`lenet_slots.draw` / `unpadded`), float32: tolerance 1e-4 relative to the largest entry.
  (probs, g, k, m, c, dots), shapes = _sample(2, 4)
  d, _ = lenet_slots._draw_args(CONFIG, lenet_slots.layout(shapes, CONFIG), shapes, SCHEMES["fan_in"], "xent",
                                "normal")
  key = jax.random.split(jax.random.PRNGKey(0), 2)[1]
  weights, x = lenet_slots.draw(shapes, d, 4, key)
  params, imgs = lenet_slots.unpadded(CONFIG, weights, x)
  for l, name in enumerate(CONFIG.kernel_shapes()):
    def logits(w, xb, name=name):
      p = dict(params, **{name: dict(params[name], kernel=w)})
      return lenet_lib.apply_lenet(p, xb[None])[0]
    js = np.stack([np.asarray(jax.jacrev(logits)(params[name]["kernel"], xb)).reshape(30, -1) for xb in imgs])
    scale = np.abs(m[1, :, l]).max()
    np.testing.assert_allclose(m[1, :, l], np.einsum("eok,eqk->eoq", js, js), atol=1e-4 * scale)
    np.testing.assert_allclose(c[1, :, l], np.einsum("eok,eqk->eoq", js[0::2], js[1::2]), atol=1e-4 * scale)
  im = np.asarray(imgs)  # the first layer's pair dots are the images' own
  np.testing.assert_allclose(dots[1, :, 0], np.sum(im[0::2] * im[1::2], axis=(1, 2, 3)), rtol=1e-4, atol=1e-5)


@pytest.mark.slow  # ~15 s: the slot round compiles for this shape, 256 draws
def test_lenet_coupling_tells_coupled_from_independent_softmax():
  # Below the narrow layer (the conv and the hidden layer) the same-draw sums are below the direction-swapped ones
  # (factor < 1 by more than 3 of its SEs). With each draw's probabilities taken from the next draw (H independent
  # of the directions, as the swap assumes) every factor must be 1 within 3 SEs (same and two examples); the last
  # layer's is 1 by construction.
  (probs, g, k, m, c, dots), _ = _sample(256, 8, key=5)
  cp = gains.lenet_direction_coupling(probs, g, k, m, c, dots)
  assert np.all(cp.same[:2] + 3 * cp.same[:2] * cp.same_se[:2] < 1), (cp.same, cp.same_se)
  assert cp.same[-1] == cp.two[-1] == 1.0
  ind = gains.lenet_direction_coupling(np.roll(probs, 1, axis=0), g, k, m, c, dots)
  for v, se in ((ind.same, ind.same_se), (ind.two, ind.two_se)):
    assert np.all(np.abs(np.log(v[:-1])) < 3 * se[:-1]), (v, se)

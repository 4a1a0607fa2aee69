"""The transfer coordinate check's predictions: rescaling one draw's prediction to the init's expected E[W^2]
(analysis.predicted_sizes, w_sq_expected) against the rules run on a draw whose kernels have exactly that
E[W^2]; the SE-aware share."""
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jscale import calculus, datasets
from jscale.experiments.transfer import analysis, run


def test_expected_weight_rescaling_matches_the_rules_on_rescaled_weights():
  ds = datasets.get("digits", seed=0, standardize=True)
  x, y = jnp.asarray(ds.x_train[:64]), jnp.asarray(ds.y_train[:64], jnp.int32)
  net = run.network("lenet", 32)
  p = net.draw(jax.random.key(3), "he_normal")
  w_sq = np.array([float(jnp.mean(jnp.square(w))) for w in net.kernels(p)])
  target = w_sq * np.array([0.7, 1.3, 0.9, 1.1, 1.25])          # what "expected" would be
  q = net.map_kernels(lambda l, w: w * np.float32(np.sqrt(target[l] / w_sq[l])), p)
  apply = lambda p_, x_: net.forward(p_, x_)[0]   # noqa: E731
  ce = lambda out: optax.softmax_cross_entropy_with_integer_labels(out, y)   # noqa: E731
  for opt in ("sgd", "adam"):
    pr_p = calculus.from_inspection(calculus.inspect(apply, p, x, loss=ce, groups=np.asarray(y)), optimizer=opt)
    pr_q = calculus.from_inspection(calculus.inspect(apply, q, x, loss=ce, groups=np.asarray(y)), optimizer=opt)
    m = np.ones(5)
    u_p, a_p = analysis.predicted_sizes(pr_p, m, 0.1, 1, target)
    u_q, a_q = analysis.predicted_sizes(pr_q, m, 0.1, 1)
    # At init the rules are exactly multiplicative in E[W^2] (f32 moments: 1e-5).
    np.testing.assert_allclose(a_p[0], a_q[0], rtol=1e-5)
    # The update also reads the measured loss gradient at the logits, which moves a little with their size:
    # 5% (measured 0.1-2% here).
    np.testing.assert_allclose(u_p, u_q, rtol=0.05)
    np.testing.assert_allclose(a_p[1], a_q[1], rtol=0.05)
    # Without the rescaling they differ (the test can fail).
    assert np.max(np.abs(np.log(analysis.predicted_sizes(pr_p, m, 0.1, 1)[1][0] / a_q[0]))) > 0.1


def test_within_se_counts_misses_beyond_the_sampling_error():
  err = np.array([0.05, 0.3, 0.3, np.nan])
  rse = np.array([0.0, 0.2, 0.1, 0.1])
  ok = analysis.within_se(err, rse, 0.1)
  np.testing.assert_array_equal(ok[:3], [1.0, 1.0, 0.0])
  assert np.isnan(ok[3])

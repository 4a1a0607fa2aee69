"""The transfer coordinate check's predictions: rescaling one draw's prediction to the init's expected E[W^2]
(analysis.predicted_activations, w_sq_expected) against the rules run on a draw whose kernels have exactly that
E[W^2]; the SE-aware share."""
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jscale import calculus, datasets
from jscale.experiments.transfer import ahead, analysis, run
from default_xla import in_default_xla


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
  # one inspection per draw (the activations at init do not depend on the optimizer)
  pr_p, pr_q = (calculus.from_inspection(calculus.inspect(apply, w, x, loss=ce, groups=np.asarray(y))) for w in (p, q))
  a_p = analysis.predicted_activations(pr_p, target)
  a_q = analysis.predicted_activations(pr_q)
  # At init the rules are exactly multiplicative in E[W^2] (f32 moments: 1e-5).
  np.testing.assert_allclose(a_p, a_q, rtol=1e-5)
  # Without the rescaling they differ (the test can fail).
  assert np.max(np.abs(np.log(analysis.predicted_activations(pr_p) / a_q))) > 0.1


def test_within_se_counts_misses_beyond_the_sampling_error():
  err = np.array([0.05, 0.3, 0.3, np.nan])
  rse = np.array([0.0, 0.2, 0.1, 0.1])
  ok = analysis.within_se(err, rse, 0.1)
  np.testing.assert_array_equal(ok[:3], [1.0, 1.0, 0.0])
  assert np.isnan(ok[3])


def test_draws_at_takes_the_entry_at_or_below_the_width():
  table = {"mlp": ((32, 160), (128, 80), (512, 64))}
  assert [run.draws_at(table, "mlp", w) for w in (16, 32, 64, 128, 256, 512, 4096)] == [160, 160, 160, 80, 80,
                                                                                     64, 64]
  assert run.draws_at(7, "lenet", 32) == 7


def test_one_step_draws_give_the_first_steps_quantities_of_all_draws():
  """The draws after the first k_draws take one step: the first update and the activations average over all
  draws (the same numbers as every draw taking k steps), updates 2..k over the first k_draws only."""
  ds = datasets.get("digits", seed=0, standardize=True)
  x, y = jnp.asarray(ds.x_train[:32]), jnp.asarray(ds.y_train[:32], jnp.int32)
  net = run.network("mlp", 16)
  L = net.n_layers
  one = (calculus.from_inspection(calculus.inspect(lambda p, x_: net.forward(p, x_)[0],
                                                   net.draw(jax.random.key(0), "he_normal"), x)),
         np.ones(L, np.float32), np.ones(L, np.float32), 1.0)
  pres = {(r, o): one for r in run.PARAMETRIZATIONS for o in run.OPTIMIZERS}
  lr = {(r, o): 0.1 if o == "sgd" else 0.01 for r in run.PARAMETRIZATIONS for o in run.OPTIMIZERS}
  p0s = run.probe_draws(net, 6, run.COORD_SEED)
  every = run.coordinate_program(net, x, y, 2, 6, 6)   # every draw takes both steps
  full = run.coordinate_check(net, pres, x, y, lr, 2, p0s=p0s, program=every)
  split = run.coordinate_check(net, pres, x, y, lr, 2, p0s=p0s, k_draws=2)
  # the first 2 draws' own means, on full's program: each of the 2 draws 3 times (a program of its own for 2
  # draws was ~1/4 of the test's compile)
  head = run.coordinate_check(net, pres, x, y, lr, 2, program=every,
                              p0s=jax.tree.map(lambda v: np.concatenate([np.asarray(v[:2])] * 3), p0s))
  (um_f, _, am_f, _, us_f, as_f), (um_s, _, am_s, _, us_s, as_s) = full, split
  np.testing.assert_allclose(um_s[..., 0, :], um_f[..., 0, :], rtol=1e-5)
  np.testing.assert_allclose(am_s, am_f, rtol=1e-5)
  np.testing.assert_allclose(as_s, as_f, rtol=1e-4)
  np.testing.assert_allclose(um_s[..., 1, :], head[0][..., 1, :], rtol=1e-5)
  assert np.max(np.abs(um_s[..., 1, :] / um_f[..., 1, :] - 1)) > 1e-3   # 2 draws are not 6 (the test can fail)


@in_default_xla   # the claim is about the bits users get; the suite's cheap compile options can move one
def test_probe_draws_of_several_ranges_are_each_range_drawn_alone():
  """One random program for the probe and the coordinate check's inits (run.experiment) draws each key's init as
  a program of that range alone does (bit for bit), and the ranges' keys are distinct (the test can fail)."""
  net = run.network("lenet", 64)
  draw = net.make_draw(("he_normal",))
  alone = lambda n, start: jax.jit(jax.vmap(lambda s: draw(jax.random.key(s), 0)))(start + jnp.arange(n))  # noqa: E731
  a, b = run.probe_draws(net, 3, run.PROBE_SEED, (5, run.COORD_SEED))
  for got, want in ((a, alone(3, run.PROBE_SEED)), (b, alone(5, run.COORD_SEED)), (run.probe_draws(net, 2),
                                                                                   alone(2, run.PROBE_SEED))):
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for u, v in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      np.testing.assert_array_equal(np.asarray(u), np.asarray(v))
  assert not np.array_equal(np.asarray(net.kernels(a)[0][0]), np.asarray(net.kernels(b)[0][0]))


def test_a_program_compiled_ahead_from_shapes_gives_the_bits_of_one_compiled_at_the_call():
  """run.experiment compiles its programs in a background thread from the arguments' shapes alone (ahead.py) and
  calls the compiled executables: the coordinate check's numbers are those of the program compiled at the call."""
  ds = datasets.get("digits", seed=0, standardize=True)
  x, y = jnp.asarray(ds.x_train[:16]), jnp.asarray(ds.y_train[:16], jnp.int32)
  net = run.network("mlp", 16)
  L, R, O = net.n_layers, len(run.PARAMETRIZATIONS), len(run.OPTIMIZERS)
  p0s = run.probe_draws(net, 5, run.COORD_SEED)
  rng = np.random.default_rng(0)
  args = (p0s, rng.uniform(0.5, 2, (O, R, L)).astype(np.float32), rng.uniform(0.5, 2, (O, R, L)).astype(np.float32),
          np.full((O, R), 0.05, np.float32))
  with ahead.Ahead() as a:
    a.submit("coord", run.coordinate_program(net, x, y, 2, 5, 2), *ahead.abstract(args))
    early = a.take("coord")
    assert a.take("coord") is None
  for got, want in zip(early(*args), run.coordinate_program(net, x, y, 2, 5, 2)(*args)):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_sgd_update_with_a_memo_gives_the_bits_without_it():
  """The coordinate check keeps E|grad W|^2 per w_sq across the rules (analysis.sgd_update's memo): a second rate
  on the same init reuses it, and the result is the unmemoised one bit for bit; another init is not reused."""
  ds = datasets.get("digits", seed=0, standardize=True)
  x, y = ds.x_train[:32], np.asarray(ds.y_train[:32], np.int32)
  net = run.network("lenet", 32)
  w = np.array([2.0 / np.prod(s[:-1]) for s in net.kernel_shapes])
  lr = np.array([0.25, 0.5, 1.0, 2.0, 0.1])
  def upd(w_, lr_, memo=None):
    return analysis.sgd_update(net.input_shape, net.kernel_shapes, x, y, w_, lr_, memo)

  memo = {}
  for w_, lr_ in ((w, lr), (w, 2 * lr), (w * [1, 1, 1, 1, 0.5], lr)):
    np.testing.assert_array_equal(upd(w_, lr_, memo), upd(w_, lr_))
  assert len(memo) == 2

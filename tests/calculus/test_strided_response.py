"""The predicted activations after the first SGD / Adam step of the strided LeNet over (example, position) pairs
(calculus/strided_response.py) against a Monte Carlo over He init draws of the same network on the same digits
minibatch (examples 256-..., neither the transfer experiment's judged examples 0-127 nor its development ones
128-255; keys 2**20 + 50000 ..., the strided_update test's), one step of the kernels (every bias zero, as the
prediction assumes). Tolerance per layer on E[h^2] after the step: 3 Monte-Carlo standard errors (128 draws:
2-15%, largest at the logits) plus ALLOW for the finite-width effects the infinite-width kernels leave. The
update-on-top form (each layer's E[y^2] plus the update's bound on top of its input's relative change, no cross
term) misses by more, which is what the test can fail on; and the dense case is update_response's exactly."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jscale import datasets, initializers
from jscale.calculus import strided_response as sr
from jscale.calculus import strided_update as su
from jscale.calculus import update_response as ur
from jscale.experiments.transfer import run

DRAWS, B, ALLOW = 128, 32, 0.10
# the rates (every layer's): SGD's is the transfer grid's centre, at which the logits' E[z^2] doubles in one step;
# Adam's grows it 1.5x. Measured / predicted after the step: SGD 1.01, 0.93, 0.97, 0.95, 0.83 (conv0 ... logits),
# Adam 1.00, 0.95, 0.96, 0.97, 0.89. At SGD lr 0.5 (the logits' E[z^2] 5x) the first order misses (0.6).
SETTINGS = {"sgd": 0.25, "adam": 2.0 ** -6}


def _batch(b):
  ds = datasets.get("digits", seed=0, standardize=True)
  return ds.x_train[256:256 + b], ds.y_train[256:256 + b].astype(np.int32)


def _setup(width=32):
  net = run.network("lenet", width)
  w_sq = [initializers.get("he_normal").second_moment(tuple(s)) for s in net.kernel_shapes]
  return net, su.Stack.of_shapes(net.input_shape, net.kernel_shapes), w_sq


@functools.lru_cache(maxsize=None)
def _monte_carlo(optimizer: str, lr: float, bias_lr: float = 0.0):
  """(mean, SE) over DRAWS He inits of E[h^2] per layer output (hidden post-ReLU, the logits last) before and
  after one step of the kernels (and of the biases at bias_lr)."""
  x, y = _batch(B)
  net, _, _ = _setup()
  p0s = run.probe_draws(net, DRAWS, 2**20 + 50_000)
  X, Y = jnp.asarray(x), jnp.asarray(y)

  def sizes(p):
    z, hidden = net.forward(p, X)
    return jnp.stack([jnp.mean(jnp.square(h)) for h in list(hidden) + [z]])

  def one(p):
    g = jax.grad(lambda q: jnp.mean(optax.softmax_cross_entropy_with_integer_labels(net.forward(q, X)[0], Y)))(p)
    step = (lambda v: -lr * v) if optimizer == "sgd" else (lambda v: -lr * jnp.sign(v))
    stepb = (lambda v: -bias_lr * v) if optimizer == "sgd" else (lambda v: -bias_lr * jnp.sign(v))
    pb = jax.tree.map(lambda w, v: w + stepb(v), p, g)   # the biases' step (the kernels are replaced below)
    p1 = net.map_kernels(lambda l, _: net.kernels(p)[l] + step(net.kernels(g)[l]), pb)
    return sizes(p), sizes(p1)

  with jax.default_matmul_precision("highest"):
    a0, a1 = (np.asarray(v, np.float64) for v in jax.jit(jax.vmap(one))(p0s))
  return (a0.mean(0), a0.std(0, ddof=1) / np.sqrt(DRAWS)), (a1.mean(0), a1.std(0, ddof=1) / np.sqrt(DRAWS))


def _update_on_top(r: ur.Response, stack, w_sq, x):
  """The old form (`transfer.analysis.predicted_activations`): E[h_l^2] (1 + sum_{j<=l} U_j / E[y_j^2]), U_j =
  fan_in^2 E[x_j^2] upd_j^2 the update's bound on E[dy_j^2] (perfect alignment), no cross term."""
  fan_in = np.array([sr.kx_fan(stack, l) for l in range(len(w_sq))], float)
  x_sq = np.concatenate([[float(np.mean(np.diag(su.forward(x, stack, w_sq).x[0]))) / fan_in[0]], r.act0[:-1]])
  y_sq = fan_in * np.asarray(w_sq) * x_sq
  return r.act0 * (1 + np.cumsum(fan_in ** 2 * x_sq * r.update_rms ** 2 / y_sq))


def _check(optimizer):
  lr = SETTINGS[optimizer]
  (m0, s0), (m1, s1) = _monte_carlo(optimizer, lr)
  x, y = _batch(B)
  _, stack, w_sq = _setup()
  r = sr.first_step(x, y, stack, w_sq, [lr] * len(w_sq), optimizer)
  np.testing.assert_array_less(np.abs(m0 / r.act0 - 1), 3 * s0 / m0 + ALLOW)   # the init, as a control
  tol = 3 * s1 / m1 + ALLOW
  np.testing.assert_array_less(np.abs(m1 / r.act1 - 1), tol)
  # the step moves the activations by more than the tolerance somewhere (the check can fail) ...
  assert np.max(np.abs(m1 / m0 - 1) - tol) > 0
  # ... and the update-on-top form misses on at least 3 of the 4 layers above conv0 (measured / old form: SGD
  # 0.71, 0.64, 0.51, 0.67; Adam 0.80, 0.53, 0.28, 0.36)
  old = _update_on_top(r, stack, w_sq, np.asarray(x))
  assert np.sum(np.abs(m1 / old - 1)[1:] > tol[1:]) >= 3
  return r


def test_sgd_after_step_activations_match_monte_carlo():
  _check("sgd")


def test_adam_after_step_activations_match_monte_carlo():
  _check("adam")


def test_dense_stack_first_layer_is_update_response():
  # a dense stack is update_response's case: without the own-activation component the kernels, the update and
  # the first layer's terms are its own; above it the cross term adds the layers below's changes along the
  # example's own activation, which update_response leaves out
  x, y = _batch(48)
  fan_out, w_sq, lr = (24, 16, 10), (2 / 64, 2 / 24, 1 / 16), (0.3, 0.2, 0.5)
  for opt in ("sgd", "adam"):
    want = ur.first_step(x, y, fan_out, w_sq, lr, opt, samples=128)   # the same seeded draws on both sides
    got = sr.first_step(x, y, su.Stack((8, 8, 1), (), (), fan_out), w_sq, lr, opt, own_activation=False, samples=128)
    np.testing.assert_allclose(got.act0, want.act0, rtol=1e-12)
    np.testing.assert_allclose(got.update_rms, want.update_rms, rtol=1e-12)
    np.testing.assert_allclose(got.cross[0], want.cross[0], rtol=1e-7)    # einsum vs matmul order
    np.testing.assert_allclose(got.change[0], want.change[0], rtol=1e-7)
    assert np.all(np.abs(got.cross[1:]) > np.abs(want.cross[1:]))


def test_triple_forms_are_the_sums_over_triples():
  # the bilinear forms (kernels x, y: Adam's bias kernel; and SGD's all-ones one) against the brute-force sum over
  # token triples: exact algebra, so rounding only (1e-12)
  rng = np.random.default_rng(1)
  f = rng.standard_normal((7, 10))
  k_y = f @ f.T
  x, y, g = (rng.standard_normal((7, 7)) for _ in range(3))
  g = g @ g.T
  s = np.arcsin(ur.correlation(k_y)) / (4 * np.pi)
  masks = ur.all_three_active(k_y)
  form = lambda a, b: float(np.einsum("ab,ac,abc,bc->", a, b, masks, g))   # noqa: E731
  want = (form(x, x), form(x, y), form(y, y))
  np.testing.assert_allclose(sr.triple_forms(x, y, s, g), want, rtol=1e-12)
  ones = np.ones_like(x)
  np.testing.assert_allclose([sr.triple_pair_ones(x, s, g), sr.triple_pair_ones(None, s, g)],
                             [form(x, ones), form(ones, ones)], rtol=1e-12)


def test_triple_sum_is_the_sum_over_triples():
  rng = np.random.default_rng(0)
  f = rng.standard_normal((6, 9))
  k_y = f @ f.T
  th, g = rng.standard_normal((6, 6)), rng.standard_normal((6, 6))
  g = g @ g.T
  masks = ur.all_three_active(k_y)
  want = float(np.einsum("ab,ac,abc,bc->", th, th, masks, g))
  np.testing.assert_allclose(sr.triple_sum(th, np.arcsin(ur.correlation(k_y)) / (4 * np.pi), g), want, rtol=1e-12)
  kh = ur.relu_kernel(k_y, 9)
  zg = rng.random(6)
  want = ur.input_change(th, kh, masks, zg)
  got = sr.input_change(th, np.arcsin(ur.correlation(k_y)) / (4 * np.pi), ur.both_active(k_y), kh,
                        zg / np.diag(kh), 6)
  np.testing.assert_allclose(got, want, rtol=1e-6)   # P(b, c) from the triple formula vs arccos: rounding


BIAS_DRAWS = 256


BIASED_WIDTHS, BIASED_W_SQ = (64, 64, 10), (2 / 64, 2 / 64, 2 / 64)


def _biased_mlp():
  """The bias tests' 64-64-64-10 ReLU MLP on digits 256-287 (`_batch(B)`): the batch (x, y), its `Stack`, its
  forward (every layer's output) and, per key, a He init (kernels N(0, BIASED_W_SQ), biases 0) with the
  cross-entropy gradient there."""
  x, y = _batch(B)
  widths, w_sq = BIASED_WIDTHS, BIASED_W_SQ
  X, Y = jnp.asarray(x, jnp.float32), jnp.asarray(y)

  def forward(p):
    h, out = X, []
    for l, (w, b) in enumerate(p):
      h = h @ w + b
      if l < len(p) - 1:
        h = jax.nn.relu(h)
      out.append(h)
    return out

  def init_grad(key):
    keys = jax.random.split(key, len(widths))
    fans = (x.shape[1],) + tuple(widths[:-1])
    p = [(jax.random.normal(k, (i, o)) * np.sqrt(s), jnp.zeros(o)) for k, i, o, s in zip(keys, fans, widths, w_sq)]
    return p, jax.grad(lambda q: jnp.mean(optax.softmax_cross_entropy_with_integer_labels(forward(q)[-1], Y)))(p)

  return x, y, su.Stack((8, 8, 1), (), (), widths), forward, init_grad


def _pre_activations(x, p):
  """Each hidden layer's pre-activation at parameters p (the biased MLP's (w, b) pairs, the last one the logits'):
  the flip terms' y at the init and y + d after the step."""
  out, h = [], jnp.asarray(x, jnp.float32)
  for w, b in p[:-1]:
    out.append(h @ w + b)
    h = jax.nn.relu(out[-1])
  return out


def _over_inits(one, draws):
  """Mean over the He inits of keys 50000, 50001, ... of one(key), and the tests' tolerance 3 SE + ALLOW on the
  relative error. Not jitted: under jax.jit the bias test's JVP returned 1e25 at hidden 2 and the logits on
  XLA:CPU (twelfth session)."""
  with jax.default_matmul_precision("highest"):
    c = np.asarray(jax.vmap(lambda s: one(jax.random.key(s)))(jnp.arange(draws) + 50_000), np.float64)
  m, se = c.mean(0), c.std(0, ddof=1) / np.sqrt(draws)
  return m, 3 * se / m + ALLOW


def _adam_first_step(init_grad, lr, lr_b):
  """An init's parameters and their values after Adam's first step (lr sign(g) on every kernel, lr_b sign(g) on
  every bias): (p, p1), from `_biased_mlp`'s init_grad."""
  def step(key):
    p, g = init_grad(key)
    return p, [(w - lr * jnp.sign(gw), b - lr_b * jnp.sign(gb)) for (w, b), (gw, gb) in zip(p, g)]
  return step


def test_adam_bias_step_change_matches_monte_carlo_with_the_incoherent_carry():
  # Adam's bias-only first step (every bias lr sign(g), kernels fixed) in a 64-64-64-10 ReLU MLP on 32 digits
  # (256-287): the first-order E|dh|^2 per layer output, measured by a JVP over BIAS_DRAWS He inits, against
  # the prediction with the incoherent carry (docs/calculus.md, *The biases' step*). Tolerance: 3 SE + 10%
  # (256 draws, keys 50000 ...: SE 0.1-1.8%; measured / predicted 0.98, 0.97, 0.99, without the carry
  # 0.98, 1.19, 1.20). Without the carry the NTK's mean kernel W^T D W ~ k E[W^2] drops the incoherent part
  # of the carried change (Wishart: p / k of it) and hidden 2 and the logits come out ~40% too small; with the
  # bias's rate at 0 the prediction is 0.
  lr_b = 0.2
  x, y, stack, forward, init_grad = _biased_mlp()
  widths, w_sq = BIASED_WIDTHS, BIASED_W_SQ

  def one(key):
    p, g = init_grad(key)
    u = [(jnp.zeros_like(w), -lr_b * jnp.sign(gb)) for (w, _), (_, gb) in zip(p, g)]
    h0, dh = jax.jvp(forward, (p,), (u,))
    return jnp.stack([jnp.mean(d * d) for d in dh])

  m, tol = _over_inits(one, BIAS_DRAWS)
  lr0 = [0.0] * len(widths)
  got = sr.first_step(x, y, stack, w_sq, lr0, "adam", bias_lr=lr_b, second_order=False, incoherent_carry=True)
  np.testing.assert_array_less(np.abs(m / got.change - 1), tol)
  old = sr.first_step(x, y, stack, w_sq, lr0, "adam", bias_lr=lr_b, second_order=False)
  assert np.sum(np.abs(m / old.change - 1) > tol) >= 2
  assert np.all(sr.first_step(x, y, stack, w_sq, lr0, "adam", second_order=False).change == 0)


def test_flip_share_is_the_gaussian_laws_switched_off_share():
  # y ~ N(0, v), d = kappa y + e: the share of active units the step switches off, over the active share, from the
  # layer's moments E[h^2], 2E[h . m d], E|m d|^2 as strided_response predicts them; 2^19 samples (SE of the
  # share ~0.0015), tolerance 5 SE
  rng = np.random.default_rng(0)
  for v, kappa, s in ((1.0, -0.13, 0.45), (2.0, -0.25, 0.3), (0.5, 0.1, 0.6)):
    yv = rng.normal(0, np.sqrt(v), 2 ** 19)
    d = kappa * yv + rng.normal(0, s, yv.size)
    on = yv > 0
    h, md = np.where(on, yv, 0), np.where(on, d, 0)
    act0, cross, change = np.mean(h * h), 2 * np.mean(h * md), np.mean(md * md)
    p = np.mean(on & (yv + d < 0)) / np.mean(on)
    assert abs(sr.flip_share(act0, cross, change) - p) < 5 * np.sqrt(p * (1 - p) / on.sum())
    assert p > 0.05   # the law has flips to count (the test can fail)


def test_adam_step_with_biases_matches_monte_carlo_with_the_flip_carry():
  # Adam's first step of kernels and biases (all at 0.03) in a 64-64-64-10 ReLU MLP on 32 digits (256-287): E[h^2]
  # after the exact step over BIAS_DRAWS / 2 He inits against the prediction with the biases, the incoherent
  # carry and the flip carry (docs/calculus.md, *The flips' coherent carry as a mask share*). Tolerance: 3 SE +
  # 10% (128 draws, keys 50000 ...; measured / predicted 1.00, 0.96, 1.11). Without the flip carry the logits'
  # shrink is predicted too small (0.76: the units the step switches off no longer carry the change up).
  # Without the biases and both carries the logits come out 1.05 too, by a cancellation (the first order too
  # small, no flips), which the LeNet's development cells show not to hold in general.
  lr = 0.03
  x, y, stack, forward, init_grad = _biased_mlp()
  widths, w_sq = BIASED_WIDTHS, BIASED_W_SQ

  def one(key):
    return jnp.stack([jnp.mean(h * h) for h in forward(_adam_first_step(init_grad, lr, lr)(key)[1])])

  m, tol = _over_inits(one, BIAS_DRAWS // 2)
  lrs = [lr] * len(widths)
  got = sr.first_step(x, y, stack, w_sq, lrs, "adam", bias_lr=lr, incoherent_carry=True, flip_carry=True)
  np.testing.assert_array_less(np.abs(m / got.act1 - 1), tol)
  old = sr.first_step(x, y, stack, w_sq, lrs, "adam", bias_lr=lr, incoherent_carry=True)
  assert np.abs(m / old.act1 - 1)[-1] > tol[-1]


def test_adam_units_own_flip_term_matches_monte_carlo():
  # Adam's first step, kernels at 0.01 and biases at 0.1 (the biases' step the larger, as equal-G's in the transfer
  # check), in the 64-64-64-10 ReLU MLP on 32 digits (256-287): per hidden layer the units' own flip term
  # E[(y + d)^2 (1[y + d > 0] - 1[y > 0])] (y the pre-activation at init, d its exact change), over BIAS_DRAWS / 2
  # He inits (keys 50000 ...), against `mean_shift_net`'s (docs/calculus.md, *The units' mean shift and their own
  # flip term*). Tolerance: 3 SE (~10%) + 25% for the kernels' sign step, whose coherent shift along the input's
  # mean the linearised sign undercounts (measured / predicted here 1.28, 1.15; kernels alone at 0.03: 4.6, 1.7,
  # not asserted). The measured term is negative by more than 3 SE, so the prediction without the mean shift (0:
  # a zero-mean law's switched-on units add what the switched-off ones take) fails.
  lr, lr_b = 0.01, 0.1
  x, y, stack, forward, init_grad = _biased_mlp()
  widths, w_sq = BIASED_WIDTHS, BIASED_W_SQ

  def one(key):
    p, p1 = _adam_first_step(init_grad, lr, lr_b)(key)
    return jnp.stack([jnp.mean((y0 + d) ** 2 * ((y0 + d > 0).astype(jnp.float32) - (y0 > 0)))
                      for y0, d in ((a, c - a) for a, c in zip(_pre_activations(x, p), _pre_activations(x, p1)))])

  with jax.default_matmul_precision("highest"):
    c = np.asarray(jax.vmap(lambda s: one(jax.random.key(s)))(jnp.arange(BIAS_DRAWS // 2) + 50_000), np.float64)
  m, se = c.mean(0), c.std(0, ddof=1) / np.sqrt(c.shape[0])
  assert np.all(m < -3 * se)
  r = sr.first_step(x, y, stack, w_sq, [lr] * len(widths), "adam", bias_lr=lr_b, incoherent_carry=True,
                    flip_carry=True, flip_net=True)
  got = (r.act1 - r.act0 - r.cross - r.change)[:-1]
  np.testing.assert_array_less(np.abs(m / got - 1), 3 * se / np.abs(m) + 0.25)


def test_adam_cross_term_with_the_sign_of_the_non_centred_own_component():
  # Adam's kernel-only first step (lr sign(G), 2^-6 every layer) of the He LeNet at width 32 on 32 digits
  # (256-287): the first-order cross term 2E[h . dh] per layer output by a JVP over 2 DRAWS He inits (keys
  # 2**20 + 50000 ...), against the prediction with `sign_mean` (docs/calculus.md, *Adam's sign of a non-centred
  # gradient*). Tolerance: 3 SE (3-5% here) + ALLOW. Measured / predicted 1.03, 1.08, 1.07, 0.93, 0.94 (conv0 ...
  # logits); the linearised sign 1.23, 1.21, 1.14, 0.98, 0.95: conv0's gradient is mostly the own-activation
  # component, whose mean given the unit is not zero, and kappa m / sigma undercounts E[sign(G)] there.
  lr, draws = 2.0 ** -6, 2 * DRAWS
  x, y = _batch(B)
  net, stack, w_sq = _setup()
  X, Y = jnp.asarray(x), jnp.asarray(y)

  def out(p):
    z, hidden = net.forward(p, X)
    return list(hidden) + [z]

  def one(p):
    g = jax.grad(lambda q: jnp.mean(optax.softmax_cross_entropy_with_integer_labels(net.forward(q, X)[0], Y)))(p)
    u = net.map_kernels(lambda l, _: -lr * jnp.sign(net.kernels(g)[l]), jax.tree.map(jnp.zeros_like, p))
    h0, dh = jax.jvp(out, (p,), (u,))
    return jnp.stack([2 * jnp.mean(a * d) for a, d in zip(h0, dh)])

  with jax.default_matmul_precision("highest"):
    c = np.asarray(jax.jit(jax.vmap(one))(run.probe_draws(net, draws, 2**20 + 50_000)), np.float64)
  m, se = c.mean(0), c.std(0, ddof=1) / np.sqrt(draws)
  tol = 3 * se / np.abs(m) + ALLOW
  got = sr.first_step(x, y, stack, w_sq, [lr] * len(w_sq), "adam", second_order=False, sign_mean=True)
  np.testing.assert_array_less(np.abs(m / got.cross - 1), tol)
  old = sr.first_step(x, y, stack, w_sq, [lr] * len(w_sq), "adam", second_order=False)
  assert np.abs(m / old.cross - 1)[0] > tol[0]


def test_flip_rescale_lowers_the_logits_and_stays_near_the_monte_carlo_at_a_small_step():
  # The option `flip_rescale` (docs/calculus.md, *The flips' rest as a rescale of h and dh*; judged, not adopted,
  # off by default): Adam's small kernel step with a large bias step (0.01, 0.1) in the 64-64-64-10 MLP on 32
  # digits (256-287), E[h^2] after the exact step over BIAS_DRAWS / 2 He inits (keys 50000 ...) within 3 SE + 10% (measured / predicted 1.004, 1.017, 1.036; without the option 1.020 at the
  # logits: no Monte Carlo here tells the two apart, and at (0.03, 0.03) the option's logits miss, 1.265 against
  # 1.155 without, which is why it stays off).
  lr, lr_b = 0.01, 0.1
  x, y, stack, forward, init_grad = _biased_mlp()
  widths, w_sq = BIASED_WIDTHS, BIASED_W_SQ

  def one(key):
    return jnp.stack([jnp.mean(h * h) for h in forward(_adam_first_step(init_grad, lr, lr_b)(key)[1])])

  kw = dict(bias_lr=lr_b, incoherent_carry=True, flip_carry=True, flip_net=True, sign_mean=True)
  lrs = [lr] * len(widths)
  base = sr.first_step(x, y, stack, w_sq, lrs, "adam", **kw)
  got = sr.first_step(x, y, stack, w_sq, lrs, "adam", flip_rescale=True, **kw)
  assert got.act1[-1] < base.act1[-1]   # at the logits the carried flips cost E[z^2]
  m, tol = _over_inits(one, BIAS_DRAWS // 2)
  np.testing.assert_array_less(np.abs(m / got.act1 - 1), tol)


def test_after_mask_is_the_shift_laws_pair_orthant():
  # `after_mask` per token pair against 2^18 samples of its own law (docs/calculus.md, *The carry's mask after the
  # step*): y over 6 tokens (2 examples of 3 positions) jointly Gaussian with covariance K_y / n, each unit's
  # u_a = (1 + kappa_a) y_a + mu_a + e_a with `_shift_law`'s (mu, kappa, s2) from a random step. Tolerance 5 SE
  # of a share (~0.0005 at 2^18). The first order's P(y_a > 0, y_t > 0) is off by more (the test can fail).
  rng = np.random.default_rng(3)
  T, n, batch = 6, 16, 2
  a = rng.normal(size=(T, 8))
  k_y = n * (a @ a.T / 8 + 0.3 * np.eye(T))
  theta_h, w = rng.normal(size=(T, T)) @ (np.eye(T) + 0.5), rng.uniform(0.5, 1.5, T)
  theta_h = theta_h @ theta_h.T
  below = np.array([0.1, -0.2])
  got = sr.after_mask(k_y, theta_h, w, below, 0.3, n, batch)
  q, mu, kappa, s2 = sr._shift_law(k_y, theta_h, w, below, 0.3, n, batch)
  S = 2 ** 18
  yv = rng.multivariate_normal(np.zeros(T), k_y / n, S)
  u = (1 + kappa) * yv + mu + rng.normal(size=(S, T)) * np.sqrt(s2)
  mc = ((u > 0).astype(float).T @ (yv > 0).astype(float)) / S
  se = np.sqrt(np.maximum(mc * (1 - mc), 1e-4) / S)   # floored: a pair whose share is ~0 in the law
  np.testing.assert_array_less(np.abs(got - mc), 5 * se)
  assert np.max(np.abs(ur.both_active(k_y) - mc) / se) > 20   # the step moves the mask
  assert np.max(np.abs(mu / np.sqrt(q))) > 0.1   # the law has a mean shift to test


@pytest.mark.slow   # ~10 s: 256 draws of the MLP's step
def test_adam_carry_through_a_frozen_top_matches_monte_carlo_with_the_mask_after_the_step():
  # Adam's first step of the two hidden layers' kernels (0.07, the logits' kernel and every bias fixed) in the
  # 64-64-64-10 ReLU MLP on 32 digits (256-287): E[h^2] after the exact step over BIAS_DRAWS He inits (keys 50000
  # ...), against the prediction with `flip_pairs` (docs/calculus.md, *The carry's mask after the step*). The
  # logits change only through hidden 2's change carried by the frozen kernel, so their E[z^2] (3.9x at init here)
  # is the carry alone. Tolerance 3 SE + 10% (the logits' SE ~2%); measured / predicted 0.986, 1.079, 1.048 with
  # `flip_pairs`, 1.215 at the logits with `flip_carry` (its diagonal share cuts every token pair) and 0.53 with
  # neither (the first order's mask).
  lr = 0.07
  x, y, stack, forward, init_grad = _biased_mlp()
  widths, w_sq = BIASED_WIDTHS, BIASED_W_SQ

  def one(key):
    p, g = init_grad(key)
    p1 = [(w - lr * jnp.sign(gw), b) for (w, b), (gw, _) in zip(p[:-1], g[:-1])] + [p[-1]]
    return jnp.stack([jnp.mean(h * h) for h in forward(p1)])

  m, tol = _over_inits(one, BIAS_DRAWS)
  lrs = [lr, lr, 0.0]
  kw = dict(incoherent_carry=True, flip_net=True, sign_mean=True)
  got = sr.first_step(x, y, stack, w_sq, lrs, "adam", flip_pairs=True, **kw)
  np.testing.assert_array_less(np.abs(m / got.act1 - 1), tol)
  old = sr.first_step(x, y, stack, w_sq, lrs, "adam", flip_carry=True, **kw)
  assert np.abs(m / old.act1 - 1)[-1] > tol[-1]


def test_sgd_first_layers_own_flip_term_matches_numpy_monte_carlo_with_the_law_on_each_side_of_zero():
  # A 64-64-10 ReLU MLP (He, no biases) on 32 digits (256-287), SGD's first step at 2.0 on its first kernel, by hand
  # in numpy over 128 inits (seed 50000; ~0.1 s): the hidden layer's own flip term E[(y + d)^2 (1[y + d > 0] -
  # 1[y > 0])] over E[h_0^2] (d the exact change of the pre-activation; nothing below it flips), against the
  # prediction with `state_split` (docs/calculus.md, *The step's law on each side of zero*). Tolerance: 3 SE (~12%)
  # + 10%. Measured / predicted 1.03 (at 1.0: 0.98); with `mean_shift_net`'s one law on both sides 10.3 (9.5).
  lr, draws, n = 2.0, 128, 64
  x, y = _batch(B)
  x = x.astype(np.float64)
  rng = np.random.default_rng(50_000)
  c = np.empty(draws)
  for k in range(draws):
    w1 = rng.standard_normal((x.shape[1], n)) * np.sqrt(2 / x.shape[1])
    w2 = rng.standard_normal((n, 10)) * np.sqrt(2 / n)
    y0 = x @ w1
    z = np.maximum(y0, 0) @ w2
    g = np.exp(z - z.max(1, keepdims=True))
    g = g / g.sum(1, keepdims=True) - np.eye(10)[y]
    u = y0 + x @ (-lr * x.T @ ((g @ w2.T) * (y0 > 0)) / B)
    c[k] = np.mean(u ** 2 * ((u > 0).astype(float) - (y0 > 0))) / np.mean(np.maximum(y0, 0) ** 2)
  m, se = c.mean(), c.std(ddof=1) / np.sqrt(draws)
  assert m < -3 * se
  stack = su.Stack((8, 8, 1), (), (), (n, 10))
  for split, ok in ((True, True), (False, False)):
    r = sr.first_step(x, y, stack, (2 / x.shape[1], 2 / n), [lr, 0.0], "sgd", incoherent_carry=True,
                      flip_carry=True, flip_net=True, state_split=split)
    got = (r.act1 - r.act0 - r.cross - r.change)[0] / r.act0[0]
    assert (abs(m / got - 1) < 3 * se / abs(m) + 0.10) == ok, (split, m / got)


@pytest.mark.slow   # ~15 s: the jax Monte Carlo of a two-hidden-layer MLP
def test_sgd_units_own_flip_term_matches_monte_carlo_with_the_law_on_each_side_of_zero():
  # SGD's first step at 1.0 on every kernel (biases fixed) in the bias tests' 64-64-64-10 ReLU MLP on 32 digits
  # (256-287): per hidden layer the units' own flip term E[(y + d)^2 (1[y + d > 0] - 1[y > 0])] over E[h_0^2] (y the
  # pre-activation at init, d its exact change), over 64 He inits (keys 50000 ...), against the prediction with
  # `state_split` (docs/calculus.md, *The step's law on each side of zero*). Tolerance: 3 SE (7-8%) + 15% (hidden 2,
  # whose d also holds hidden 1's flips, which no law here carries). Measured / predicted 1.02, 1.13; with
  # `mean_shift_net`'s one law on both sides 9.2, 2.1: SGD moves a unit that is off at a token less than one that
  # is on (its change holds the unit's own mask over the batch), so fewer units switch on than that law has.
  lr, draws = 1.0, 64
  x, y, stack, forward, init_grad = _biased_mlp()

  def one(key):
    p, g = init_grad(key)
    p1 = [(w - lr * gw, b) for (w, b), (gw, _) in zip(p, g)]
    return jnp.stack([jnp.mean((y0 + d) ** 2 * ((y0 + d > 0).astype(jnp.float32) - (y0 > 0)))
                      / jnp.mean(jax.nn.relu(y0) ** 2) for y0, d in ((a, c - a) for a, c in zip(_pre_activations(x, p), _pre_activations(x, p1)))])

  with jax.default_matmul_precision("highest"):
    c = np.asarray(jax.vmap(lambda s: one(jax.random.key(s)))(jnp.arange(draws) + 50_000), np.float64)
  m, se = c.mean(0), c.std(0, ddof=1) / np.sqrt(draws)
  assert np.all(m < -3 * se)
  for split, ok in ((True, True), (False, False)):
    r = sr.first_step(x, y, stack, BIASED_W_SQ, [lr] * len(BIASED_WIDTHS), "sgd", incoherent_carry=True,
                      flip_carry=True, flip_net=True, state_split=split)
    got = ((r.act1 - r.act0 - r.cross - r.change) / r.act0)[:-1]
    assert np.all(np.abs(m / got - 1) < 3 * se / np.abs(m) + 0.15) == ok, (split, m / got)


def test_draw_scale_var_is_a_narrow_layers_energy_spread_over_draws():
  # A 64-8-10 ReLU MLP (He, no biases) on 32 digits (256-287), 2000 inits in numpy (seed 50000; ~0.2 s): over draws,
  # the relative variance of the hidden layer's E[h^2] over the batch against `draw_scale_var`'s first part (exact
  # there: the input is fixed and the 8 units independent; docs/calculus.md, *The flip cost over the draws' own
  # scale*). Tolerance: 4 SE of the sample's relative variance (from its fourth moment, 4% each). Measured /
  # predicted 0.99 (0.0341, SE 0.0014, against 0.0343); without the draws' spread (a calculus of mean kernels) it
  # is 0, which fails.
  n, draws = 8, 2000
  x, _ = _batch(B)
  x = x.astype(np.float64)
  rng = np.random.default_rng(50_000)
  w = rng.standard_normal((draws, x.shape[1], n)) * np.sqrt(2 / x.shape[1])
  e = np.mean(np.maximum(np.einsum("bi,dij->dbj", x, w), 0) ** 2, (1, 2))
  c = e / e.mean() - 1
  rv, se = np.mean(c ** 2), np.sqrt(np.var(c ** 2, ddof=1) / draws)
  stack = su.Stack((8, 8, 1), (), (), (n, 10))
  got = np.expm1(sr.draw_scale_var(su.forward(x, stack, (2 / x.shape[1], 2 / n)), stack.widths)[0])
  assert abs(rv - got) < 4 * se, (rv, got, se)
  assert rv > 4 * se


def test_draw_spread_raises_sgds_flip_cost_and_is_off_by_default():
  # draw_spread takes SGD's flip cost over the draws' scale (docs/calculus.md, *The flip cost over the draws' own
  # scale*): on every hidden layer of a 64-64-64-10 MLP a larger cost (it is convex in the step); off, the same
  # bits as before the option.
  x, y = _batch(B)
  n = 64
  stack = su.Stack((8, 8, 1), (), (), (n, n, 10))
  w_sq = (2 / 64, 2 / n, 2 / n)
  opts = dict(incoherent_carry=True, flip_pairs=True, flip_net=True, state_split=True)
  rows = [([1.0, 1.0, 1.0], "sgd")]
  base, spread = (sr.first_steps(x, y, stack, w_sq, rows, samples=256, **opts, draw_spread=d) for d in (False, True))
  off = sr.first_step(x, y, stack, w_sq, rows[0][0], "sgd", samples=256, incoherent_carry=True)
  assert np.all(spread[0].act1[:-1] - off.act1[:-1] < base[0].act1[:-1] - off.act1[:-1])
  assert np.array_equal(sr.first_steps(x, y, stack, w_sq, rows, samples=256, **opts)[0].act1, base[0].act1)


def test_split_mask_is_the_pair_mask_of_the_law_on_each_side_of_zero(monkeypatch):
  # `split_mask` (docs/calculus.md, *The mask after the step under the law on each side of zero*): P(y_a + d_a > 0,
  # y_t > 0) with d = mu + kappa y + e drawn from the law of y_a's side, against 100000 numpy samples of that law on
  # 6 correlated tokens (5 SE of a proportion, <= 0.008); `after_mask` under one law (the active side's) misses it.
  rng = np.random.default_rng(7)
  T, N = 6, 100_000
  f = rng.standard_normal((T, 4))
  k_y = f @ f.T
  q = np.diag(k_y)
  on = (rng.normal(-0.3, 0.2, T), rng.normal(-0.2, 0.1, T), rng.uniform(0.5, 1.0, T) * q)
  off = (rng.normal(0.1, 0.1, T), rng.normal(-0.1, 0.1, T), rng.uniform(0.05, 0.2, T) * q)
  monkeypatch.setattr(sr, "_split_law", lambda *a: (q, on, off))
  monkeypatch.setattr(sr, "_shift_law", lambda *a: (q, *on))
  got = sr.split_mask(k_y, None, None, None, None, None, 1, T)
  y = rng.standard_normal((N, 4)) @ f.T
  e = rng.standard_normal((N, T))
  d = np.where(y > 0, on[0] + on[1] * y + np.sqrt(on[2]) * e, off[0] + off[1] * y + np.sqrt(off[2]) * e)
  mc = ((y + d > 0).astype(np.float64).T @ (y > 0)) / N
  tol = 5 * np.sqrt(mc * (1 - mc) / N) + 1e-4
  np.testing.assert_array_less(np.abs(got - mc), tol)
  assert np.max(np.abs(sr.after_mask(k_y, None, None, None, None, 1, T) - mc) / tol) > 3


def test_carry_square_is_the_flipped_changes_square(monkeypatch):
  # `carry_square` (docs/calculus.md, *The incoherent carry's square after the flips*): the incoherent carry takes
  # E|relu(y + d) - relu(y)|^2 = E[(m d)^2] + net - 2 E[h c] (net, the unit's own flip term, holds 2 E[h c], which
  # is no square). `square_hc` under `_shift_law`'s one law (Adam's), against 100000 numpy samples of it on 6
  # tokens (5 SE of the pooled mean); leaving the term out misses by more than 3 of that tolerance.
  rng = np.random.default_rng(11)
  T, N = 6, 100_000
  q = rng.uniform(0.5, 2.0, T)
  on = (rng.normal(-0.6, 0.2, T), rng.normal(-0.3, 0.1, T), rng.uniform(0.5, 1.0, T) * q)
  monkeypatch.setattr(sr, "_shift_law", lambda *a: (q, *on))
  hc = sr.square_hc(None, None, None, None, None, None, 1, T)
  y = rng.standard_normal((N, T)) * np.sqrt(q)
  e = rng.standard_normal((N, T))
  d = on[0] + on[1] * y + np.sqrt(on[2]) * e
  h, m = np.maximum(y, 0), (y > 0).astype(np.float64)
  dh = np.maximum(y + d, 0) - h
  net = np.maximum(y + d, 0) ** 2 - (h + m * d) ** 2
  sq, lin = np.mean(dh ** 2), np.mean((m * d) ** 2)
  tol = 5 * np.std(dh ** 2 - (m * d) ** 2 - net) / np.sqrt(N * T)
  assert abs(lin + np.mean(net) - 2 * hc - sq) < tol
  assert abs(lin + np.mean(net) - sq) > 3 * tol


def test_lifted_change_is_the_lifted_input_change(monkeypatch):
  # the products over the pairs lift reads only: each entry the same sum as the full product's (wrong groups, a
  # conv's offsets, would lift other entries' zeros: errors of the entries' own size). On the development host's
  # OpenBLAS (SkylakeX kernels) the blocks are the full product's bits; another BLAS or CPU may sum a block in
  # another order, so the test allows float64 rounding of a 512-term sum: 1e-12 of the largest entry (512 * 2^-53
  # ~ 6e-14, with room; many orders below a grouping error). 32 examples: conv0's 512 tokens, blocks
  # of 128 x 512 x 128
  monkeypatch.setattr(sr, "BLOCK_MIN", 0)
  net, stack, w_sq = _setup()
  x, y = _batch(32)
  st = sr._setup(np.asarray(x), y, stack, w_sq, 64, 0, True)
  theta = np.random.default_rng(0).standard_normal(st.k.x[0].shape)
  args = (st.s_tab[0], st.both[0], st.k.h[0], st.w_tok[0])
  for th, full in ((theta, sr.input_change(theta, *args, 32)), (None, sr.input_change_ones(*args, 32))):
    want = sr.lift(full, st.k, stack, 1, 32)
    got = sr.lifted_change(th, *args, st.k, stack, 1, 32)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * np.max(np.abs(want)))


def test_sign_sum_is_the_relative_change_of_the_input_sum(monkeypatch):
  # `sign_sum` (docs/calculus.md, *Adam's second-order term sees the input's sum*): per example, the relative change
  # of the sum of relu(y) over its tokens under `_shift_law`'s law (d = mu + kappa y + e), against 200000 numpy
  # samples of it on 3 examples of 2 tokens each (5 SE of each example's sum); the change's mean taken without the
  # ReLU (mu alone: d's own mean) misses by more than 3 of that tolerance.
  rng = np.random.default_rng(12)
  B, P, N = 3, 2, 200_000
  q = rng.uniform(0.5, 2.0, B * P)
  law = (rng.normal(0.4, 0.2, B * P), rng.normal(-0.3, 0.1, B * P), rng.uniform(0.5, 1.0, B * P) * q)
  monkeypatch.setattr(sr, "_shift_law", lambda *a: (q, *law))
  got = sr.input_sum_change(np.zeros((B * P, B * P)), None, None, None, None, 1, B)
  y = rng.standard_normal((N, B * P)) * np.sqrt(q)
  d = law[0] + law[1] * y + np.sqrt(law[2]) * rng.standard_normal((N, B * P))
  before = np.sqrt(q / (2 * np.pi)).reshape(B, P).sum(1)
  dh = (np.maximum(y + d, 0) - np.maximum(y, 0)).reshape(N, B, P).sum(2)
  tol = 5 * dh.std(0) / np.sqrt(N) / before
  assert np.all(np.abs(got - dh.mean(0) / before) < tol)
  assert np.all(np.abs(got - law[0].reshape(B, P).sum(1) / before) > 3 * tol)


def test_sign_sum_first_is_the_sum_law_at_the_first_dense_layer_only():
  # sign_sum="first" (docs/calculus.md, *Adam's first-order excess is no saturation*): the sum law at the first dense
  # layer above the convolutions only. Exact identities, no sampling tolerance: up to that layer its prediction is
  # sign_sum=True's bit for bit, above it is not (True's rho also reaches dense1 and the logits); an MLP has no such
  # layer, so there it is sign_sum=False's bit for bit while True's differs.
  rng = np.random.default_rng(3)
  x, y = rng.standard_normal((4, 64)), np.array([0, 1, 2, 1], np.int32)
  on = dict(incoherent_carry=True, flip_pairs=True, flip_net=True, sign_mean=True, state_split=True)
  setting = [([0.02, 0.02, 0.05, 0.05, 0.05], "adam", 0.01)]
  lenet = su.Stack.of_shapes((8, 8, 1), [(2, 2, 1, 2), (2, 2, 2, 3), (12, 5), (5, 4), (4, 3)])
  w_sq = [0.5, 0.25, 2 / 12, 0.4, 0.5]
  got = {s: sr.first_steps(x, y, lenet, w_sq, setting, samples=64, sign_sum=s, **on)[0].act1
         for s in (False, True, "first")}
  np.testing.assert_array_equal(got["first"][:3], got[True][:3])
  assert not np.array_equal(got["first"][:3], got[False][:3])
  assert np.all(got["first"][3:] != got[True][3:])
  mlp = su.Stack.of_shapes((64,), [(64, 6), (6, 5), (5, 3)])
  mset = [([0.02, 0.05, 0.05], "adam", 0.01)]
  got = {s: sr.first_steps(x, y, mlp, [2 / 64, 0.4, 0.5], mset, samples=64, sign_sum=s, **on)[0].act1
         for s in (False, True, "first")}
  np.testing.assert_array_equal(got["first"], got[False])
  assert not np.array_equal(got[True], got[False])
  with pytest.raises(ValueError, match="sign_sum"):
    sr.first_steps(x, y, mlp, [2 / 64, 0.4, 0.5], mset, sign_sum="all", **on)


def test_sum_split_takes_the_sum_law_on_the_inputs_mean_and_the_regression_on_the_rest():
  # `sum_split` (docs/calculus.md, *The second-order term's mean and centred parts*). Exact identity (1e-12, float
  # rounding): for a linear step dW_j = sum_t x_tj g_t and an input change dx_aj = rho_a xbar_a + beta_a (x_aj -
  # xbar_a), the second-order term sum_j dx_aj dW_j is row a of (rho M + beta (X - M)) g, M(a, t) = xbar_a sum_j x_tj;
  # sign_sum's X (1 + rho) misses it by more than 10% of its size. Then the option in `first_steps` (a small MLP under
  # sign_sum=True, 64 logit draws): the first layer (no input change) bit for bit without it, the layers above not.
  rng = np.random.default_rng(7)
  B, n = 5, 40
  x = np.maximum(rng.standard_normal((B, n)) + 0.5, 0.0)
  g, rho, beta = rng.standard_normal(B), rng.normal(0.1, 0.02, B), rng.normal(-0.2, 0.02, B)
  xbar = x.mean(1)
  dw = x.T @ g
  second = (rho[:, None] * xbar[:, None] + beta[:, None] * (x - xbar[:, None])) @ dw
  X, M = x @ x.T, xbar[:, None] * x.sum(1)[None, :]
  got = sr.split_second_order(X, M, rho, beta[:, None] * X, X) @ g - X @ g
  np.testing.assert_allclose(got, second, rtol=1e-12, atol=1e-12 * np.abs(second).max())
  assert np.abs(rho * (X @ g) - second).max() > 0.1 * np.abs(second).max()
  xi, y = rng.standard_normal((4, 64)), np.array([0, 1, 2, 1], np.int32)
  on = dict(incoherent_carry=True, flip_pairs=True, flip_net=True, sign_mean=True, state_split=True, sign_sum=True)
  mlp = su.Stack.of_shapes((64,), [(64, 6), (6, 5), (5, 3)])
  a, b = (sr.first_steps(xi, y, mlp, [2 / 64, 0.4, 0.5], [([0.02, 0.05, 0.05], "adam", 0.01)], samples=64,
                         sum_split=s, **on)[0].act1 for s in (False, True))
  assert a[0] == b[0] and np.all(a[1:] != b[1:])
  # adam_split (*The flips of a step that is mostly a per-unit shift*): Adam's hidden layers above the first only;
  # SGD's prediction bit for bit
  sets = [([0.02, 0.05, 0.05], "adam", 0.01), ([0.2, 0.5, 0.5], "sgd", 0.1)]
  a, b = ([r.act1 for r in sr.first_steps(xi, y, mlp, [2 / 64, 0.4, 0.5], sets, samples=64, sum_split=True,
                                          adam_split=s, **on)] for s in (False, True))
  assert a[0][0] == b[0][0] and a[0][1] != b[0][1]
  np.testing.assert_array_equal(a[1], b[1])


def test_draw_whitening_is_the_per_draw_correlation_sum():
  # `sign_draw` (docs/calculus.md, *Adam's sigma sees the draw's own logit gradient*): draw_whitening against a
  # loop over units and input pairs, Q(Gam) = sum_k sum_ij (sum_a m_ak x_ai x_aj) r_ij(Gam), the pairs weighted
  # n_in (n_in - 1) / (F (F - 1)) and the i = j terms n_in / F, E_s Q(Gam_s) / Q(E_s Gam_s). Exact (1e-10): the same
  # sums; with rank-2 draws the factor is off 1 (here 1.009), so an implementation that normalised by the mean Gam
  # (factor 1) fails.
  rng = np.random.default_rng(4)
  B, F, U, D, n_in = 6, 5, 3, 4, 20
  cols = np.abs(rng.standard_normal((F, B)))
  masks = (rng.standard_normal((U, B)) > 0).astype(float)
  masks[:, 0] = 1.0
  g = rng.standard_normal((D, B, 2))
  gams = np.einsum("sbk,sck->sbc", g, g) * (0.5 + np.eye(B))

  def q(gam):
    dg = off = 0.0
    for k in range(U):
      v = cols * masks[k]
      s = np.sqrt(np.einsum("ib,bc,ic->i", v, gam, v))
      for i in range(F):
        for j in range(F):
          term = np.sum(masks[k] * cols[i] * cols[j]) * (v[i] @ gam @ v[j]) / (s[i] * s[j])
          dg, off = (dg + term, off) if i == j else (dg, off + term)
    return n_in / F * dg + n_in * (n_in - 1) / (F * (F - 1)) * off
  want = np.mean([q(gm) for gm in gams]) / q(gams.mean(0))
  got = sr.draw_whitening(cols, masks, gams, n_in)
  assert abs(got - want) < 1e-10
  assert abs(got - 1) > 0.005


def test_dense_rows_draws_the_dense_layers_kernels_apart_and_shrinks_their_seed_spread():
  # dense_rows (docs/calculus.md, *The prediction's row-seed spread and a row count chosen by it*): the dense layers'
  # Adam kernels from their own stream of that many rows, the conv layers' the shared stream's bit for bit. Two
  # seeds' dense kernels differ by the rows' Monte Carlo error, ~1/sqrt(rows): 8x less at 4096 rows than at 64
  # (asserted 3x, a fixed draw); with the rows ignored it would not shrink, with the conv stream touched the
  # equality fails.
  rng = np.random.default_rng(5)
  x, y = rng.standard_normal((4, 64)), np.array([0, 1, 2, 1], np.int32)
  lenet = su.Stack.of_shapes((8, 8, 1), [(2, 2, 1, 2), (2, 2, 2, 3), (12, 5), (5, 4), (4, 3)])
  w_sq = [0.5, 0.25, 2 / 12, 0.4, 0.5]
  st = sr._setup(x, y, lenet, w_sq, 64, 0, True)

  def kernels(seed, rows):
    return sr.adam_inputs(x, st.k, lenet, w_sq, st.gam, st.own, samples=64, seed=seed, dense_rows=rows)[0]
  base = sr.adam_inputs(x, st.k, lenet, w_sq, st.gam, st.own, samples=64, seed=1)[0]
  got = {(s, n): kernels(s, n) for s in (1, 2) for n in (64, 4096)}
  for l in (0, 1):
    for n in (64, 4096):
      np.testing.assert_array_equal(got[1, n][l], base[l])
  for l in (2, 3):
    spread = [np.linalg.norm(got[2, n][l] - got[1, n][l]) / np.linalg.norm(got[1, n][l]) for n in (64, 4096)]
    assert spread[1] < spread[0] / 3, (l, spread)


def _flip_case(**extra):
  """The flip tests' small strided LeNet (two convolutions, three dense layers), a 4-example batch, one Adam and one
  SGD setting, and the adopted Adam options (ADAM_SPLIT's) with `extra`."""
  rng = np.random.default_rng(3)
  x, y = rng.standard_normal((4, 64)), np.array([0, 1, 2, 1], np.int32)
  on = dict(incoherent_carry=True, flip_pairs=True, flip_net=True, sign_mean=True, state_split=True,
            carry_square=("adam",), sum_split=True, sign_sum="hidden", adam_split=True, **extra)
  sets = [([0.02, 0.02, 0.05, 0.05, 0.05], "adam", 0.01), ([0.2, 0.2, 0.5, 0.5, 0.5], "sgd", 0.1)]
  lenet = su.Stack.of_shapes((8, 8, 1), [(2, 2, 1, 2), (2, 2, 2, 3), (12, 5), (5, 4), (4, 3)])
  return x, y, on, sets, lenet, [0.5, 0.25, 2 / 12, 0.4, 0.5]


def test_flip_along_carries_the_flips_rest_along_h_into_the_layer_above(monkeypatch):
  # `flip_along` (docs/calculus.md, *The part along h after the flips*): the layer above a dense layer reads h + dh
  # with dh = m d + c; the part along h it carries exactly is E[h dh] = E[h m d] + E[h c]. Exact identities (1e-12,
  # float rounding): the layers up to the first dense one bit for bit, the next layer's cross term 2 E[h d] raised by
  # 2 E[h c] / E[h^2] of the layer below times its own E[h^2] (E[h c] > 0: a unit turned off keeps -h); SGD's
  # prediction and an MLP's (no convolutions) bit for bit.
  x, y, on, sets, lenet, w_sq = _flip_case()
  hcs, f0 = [], sr.square_hc
  monkeypatch.setattr(sr, "square_hc", lambda *a, **k: hcs.append(f0(*a, **k)) or hcs[-1])
  a, b = (sr.first_steps(x, y, lenet, w_sq, sets, samples=64, flip_along=s, **on) for s in (False, True))
  np.testing.assert_array_equal(a[0].act1[:3], b[0].act1[:3])
  hc = hcs[-2]   # dense0's, the same in both runs (the layers up to it bit for bit)
  assert hc > 0
  want = a[0].cross[3] + 2 * hc / a[0].act0[2] * a[0].act0[3]
  np.testing.assert_allclose(b[0].cross[3], want, rtol=1e-12)
  assert abs(b[0].cross[3] - a[0].cross[3]) > 1e-3 * abs(a[0].cross[3])
  np.testing.assert_array_equal(a[1].act1, b[1].act1)
  mlp = su.Stack.of_shapes((64,), [(64, 6), (6, 5), (5, 3)])
  a, b = (sr.first_steps(x, y, mlp, [2 / 64, 0.4, 0.5], [([0.02, 0.05, 0.05], "adam", 0.01)], samples=64,
                         flip_along=s, **on)[0].act1 for s in (False, True))
  np.testing.assert_array_equal(a, b)


def test_flip_second_takes_the_flips_rest_into_the_logits_second_order_term(monkeypatch):
  # `flip_second` (docs/calculus.md, *The logits' own step after the flips*): the logits' own Adam step reads the
  # input x + dx, and dx's part along h is the post-ReLU one, E[h m d] + E[h c]. Exact identity (1e-12, float
  # rounding): with flip_along on, flip_second is the lifted change into the logits raised by E[h c] / E[h^2] of the
  # layer below times K_x; the hidden layers bit for bit; SGD's prediction and an MLP's (no convolutions) bit for bit.
  x, y, on, sets, lenet, w_sq = _flip_case(flip_along=True)
  hcs, f0, lc = [], sr.square_hc, sr.lifted_change
  monkeypatch.setattr(sr, "square_hc", lambda *a, **k: hcs.append(f0(*a, **k)) or hcs[-1])
  a, b = (sr.first_steps(x, y, lenet, w_sq, sets, samples=64, flip_second=s, **on) for s in (False, True))
  np.testing.assert_array_equal(a[0].act1[:4], b[0].act1[:4])
  along = hcs[-1] / a[0].act0[3]   # dense1's E[h c] / E[h^2], the same in both runs
  assert along > 0

  def raised(theta, s, both, k_h, w, k, stack, l, batch):
    out = lc(theta, s, both, k_h, w, k, stack, l, batch)
    return out + along * k.x[l] if l == 4 else out
  monkeypatch.setattr(sr, "lifted_change", raised)
  c = sr.first_steps(x, y, lenet, w_sq, sets[:1], samples=64, **on)[0]
  np.testing.assert_allclose(b[0].act1, c.act1, rtol=1e-12)
  assert abs(b[0].act1[4] - a[0].act1[4]) > 1e-4 * a[0].act1[4]
  np.testing.assert_array_equal(a[1].act1, b[1].act1)
  monkeypatch.setattr(sr, "lifted_change", lc)
  mlp = su.Stack.of_shapes((64,), [(64, 6), (6, 5), (5, 3)])
  a, b = (sr.first_steps(x, y, mlp, [2 / 64, 0.4, 0.5], [([0.02, 0.05, 0.05], "adam", 0.01)], samples=64,
                         flip_second=s, **on)[0].act1 for s in (False, True))
  np.testing.assert_array_equal(a, b)


def test_logit_bins_average_sgds_step_over_the_logit_draws():
  # logit_bins (docs/calculus.md, *SGD's step given the logit layer's draw*): equal bins of the logit draws sorted by
  # the batch gradient, whose energy ratios average to 1, so the logits' E[z^2] at init is the mean draw's (1e-12:
  # rounding); the after-step E[h^2] moves (the flip cost is not linear in the step: > 1e-3 here; off, logit_bins=0
  # is the default, the code without the option bit for bit: checked on the transfer grid's predictions).
  x, y = _batch(B)
  n = 64
  stack = su.Stack((8, 8, 1), (), (), (n, n, 10))
  w_sq = (2 / 64, 2 / n, 2 / n)
  k = su.forward(x, stack, w_sq)
  bins = sr.logit_bins_(k.y[-1], y, 10, 64, 0, 2)
  assert sorted(np.concatenate([i for i, _ in bins]).tolist()) == list(range(64))
  assert {len(i) for i, _ in bins} == {32}
  _, g = ur.logit_samples(k.y[-1], y, 10, 64, 0)
  size = np.sum(g.sum(1) ** 2, -1)
  assert all(size[a].max() <= size[b].min() for (a, _), (b, _) in zip(bins, bins[1:]))
  assert abs(np.mean([r for _, r in bins]) - 1) < 1e-12
  opts = dict(incoherent_carry=True, flip_pairs=True, flip_net=True, state_split=True, samples=64)
  rows = [([1.0, 1.0, 1.0], "sgd", 0.1)]
  base, binned = (sr.first_steps(x, y, stack, w_sq, rows, **opts, logit_bins=b) for b in (0, 2))
  np.testing.assert_allclose(binned[0].act0, base[0].act0, rtol=1e-12)
  assert np.max(np.abs(binned[0].act1 / base[0].act1 - 1)) > 1e-3

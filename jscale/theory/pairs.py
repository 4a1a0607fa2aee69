r"""Figure 1's exact side at speed: the diagonal blocks' expected size from pairs of examples.

`hessian.diagonal_sq_sv` gives, for ONE minibatch of B examples of a ReLU net (Gauss-Newton identity,
M_b = J_b^T H_b J_b, J_b = d out_b / d y_l),
    s_l(B) = (1/B^2) sum_{b,b'} f_l(b, b'),   f_l(b, b') = (x_b . x_b')^2 <M_b, M_b'>_F / (n_l n_{l+1}),
and the bias block likewise with x_b . x_b' replaced by 1 (and n_l by 1). Given the weights, the
examples (inputs and targets) are i.i.d., so the expectation over (weights, inputs, targets) splits
exactly into a same-example and a two-example part:
    E s_l(B) = (1/B) E f_l(b, b) + (1 - 1/B) E f_l(b, b'),   b != b'.
Both parts are estimated from draws of (weights, E examples), using all E (E - 1) ordered pairs of each
draw: e_d(B) = mean_b f(b, b) / B + (1 - 1/B) mean_{b != b'} f(b, b') is an unbiased estimate of E s_l(B)
for EVERY B at once (B = 1 included), and the draws are i.i.d., so the standard error is the sample
std over draws / sqrt(draws). With E = B it is exactly `diagonal_sq_sv` of that minibatch (tested).
The cost of a draw is O(E^2) instead of O(B^2): at B = 1024 the variance comes from the weights, not
from the examples, so many draws of a few examples measure E s_l(B) far better per second than a few
draws of 1024 examples (the previous measurement: 4 draws of 1024 gave ~34% relative SE). Narrow layers
make the per-draw values heavy-tailed (relative std 1-7 per draw), so `control_variates` (exact means)
cut the variance further, most in the layers near the output.

Speed: the work is split into per-layer programs (sample a weight matrix, one forward layer, one backward
step U_{l-1} = (U_l W_l^T) * D_{l-1}, one layer's pair sums), each vmapped over a round of draws and
compiled once per padded shape. Every width is padded to a power of two (>= 16; >= 32 but for the output,
`padded_widths`) with zero-width units:
their incoming and outgoing weights are zero, their pre-activation is 0, so their ReLU output and their
derivative mask (y > 0) are 0, their rows of every J and M are 0, and padded output logits are masked out
of the softmax: each padded unit adds exact zeros to every sum (tested: padded equals unpadded to
rounding). The number of programs is bounded by the number of padded shapes (for Figure 1: 3 sizes from
32 to 128, the output 4 from 16: at most 12 + 48 + 16 layer programs), not by the number of setups. The random
draws, the costliest to compile, are one program per flat size (`losses.flat_normals`), shared by weights and
inputs, laid out in `drawn_widths` (power-of-two buckets from 16), so that they do not depend on the padding.

U_l = A_b J_b (O x n_{l+1}) with A_b^T A_b = H_b factors M_b = U_l^T U_l: for the quadratic loss A = Q^{1/2};
for cross-entropy H = diag(p) - p p^T = A^T A with A = diag(sqrt p) (I - 1 p^T).
"""
from __future__ import annotations

import functools
import math
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jscale import checks
from jscale.theory import hessian, inputs, losses

MIN_BUCKET = 16
# The narrowest padded width of a layer the round computes on, outputs excepted (see `padded_widths`).
MIN_COMPUTE = 32
DEFAULT_EXAMPLES = 8
DEFAULT_ROUND = 128
DEFAULT_MAX_BYTES = 2 ** 30  # working memory of one round; a clear ValueError beyond it
FIELDS = ("weight_diag", "weight_pair", "bias_diag", "bias_pair")


def bucket(n: int) -> int:
  """The padded width of a width-`n` layer: the next power of two, at least MIN_BUCKET."""
  return max(MIN_BUCKET, 1 << (int(n) - 1).bit_length())


def drawn_widths(widths: Sequence[int]) -> tuple:
  """The layout of a round's random numbers: every width padded to its `bucket`. Fixed, so that a round's draws
  are the same numbers whatever shape it is computed in."""
  return tuple(bucket(n) for n in widths)


def padded_widths(widths: Sequence[int]) -> tuple:
  """The widths a round computes on: the output's `bucket`, every other width's bucket but at least
  MIN_COMPUTE.

  Why: every per-layer program is compiled once per padded shape (the backward step once per (network output,
  layer input, layer output) width: 63 programs for Figure 1's 112 setups with four buckets per width). Inputs and hidden
  layers of 16 computed as 32 leave three widths per layer and cut the programs by a third (95 -> 64) for ~9%
  more arithmetic (2.05 -> 2.24 TFLOP over the full grid's rounds: narrow layers are the cheap ones); the
  output width is kept tight because it multiplies every layer's backward step. Coarser classes ({32, 128}:
  38 programs) cost 1.6x the arithmetic. Padded units add exact zeros, but the sums run over more terms, in
  other blocks: a round equals the same draws computed in `drawn_widths` to float32 rounding (tested, 1e-6)."""
  widths = tuple(widths)
  return tuple(max(MIN_COMPUTE, bucket(n)) for n in widths[:-1]) + (bucket(widths[-1]),)


def round_bytes(widths: Sequence[int], examples: int, round_draws: int, itemsize: int = 4) -> int:
  """Estimated peak working memory of one round (padded shapes): the largest layer's U, M and M-Gram
  operands, plus every layer's activations and weights, with a factor 3 for XLA's temporaries."""
  p = padded_widths(widths)
  o, r, e = p[-1], round_draws, examples
  per_layer = max(r * e * o * m + r * e * m * m + r * e * o * o for m in p[1:])
  acts = sum(2 * r * e * n for n in p)
  weights = sum(r * a * b for a, b in zip(p[:-1], p[1:]))
  return 3 * itemsize * (per_layer + acts + weights)


def check_round_memory(widths: Sequence[int], examples: int, round_draws: int, max_bytes: int = DEFAULT_MAX_BYTES):
  return hessian.check_memory(
      f"one round of {round_draws} draws x {examples} examples on widths {tuple(widths)} (padded "
      f"{padded_widths(widths)})", round_bytes(widths, examples, round_draws), max_bytes,
      "lower round_draws or examples, or raise max_bytes")


# ---------------------------------------------------------------------------------------------------
# Per-layer programs. jax.jit caches one executable per input shape; `compiled_programs` counts them.

# The random draws: one RNG program per flat size, shared by every array of that many entries. Compiling a
# threefry draw costs XLA:CPU 0.7-2 s, the most of any program here; drawn per padded shape it was compiled
# ~3x per shape (weights, inputs, targets), drawn flat once per size (a power of two: rounds and buckets are),
# and a flat draw reshaped is the same numbers as the shape drawn directly (threefry is counter-based).
# Normals come from `losses.flat_normals` (the random quadratic Q draws there too).

FLOAT32 = jnp.dtype(jnp.float32)  # flat_normals' static dtype as `losses.random_quadratic` passes it: jit keys
                                  # static arguments by value, and jnp.float32 (a type) != its dtype, so the
                                  # same draw was compiled twice (4 threefry programs of the full grid)


def _normals(size, key):
  return losses.flat_normals(key, size, FLOAT32)


FLAT_MIN = 1024  # the smallest flat draw a host-side problem cuts from: Figure 2's small arrays share one program


def flat_size(n: int) -> int:
  """The power-of-two flat draw size (at least `FLAT_MIN`) that `n` numbers are cut from, so that many shapes
  share one compiled draw (the hessian families' `host_problem`s)."""
  return max(FLAT_MIN, 1 << (int(n) - 1).bit_length())


def host_cut(flat, shape) -> np.ndarray:
  """The first prod(`shape`) numbers of a flat draw, on the host, in `shape` (threefry is counter-based: the
  same numbers as drawing `shape` directly)."""
  return np.asarray(flat)[:math.prod(shape)].reshape(shape)


@functools.partial(jax.jit, static_argnums=0)
def flat_uniforms(size, key):
  """`size` U[0, 1) float32 draws, flat (one program per size, like `losses.flat_normals`)."""
  return jax.random.uniform(key, (size,), jnp.float32)


@functools.partial(jax.jit, static_argnums=0)
def flat_labels(size, key, n_L):
  """`size` uniform labels in [0, n_L), flat (one program per size; n_L traced)."""
  return jax.random.randint(key, (size,), 0, n_L)


def _pad(a, shape):
  return jnp.pad(a, [(0, b - n) for n, b in zip(a.shape, shape)])


@functools.partial(jax.jit, static_argnums=(0, 1))
def _masked_weights(shape, out, z, n_in, n_out, std):
  mask = (jnp.arange(shape[1]) < n_in)[:, None] & (jnp.arange(shape[2]) < n_out)[None, :]
  return _pad(jnp.where(mask, std * z.reshape(shape), 0.0), out)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _masked_last(shape, out, z, n):
  return _pad(jnp.where(jnp.arange(shape[-1]) < n, z.reshape(shape), 0.0), out)


def _sample_weights(shape, out, key, n_in, n_out, std):
  """(R, n_in_pad, n_out_pad) = `out`: i.i.d. N(0, std^2) on the true n_in x n_out corner, exact zeros elsewhere;
  the normal numbers laid out in the drawn `shape` (R, n_in_drawn, n_out_drawn)."""
  return _masked_weights(shape, out, _normals(math.prod(shape), key), n_in, n_out, std)


def _sample_inputs(shape, out, kind, key, n_0):
  """Inputs `out` = (R, E, n0_pad) as `inputs.sample_inputs` draws them, zero on padded coordinates; the
  numbers laid out in the drawn `shape` (R, E, n0_drawn)."""
  z = _normals(math.prod(shape), key) if kind == "normal" else flat_uniforms(math.prod(shape), key)
  return _masked_last(shape, out, z, n_0)


@jax.jit
def _forward(h, w, relu_in):
  """y = act(h) W per draw ((R, E, n) x (R, n, m) -> (R, E, m)), act = ReLU for hidden layers, with the
  control statistics of this layer: ||x_b||^2 of its input (R, E) and the active count |y_b > 0| (R, E)."""
  x = jnp.where(relu_in, jnp.maximum(h, 0.0), h)
  y = jnp.einsum("ren,rnm->rem", x, w)
  return y, jnp.sum(x * x, axis=-1), jnp.sum(y > 0, axis=-1).astype(y.dtype)


@functools.partial(jax.jit, static_argnums=0)
def _output_factor(kind, out, a_q, n_L):
  """(U_{L-1} (R, E, O, O) with U^T U = H_b, softmax probabilities (R, E, O) or None)."""
  r, e, o = out.shape
  if kind == "quadratic":
    return jnp.broadcast_to(a_q, (r, e, o, o)), None
  logits = jnp.where(jnp.arange(o) < n_L, out, -jnp.inf)
  p = jax.nn.softmax(logits, axis=-1)
  a = jnp.sqrt(p)[..., :, None] * (jnp.eye(o, dtype=out.dtype) - p[..., None, :])
  return a, p


@jax.jit
def _backward(u, w, y_below):
  """U_{l-1} = (U_l W_l^T) * (y_{l-1} > 0): (R, E, O, m) with W_l (R, k, m) -> (R, E, O, k)."""
  v = jnp.einsum("reom,rkm->reok", u, w)
  return v * (y_below > 0).astype(v.dtype)[:, :, None, :]


@jax.jit
def _input_gram(h, relu_in):
  """x_b . x_b' of this layer's input x = act(h), per draw: (R, E, E). Its own program (it depends on the input
  width only), so `_layer_pairs` is compiled per (output, layer) width pair, not per width triple."""
  x = jnp.where(relu_in, jnp.maximum(h, 0.0), h)
  return jnp.einsum("ren,rfn->ref", x, x)


@jax.jit
def _layer_pairs(gx, u, n_in, n_out):
  """Per draw: same-example and pair means of f (weight block) and of <M_b, M_b'> (bias block), (R, 4)."""
  r, e, o, m = u.shape
  if e * o * o < m * m:
    # <M_b, M_b'> = ||U_b U_b'^T||_F^2 (O x O) is cheaper than forming M_b (m x m) when O is small.
    c = jnp.einsum("reom,rfpm->refop", u, u)
    gm = jnp.sum(c * c, axis=(3, 4))
  else:
    mm = jnp.einsum("reom,reok->remk", u, u).reshape(r, e, m * m)
    gm = jnp.einsum("rei,rfi->ref", mm, mm)
  f = gx * gx * gm
  eye = jnp.eye(e, dtype=f.dtype)
  diag_mean = lambda g: jnp.einsum("ref,ef->r", g, eye) / e
  pair_mean = lambda g: (jnp.sum(g, axis=(1, 2)) - e * diag_mean(g)) / (e * (e - 1))
  nw = n_in * n_out
  return jnp.stack([diag_mean(f) / nw, pair_mean(f) / nw, diag_mean(gm) / n_out, pair_mean(gm) / n_out], -1)


PROGRAMS = (losses.flat_normals, flat_uniforms, flat_labels, _masked_weights, _masked_last, _forward, _output_factor,
            _backward, _input_gram, _layer_pairs)


def compiled_programs() -> int:
  """How many executables the per-layer programs hold (one per padded shape seen in this process)."""
  return sum(f._cache_size() for f in PROGRAMS)


# ---------------------------------------------------------------------------------------------------
# Pure pieces, usable on given (padded or not) arrays: what the tests check against diagonal_sq_sv.

class PairStats(NamedTuple):
  """One round's pair statistics and the per-example controls (see `control_variates`), numpy arrays (the
  probabilities a device array)."""
  stats: np.ndarray    # (R, L, 4): FIELDS per draw and weight layer
  sq_norms: np.ndarray  # (R, E, L): ||x_{l,b}||^2, the input of every weight layer
  active: np.ndarray   # (R, E, L): |y_{l,b} > 0|, active units of every layer's pre-activation
  probs: jax.Array | None  # (R, E, n_L_pad) softmax probabilities (cross-entropy), else None


def pair_sums(weights: Sequence, x, t, kind: str, a_q, widths: Sequence[int]) -> PairStats:
  """`PairStats` for given weights (each (R, n_l, n_{l+1}), zero biases), inputs x (R, E, n_0) and targets
  t (R, E, n_L), possibly padded with zeros beyond the true `widths`; a_q is a factor of the quadratic
  loss's Q (a_q^T a_q = Q, padded with zeros), unused for cross-entropy."""
  losses.check_kind(kind)
  widths = tuple(int(n) for n in widths)
  ys, sq, act = [], [], []
  h = x
  for l, w in enumerate(weights):
    h, s2, k = _forward(h, w, l > 0)
    ys.append(h)
    sq.append(s2)
    act.append(k)
  del t  # the targets enter the loss value, not its output Hessian
  u, p = _output_factor(kind, ys[-1], a_q, widths[-1])
  out = [None] * len(weights)
  for l in range(len(weights) - 1, -1, -1):
    out[l] = _layer_pairs(_input_gram(x if l == 0 else ys[l - 1], l > 0), u, float(widths[l]), float(widths[l + 1]))
    if l > 0:
      u = _backward(u, weights[l], ys[l - 1])
  # Stacked on the host (the same float32 values): jnp.stack run eagerly is a program per depth and shape.
  host = lambda arrays, axis: np.stack([np.asarray(a) for a in arrays], axis)
  return PairStats(host(out, 1), host(sq, -1), host(act, -1), p)


def combine(stats_RxLx4, batch: int):
  """Per-draw unbiased estimates of (weight, bias) average squared singular value at minibatch `batch`:
  mean_b f(b, b) / B + (1 - 1/B) mean_{b != b'} f(b, b'). Shapes (R, L) each."""
  s = np.asarray(stats_RxLx4, np.float64)
  if batch == 1:
    return s[..., 0], s[..., 2]
  return s[..., 0] / batch + (1 - 1 / batch) * s[..., 1], s[..., 2] / batch + (1 - 1 / batch) * s[..., 3]


class RoundSampler(NamedTuple):
  """Everything fixed for one setup's rounds: true, padded (computed) and drawn widths, weight stds, loss
  factor."""
  widths: tuple
  padded: tuple
  stds: tuple
  input_kind: str
  loss: str
  a_q: jax.Array         # (O_pad, O_pad), zero for cross-entropy
  examples: int
  round_draws: int
  drawn: tuple = ()


def make_sampler(widths, weight_sq, input_kind: str, loss: str, q, *, examples: int = DEFAULT_EXAMPLES,
                 round_draws: int = DEFAULT_ROUND, max_bytes: int = DEFAULT_MAX_BYTES) -> RoundSampler:
  """Checks the memory of one round (before any compute) and fixes the padded shapes."""
  checks.int_at_least(examples, "examples (pairs of examples)", 2)
  checks.positive_int(round_draws, "round_draws")
  check_round_memory(widths, examples, round_draws, max_bytes)
  padded = padded_widths(widths)
  o = padded[-1]
  a = np.zeros((o, o), np.float32)
  if loss == "quadratic":
    a[:widths[-1], :widths[-1]] = losses.quadratic_factor(q)
  return RoundSampler(tuple(widths), padded, tuple(math.sqrt(v) for v in weight_sq), input_kind, loss,
                      jnp.asarray(a), int(examples), int(round_draws), drawn_widths(widths))


def sample_round(s: RoundSampler, key):
  """One round's draws: (weights list of (R, n_pad, m_pad), x (R, E, n0_pad), None). The targets are not drawn
  (they were a third array from their own key): neither loss's output Hessian depends on them."""
  kw, ke = jax.random.split(key)
  keys = jax.random.split(kw, len(s.stds))
  r, e, d, p = s.round_draws, s.examples, s.drawn, s.padded
  weights = [_sample_weights((r, d[l], d[l + 1]), (r, p[l], p[l + 1]), keys[l], s.widths[l], s.widths[l + 1],
                             s.stds[l]) for l in range(len(s.stds))]
  kx, _ = jax.random.split(ke)
  x = _sample_inputs((r, e, d[0]), (r, e, p[0]), s.input_kind, kx, s.widths[0])
  return weights, x, None


def run_round(s: RoundSampler, key) -> PairStats:
  """One round of `s.round_draws` draws, as host float64 numpy arrays (probabilities cut to n_L)."""
  weights, x, t = sample_round(s, key)
  ps = pair_sums(weights, x, t, s.loss, s.a_q, s.widths)
  probs = None if ps.probs is None else np.asarray(ps.probs, np.float64)[..., :s.widths[-1]]
  return PairStats(np.asarray(ps.stats, np.float64), np.asarray(ps.sq_norms, np.float64),
                   np.asarray(ps.active, np.float64), probs)


# ---------------------------------------------------------------------------------------------------
# Control variates with exactly known means.

def control_means(widths, weight_sq, input_kind: str):
  """(E||x_l||^4 per weight layer l, E|y_l > 0|^2 per layer l), both exact for one example of a ReLU net
  with zero biases and i.i.d. centred Gaussian weights: given x_l != 0 the units of y_l = x_l W_l are i.i.d.
  N(0, w_l ||x_l||^2), so the active count K_l ~ Binomial(n_{l+1}, 1/2) (E K^2 = n (n + 1)/4), independent
  of everything below, and ||x_{l+1}||^2 = w_l ||x_l||^2 chi^2_{K_l} (E (chi^2_K)^2 = E[K^2 + 2K])."""
  widths = tuple(widths)
  r = [inputs.fourth_moment(input_kind, widths[0])]
  k2 = []
  for l, w in enumerate(weight_sq):
    n = widths[l + 1]
    k2.append(n * (n + 1) / 4)
    r.append(w * w * r[-1] * (n * n + 5 * n) / 4)
  return np.array(r[:-1]), np.array(k2)


def control_variates(ps: PairStats, widths, weight_sq, input_kind: str):
  """Per draw and weight layer, controls with mean exactly 1: (weight-block control, bias-block control).

  weight: mean_b ||x_{l,b}||^4 prod_{k=l}^{L-2} |y_{k,b} > 0|^2 / its mean; bias: the same without the
  ||x||^4 factor. One example's ||x_l|| and the active counts of the layers at and above l are independent
  (`control_means`), so the means are products. They track the two multiplicative sources of the block
  sizes' heavy tails over weight draws: the forward gain into layer l and the units that pass the
  backward signal down to it. Shapes (R, L)."""
  r4, k2 = control_means(widths, weight_sq, input_kind)
  sq, act = np.asarray(ps.sq_norms, np.float64), np.asarray(ps.active, np.float64)
  L = len(widths) - 1
  cw, cb = [], []
  for l in range(L):
    above = np.prod(act[..., l:L - 1] ** 2, axis=-1) / np.prod(k2[l:L - 1])
    cw.append(np.mean(sq[..., l] ** 2 / r4[l] * above, axis=1))
    cb.append(np.mean(above, axis=1))
  return np.stack(cw, -1), np.stack(cb, -1)


class MeanEstimate(NamedTuple):
  """A mean over draws per weight layer, with its standard error."""
  mean: np.ndarray    # (L,)
  stderr: np.ndarray  # (L,)
  raw_stderr: np.ndarray  # (L,) without the control variate (the plain mean's; = stderr without one)


def plain_mean(values_DxL) -> MeanEstimate:
  """Mean of per-draw values over draws, SE = sample std / sqrt(draws): the estimate without a control."""
  v = np.asarray(values_DxL, np.float64)
  se = v.std(0, ddof=1) / math.sqrt(v.shape[0])
  return MeanEstimate(v.mean(0), se, se)


def cv_mean(values_DxL, controls_DxL) -> MeanEstimate:
  """Mean of per-draw values with a control of known mean 1 (regression estimator): mean(v) - beta
  (mean(c) - 1), beta = cov(v, c) / var(c) per column; SE from the residual's std (one degree of
  freedom spent on beta). Never worse than the plain mean asymptotically; beta = 0 when c is constant."""
  v = np.asarray(values_DxL, np.float64)
  c = np.asarray(controls_DxL, np.float64)
  d = v.shape[0]
  if d < 3:
    raise ValueError(f"cv_mean needs >= 3 draws, got {d}")
  vc, cc = v - v.mean(0), c - c.mean(0)
  var_c = np.sum(cc * cc, 0)
  beta = np.where(var_c > 0, np.sum(vc * cc, 0) / np.where(var_c > 0, var_c, 1.0), 0.0)
  resid = v - beta * (c - 1.0)
  mean = resid.mean(0)
  se = np.sqrt(np.sum((resid - mean) ** 2, 0) / (d - 2) / d)
  return MeanEstimate(mean, se, v.std(0, ddof=1) / math.sqrt(d))


JACKKNIFE_GROUPS = 16


def jackknife_cv_mean(values_DxL, controls_DxL, groups: int = JACKKNIFE_GROUPS) -> MeanEstimate:
  """`cv_mean` with a grouped jackknife SE: the estimator recomputed leaving out each of `groups` contiguous
  groups of draws (beta refitted each time), SE^2 = (G - 1)/G sum_g (theta_(g) - mean theta)^2.

  Why: the regression SE takes beta as known. Where a few draws carry much of a block (narrow deep nets: the
  top 1% of draws 10-58%), beta is fitted to those draws and the residual SE misses beta's own variance:
  measured on 30 replicates of a 8-12-8-10-8-6 net (fixed Q), the spread of replicate means was 1.46x the
  regression SE on the quadratic loss's last block at batch 1024, 1.07x the jackknife's (docs/calculus.md)."""
  v = np.asarray(values_DxL, np.float64)
  c = np.asarray(controls_DxL, np.float64)
  est = cv_mean(v, c)
  g = min(int(groups), v.shape[0] // 3)
  if g < 2:
    return est
  idx = np.array_split(np.arange(v.shape[0]), g)
  theta = np.array([cv_mean(np.delete(v, i, 0), np.delete(c, i, 0)).mean for i in idx])
  se = np.sqrt((g - 1) / g * np.sum((theta - theta.mean(0)) ** 2, 0))
  return MeanEstimate(est.mean, se, est.raw_stderr)

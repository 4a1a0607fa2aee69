"""The MLP family of the Hessian checks: the paper's Figure 1 setups and Figure 2's fixed network.

An `MLPSetup` is (widths, init scheme, loss, input law, seed); `MLPFamily.sample_setups` draws them as the
paper's Figure 1 does (depth 3-6, widths 8-128 log-uniform, scheme / loss / input uniform). "Exact" is the
expectation over draws of (weights, inputs, targets) of the blocks' average squared singular value, which is
what the prediction (`jscale.theory.predict`) predicts; the measurement is `jscale.theory.pairs` (the
Gauss-Newton/Kronecker form, exact for ReLU nets, split into same-example and two-example expectations:
one set of draws serves batch 1 and batch B; tested equal to `hessian.diagonal_sq_sv` and `jax.hessian`),
with control variates of exactly known mean (`pairs.control_variates`). `exact_diagonal` is the literal
measurement: `hessian.diagonal_sq_sv` of whole minibatches. Figure 2: exact `jax.hessian` heat maps of
FIG2_NET per scheme (`heatmaps.heatmaps`).
"""
from __future__ import annotations

import dataclasses
import math
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jscale import checks, initializers, mlp
from jscale.experiments.hessian.family import Family, HeatmapDraw, HeatmapProblem, Measurement, Predicted
from jscale.initializers import SCHEMES
from jscale.theory import hessian as hess
from jscale.theory import full_order, gains, inputs, losses, pairs, predict

# The round index whose key draws cross-entropy's loss statistics: never one of the judged rounds.
LOSS_ROUND = 2 ** 30


class MLPSetup(NamedTuple):
  widths: tuple
  scheme: str       # a key of initializers.SCHEMES
  loss: str         # a losses.KINDS entry
  input_kind: str   # an inputs.KINDS entry
  seed: int


class MLPNet(NamedTuple):
  """A fixed MLP of Figure 2: its widths and input law."""
  widths: tuple
  input_kind: str = "normal"


FIG2_NET = MLPNet((24, 96, 12, 48, 8))
REFERENCE_INPUTS = 4096  # examples of the reference sample the heat maps' input statistics come from


def check_setup(s: MLPSetup) -> MLPSetup:
  mlp.check_widths(s.widths)
  checks.one_of(s.scheme, "scheme", SCHEMES)
  losses.check_kind(s.loss)
  inputs.check_kind(s.input_kind)
  return s


def problem(key, setup: MLPSetup, batch: int, dtype=jnp.float32):
  """One draw of (params with zero biases, inputs, targets) of `setup` at minibatch `batch`."""
  kp, kx, kt = jax.random.split(key, 3)
  params = mlp.init_mlp(kp, setup.widths, SCHEMES[setup.scheme], "zeros", dtype)
  x = inputs.sample_inputs(kx, setup.input_kind, batch, setup.widths[0], dtype)
  t = losses.random_targets(kt, setup.loss, batch, setup.widths[-1], dtype)
  return params, x, t


def host_problem(key, setup: MLPSetup, batch: int):
  """`problem(key, setup, batch)` in float32, the same numbers bit for bit, drawn as a few flat draws of
  power-of-two sizes (`losses.flat_normals`, `pairs.flat_uniforms`, `pairs.flat_labels`; threefry is counter-based:
  a flat draw cut and reshaped is the shape drawn directly) and cut, scaled and one-hot encoded on the host.

  Why: `problem` run eagerly compiles a threefry draw per weight, input and target shape (0.7-2 s each on
  XLA:CPU; Figure 2's draws were 16 of the hessian experiment's programs); here its sizes share the Figure 1
  draws' programs. Not jittable (`problem` is)."""
  kp, kx, kt = jax.random.split(key, 3)
  widths = setup.widths
  init = initializers.get(SCHEMES[setup.scheme])
  keys = jax.random.split(kp, 2 * (len(widths) - 1))
  params = []
  for l, shape in enumerate(zip(widths[:-1], widths[1:])):
    z = pairs.host_cut(losses.flat_normals(keys[2 * l], pairs.flat_size(math.prod(shape)), pairs.FLOAT32), shape)
    params.append(mlp.Dense(init.normal_std(shape) * z, np.zeros(shape[1], np.float32)))
  shape = (batch, widths[0])
  flat = (losses.flat_normals(kx, pairs.flat_size(math.prod(shape)), pairs.FLOAT32) if setup.input_kind == "normal"
          else pairs.flat_uniforms(pairs.flat_size(math.prod(shape)), kx))
  x = pairs.host_cut(flat, shape)
  n_l = widths[-1]
  if setup.loss == "quadratic":
    t = pairs.host_cut(losses.flat_normals(kt, pairs.flat_size(batch * n_l), pairs.FLOAT32), (batch, n_l))
  else:
    t = np.eye(n_l, dtype=np.float32)[pairs.host_cut(pairs.flat_labels(pairs.flat_size(batch), kt, n_l), (batch,))]
  return tuple(params), x, t


def exact_diagonal(setup: MLPSetup, batch: int, draws: int, key, *, dtype=jnp.float32,
                   max_bytes: int = hess.DEFAULT_MAX_BYTES):
  """Kronecker-form exact diagonal sq. singular values for `draws` draws of a whole minibatch (vmapped
  while `draws` of them fit in `max_bytes`, else one at a time; one draw beyond it is refused).

  Returns (DiagSqSv with fields (draws, L), output Hessians (draws, batch, n_L, n_L), Q)."""
  check_setup(setup)
  per_draw = hess.diagonal_bytes(setup.widths, batch, jnp.dtype(dtype).itemsize)
  hess.check_memory(f"exact_diagonal: one draw at batch {batch} on widths {setup.widths}", per_draw, max_bytes,
                    "lower the batch, or use pairs of examples (rounds.measure_setup), or raise max_bytes")
  kq, kd = jax.random.split(key)
  q = losses.random_quadratic(kq, setup.widths[-1], dtype)

  @jax.jit
  def one(k):
    params, x, t = problem(k, setup, batch, dtype)
    out = mlp.apply_mlp(params, x, "relu")
    return hess.diagonal_sq_sv(setup.loss, params, x, t, q), losses.output_hessians(setup.loss, out, t, q)

  keys = jax.random.split(kd, draws)
  d, h = jax.vmap(one)(keys) if draws * per_draw <= max_bytes else jax.lax.map(one, keys)
  return d, h, q


def reference_input_stats(key, kind: str, n_0: int) -> predict.InputStats:
  """`InputStats` of a fresh reference sample of the input law (what the heat maps predict from)."""
  return predict.input_stats(inputs.sample_inputs(key, kind, REFERENCE_INPUTS, n_0, jnp.float32))


class _Measurement(Measurement):
  """Rounds of `pairs` draws with control variates; the key splits as (Q, rounds) inside its first half."""

  def __init__(self, setup: MLPSetup, key, *, examples, round_draws, max_bytes):
    self.setup = setup
    kd, _ = jax.random.split(key)  # the second half once drew a reference sample; the input stats are exact now
    kq, self.kr = jax.random.split(kd)
    self.q = losses.random_quadratic(kq, setup.widths[-1], jnp.float32)
    self.wsq = predict.weight_second_moments(setup.widths, SCHEMES[setup.scheme])
    self.round_draws = int(round_draws)
    self.sampler = pairs.make_sampler(setup.widths, self.wsq, setup.input_kind, setup.loss, self.q,
                                      examples=examples, round_draws=self.round_draws, max_bytes=max_bytes)
    self.stats, self.cws, self.cbs, self.probs = [], [], [], None
    self._law_and_loss, self._top, self.loss_gains, self.loss_dots = None, None, None, None
    self.coupling = None  # cross-entropy's direction coupling (`gains.mlp_direction_coupling`), from the loss round

  def draw_round(self, index):
    ps = pairs.run_round(self.sampler, jax.random.fold_in(self.kr, index))
    cw, cb = pairs.control_variates(ps, self.setup.widths, self.wsq, self.setup.input_kind)
    self.stats.append(ps.stats)
    self.cws.append(cw)
    self.cbs.append(cb)

  def exact(self, batch):
    vw, vb = pairs.combine(np.concatenate(self.stats), batch)
    return (pairs.jackknife_cv_mean(vw, np.concatenate(self.cws)),
            pairs.jackknife_cv_mean(vb, np.concatenate(self.cbs)))

  def predict(self, batch):
    if self._law_and_loss is None:
      s = self.setup
      ls = predict.constant_loss_stats(self.q) if s.loss == "quadratic" else predict.xent_loss_stats(self._probs())
      self._law_and_loss = (inputs.law_stats(s.input_kind, s.widths[0]), ls)
    ins, ls = self._law_and_loss
    w = self.setup.widths
    top, bias_top = self._tables()
    cp = self.coupling
    full = full_order.predict_wick(full_order.mlp_layers(w), self.wsq, full_order.pixel_stats(ins), top, batch,
                                   bias_top=bias_top, weight_factors=None if cp is None else (cp.same, cp.two),
                                   bias_factors=None if cp is None else (cp.bias_same, cp.bias_two))
    return Predicted(predict.predict_sq_sv(w, self.wsq, ins, ls, batch, corrected=False),
                     predict.predict_sq_sv(w, self.wsq, ins, ls, batch, corrected=True),
                     predict.predict_leading(w, self.wsq, ins, ls, batch).weight, full,
                     () if cp is None else cp.notes)

  def _tables(self):
    """`full_order.predict_wick`'s output tables (kernel blocks', bias blocks' or None): Q's for the quadratic
    loss; for cross-entropy one per weight layer, each draw of the loss round weighted by its forward and
    backward gains at that layer (`full_order.xent_layer_output_tables`), and for the bias blocks by the
    backward gains alone (`full_order.xent_bias_output_tables`: a bias block has no forward factor)."""
    if self._top is None:
      if self.setup.loss == "quadratic":
        self._top = (full_order.quadratic_output_tables(self.q), None)
      else:
        probs = self._probs()
        self._top = (full_order.xent_layer_output_tables(probs, *self.loss_gains, self.loss_dots),
                     full_order.xent_bias_output_tables(probs, self.loss_gains[1]))
    return self._top

  def _probs(self):
    """Cross-entropy's softmax probabilities from a round of its own key (LOSS_ROUND): draws independent of
    the ones the prediction is judged against; `loss_gains` the same draws' (forward, backward) gains, `coupling`
    their softmax's coupling with the directions of the weights above each layer."""
    if self.probs is None:
      key = jax.random.fold_in(self.kr, LOSS_ROUND)
      self.probs = pairs.run_round(self.sampler, key).probs
      weights, x, _ = pairs.sample_round(self.sampler, key)
      self.loss_gains = gains.mlp_gains(weights, x, self.setup.widths[-1])
      self.loss_dots = gains.mlp_pair_dots(weights, x)
      self.coupling = gains.guarded(gains.mlp_direction_coupling(weights, x, self.probs, self.setup.widths[-1]))
    return self.probs


class _Heatmap(HeatmapProblem):
  """`jax.hessian` of the whole loss, weight and bias blocks; inputs' statistics from a reference sample."""

  def __init__(self, net: MLPNet, *, loss, batch, seed, max_bytes):
    widths = tuple(net.widths)
    check_setup(MLPSetup(widths, next(iter(SCHEMES)), loss, net.input_kind, seed))
    n_params = sum(a * b + b for a, b in zip(widths[:-1], widths[1:]))
    hess.check_memory(f"the exact Hessian of widths {widths} ({n_params} parameters, and its square)",
                      2 * 4 * n_params ** 2, max_bytes, "use smaller widths, or raise max_bytes")
    self.net, self.loss, self.batch, self.seed = MLPNet(widths, net.input_kind), loss, batch, seed
    lossfn = losses.make_loss(loss)
    # One program for every scheme and draw (the shapes are the same; the scheme only scales the weights):
    # jax.hessian of this net takes XLA:CPU seconds to compile, less in the flat form. The P x P Hessian stays
    # inside it; only the block matrix and the output Hessians come out (the latter inside the same program:
    # run eagerly they were ~70 one-operation programs).
    self.fn = jax.jit(lambda p, x, t, q: (hess.flat_sq_sv_matrix(lossfn, p, x, t, q),
                                          losses.output_hessians(loss, mlp.apply_mlp(p, x), t, q)))
    kq, self.kd, self.ki = jax.random.split(jax.random.PRNGKey(seed), 3)
    self.q = losses.random_quadratic(kq, widths[-1])

  def _setup(self, scheme):
    return MLPSetup(self.net.widths, scheme, self.loss, self.net.input_kind, self.seed)

  def draw_keys(self, draws):
    return jax.random.split(self.kd, draws)

  def measure(self, key, scheme):
    params, x, t = host_problem(key, self._setup(scheme), self.batch)
    s, out_hessians = self.fn(params, x, t, self.q)
    sw, sb = hess.split_sq_sv(np.asarray(s), params)
    return HeatmapDraw(np.asarray(sw), np.diag(np.asarray(sb)), np.asarray(out_hessians))

  def predict(self, scheme, loss):
    widths = self.net.widths
    ins = reference_input_stats(self.ki, self.net.input_kind, widths[0])
    wsq = predict.weight_second_moments(widths, SCHEMES[scheme])
    return predict.predict_sq_sv(widths, wsq, ins, loss, self.batch)


@dataclasses.dataclass(frozen=True)
class MLPFamily(Family):
  """ReLU MLPs with zero biases: depth (weight layers) uniform in `depth`, every width (input and output too)
  log-uniform in `width`, loss and input law uniform over `loss_kinds` and `input_kinds`, scheme uniform."""
  depth: tuple = (3, 6)
  width: tuple = (8, 128)
  loss_kinds: tuple = losses.KINDS
  input_kinds: tuple = inputs.KINDS

  name: ClassVar[str] = "MLP"
  prefix: ClassVar[str] = ""
  setup_dir: ClassVar[str] = "fig1_setups"
  control_variates: ClassVar[bool] = True
  per_layer: ClassVar[bool] = False  # depths differ
  fig2_net: ClassVar[MLPNet] = FIG2_NET

  def __post_init__(self):
    if not (1 <= self.depth[0] <= self.depth[1]) or not (1 <= self.width[0] <= self.width[1]):
      raise ValueError(f"bad ranges depth={self.depth} width={self.width}")

  def sample_setups(self, num, seed):
    checks.positive_int(num, "num")
    depth, width = self.depth, self.width
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(num):
      L = int(rng.integers(depth[0], depth[1] + 1))
      ws = np.exp(rng.uniform(math.log(width[0]), math.log(width[1] + 1), L + 1)).astype(int)
      ws = tuple(int(min(max(w, width[0]), width[1])) for w in ws)
      out.append(MLPSetup(ws, str(rng.choice(list(SCHEMES))), str(rng.choice(list(self.loss_kinds))),
                          str(rng.choice(list(self.input_kinds))), int(rng.integers(2 ** 31 - 1))))
    return out

  def check_setup(self, setup):
    return check_setup(setup)

  def start(self, setup, key, *, examples, round_draws, draws, max_bytes):
    round_draws = min(draws, pairs.DEFAULT_ROUND) if round_draws is None else round_draws
    return _Measurement(setup, key, examples=examples, round_draws=round_draws, max_bytes=max_bytes)

  def setup_json(self, setup):
    return {"widths": list(setup.widths), "scheme": setup.scheme, "loss": setup.loss, "input": setup.input_kind,
            "seed": setup.seed}

  def setup_from_json(self, d):
    return MLPSetup(tuple(d["widths"]), d["scheme"], d["loss"], d["input"], int(d["seed"]))

  def layer_names(self, setup):
    return [f"W{l}" for l in range(len(setup.widths) - 1)]

  def tautological(self, setup, batch):
    # Quadratic loss at batch 1: the last block is ||x_{L-1}||^4 tr(Q^2) / (n n'), a multiple of its control
    # variate, whose exact mean is what the prediction computes: ratio 1 to rounding, whatever the theory.
    out = np.zeros(len(setup.widths) - 1, bool)
    out[-1] = setup.loss == "quadratic" and batch == 1
    return out

  def heatmap_problem(self, net, *, loss, batch, seed, max_bytes):
    return _Heatmap(net if isinstance(net, MLPNet) else MLPNet(tuple(net)), loss=loss, batch=batch, seed=seed,
                    max_bytes=max_bytes)

  def net_json(self, net):
    return {"widths": list(net.widths)}

  def net_layers(self, net):
    return net.widths

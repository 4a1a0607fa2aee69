"""The strided LeNet family of the Hessian checks (the paper's own network) beside the MLPs.

A `LeNetSetup` is (conv channels, dense hidden widths, init scheme, loss, seed, kernels, image, input law).
The fixed family (`LeNetFamily()`) has 8x8x1 N(0, 1) images with two 2x2 stride-2 convs and 10 outputs, and
draws the channel counts and hidden widths log-uniform in its ranges; the varied family
(`LeNetFamily(varied=True)`, issue 20's Figure 1 family, `sample_varied`) also draws the number of convs, their
kernels, the image side, the number of hidden layers, the input law and an optional 2x2 average pool. The exact side is the plain mean over
draws of `jscale.theory.conv_pairs` rounds (SE: std / sqrt(draws)), for the varied family computed in the
shared slot shapes of `jscale.theory.lenet_slots` (`varied_slot_shapes`: four compiled programs at most,
whatever the setups); the prediction is the calculus's leading-order conv form
(`jscale.theory.predict_conv`), whose batch-1 model is also its leading form. Figure 2: exact `jax.hessian`
kernel-block heat maps of FIG2_CONFIG per scheme (`heatmaps.heatmaps`) and the diagonal's evenness with
standard errors (`evenness`).
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jscale import checks, initializers
from jscale.experiments.hessian.family import Family, HeatmapDraw, HeatmapProblem, Measurement, Predicted
from jscale.initializers import SCHEMES
from jscale.models import lenet as lenet_lib
from jscale.experiments.hessian.mlp_family import LOSS_ROUND
from jscale.theory import conv_pairs, full_order, gains, inputs, lenet_slots, losses, pairs, predict
from jscale.theory import hessian as hess
from jscale.theory.predict_conv import image_input_stats, predict_lenet, weight_layers, weight_sq

IMAGE = (8, 8, 1)
KERNELS = ((2, 2), (2, 2))
N_OUT = 10
FIG2_CONFIG = lenet_lib.LeNetConfig(IMAGE, (4, 8), KERNELS, (32, 16), N_OUT)
LOSS_DRAWS = 128  # draws of cross-entropy's loss sample for the full order (forward only: cheap); one round
# The varied family's loss sample grows by rounds of LOSS_DRAWS (`gains.grown_coupling`) until the direction
# coupling's every factor has a log-SE of at most COUPLING_TARGET_LOG_SE, or LOSS_MAX_ROUNDS rounds: at 128 draws
# a few nets read factors of 1.5-2.5 (log-SE 0.3-0.5) whose 1,024-draw value is 0.86-0.92 (docs/calculus.md,
# "The coupling's sample"). 0.1: twice the exact side's 5% target, set by the main job's budget (+~0.25 s per
# cross-entropy setup on the development seeds); chosen before the held-out seed was drawn.
COUPLING_TARGET_LOG_SE = 0.1
LOSS_MAX_ROUNDS = 8


class LeNetSetup(NamedTuple):
  channels: tuple   # conv output channels
  hidden: tuple     # dense hidden widths
  scheme: str       # a key of initializers.SCHEMES
  loss: str         # a losses.KINDS entry
  seed: int
  kernels: tuple = KERNELS     # conv kernels = strides
  image: tuple = IMAGE         # (height, width, channels)
  input_kind: str = "normal"   # an inputs.KINDS entry
  pools: tuple = ()            # per conv: the average pool's window after its ReLU (1: none); (): none

  def config(self) -> lenet_lib.LeNetConfig:
    return lenet_lib.LeNetConfig(tuple(self.image), tuple(self.channels), tuple(tuple(k) for k in self.kernels),
                                 tuple(self.hidden), N_OUT, tuple(int(p) for p in self.pools)).check()


def check_setup(s: LeNetSetup) -> LeNetSetup:
  s.config()
  checks.one_of(s.scheme, "scheme", SCHEMES)
  losses.check_kind(s.loss)
  inputs.check_kind(s.input_kind)
  return s


def _quadratic(key, config, loss):
  """(Q, its factor for `conv_pairs`: zeros for cross-entropy), Q drawn from `key`."""
  q = losses.random_quadratic(key, config.n_out, jnp.float32)
  a_q = losses.quadratic_factor(q) if loss == "quadratic" else np.zeros((config.n_out,) * 2)
  return q, jnp.asarray(a_q, jnp.float32)


class _Measurement(Measurement):
  """Rounds of `conv_pairs.exact_round` (with `shapes`: of `lenet_slots.exact_round` in those slot shapes); the
  key splits as (Q, rounds)."""

  def __init__(self, setup: LeNetSetup, key, *, examples, round_draws, max_bytes,
               shapes: lenet_slots.SlotShapes | None = None):
    self.setup, self.config = setup, setup.config()
    self.examples, self.max_bytes, self.shapes = int(examples), max_bytes, shapes
    self.round_draws = int(round_draws)
    kq, self.kr = jax.random.split(key)
    self.q, self.a_q = _quadratic(kq, self.config, setup.loss)
    self.stats, self.probs = [], []
    self.coupling = None  # cross-entropy's direction coupling (`gains.lenet_direction_coupling`), with the tables

  def _round(self, key):
    """(stats, probs) of one round of `round_draws` draws from `key`."""
    kw = dict(draws=self.round_draws, examples=self.examples, a_q=self.a_q, input_kind=self.setup.input_kind,
              max_bytes=self.max_bytes)
    if self.shapes is not None:
      return lenet_slots.exact_round(self.config, SCHEMES[self.setup.scheme], self.setup.loss, key,
                                     shapes=self.shapes, **kw)
    return conv_pairs.exact_round(self.config, SCHEMES[self.setup.scheme], self.setup.loss, key, **kw)

  def draw_round(self, index):
    self.stats.append(self._round(jax.random.fold_in(self.kr, index))[0])

  def exact(self, batch):
    vw, vb = pairs.combine(np.concatenate(self.stats), batch)
    return pairs.plain_mean(vw), pairs.plain_mean(vb)

  def loss_stats(self) -> predict.LossStats:
    if self.setup.loss == "quadratic":
      return predict.constant_loss_stats(self.q)
    return predict.xent_loss_stats(self._probs())

  def _probs(self):
    """Cross-entropy's softmax probabilities from a round of its own key (`mlp_family.LOSS_ROUND`): draws
    independent of the ones the prediction is judged against."""
    if not self.probs:
      self.probs.append(self._round(jax.random.fold_in(self.kr, LOSS_ROUND))[1])
    return self.probs[0]

  def _tables(self):
    """The output tables of `full_order.predict_wick`: Q's for the quadratic loss; for cross-entropy one per weight
    layer from a forward-only loss sample of its own key (`gains.lenet_loss_sample`, LOSS_DRAWS draws, independent
    of the judged ones), each draw weighted by its forward and backward gains at that layer
    (`full_order.xent_layer_output_tables`); in the varied family's slots also the softmax's coupling with the
    directions of the kernels' Jacobians on the same draws (`gains.lenet_direction_coupling`, `coupling`), the
    sample grown until the coupling is measured to COUPLING_TARGET_LOG_SE and guarded (`gains.guarded`)."""
    if getattr(self, "_top", None) is None:
      if self.setup.loss == "quadratic":
        self._top = full_order.quadratic_output_tables(self.q)
      else:
        key = jax.random.fold_in(self.kr, LOSS_ROUND + 1)
        if self.shapes is not None:  # one compiled program for every setup of the varied family
          draw = lambda i: lenet_slots.loss_sample(
              self.config, SCHEMES[self.setup.scheme], self.setup.input_kind,
              key if i == 0 else jax.random.fold_in(key, i), draws=LOSS_DRAWS, examples=self.examples,
              shapes=self.shapes, directions=True)
          (probs, g, k, *_), cp = gains.grown_coupling(draw, gains.lenet_direction_coupling,
                                                       COUPLING_TARGET_LOG_SE, LOSS_MAX_ROUNDS)
          self.coupling = gains.guarded(cp)
        else:
          probs, g, k = gains.lenet_loss_sample(
              self.config, weight_sq(self.config, SCHEMES[self.setup.scheme]), self.setup.input_kind,
              key, draws=LOSS_DRAWS, examples=self.examples)
        self._top = full_order.xent_layer_output_tables(probs, g, k)
    return self._top

  def predict(self, batch):
    wsq = weight_sq(self.config, SCHEMES[self.setup.scheme])
    h, w, c = self.config.image
    ins = inputs.law_stats(self.setup.input_kind, h * w * c)  # the whole image (the leading order's input)
    ls = self.loss_stats()
    p1 = predict_lenet(self.config, wsq, ins, ls, batch, corrected=False)
    first = full_order.pixel_stats(inputs.law_stats(self.setup.input_kind, c), c)  # one pixel (full order's points)
    top = self._tables()
    cp = self.coupling
    full = full_order.predict_wick(full_order.lenet_layers(self.config), wsq, first, top, batch,
                                   input_kind=self.setup.input_kind,
                                   weight_factors=None if cp is None else (cp.same, cp.two))
    return Predicted(p1, predict_lenet(self.config, wsq, ins, ls, batch), p1.weight, full,
                     () if cp is None else cp.notes)


def _kernel_rows(params) -> list[int]:
  names = hess.leaf_names(params)
  return [names.index(f"{n}/kernel") for n in sorted({k.split("/")[0] for k in names},
                                                      key=lambda s: (not s.startswith("conv"), int(s[-1])))]


def host_problem(key, config: lenet_lib.LeNetConfig, scheme: str, loss: str, batch: int):
  """(params, images, targets) of one Figure 2 draw: `init_lenet(kp, config, SCHEMES[scheme])`, N(0, 1) images
  `jax.random.normal(kx, (batch,) + image)` and `losses.random_targets(kt, loss, batch, n_out)` for
  (kp, kx, kt) = split(key, 3), the same float32 numbers bit for bit (tested), drawn as flat power-of-two draws
  cut, scaled and one-hot encoded on the host (`mlp_family.host_problem`'s trick: threefry is counter-based).

  Why: drawn per shape (eagerly) each of the 5 kernels, the images and the targets compiled its own threefry
  program at each batch size (10 programs, ~13 s of XLA:CPU compile at load 10); here they share the few flat
  draw programs Figure 1 compiles anyway. Not jittable."""
  kp, kx, kt = jax.random.split(key, 3)
  init = initializers.get(SCHEMES[scheme])
  shapes = config.check().kernel_shapes()
  params = {}
  for (name, shape), k in zip(shapes.items(), jax.random.split(kp, len(shapes))):  # init_lenet's key order
    z = _flat_cut(losses.flat_normals, k, shape)
    params[name] = {"kernel": init.normal_std(shape) * z, "bias": np.zeros(shape[-1], np.float32)}
  x = _flat_cut(losses.flat_normals, kx, (batch,) + tuple(config.image))
  if loss == "quadratic":
    t = _flat_cut(losses.flat_normals, kt, (batch, config.n_out))
  else:
    labels = pairs.host_cut(pairs.flat_labels(pairs.flat_size(batch), kt, config.n_out), (batch,))
    t = np.eye(config.n_out, dtype=np.float32)[labels]
  return params, x, t


def _flat_cut(draw, key, shape) -> np.ndarray:
  return pairs.host_cut(draw(key, pairs.flat_size(math.prod(shape)), pairs.FLOAT32), shape)


class _Heatmap(HeatmapProblem):
  """`jax.hessian` of the whole loss, kernel blocks only; inputs' statistics exact (N(0, 1) images)."""

  def __init__(self, config: lenet_lib.LeNetConfig, *, loss, batch, seed, max_bytes):
    config.check()
    losses.check_kind(loss)
    shapes = jax.eval_shape(lambda k: lenet_lib.init_lenet(k, config), jax.random.PRNGKey(0))
    hess.check_memory(f"the exact Hessian of the LeNet {config.channels}/{config.hidden} "
                      f"({hess.num_params(shapes)} parameters)", 3 * hess.hessian_bytes(shapes, jnp.float32),
                      max_bytes, "use a smaller LeNet, or the diagonal only (hessian.factor_diagonal_sq_sv), "
                      "or raise max_bytes")
    self.config, self.loss, self.batch = config, loss, batch
    kq, self.kd = jax.random.split(jax.random.PRNGKey(seed))
    self.q = losses.random_quadratic(kq, config.n_out)
    rows = np.array(_kernel_rows(shapes))
    lossfn = lambda p, x, t, q: jnp.mean(jax.vmap(losses.per_example(loss), in_axes=(0, 0, None))(
        lenet_lib.apply_lenet(p, x, pools=config.pools), t, q))

    def kernel_sq_sv(params, x, t, q):
      # The flat Hessian (`hess.flat_sq_sv_matrix`: over the pytree, jax.hessian compiled 25 x 4 differently
      # shaped blocks) and the output Hessians in one program: eagerly they were a program per operation.
      s = hess.flat_sq_sv_matrix(lossfn, params, x, t, q)
      out = lenet_lib.apply_lenet(params, x, pools=config.pools)
      return s[np.ix_(rows, rows)], losses.output_hessians(loss, out, t, q)

    self.fn = jax.jit(kernel_sq_sv)

  def draw_keys(self, draws):
    return jax.random.split(self.kd, draws)

  def measure(self, key, scheme):
    params, x, t = host_problem(key, self.config, scheme, self.loss, self.batch)
    s, out_hessians = self.fn(params, x, t, self.q)
    return HeatmapDraw(np.asarray(s, np.float64), None, np.asarray(out_hessians))

  def predict(self, scheme, loss):
    return predict_lenet(self.config, weight_sq(self.config, SCHEMES[scheme]), image_input_stats(self.config), loss,
                         self.batch)


@dataclasses.dataclass(frozen=True)
class LeNetFamily(Family):
  """Strided LeNets on 8x8x1 images: both convs' channels log-uniform in `channels`, both dense hidden widths
  log-uniform in `hidden`, scheme and loss uniform (`loss_kinds`). `varied`: issue 20's sampling instead
  (`sample_varied`: 1-3 convs, kernels 2-4, 0-2 hidden dense layers, an optional average pool, channels and
  hidden widths in the same ranges), measured in shared slot shapes (`varied_slot_shapes`: a few compiled programs for any number of
  setups). Ranges left out: (4, 16) / (16, 128), varied (4, 32) / (16, 128)."""
  channels: tuple | None = None
  hidden: tuple | None = None
  loss_kinds: tuple = losses.KINDS
  varied: bool = False

  def __post_init__(self):
    fixed = not self.varied
    object.__setattr__(self, "channels", tuple(self.channels or ((4, 16) if fixed else VARIED_CHANNELS)))
    object.__setattr__(self, "hidden", tuple(self.hidden or ((16, 128) if fixed else VARIED_HIDDEN)))
    for name, (lo, hi) in (("channels", self.channels), ("hidden", self.hidden)):
      checks.positive_int(lo, f"LeNet {name} low")
      checks.int_at_least(hi, f"LeNet {name} high", lo)

  name: ClassVar[str] = "LeNet"
  prefix: ClassVar[str] = "lenet_"
  setup_dir: ClassVar[str] = "lenet_setups"
  control_variates: ClassVar[bool] = False
  fig2_net: ClassVar[lenet_lib.LeNetConfig] = FIG2_CONFIG

  @property
  def per_layer(self) -> bool:
    """The fixed shape's setups share their layers; the varied ones do not."""
    return not self.varied

  def sample_setups(self, num, seed):
    if self.varied:
      return sample_varied(num, seed, self.loss_kinds, self.channels, self.hidden)
    checks.positive_int(num, "num")
    rng = np.random.default_rng(seed + 7919)  # not the MLP setups' stream
    draw = lambda lo, hi, n: tuple(int(min(max(v, lo), hi)) for v in
                                   np.exp(rng.uniform(math.log(lo), math.log(hi + 1), n)).astype(int))
    return [LeNetSetup(draw(*self.channels, 2), draw(*self.hidden, 2), str(rng.choice(list(SCHEMES))),
                       str(rng.choice(list(self.loss_kinds))), int(rng.integers(2 ** 31 - 1))) for _ in range(num)]

  def check_setup(self, setup):
    return check_setup(setup)

  def slot_shapes(self, setup) -> lenet_slots.SlotShapes | None:
    """The slot shapes a varied setup's rounds are computed in (None: the fixed family's `conv_pairs` shapes)."""
    if not self.varied:
      return None
    return lenet_slots.smallest(varied_slot_shapes(self.channels[1], self.hidden[1]), setup.config())

  def start(self, setup, key, *, examples, round_draws, draws, max_bytes):
    shapes = self.slot_shapes(setup)
    if round_draws is None:  # as many draws per round as fit in max_bytes, at most 32 (a 2-core CPU's sweet spot)
      per_draw = (conv_pairs.pair_bytes(setup.config(), examples) if shapes is None
                  else lenet_slots.round_bytes(shapes, examples))  # the same for every varied setup: one program
      round_draws = max(1, min(draws, conv_pairs.DEFAULT_ROUND, max_bytes // per_draw))
    return _Measurement(setup, key, examples=examples, round_draws=round_draws, max_bytes=max_bytes, shapes=shapes)

  def setup_json(self, setup):
    return {"model": "lenet", "channels": list(setup.channels), "hidden": list(setup.hidden),
            "widths": list(setup.channels) + list(setup.hidden), "layers": self.layer_names(setup),
            "scheme": setup.scheme, "loss": setup.loss, "input": setup.input_kind, "seed": setup.seed,
            "kernels": [list(k) for k in setup.kernels], "image": list(setup.image), "pools": list(setup.pools)}

  def setup_from_json(self, d):
    return LeNetSetup(tuple(d["channels"]), tuple(d["hidden"]), d["scheme"], d["loss"], int(d["seed"]),
                      tuple(tuple(k) for k in d.get("kernels", KERNELS)), tuple(d.get("image", IMAGE)),
                      d.get("input", "normal"), tuple(int(p) for p in d.get("pools", ())))

  def resume_fields(self):
    out = {"channels": self.channels, "hidden": self.hidden}
    if self.varied:
      out["varied"] = True
    return out

  def layer_names(self, setup):
    return weight_layers(setup.config())

  def heatmap_problem(self, net, *, loss, batch, seed, max_bytes):
    return _Heatmap(net, loss=loss, batch=batch, seed=seed, max_bytes=max_bytes)

  def net_json(self, net):
    return {"config": dataclasses.asdict(net)}

  def net_layers(self, net):
    return weight_layers(net)

  def heatmap_title(self, net):
    return (f"LeNet 8x8x1, convs {net.channels}, dense {net.hidden}: avg squared singular value of Hessian kernel "
            "blocks (conv0, conv1, dense0, ...)")

  def evenness(self, *, batches, draws, seed, examples):
    return evenness(self.fig2_net, batches=batches, draws=draws, seed=seed, examples=examples)


VARIED_CHANNELS = (4, 32)
VARIED_HIDDEN = (16, 128)
VARIED_CONVS = (1, 2, 3)
VARIED_KERNELS = (2, 3, 4)
VARIED_HIDDEN_LAYERS = (0, 1, 2)
POOL_WINDOW = 2
POOL_CHANCE = 0.5  # of a pool, for a setup that can take one (`sample_varied`)
# A varied setup's draw takes one normal number per kernel entry; rounds of setups with at most this many are
# computed in slots that draw only this many (95% of the family; the others in slots of every padded entry).
VARIED_NORMALS = 16384


def _grid_multipliers(ks) -> list:
  """The m that `sample_varied` allows for kernels `ks`: the first conv's grid side prod(ks[1:]) m is 2-4."""
  above = int(np.prod(ks[1:]))
  return [m for m in (1, 2, 3, 4) if 2 <= above * m <= 4]


# Setups are computed in the slots of their group's union: a one-conv LeNet's second slot is flatten + dense0
# (one position, up to 512 x 128), a deeper one's is a conv (up to 4 positions, 32 channels); one union of both
# took 4 positions x 512 x 128 and twice the CPU per round.
VARIED_SLOT_GROUPS = ((1,), (2, 3))  # numbers of convs


@functools.lru_cache(maxsize=None)
def varied_slot_shapes(channels_max: int = VARIED_CHANNELS[1], hidden_max: int = VARIED_HIDDEN[1]) -> tuple:
  """The slot shapes of the varied family, cheapest first: per group of conv counts (VARIED_SLOT_GROUPS) the
  union of every structure `sample_varied` can draw (kernels, m, hidden layers) at the widest channels and
  hidden widths, drawing at most VARIED_NORMALS kernel entries; then the same unions drawing every padded
  entry. Every varied setup fits one of the last; at most 2 x groups compiled programs for any setups."""
  unions = []
  for group in VARIED_SLOT_GROUPS:
    own = []
    for convs in group:
      for ks in itertools.product(VARIED_KERNELS, repeat=convs):
        for m in _grid_multipliers(ks):
          for n_hidden in VARIED_HIDDEN_LAYERS:
            side = int(np.prod(ks)) * m
            own.append(lenet_slots.own_shapes(lenet_lib.LeNetConfig(
                (side, side, 1), (channels_max,) * convs, tuple((k, k) for k in ks), (hidden_max,) * n_hidden,
                N_OUT)))
    unions.append(lenet_slots.union(own))
  few = [u.with_normals(VARIED_NORMALS) for u in unions if u.weight_normals > VARIED_NORMALS]
  return tuple(few + unions)


def sample_varied(num: int, seed: int, loss_kinds=losses.KINDS, channels=VARIED_CHANNELS,
                  hidden=VARIED_HIDDEN) -> list:
  """Issue 20's LeNet family: 1-3 strided convs with square kernels = strides 2-4, channels in `channels` and
  dense hidden widths in `hidden` (log-uniform, default 4-32 and 16-128), 0-2 hidden dense layers (1-3 dense
  layers with the output), the four schemes, both losses, N(0, 1) or U[0, 1] one-channel pixels. The image
  side is the product of the kernels times m, with the first conv's positions (side / k_0)^2 <= 16 (the
  full-order tables are (2 rho)^4). Average pooling (POOL_WINDOW, after one conv drawn uniformly) with chance
  POOL_CHANCE where m is even: the pool takes a factor 2 of m, so the image and the first conv's grid are the
  same. Those draws come from a stream of their own, so a setup's other fields are the ones the family drew
  before it had pooling (seeds 0-2 of issue 20's first rounds)."""
  checks.positive_int(num, "num")
  rng = np.random.default_rng(seed + 104729)  # neither the MLP's nor the fixed LeNet's stream
  pool_rng = np.random.default_rng([seed, 104729])  # a sequence seed: no integer seed's stream
  logu = lambda lo, hi: int(min(max(np.exp(rng.uniform(math.log(lo), math.log(hi + 1))), lo), hi))
  out = []
  for _ in range(num):
    while True:
      convs = int(rng.integers(VARIED_CONVS[0], VARIED_CONVS[-1] + 1))
      ks = [int(rng.integers(VARIED_KERNELS[0], VARIED_KERNELS[-1] + 1)) for _ in range(convs)]
      ms = _grid_multipliers(ks)
      if ms:
        break
    m = int(rng.choice(ms))
    side = int(np.prod(ks)) * m
    chance, where = pool_rng.uniform(), int(pool_rng.integers(len(ks)))  # drawn for every setup: aligned
    pools = tuple(POOL_WINDOW if i == where else 1 for i in range(len(ks))) if (
        chance < POOL_CHANCE and m % POOL_WINDOW == 0) else ()
    out.append(LeNetSetup(tuple(logu(*channels) for _ in ks),
                          tuple(logu(*hidden) for _ in range(int(rng.integers(0, 3)))),
                          str(rng.choice(list(SCHEMES))), str(rng.choice(list(loss_kinds))),
                          int(rng.integers(2 ** 31 - 1)), tuple((k, k) for k in ks), (side, side, 1),
                          str(rng.choice(list(inputs.KINDS))), pools))
  return out


def evenness(config: lenet_lib.LeNetConfig = FIG2_CONFIG, schemes=tuple(SCHEMES), *, batches=(1, 1024),
             draws: int = 64, seed: int = 0, loss: str = "quadratic", examples: int = pairs.DEFAULT_EXAMPLES) -> dict:
  """Per scheme and batch size: the expected diagonal kernel blocks (pairs of examples, `draws` draws rounded up
  to whole rounds), their max/min and its standard error (delta method on log max - log min, taking the two
  layers as fixed), and the leading-order predicted diagonal. The evenness check of Figure 2 with its
  measurement error. Every scheme sees the same keys."""
  out = {str(b): {} for b in batches}
  for scheme in schemes:
    setup = LeNetSetup(tuple(config.channels), tuple(config.hidden), scheme, loss, seed)
    if setup.config() != config:
      raise ValueError("evenness runs on 8x8x1 LeNets with 2x2 kernels and 10 outputs")
    m = _Measurement(setup, jax.random.PRNGKey(seed), examples=examples, round_draws=conv_pairs.DEFAULT_ROUND,
                     max_bytes=pairs.DEFAULT_MAX_BYTES)
    for i in range(-(-draws // conv_pairs.DEFAULT_ROUND)):
      m.draw_round(i)
    ls = m.loss_stats()
    wsq = weight_sq(config, SCHEMES[scheme])
    for b in batches:
      e = m.exact(b)[0]
      mean, se = e.mean, e.stderr
      hi, lo = int(np.argmax(mean)), int(np.argmin(mean))
      ratio = float(mean[hi] / mean[lo])
      pred = predict_lenet(config, wsq, image_input_stats(config), ls, b).weight
      out[str(b)][scheme] = {"diag": mean.tolist(), "diag_se": se.tolist(), "max_over_min": ratio,
                             "max_over_min_se": ratio * math.hypot(se[hi] / mean[hi], se[lo] / mean[lo]),
                             "predicted_diag": pred.tolist(), "predicted_max_over_min": float(pred.max() / pred.min()),
                             "draws": sum(s.shape[0] for s in m.stats)}
  return out

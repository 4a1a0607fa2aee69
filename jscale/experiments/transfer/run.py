"""The transfer experiment's run code: prescriptions before training, one vmapped training program per
(model, width) over optimizer x parametrization x learning rate x seed, and the coordinate check.

Per (model, width): the network at its He (fan-in) initialisation is inspected once on a fixed training
minibatch with the real loss (softmax cross-entropy), and once more with the μP init multiplier on its output
layer; `calculus.from_inspection` turns those into each parametrization's per-kernel learning-rate and init
multipliers for SGD and Adam, and its `step_size`; the first step's response per unit learning rate
(response.py) is the predicted drift's input and sets equal-G's common scale (`calculus.normalised`), which
multiplies the base learning rate of equal-G's runs (biases and kernels alike). Training uses the engine
(`jscale.train.make_train`): the multipliers are traced (`HParams.layer_scale`, `HParams.lr_scale`), and so is
the optimizer (`HParams.optimizer_index`, `jscale.optim.choose`), so both optimizers, the three
parametrizations, 12 learning rates and the seeds are one program per (model, width). Biases keep the base
learning rate in every parametrization. Each (model, width)'s four programs (probe draws, response, coordinate
check, training) are compiled ahead in one background thread (ahead.py) while the main thread computes.
"""
from __future__ import annotations

import functools
import itertools
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jscale import calculus, datasets, initializers, models, optim, train as train_lib
from jscale.experiments.transfer import ahead as ahead_lib, analysis, epoch_probe, response
from jscale.sweeps import store

PARAMETRIZATIONS = ("standard", "mup", "equal_G")
OPTIMIZERS = ("sgd", "adam")
MODEL_NAMES = ("mlp", "lenet")
BASE_WIDTH = 32
PROBE_SEED = 2**20       # the init the prescriptions are computed on (not a training seed)
# The probe inits PROBE_SEED ... that the measured response (response.py) averages over. 64, not 4: on fresh He
# inits the 4-draw predicted drift moved 2-3 of its quoted SEs (LeNet SGD), and the SE's replicate check
# (docs/calculus.md, *The predictor's probe inits and their SE*) found the delta-method SE matching the spread of
# independent sets of 16-64 inits; at 64 the LeNet SGD drift's SE is ~0.11 octave (0.22 at 16, against the
# goal's 0.5), for ~12 CPU s more on the full grid.
PROBE_DRAWS = 64
# The coordinate check's inits: fresh keys, judged once (docs/calculus.md, *Coordinate check, fourth pass*: the
# first update over (example, position) pairs, developed on 2**20 + 3000 ... and 2**20 + 1000 ..., judged on
# 2**20 + 9000 ...; the third pass judged on 2**20 + 7000 ..., now seen; the first two reused the probe inits).
COORD_SEED = 2**20 + 9000
K_DRAWS = 16             # of the coordinate check's draws, how many take all k steps (the rest take one)


def network(model: str, width: int) -> models.Model:
  """The MLP 64-w-w-10, or the strided LeNet with channel multiplier w / BASE_WIDTH on (6, 16) channels
  (dense layers 120, 84 fixed), for 8x8 digits."""
  if model == "mlp":
    return models.mlp((64, width, width, 10))
  m = width / BASE_WIDTH
  if m != int(m) or m < 1:
    raise ValueError(f"transfer: LeNet widths must be multiples of {BASE_WIDTH}, got {width}")
  return models.get_model("lenet", 10, image=(8, 8, 1), channels=(6 * int(m), 16 * int(m)))


def probe_draws(net: models.Model, draws: int, start: int = PROBE_SEED, *more: tuple[int, int], program=None):
  """The He inits of keys start, start + 1, ... (`draws` of them, stacked; start defaults to PROBE_SEED, whose
  first draw is the init the prescriptions are computed on): `net.draw`'s numbers, from one compiled random
  program (`Model.make_draw`; eager draws compiled one threefry program per kernel shape, seconds each on
  XLA:CPU). `more`: further (draws, start) ranges from the same program, one stack each (a tuple of stacks
  then): a random program per range took ~1 s of compile each (each key's draw is the same whatever the
  other keys, tested). `program`: `draws_program`'s compiled for these ranges, or None to build it."""
  fn, seeds = draws_program(net, ((draws, start),) + more)
  out = (fn if program is None else program)(seeds)
  return out if more else out[0]


def draws_program(net: models.Model, ranges) -> tuple:
  """(the jitted draw of `probe_draws`' ranges ((draws, start), ...) from its seeds, the seeds (int32))."""
  draw = net.make_draw(("he_normal",))
  ends = np.cumsum([0] + [n for n, _ in ranges])

  def cut(seeds):
    stacked = jax.vmap(lambda s: draw(jax.random.key(s), 0))(seeds)
    return tuple(jax.tree.map(lambda v: v[a:b], stacked) for a, b in zip(ends[:-1], ends[1:]))

  # the seeds on the host: eager jnp compiled more programs
  return jax.jit(cut), np.concatenate([s + np.arange(n) for n, s in ranges]).astype(np.int32)


def prescriptions(net: models.Model, base: models.Model, x, y, p0s,
                  response_program=None) -> tuple[dict, np.ndarray, np.ndarray, tuple]:
  """((parametrization, optimizer) -> (Prescription, layer_scale (L,), lr_scale (L,), unit), the first step's
  relative response per unit learning rate (rule, opt, L), its relative SE, and the per-draw (E[h^2], E[dh^2])
  (rule, opt, draw, L) it comes from, every rule at unit 1, for the drift's paired SE, `analysis.drift_se`)
  for `net`, from its He init
  PROBE_SEED (the first of the probe inits `p0s`, `probe_draws`) on the batch (x, y). `unit` multiplies every
  leaf's learning rate, biases included (training: the base rate); lr_scale is the kernels' multiplier on top
  of it. Equal-G's unit is its response normalisation (`calculus.normalised`: the response that sets the
  optimum, over the probe inits, is 1 per unit learning rate); the other rules' is 1. The response
  (response.py) is measured once at unit 1; equal-G's is then divided by its normalisation (to first order
  the response is linear in a common factor of the multipliers). `response_program`: the response's compiled
  program (`response.per_draw_program`), or None to build it."""
  key = jax.random.key(PROBE_SEED)
  # the first draw cut on the host (eager indexing compiled two programs per leaf shape), put back by
  # `jax.device_put`: `jnp.asarray` of a host array compiled a `stage` program per new shape (with the response's
  # and the coordinate check's multipliers, 36 of the full grid's 114 programs; the same bits)
  params = jax.tree.map(lambda v: jax.device_put(np.asarray(v)[0]), p0s)
  base_shapes = [tuple(l.shape) for l in jax.tree.leaves(jax.eval_shape(lambda k: base.draw(k, "he_normal"), key))]
  apply = lambda p, x_: net.forward(p, x_)[0]   # noqa: E731
  loss = lambda out: optax.softmax_cross_entropy_with_integer_labels(out, y)   # noqa: E731 (per example)
  sp = calculus.inspect(apply, params, x, loss=loss, groups=np.asarray(y))
  mup_init = calculus.from_inspection(sp, rule="mup", base_shapes=base_shapes).init_multipliers(params)
  # on the host: eager `p * m` compiled a program per leaf shape (the same float32 product either way)
  mup_params = jax.tree.map(lambda p, m: p if m is None else jax.device_put(np.asarray(p) * np.float32(m)),
                            params, mup_init)
  mu = calculus.inspect(apply, mup_params, x, loss=loss, groups=np.asarray(y))
  out = {}
  for opt in OPTIMIZERS:
    for rule in PARAMETRIZATIONS:
      res = mu if rule == "mup" else sp
      pr = calculus.from_inspection(res, optimizer=opt, rule=rule, base_shapes=base_shapes)
      init_m = net.kernels(calculus.from_inspection(sp, rule=rule, base_shapes=base_shapes, optimizer=opt)
                           .init_multipliers(params))
      out[rule, opt] = (pr, np.asarray(init_m, np.float32), np.asarray(net.kernels(pr.lr_multipliers(params)),
                                                                      np.float32), 1.0)
  h, d = response.per_draw(net, out, x, y, p0s, PARAMETRIZATIONS, OPTIMIZERS, program=response_program)
  resp, rse = response.ratio_and_se(h, d)
  i = PARAMETRIZATIONS.index("equal_G")
  for j, opt in enumerate(OPTIMIZERS):
    pr, init_m, lr_m, _ = out["equal_G", opt]
    normed = calculus.normalised(pr, resp[i, j])
    out["equal_G", opt] = (normed, init_m, lr_m, normed.scale)
    resp[i, j] = resp[i, j] * normed.scale
  return out, resp, rse, (h, d)


def coordinate_program(net: models.Model, x, y, k: int, n_draws: int, k_draws: int = K_DRAWS):
  """The jitted `run(p0s, init_m, lr_m, lr)` of `coordinate_check` for `n_draws` inits (init_m, lr_m
  (opt, rule, L), lr (opt, rule) float32) -> (update RMS, activations, their relative SEs), each (opt, rule, ...)."""
  k_draws = min(k_draws, n_draws) if k > 1 else n_draws

  def loss_fn(p):
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(net.forward(p, x)[0], y))

  def sizes(p):
    logits, hidden = net.forward(p, x)
    return jnp.stack([jnp.mean(jnp.square(h)) for h in hidden] + [jnp.mean(jnp.square(logits))])

  def one(base_opt, steps, p0, init_m, lr_m, lr):
    p = net.map_kernels(lambda l, w: w * init_m[l], p0)
    mult = net.map_kernels(lambda l, _: lr * lr_m[l], jax.tree.map(lambda _: lr, p))
    tx = optax.chain(base_opt, optim.scale_by_prescription(mult))

    def step(carry, _):
      p, state = carry
      u, state = tx.update(jax.grad(loss_fn)(p), state, p)
      p = optax.apply_updates(p, u)
      return (p, state), (jnp.stack([jnp.mean(jnp.square(w)) for w in net.kernels(u)]), sizes(p))

    _, (rms, after) = jax.lax.scan(step, (p, tx.init(p)), None, length=steps)
    return rms, jnp.stack([sizes(p), after[0]])

  # the draws are an argument, not constants closed over: as constants (up to ~100 MB) they were copied into
  # the program and slowed its compile (and XLA chose their layout: one act_se entry of the LeNet at width 512
  # moved by 1 ulp, 1.4e-7 relative)
  @jax.jit
  def run(p0s, init_m, lr_m, lr):
    """init_m, lr_m: (opt, rule, L); lr: (opt, rule) -> (update RMS, activations), each (opt, rule, ...)."""
    out = []
    head = jax.tree.map(lambda v: v[:k_draws], p0s)
    tail = jax.tree.map(lambda v: v[k_draws:], p0s)
    # relative SE of the draw means (for the RMS, half that of the mean square)
    rse = lambda v: jnp.std(v, 1, ddof=1) / jnp.sqrt(v.shape[1]) / jnp.mean(v, 1)   # noqa: E731
    for j, base_opt in enumerate((optax.sgd(1.0), optax.adam(1.0))):
      def over(draws_, steps):
        per_draw = jax.vmap(functools.partial(one, base_opt, steps), in_axes=(0, None, None, None))
        return jax.vmap(per_draw, in_axes=(None, 0, 0, 0))(draws_, init_m[j], lr_m[j], lr[j])
      ms, acts = over(head, k)                      # (rule, k_draws, k, L), (rule, k_draws, 2, L)
      if k_draws < n_draws:
        ms1, acts1 = over(tail, 1)
        first = jnp.concatenate([ms[:, :, :1], ms1], 1)
        acts = jnp.concatenate([acts, acts1], 1)
        m_mean = jnp.concatenate([first.mean(1), ms[:, :, 1:].mean(1)], 1)
        m_rse = jnp.concatenate([rse(first), rse(ms[:, :, 1:])], 1)
      else:
        m_mean, m_rse = ms.mean(1), rse(ms)
      out.append((jnp.sqrt(m_mean), acts.mean(1), 0.5 * m_rse, rse(acts)))
    return [jnp.stack(o) for o in zip(*out)]

  return run


def coordinate_check(net: models.Model, pres: dict, x, y, lr_of: dict, k: int, draws: int = 4, p0s=None,
                     k_draws: int = K_DRAWS, program=None):
  """Per (parametrization, optimizer): steps on the batch (x, y) from `draws` inits (`p0s`, or keys COORD_SEED,
  COORD_SEED + 1, ... if not given) at the learning rate `lr_of[rule, opt]`: the first `k_draws` of them take k
  full steps, the rest one (the first update and the activations at init and after it, the goal's quantities,
  average over all draws; updates 2..k over the first k_draws; one step costs ~40% of three). Measured sizes are
  mean squares over the draws (the calculus predicts expectations over the init; at width 32 the SD of log
  E[z^2] over draws is 0.37 (MLP) and 0.67 (LeNet), docs/calculus.md, *Coordinate check, third pass*). Returns
  measured and predicted arrays and the measurements' relative SEs over the draws (upd_se, act_se, ~ the SE of
  their log):
    upd_meas/upd_pred (rule, opt, step, kernel): RMS of each kernel's update
    act_meas/act_pred (rule, opt, when (init, after step 1), layer): E[h^2] of the hidden activations and
      the logits (the layers after each kernel).
  Predicted update (the gradient at init): SGD's from the kernels over (example, position) pairs with the
  gradient's component along each example's own activation (`calculus.strided_update`; for the MLP a position
  is the example); Adam lr m (its first step is lr sign(g)). Predicted activations: the calculus's at init;
  after the step, the first-order response through the layers over (example, position) pairs
  (`calculus.strided_response`: the cross term 2E[h0 . dh], accumulated along each example's own activation over
  the layers below, and E[dh^2], with the biases' step, the incoherent carry and the flips' coherent carry since
  the thirteenth session, each unit's own flip term and Adam's sign of a non-centred gradient since the
  fourteenth, the carry's mask after the step with SGD's flip term per side of zero since the seventeenth
  (`analysis.strided_first_step`); docs/calculus.md, *After the first step over (example, position)
  pairs*; until the twelfth session the MLP's came from `calculus.first_step`, the LeNet's was each layer's
  E[y^2] plus the update's bound U m^2 lr^2 on top).
  One compiled program per network: both optimizers, the parametrizations vmapped, the steps a lax.scan (it
  was one program per optimizer with the steps unrolled; compilation was most of the check's time).
  `program`: `coordinate_program(net, x, y, k, draws, k_draws)` compiled (run.experiment compiles it ahead), or
  None to build it."""
  p0s = probe_draws(net, draws, COORD_SEED) if p0s is None else p0s
  run = coordinate_program(net, x, y, k, jax.tree.leaves(p0s)[0].shape[0], k_draws) if program is None else program
  assert OPTIMIZERS == ("sgd", "adam")
  pick = lambda f: np.asarray([[f(rule, opt) for rule in PARAMETRIZATIONS] for opt in OPTIMIZERS])  # noqa: E731
  # dispatched, not awaited: the calculus's predictions below (numpy) run while the measured steps compute
  # (float32 on the host and `jax.device_put`: `jnp.asarray` compiled a program per shape)
  measured = run(p0s, jax.device_put(pick(lambda r, o: pres[r, o][1]).astype(np.float32)),
                 jax.device_put(pick(lambda r, o: pres[r, o][2]).astype(np.float32)),
                 jax.device_put(pick(lambda r, o: lr_of[r, o] * pres[r, o][3]).astype(np.float32)))
  R, O, L = len(PARAMETRIZATIONS), len(OPTIMIZERS), net.n_layers
  he = initializers.get("he_normal")
  w_exp = np.array([he.second_moment(tuple(w.shape[1:])) for w in net.kernels(p0s)])   # expected E[W^2]
  upd_p, act_p = np.zeros((R, O, k, L)), np.zeros((R, O, 2, L))
  dense = all(w.ndim == 3 for w in net.kernels(p0s))   # (draws, fan_in, fan_out): an MLP
  strided, sgd_memo = {}, {}
  for j, opt in enumerate(OPTIMIZERS):
    for i, rule in enumerate(PARAMETRIZATIONS):
      pr, init_m, lr_m, unit = pres[rule, opt]
      w_sq = w_exp * np.square(init_m)
      lr = lr_of[rule, opt] * unit
      act_p[i, j, 0] = analysis.predicted_activations(pr, w_sq)
      upd = [lr * m for m in lr_m]   # Adam's first step, lr m sign(g)
      if dense:   # (update_response.first_step's update_rms for Adam: the same float64 product)
        upd = lr * np.asarray(lr_m, np.float64)
      # the after-step activations over (example, position) pairs (strided_response.py; an MLP's position is
      # the example), after the loop: settings with the same init share their kernels
      strided[i, j] = (w_sq, lr * np.asarray(lr_m, np.float64), opt, lr)   # every bias steps at lr
      if opt == "sgd":   # over (example, position) pairs, with the own-activation component (strided_update.py)
        upd = analysis.sgd_update(net.input_shape, net.kernel_shapes, x, y, w_sq, lr * np.asarray(lr_m, np.float64),
                                  sgd_memo)
      upd_p[i, j] = np.broadcast_to(np.asarray(upd, np.float64), (k, L))
  for ij, a1 in analysis.strided_first_step(net.input_shape, net.kernel_shapes, x, y, strided).items():
    act_p[ij + (1,)] = a1
  u, a, us, as_ = jax.device_get(measured)
  upd_m, act_m = np.moveaxis(u, 0, 1).astype(np.float64), np.moveaxis(a, 0, 1).astype(np.float64)
  upd_se, act_se = np.moveaxis(us, 0, 1).astype(np.float64), np.moveaxis(as_, 0, 1).astype(np.float64)
  return upd_m, upd_p, act_m, act_p, upd_se, act_se


# The most configurations one training call vmaps: the 24-seed judge grids' 1728 (LeNet width 512) peaked at
# 13-15 GB resident and were killed for memory three times on the shared 24 GB host (ninth session); the quick
# and full grids (144, 288) stay one call, as before.
MAX_CONFIGS = 576


def n_chunks(configs: int, most: int = MAX_CONFIGS) -> int:
  """How many equal training calls `configs` configurations take: the fewest that divides them with at most
  `most` each (equal shapes: one compiled program)."""
  return next(n for n in range(1, configs + 1) if configs % n == 0 and configs // n <= most)


def draws_at(table, model: str, width: int) -> int:
  """The coordinate check's draw count for (model, width): `table` an int, or per model ((width, draws), ...)
  increasing in width; a width between entries takes the entry at or below it (the draws' spread falls with
  width), one below the first the first's."""
  if isinstance(table, int):
    return table
  rows = sorted((int(w), int(n)) for w, n in table[model])
  return [n for w, n in rows if w <= width][-1] if width >= rows[0][0] else rows[0][1]


def train_program(net: models.Model, epochs: int, batch_size: int):
  """The jitted training of `net` vmapped over configurations (keys, `HParams` stacked; the data shared): one
  program for both optimizers (`optim.choose`, the optimizer traced like the learning rate; per (model, width)
  it compiled two programs of nearly the same size). It returns (train_loss, diverged) per configuration and
  epoch, the only metrics the experiment keeps: the rest (accuracy, gradient norm's metric, saturation, G) left
  out of the program's outputs, XLA drops their arithmetic (the LeNet at width 32: ~17% less compile and ~10%
  less compute; the kept two bit for bit)."""
  spec = train_lib.TrainSpec(model=net, kernel_inits=("he_normal",), optimizer=OPTIMIZERS, epochs=epochs,
                             batch_size=batch_size)
  train = train_lib.make_train(spec)

  def kept(key, hp, data):
    m = train(key, hp, data)
    return m.train_loss, m.diverged

  return jax.jit(jax.vmap(kept, in_axes=(0, 0, None)))


def train_hparams(rows, lrs: np.ndarray, pres: dict) -> train_lib.HParams:
  """The stacked `HParams` of the configurations `rows` ((optimizer, parametrization, lr octave, seed)
  indices): each parametrization's init and learning-rate multipliers (`pres`, as `prescriptions` returns
  them) and its base rate lrs[optimizer, parametrization, octave] times its unit."""
  C = len(rows)
  pick = lambda f: np.stack([f(pres[PARAMETRIZATIONS[i], OPTIMIZERS[c]]) for c, i, _, _ in rows])  # noqa: E731
  ones = np.ones(C, np.float32)
  return train_lib.HParams(init_scale=ones, layer_scale=pick(lambda p: p[1]), input_scale=ones, output_scale=ones,
                           lr=np.array([lrs[c, i, k] * pres[PARAMETRIZATIONS[i], OPTIMIZERS[c]][3]
                                        for c, i, k, _ in rows], np.float32),
                           weight_decay=np.zeros(C, np.float32), init_index=np.zeros(C, np.int32),
                           lr_scale=pick(lambda p: p[2]),
                           optimizer_index=np.array([c for c, _, _, _ in rows], np.int32))


def experiment(exp_dir: str, *, widths: Sequence[int], models_: Sequence[str] = MODEL_NAMES,
               seeds: Sequence[int], lr_octaves: int = 12, lr_centers: dict, epochs: int = 2,
               batch_size: int = 64, coord_steps: int = 3, coord_draws=4, probe_batch: int = 64,
               pilot: bool = False) -> str:
  """Train one program per (model, width) over optimizer x parametrization x lr x seed; write the results.
  coord_draws: the coordinate check's init draws (keys COORD_SEED ...), an int or per model and width
  (`draws_at`). pilot: also run Adam's one-epoch pilot at the first probe inits (epoch_probe.py), a short
  learning-rate sweep reported beside the calculus's prediction (it costs about as much as the training)."""
  widths, seeds = [int(w) for w in widths], [int(s) for s in seeds]
  ds = datasets.get("digits", seed=0, standardize=True)
  data = datasets.Data(jnp.asarray(ds.x_train), jnp.asarray(ds.y_train, jnp.int32), jnp.zeros((0, 64)),
                       jnp.zeros((0,), jnp.int32))
  xb, yb = jnp.asarray(ds.x_train[:probe_batch]), jnp.asarray(ds.y_train[:probe_batch], jnp.int32)
  octs = np.arange(lr_octaves) - lr_octaves // 2
  R, O, K, S, W, M = len(PARAMETRIZATIONS), len(OPTIMIZERS), lr_octaves, len(seeds), len(widths), len(models_)
  loss = np.full((M, W, O, R, K, S), np.nan)
  diverged = np.zeros((M, W, O, R, K, S), bool)
  step_size = np.full((M, W, O, R), np.nan)
  lrs = np.array([[lr_centers[f"{rule}/{opt}"] * 2.0 ** octs for rule in PARAMETRIZATIONS] for opt in OPTIMIZERS])
  coord = {}
  keys = jax.vmap(jax.random.key)(jnp.asarray(seeds))
  rows = [(c, i, k, s) for c in range(O) for i in range(R) for k in range(K) for s in range(S)]
  C = len(rows)
  cfg_keys = keys[np.array([s for _, _, _, s in rows])]
  n = n_chunks(C)
  part = lambda v, q: v[q * (C // n):(q + 1) * (C // n)]   # noqa: E731
  # wall time per phase
  seconds = {"prescriptions": 0.0, "coordinate_check": 0.0, "response": 0.0, **({"epoch_probe": 0.0} if pilot else {}),
             "training": 0.0}
  nets = {(model, width): network(model, width) for model in models_ for width in widths}
  coord_n = {(model, width): draws_at(coord_draws, model, width) for model in models_ for width in widths}
  lr_mid = {(rule, opt): lr_centers[f"{rule}/{opt}"] for rule in PARAMETRIZATIONS for opt in OPTIMIZERS}
  with ahead_lib.Ahead() as ahead:
    # every (model, width)'s four programs, compiled in the background in the order the loop below takes them
    for model in models_:
      for width in widths:
        net = nets[model, width]
        L = net.n_layers
        draw_fn, draw_seeds = draws_program(net, ((PROBE_DRAWS, PROBE_SEED), (coord_n[model, width], COORD_SEED)))
        p0s_spec, coord_spec = jax.eval_shape(draw_fn, draw_seeds)
        per_rule = (jax.ShapeDtypeStruct((O, R, L), jnp.float32),) * 2 + (jax.ShapeDtypeStruct((O, R), jnp.float32),)
        ones = {key: (None, np.ones(L, np.float32), np.ones(L, np.float32), 1.0)
                for key in itertools.product(PARAMETRIZATIONS, OPTIMIZERS)}
        ahead.submit(("draws", model, width), draw_fn, draw_seeds)
        ahead.submit(("response", model, width), response.per_draw_program(net, xb, yb, OPTIMIZERS), p0s_spec,
                     *per_rule)
        ahead.submit(("coord", model, width), coordinate_program(net, xb, yb, coord_steps,
                                                                 jax.tree.leaves(coord_spec)[0].shape[0]),
                     coord_spec, *per_rule)
        ahead.submit(("train", model, width), train_program(net, epochs, batch_size), part(cfg_keys, 0),
                     ahead_lib.abstract(jax.tree.map(lambda v: part(v, 0), train_hparams(rows, lrs, ones))), data)
    for a, model in enumerate(models_):
      base = network(model, BASE_WIDTH)
      n_layers = base.n_layers
      cu_m, cu_p, cu_s = (np.zeros((W, R, O, coord_steps, n_layers)) for _ in range(3))
      ca_m, ca_p, ca_s = (np.zeros((W, R, O, 2, n_layers)) for _ in range(3))
      rs_m, rs_s, rs_c = (np.zeros((W, R, O, n_layers)) for _ in range(3))
      rs_h, rs_d = (np.zeros((W, R, O, PROBE_DRAWS, n_layers)) for _ in range(2))
      ep_t = np.full((W, R, epoch_probe.EPOCH_DRAWS), np.nan)
      for b, width in enumerate(widths):
        net = nets[model, width]
        t0 = time.perf_counter()
        p0s, coord_p0s = probe_draws(net, PROBE_DRAWS, PROBE_SEED, (coord_n[model, width], COORD_SEED),
                                     program=ahead.take(("draws", model, width)))
        pres, rs_m[b], rs_s[b], (rs_h[b], rs_d[b]) = prescriptions(
            net, base, xb, yb, p0s, response_program=ahead.take(("response", model, width)))
        t1 = time.perf_counter()
        cu_m[b], cu_p[b], ca_m[b], ca_p[b], cu_s[b], ca_s[b] = coordinate_check(
            net, pres, xb, yb, lr_mid, coord_steps, p0s=coord_p0s, program=ahead.take(("coord", model, width)))
        t2 = time.perf_counter()
        rs_c[b] = response.calculus_response(net, pres, xb, yb, PARAMETRIZATIONS, OPTIMIZERS)
        seconds["prescriptions"] += t1 - t0
        seconds["coordinate_check"] += t2 - t1
        seconds["response"] += time.perf_counter() - t2
        # Adam's one-epoch pilot at the first probe inits (epoch_probe.py): a short sweep, not the calculus, so
        # only where a grid asks for it
        if pilot:
          t3 = time.perf_counter()
          ep_f, ep_bad = epoch_probe.final_losses(net, pres, ds.x_train, ds.y_train, xb, yb,
                                                  jax.tree.map(lambda v: v[:epoch_probe.EPOCH_DRAWS], p0s),
                                                  PARAMETRIZATIONS, lr_centers, batch_size, "adam")
          ep_t[b] = epoch_probe.optima(ep_f, ep_bad)
          seconds["epoch_probe"] += time.perf_counter() - t3
        hp = train_hparams(rows, lrs, pres)
        t0 = time.perf_counter()
        train = ahead.take(("train", model, width))
        parts = [jax.device_get(train(part(cfg_keys, q), jax.tree.map(lambda v: part(v, q), hp), data))
                 for q in range(n)]
        train_loss, div = (np.concatenate(v) for v in zip(*parts))
        seconds["training"] += time.perf_counter() - t0
        loss[a, b] = np.asarray(train_loss[:, -1], np.float64).reshape(O, R, K, S)
        diverged[a, b] = np.asarray(div[:, -1]).reshape(O, R, K, S)
        for c, opt in enumerate(OPTIMIZERS):
          for i, rule in enumerate(PARAMETRIZATIONS):
            step_size[a, b, c, i] = pres[rule, opt][0].step_size() or np.nan
      coord[model] = (cu_m, cu_p, ca_m, ca_p, cu_s, ca_s, rs_m, rs_s, rs_c, rs_h, rs_d, ep_t)
  metrics = {"loss": (("model", "width", "optimizer", "param", "lr_octave", "seed"), loss),
             "diverged": (("model", "width", "optimizer", "param", "lr_octave", "seed"), diverged.astype(np.int8)),
             "step_size": (("model", "width", "optimizer", "param"), step_size),
             "lr": (("optimizer", "param", "lr_octave"), lrs)}
  for model, (cu_m, cu_p, ca_m, ca_p, cu_s, ca_s, rs_m, rs_s, rs_c, rs_h, rs_d, ep_t) in coord.items():
    ax_u = ("width", "param", "optimizer", "coord_step", f"{model}_kernel")
    ax_a = ("width", "param", "optimizer", "when", f"{model}_kernel")
    ax_r = ("width", "param", "optimizer", f"{model}_kernel")
    ax_p = ("width", "param", "optimizer", "probe_draw", f"{model}_kernel")
    metrics.update({f"{model}_upd_meas": (ax_u, cu_m), f"{model}_upd_pred": (ax_u, cu_p),
                    f"{model}_act_meas": (ax_a, ca_m), f"{model}_act_pred": (ax_a, ca_p),
                    f"{model}_upd_rse": (ax_u, cu_s), f"{model}_act_rse": (ax_a, ca_s),
                    # the first step's relative response per unit lr (response.py): measured, its SE, calculus
                    f"{model}_resp_meas": (ax_r, rs_m), f"{model}_resp_rse": (ax_r, rs_s),
                    f"{model}_resp_calc": (ax_r, rs_c),
                    # per probe init, every rule at unit 1 (equal-G before its normalisation): the drift's SE
                    # over paired draws (analysis.drift_se)
                    f"{model}_resp_h": (ax_p, rs_h), f"{model}_resp_d": (ax_p, rs_d)})
    if pilot:   # Adam's one-epoch optimum per probe init, log2 offset from the LR centre (epoch_probe.py; NaN: at
      # the ladder's end): the pilot's drift, reported beside the prediction
      metrics[f"{model}_epoch_opt"] = (("width", "param", "epoch_draw"), ep_t)
  axes = {"model": list(models_), "width": widths, "optimizer": list(OPTIMIZERS), "param": list(PARAMETRIZATIONS),
          "lr_octave": [int(o) for o in octs], "seed": seeds, "coord_step": list(range(1, coord_steps + 1)),
          "when": ["init", "after step 1"], "probe_draw": [PROBE_SEED + k for k in range(PROBE_DRAWS)]}
  if pilot:
    axes["epoch_draw"] = [PROBE_SEED + k for k in range(epoch_probe.EPOCH_DRAWS)]
  for model in models_:
    axes[f"{model}_kernel"] = list(range(network(model, BASE_WIDTH).n_layers))
  store.write_results(exp_dir, axes=axes, metrics=metrics, experiment="transfer", data="digits",
                      data_source=ds.source, epochs=epochs, batch_size=batch_size, base_width=BASE_WIDTH,
                      lr_centers=dict(lr_centers), seeds=seeds, probe_seed=PROBE_SEED, probe_batch=probe_batch,
                      coord_steps=coord_steps, coord_draws=coord_draws, coord_seed=COORD_SEED,
                      coord_k_draws=K_DRAWS, probe_draws=PROBE_DRAWS,
                      phase_seconds={k: round(v, 2) for k, v in seconds.items()})
  return exp_dir

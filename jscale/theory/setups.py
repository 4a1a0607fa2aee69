"""Figure 1's sampled setups: what a setup is, its exact diagonal blocks, its prediction, and the summary.

A `Setup` is (widths, init scheme, loss, input law, seed); `sample_setups` draws them as the paper's
Figure 1 does (depth 3-6, widths 8-128 log-uniform, scheme / loss / input uniform). `run_setup` gives
the predicted / exact average squared singular value of every diagonal block at batch 1 and at a
minibatch, `figure1` does it for every sampled setup and `summarize` pools the ratios. The prediction
is `jscale.theory.predict` (derivation in docs/calculus.md; the paper is cited in docs/sources.md).

"Exact" is the expectation over draws of (weights, inputs, targets) of the blocks' average squared
singular value, which is what the prediction predicts. `run_setup` measures it with `pairs` (the
Gauss-Newton/Kronecker form, exact for ReLU nets, split into same-example and two-example expectations:
one set of draws serves batch 1 and batch B; tested equal to `hessian.diagonal_sq_sv` and `jax.hessian`),
with control variates of exactly known mean (`pairs.control_variates`) and, given `target_rel_se`, as
many rounds of draws as it takes for every weight block's relative standard error to reach the target
(up to `max_draws`). Narrow layers (width 8-16) make the block sizes heavy-tailed over weight draws
(per-draw relative std 1-7), which is why a setup needs hundreds to thousands of draws.
`exact_diagonal` is the literal measurement: `hessian.diagonal_sq_sv` of whole minibatches.
"""
from __future__ import annotations

import concurrent.futures
import math
import os
import time
from typing import Callable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jscale import initializers, mlp
from jscale.theory import hessian as hess
from jscale.theory import losses, pairs, predict

SCHEMES = initializers.SCHEMES  # scheme name -> initializer spec
INPUT_KINDS = ("normal", "uniform01")


class Setup(NamedTuple):
  widths: tuple
  scheme: str       # a key of SCHEMES
  loss: str         # a losses.KINDS entry
  input_kind: str   # an INPUT_KINDS entry
  seed: int


def _check_setup(s: Setup):
  mlp.check_widths(s.widths)
  if s.scheme not in SCHEMES:
    raise ValueError(f"unknown scheme {s.scheme!r}; valid: {', '.join(SCHEMES)}")
  losses.check_kind(s.loss)
  if s.input_kind not in INPUT_KINDS:
    raise ValueError(f"unknown input kind {s.input_kind!r}; valid: {', '.join(INPUT_KINDS)}")


def sample_setups(num: int, seed: int = 0, depth=(3, 6), width=(8, 128), losses_=losses.KINDS,
                  input_kinds=INPUT_KINDS) -> list[Setup]:
  """`num` random setups: depth (weight layers) uniform in `depth`, every width (input and output too)
  log-uniform in `width`, scheme / loss / input kind uniform. Deterministic in `seed`."""
  if num < 1:
    raise ValueError(f"num must be >= 1, got {num}")
  if not (1 <= depth[0] <= depth[1]) or not (1 <= width[0] <= width[1]):
    raise ValueError(f"bad ranges depth={depth} width={width}")
  rng = np.random.default_rng(seed)
  out = []
  for i in range(num):
    L = int(rng.integers(depth[0], depth[1] + 1))
    ws = np.exp(rng.uniform(math.log(width[0]), math.log(width[1] + 1), L + 1)).astype(int)
    ws = tuple(int(min(max(w, width[0]), width[1])) for w in ws)
    out.append(Setup(ws, str(rng.choice(list(SCHEMES))), str(rng.choice(list(losses_))),
                     str(rng.choice(list(input_kinds))), int(rng.integers(2 ** 31 - 1))))
  return out


def sample_inputs(key, kind: str, batch: int, n_0: int, dtype=jnp.float32) -> jax.Array:
  """normal: N(0, 1) entries (centred); uniform01: U[0, 1] entries (uncentred, like pixel intensities)."""
  if kind == "normal":
    return jax.random.normal(key, (batch, n_0), dtype)
  if kind == "uniform01":
    return jax.random.uniform(key, (batch, n_0), dtype)
  raise ValueError(f"unknown input kind {kind!r}; valid: {', '.join(INPUT_KINDS)}")


def input_law_stats(kind: str, n_0: int) -> predict.InputStats:
  """Exact `predict.InputStats` of the input law (i.i.d. entries, independent examples): N(0, 1) entries
  as `predict.gaussian_input_stats`; U[0, 1] entries from E x = 1/2, E x^2 = 1/3, E x^4 = 1/5:
  S = n/3, R = n/5 + n (n - 1)/9, E x.x' = n/4, E (x.x')^2 = n/9 + n (n - 1)/16, T = n^2/9."""
  if kind == "normal":
    return predict.gaussian_input_stats(n_0)
  if kind == "uniform01":
    n = float(n_0)
    return predict.InputStats(n / 3, n / 5 + n * (n - 1) / 9, n / 4, n / 9 + n * (n - 1) / 16, n * n / 9)
  raise ValueError(f"unknown input kind {kind!r}; valid: {', '.join(INPUT_KINDS)}")


def _problem(key, setup: Setup, batch: int, q, dtype):
  kp, kx, kt = jax.random.split(key, 3)
  params = mlp.init_mlp(kp, setup.widths, SCHEMES[setup.scheme], "zeros", dtype)
  x = sample_inputs(kx, setup.input_kind, batch, setup.widths[0], dtype)
  t = losses.random_targets(kt, setup.loss, batch, setup.widths[-1], dtype)
  return params, x, t


def exact_diagonal(setup: Setup, batch: int, draws: int, key, dtype=jnp.float32,
                   max_bytes: int = hess.DEFAULT_MAX_BYTES):
  """Kronecker-form exact diagonal sq. singular values for `draws` draws of a whole minibatch (vmapped
  while `draws` of them fit in `max_bytes`, else one at a time; one draw beyond it is refused).

  Returns (DiagSqSv with fields (draws, L), output Hessians (draws, batch, n_L, n_L), Q)."""
  _check_setup(setup)
  per_draw = hess.diagonal_bytes(setup.widths, batch, jnp.dtype(dtype).itemsize)
  if per_draw > max_bytes:
    raise ValueError(f"exact_diagonal: one draw at batch {batch} on widths {setup.widths} needs about "
                     f"{per_draw / 2 ** 30:.3g} GiB, but max_bytes is {max_bytes / 2 ** 30:.3g} GiB: lower the "
                     "batch, or use run_setup (pairs of examples), or raise max_bytes")
  kq, kd = jax.random.split(key)
  q = losses.random_quadratic(kq, setup.widths[-1], dtype)

  @jax.jit
  def one(k):
    params, x, t = _problem(k, setup, batch, q, dtype)
    out = mlp.apply_mlp(params, x, "relu")
    return hess.diagonal_sq_sv(setup.loss, params, x, t, q), losses.output_hessians(setup.loss, out, t, q)

  keys = jax.random.split(kd, draws)
  res = jax.vmap(one)(keys) if draws * per_draw <= max_bytes else jax.lax.map(one, keys)
  d, h = res
  return d, h, q


def setup_stats(setup: Setup, key, q, out_hessians, reference: int = 4096):
  """(InputStats from a fresh reference sample of the input law, LossStats of the loss).

  `out_hessians` (draws, B, n_L, n_L): for cross-entropy the pair statistics are taken within each draw
  (examples of one minibatch share the network, hence a common logit offset) and averaged over draws;
  at B = 1 the draws are pooled. A quadratic loss's Hessian is Q for every example."""
  x_ref = sample_inputs(key, setup.input_kind, reference, setup.widths[0], jnp.float32)
  ins = predict.input_stats(x_ref)
  if setup.loss == "quadratic":
    return ins, predict.constant_loss_stats(q)
  h = np.asarray(out_hessians, np.float64)
  if h.shape[1] == 1:
    return ins, predict.loss_stats(h[:, 0])
  per_draw = np.array([predict.loss_stats(hd) for hd in h])
  return ins, predict.LossStats(*per_draw.mean(axis=0))


def _xent_loss_stats(probs_DxExO) -> predict.LossStats:
  """`LossStats` of softmax cross-entropy from probabilities: H = diag(p) - p p^T per example; pair
  statistics within each draw (one network), averaged over draws, as `setup_stats` does."""
  per_draw = []
  for p in np.asarray(probs_DxExO, np.float64):
    h = np.einsum("eo,op->eop", p, np.eye(p.shape[-1])) - p[:, :, None] * p[:, None, :]
    per_draw.append(predict.loss_stats(h))
  return predict.LossStats(*np.mean(np.array(per_draw), axis=0))


class Record(NamedTuple):
  setup: Setup
  batch: int
  exact_w: np.ndarray       # (L,) expectation over draws (control-variate estimate)
  exact_b: np.ndarray
  batch1_w: np.ndarray      # (L,) batch-1 model, s(1) / B
  corrected_w: np.ndarray   # (L,) with cross-example terms
  corrected_b: np.ndarray
  batch1_b: np.ndarray
  leading_w: np.ndarray     # (L,) paper's leading-order nu G form / B (`predict.predict_leading`)
  exact_w_se: np.ndarray    # (L,) standard error of exact_w
  seconds: float
  exact_b_se: np.ndarray | None = None      # (L,) standard error of exact_b
  exact_w_se_plain: np.ndarray | None = None  # (L,) standard error of the plain mean (no control variate)
  draws: int = 0            # draws of (weights, examples) averaged
  examples: int = 0         # examples per draw

  @property
  def rel_se(self) -> np.ndarray:
    """Relative standard error of each weight block's exact value."""
    return np.asarray(self.exact_w_se) / np.asarray(self.exact_w)


def run_setup(setup: Setup, batch: int, draws: int, key, *, examples: int = pairs.DEFAULT_EXAMPLES,
              target_rel_se: float | None = None, max_draws: int | None = None, round_draws: int | None = None,
              max_bytes: int = pairs.DEFAULT_MAX_BYTES, on_round: Callable | None = None) -> tuple[Record, Record]:
  """(batch-1 record, batch-`batch` record) from the same draws of (weights, `examples` examples, targets).

  `draws` draws (rounded up to whole rounds of `round_draws`, default min(draws, 128)); with
  `target_rel_se`, more rounds until every weight block's relative SE at both batch sizes is at most the
  target, or `max_draws` (default 16 x draws) is reached. See `pairs` for why this is unbiased for the
  expectation at any batch size and exactly `diagonal_sq_sv` when `examples` == `batch`.
  `on_round(draws_so_far, max_rel_se)` is called after each round (progress)."""
  _check_setup(setup)
  if batch < 2 or draws < 3:
    raise ValueError(f"run_setup needs batch >= 2 and draws >= 3, got batch={batch}, draws={draws}")
  if target_rel_se is not None and not (0 < target_rel_se < 1):
    raise ValueError(f"target_rel_se must be in (0, 1), got {target_rel_se!r}")
  max_draws = int(max_draws) if max_draws is not None else 16 * draws
  if max_draws < draws:
    raise ValueError(f"max_draws ({max_draws}) must be >= draws ({draws})")
  round_draws = int(round_draws) if round_draws is not None else min(draws, pairs.DEFAULT_ROUND)
  t0 = time.time()
  kd, ki = jax.random.split(key)
  kq, kr = jax.random.split(kd)
  q = losses.random_quadratic(kq, setup.widths[-1], jnp.float32)
  wsq = predict.weight_second_moments(setup.widths, SCHEMES[setup.scheme])
  sampler = pairs.make_sampler(setup.widths, wsq, setup.input_kind, setup.loss, q, examples, round_draws, max_bytes)
  stats, cws, cbs, probs = [], [], [], None
  n = 0
  while True:
    ps = pairs.run_round(sampler, jax.random.fold_in(kr, len(stats)))
    cw, cb = pairs.control_variates(ps, setup.widths, wsq, setup.input_kind)
    stats.append(ps.stats)
    cws.append(cw)
    cbs.append(cb)
    if probs is None and ps.probs is not None:
      probs = ps.probs
    n += round_draws
    st, cw_all = np.concatenate(stats), np.concatenate(cws)
    worst = max(float(np.max(e.stderr / np.abs(e.mean)))
                for e in (pairs.cv_mean(pairs.combine(st, b)[0], cw_all) for b in (1, batch)))
    if on_round is not None:
      on_round(n, worst)
    if n >= draws and (target_rel_se is None or worst <= target_rel_se or n + round_draws > max_draws):
      break
  st, cw_all, cb_all = np.concatenate(stats), np.concatenate(cws), np.concatenate(cbs)
  del ki  # the input statistics are exact (`input_law_stats`), no reference sample
  ins = input_law_stats(setup.input_kind, setup.widths[0])
  ls = predict.constant_loss_stats(q) if setup.loss == "quadratic" else _xent_loss_stats(probs)
  recs = []
  for b in (1, batch):
    vw, vb = pairs.combine(st, b)
    ew, eb = pairs.cv_mean(vw, cw_all), pairs.cv_mean(vb, cb_all)
    p1 = predict.predict_sq_sv(setup.widths, wsq, ins, ls, b, corrected=False)
    pc = predict.predict_sq_sv(setup.widths, wsq, ins, ls, b, corrected=True)
    lead = predict.predict_leading(setup.widths, wsq, ins, ls, b).weight
    recs.append(Record(setup, b, ew.mean, eb.mean, p1.weight, pc.weight, pc.bias, p1.bias, lead, ew.stderr,
                       time.time() - t0, eb.stderr, ew.raw_stderr, n, examples))
  return recs[0], recs[1]


def figure1(num_setups: int = 100, batch: int = 1024, draws: int = 256, seed: int = 0, progress: bool = False,
            on_setup=None, *, examples: int = pairs.DEFAULT_EXAMPLES, target_rel_se: float | None = None,
            max_draws: int | None = None, round_draws: int | None = None,
            done: Mapping[int, tuple] | None = None, on_record: Callable | None = None, workers: int | None = None,
            **sample_kw) -> list[Record]:
  """Records at batch 1 and at `batch` for every sampled setup (see `run_setup` for the draws).

  `done[i] = (r1, rb)`: setups already measured (a resumed run) are taken as they are, not recomputed.
  `on_record(i, r1, rb)` is called as each setup finishes (write it to disk there), `on_setup(records_so_far)`
  too (the older whole-list hook). `progress`: a tqdm bar over setups (stderr). `workers`: setups at once
  (`measure_all`)."""
  setups = sample_setups(num_setups, seed, **sample_kw)
  run = lambda s, on_round: run_setup(s, batch, draws, jax.random.PRNGKey(s.seed), examples=examples,
                                      target_rel_se=target_rel_se, max_draws=max_draws, round_draws=round_draws,
                                      on_round=on_round)
  return measure_all(setups, run, done, on_record, on_setup, "hessian setups" if progress else None, workers)


def default_workers() -> int:
  """Setups measured at once: one per CPU core, at most 4 (each round holds up to `pairs.DEFAULT_MAX_BYTES`)."""
  return max(1, min(os.cpu_count() or 1, 4))


def measure_all(sampled: Sequence, run: Callable, done: Mapping[int, tuple] | None = None,
                on_record: Callable | None = None, on_setup: Callable | None = None,
                progress: str | None = None, workers: int | None = None) -> list:
  """[r1, rb, r1, rb, ...] over `sampled`: `done[i]` as it is (a resumed run), else `run(setup, on_round)`;
  `on_record(i, r1, rb)` as each finishes, `on_setup(records_so_far)` after each (the finished setups' records
  in setup order); `progress`: a tqdm bar's label.

  `workers` setups run at once in threads (default `default_workers()`). Why: a setup is a chain of small
  per-layer programs, each too small to keep every core busy, and each new padded shape is compiled in the
  thread that first meets it; two setups at once overlap one's compilation with the other's compute. JAX
  releases the GIL while compiling and executing. Each setup draws from its own key in its own thread, so the
  records do not depend on `workers` (tested bitwise). The hooks run in this (the calling) thread."""
  done = dict(done or {})
  workers = default_workers() if workers is None else int(workers)
  if workers < 1:
    raise ValueError(f"workers must be >= 1, got {workers}")
  bar = None
  if progress:
    from tqdm.auto import tqdm
    bar = tqdm(total=len(sampled), initial=len(done), desc=progress, unit="setup", dynamic_ncols=True)

  def post(i):
    if bar is None:
      return None
    return lambda n, worst: bar.set_postfix_str(f"setup {i}: {n} draws, max rel SE {worst:.3f}")

  finished = dict(done)
  todo = [i for i in range(len(sampled)) if i not in done]
  try:
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
      futures = {pool.submit(run, sampled[i], post(i)): i for i in todo}
      try:
        for fut in concurrent.futures.as_completed(futures):
          i = futures[fut]
          r1, rb = fut.result()
          finished[i] = (r1, rb)
          if on_record is not None:
            on_record(i, r1, rb)
          if bar is not None:
            bar.update(1)
          if on_setup is not None:
            on_setup([r for j in sorted(finished) for r in finished[j]])
      except BaseException:
        for f in futures:  # a failed setup (or Ctrl-C) cancels the setups still queued
          f.cancel()
        raise
  finally:
    if bar is not None:
      bar.close()
  return [r for i in range(len(sampled)) for r in finished[i]]


def _pct(r: np.ndarray) -> dict:
  r = r[np.isfinite(r)]
  if r.size == 0:
    return {"median": None, "p5": None, "p95": None}
  return {"median": float(np.median(r)), "p5": float(np.percentile(r, 5)), "p95": float(np.percentile(r, 95))}


def noise_removed(log_ratio: np.ndarray, se_log: np.ndarray) -> dict:
  """The spread of log(predicted / exact) with the exact side's measurement noise removed.

  Observed d_i = theta_i + eps_i with Var(eps_i) = se_i^2 (se of log exact = its relative SE, delta
  method). The true spread is tau^2 = Var(d) - mean(se^2) (moment estimator, floored at 0). Quantiles:
  each block's deviation from the median is scaled by sqrt(tau^2 / (tau^2 + se_i^2)) so that every
  adjusted value has variance tau^2 (constrained Bayes, Louis 1984; plain shrinkage would understate the
  spread), and p5 / median / p95 are read off the adjusted values. Returns ratios (exp of logs)."""
  ok = np.isfinite(log_ratio) & np.isfinite(se_log)
  d, se = log_ratio[ok], se_log[ok]
  if d.size < 2:
    return {"median_nr": None, "p5_nr": None, "p95_nr": None, "sd_log": None, "sd_log_nr": None,
            "noise_var_log": None}
  var_obs, noise = float(np.var(d, ddof=1)), float(np.mean(se * se))
  tau2 = max(var_obs - noise, 0.0)
  m = float(np.median(d))
  adj = m + (d - m) * np.sqrt(tau2 / (tau2 + se * se)) if tau2 > 0 else np.full_like(d, m)
  return {"median_nr": float(np.exp(np.median(adj))), "p5_nr": float(np.exp(np.percentile(adj, 5))),
          "p95_nr": float(np.exp(np.percentile(adj, 95))), "sd_log": math.sqrt(var_obs), "sd_log_nr": math.sqrt(tau2),
          "noise_var_log": noise}


def median_ci(groups: Sequence[np.ndarray], reps: int = 2000, seed: int = 0) -> list:
  """95% percentile-bootstrap CI of the pooled median, resampling setups (blocks of one setup share its
  draws and its prediction, so setups are the independent units)."""
  rng = np.random.default_rng(seed)
  groups = [g[np.isfinite(g)] for g in groups]
  groups = [g for g in groups if g.size]
  if len(groups) < 2:
    return [None, None]
  meds = [np.median(np.concatenate([groups[j] for j in rng.integers(0, len(groups), len(groups))]))
          for _ in range(reps)]
  return [float(np.percentile(meds, 2.5)), float(np.percentile(meds, 97.5))]


def summarize(recs: Sequence[Record], target_rel_se: float = 0.05) -> dict:
  """Per batch size: median / p5 / p95 of predicted / exact over all weight blocks of all setups, for the
  batch-1 model (`median`...), the corrected prediction (`*_corrected`), the paper's leading-order form
  (`*_leading`) and bias blocks (`*_bias_corrected`); for the corrected prediction also the median's 95%
  CI (`median_corrected_ci95`) and the spread with the measurement noise removed (`*_corrected_nr`,
  `sd_log_corrected` raw and `sd_log_corrected_nr`; see `noise_removed`); the exact side's relative SE
  (`median_exact_rel_stderr`, `max_exact_rel_stderr`) and how many setups have every weight block's
  relative SE at most `target_rel_se` (`setups_within_target`)."""
  out = {}
  for b in sorted({r.batch for r in recs}):
    rs = [r for r in recs if r.batch == b]
    cat = lambda f: np.concatenate([f(r) for r in rs])
    p1 = _pct(cat(lambda r: r.batch1_w / r.exact_w))
    pc = _pct(cat(lambda r: r.corrected_w / r.exact_w))
    pl = _pct(cat(lambda r: r.leading_w / r.exact_w))
    pb = _pct(cat(lambda r: r.corrected_b / r.exact_b))
    entry = dict(p1)
    entry.update({f"{k}_corrected": v for k, v in pc.items()})
    entry.update({f"{k}_leading": v for k, v in pl.items()})
    entry.update({f"{k}_bias_corrected": v for k, v in pb.items()})
    with np.errstate(divide="ignore", invalid="ignore"):
      rel_se = cat(lambda r: r.exact_w_se / r.exact_w)
      log_r = cat(lambda r: np.log(r.corrected_w / r.exact_w))
      entry["median_corrected_ci95"] = median_ci([r.corrected_w / r.exact_w for r in rs])
    nr = noise_removed(log_r, rel_se)
    entry.update(median_corrected_nr=nr["median_nr"], p5_corrected_nr=nr["p5_nr"], p95_corrected_nr=nr["p95_nr"],
                 sd_log_corrected=nr["sd_log"], sd_log_corrected_nr=nr["sd_log_nr"],
                 noise_var_log_corrected=nr["noise_var_log"])
    finite = np.isfinite(rel_se)
    entry["median_exact_rel_stderr"] = float(np.median(rel_se[finite])) if finite.any() else None
    entry["max_exact_rel_stderr"] = float(np.max(rel_se[finite])) if finite.any() else None
    entry["setups_within_target"] = int(sum(bool(np.all(r.rel_se <= target_rel_se)) for r in rs))
    entry["target_rel_se"] = target_rel_se
    entry["blocks"] = int(sum(len(r.exact_w) for r in rs))
    entry["setups"] = len(rs)
    entry["draws_median"] = float(np.median([r.draws for r in rs]))
    out[str(b)] = entry
  return {"batch_sizes": out}


def records_json(recs: Sequence[Record]) -> list[dict]:
  """`recs` as JSON-ready dicts, one per record (what `figures.ratio_histogram` plots)."""
  opt = lambda a: None if a is None else np.asarray(a).tolist()
  return [{"widths": list(r.setup.widths), "scheme": r.setup.scheme, "loss": r.setup.loss,
           "input": r.setup.input_kind, "seed": r.setup.seed, "batch": r.batch,
           "exact_w": r.exact_w.tolist(), "exact_w_se": r.exact_w_se.tolist(), "batch1_w": r.batch1_w.tolist(),
           "corrected_w": r.corrected_w.tolist(), "leading_w": r.leading_w.tolist(), "exact_b": r.exact_b.tolist(),
           "corrected_b": r.corrected_b.tolist(), "batch1_b": r.batch1_b.tolist(), "exact_b_se": opt(r.exact_b_se),
           "exact_w_se_plain": opt(r.exact_w_se_plain), "exact_w_rel_se_max": float(np.max(r.rel_se)),
           "draws": r.draws, "examples": r.examples, "seconds": r.seconds} for r in recs]


def record_from_json(d: Mapping) -> Record:
  """Inverse of one `records_json` entry (resuming a run from its per-setup files)."""
  arr = lambda k: None if d.get(k) is None else np.asarray(d[k], np.float64)
  setup = Setup(tuple(d["widths"]), d["scheme"], d["loss"], d["input"], int(d["seed"]))
  return Record(setup, int(d["batch"]), arr("exact_w"), arr("exact_b"), arr("batch1_w"), arr("corrected_w"),
                arr("corrected_b"), arr("batch1_b"), arr("leading_w"), arr("exact_w_se"), float(d["seconds"]),
                arr("exact_b_se"), arr("exact_w_se_plain"), int(d.get("draws", 0)), int(d.get("examples", 0)))

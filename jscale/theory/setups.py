"""Figure 1's sampled setups: what a setup is, its exact diagonal blocks, its prediction, and the summary.

A `Setup` is (widths, init scheme, loss, input law, seed); `sample_setups` draws them as the paper's
Figure 1 does (depth 3-6, widths 8-128 log-uniform, scheme / loss / input uniform). `run_setup` gives
the predicted / exact average squared singular value of every diagonal block at batch 1 and at a
minibatch, `figure1` does it for every sampled setup and `summarize` pools the ratios. The prediction
is `jscale.theory.predict` (derivation in docs/calculus.md; the paper is cited in docs/sources.md).

"Exact" is `hessian.diagonal_sq_sv`, the Kronecker form of the diagonal blocks that the Gauss-Newton
identity makes exact for ReLU nets (tested against `jax.hessian` in tests/test_theory_*.py); forming
the blocks with `jax.hessian` at width 128 and batch 1024 would cost ~1 GiB per block and minutes per
setup on a laptop CPU. Each setup's exact value is the mean over `draws` independent draws of
(weights, inputs, targets), since the prediction is an expectation; the batch-1 value is each example's
own Hessian (the b = b' terms) averaged over all draws x examples of the same run. Narrow layers (width
8-16) make the exact value heavy-tailed over weight draws (relative standard error ~30% at 4 draws), and
they account for most of the spread of the ratio; `summarize` reports the median relative standard error.
"""
from __future__ import annotations

import math
import time
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jscale import initializers, mlp
from jscale.theory import hessian as hess
from jscale.theory import losses, predict

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


def _problem(key, setup: Setup, batch: int, q, dtype):
  kp, kx, kt = jax.random.split(key, 3)
  params = mlp.init_mlp(kp, setup.widths, SCHEMES[setup.scheme], "zeros", dtype)
  x = sample_inputs(kx, setup.input_kind, batch, setup.widths[0], dtype)
  t = losses.random_targets(kt, setup.loss, batch, setup.widths[-1], dtype)
  return params, x, t


def exact_diagonal(setup: Setup, batch: int, draws: int, key, dtype=jnp.float32):
  """Kronecker-form exact diagonal sq. singular values for `draws` draws (vmapped).

  Returns (DiagSqSv with fields (draws, L), output Hessians (draws, batch, n_L, n_L), Q)."""
  _check_setup(setup)
  kq, kd = jax.random.split(key)
  q = losses.random_quadratic(kq, setup.widths[-1], dtype)

  @jax.jit
  def one(k):
    params, x, t = _problem(k, setup, batch, q, dtype)
    out = mlp.apply_mlp(params, x, "relu")
    return hess.diagonal_sq_sv(setup.loss, params, x, t, q), losses.output_hessians(setup.loss, out, t, q)

  res = jax.lax.map(one, jax.random.split(kd, draws)) if batch * max(setup.widths) ** 2 > 2 ** 22 else \
      jax.vmap(one)(jax.random.split(kd, draws))
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


class Record(NamedTuple):
  setup: Setup
  batch: int
  exact_w: np.ndarray       # (L,) mean over draws
  exact_b: np.ndarray
  batch1_w: np.ndarray      # (L,) batch-1 model, s(1) / B
  corrected_w: np.ndarray   # (L,) with cross-example terms
  corrected_b: np.ndarray
  batch1_b: np.ndarray
  leading_w: np.ndarray     # (L,) paper's leading-order nu G form / B (`predict.predict_leading`)
  exact_w_se: np.ndarray    # (L,) standard error of exact_w over the draws
  seconds: float


def run_setup(setup: Setup, batch: int, draws: int, key) -> tuple[Record, Record]:
  """(batch-1 record, batch-`batch` record) from the same `draws` draws of (weights, inputs, targets).

  The batch-1 exact value is the mean over all draws and examples of each example's own Hessian
  (x_b x_b^T kron M_b: the b = b' terms of the minibatch sum), so one pass serves both batch sizes."""
  if batch < 2 or draws < 2:
    raise ValueError(f"run_setup needs batch >= 2 and draws >= 2, got batch={batch}, draws={draws}")
  t0 = time.time()
  kd, ki = jax.random.split(key)
  d, h, q = exact_diagonal(setup, batch, draws, kd)
  ins, ls = setup_stats(setup, ki, q, h)
  wsq = predict.weight_second_moments(setup.widths, SCHEMES[setup.scheme])
  mean = lambda a: np.asarray(jnp.mean(a, axis=0), np.float64)
  se = lambda a: np.asarray(jnp.std(a, axis=0, ddof=1), np.float64) / math.sqrt(draws)
  recs = []
  for b, ew, eb in ((1, d.weight_batch1, d.bias_batch1), (batch, d.weight, d.bias)):
    p1 = predict.predict_sq_sv(setup.widths, wsq, ins, ls, b, corrected=False)
    pc = predict.predict_sq_sv(setup.widths, wsq, ins, ls, b, corrected=True)
    lead = predict.predict_leading(setup.widths, wsq, ins, ls, b).weight
    recs.append(Record(setup, b, mean(ew), mean(eb), p1.weight, pc.weight, pc.bias, p1.bias, lead, se(ew),
                       time.time() - t0))
  return recs[0], recs[1]


def figure1(num_setups: int = 100, batch: int = 1024, draws: int = 8, seed: int = 0, progress: bool = False,
            on_setup=None, **sample_kw) -> list[Record]:
  """Records at batch 1 and at `batch` for every sampled setup (`draws` draws each; see `run_setup`).
  `on_setup(records_so_far)` is called after each setup (checkpointing long runs)."""
  setups = sample_setups(num_setups, seed, **sample_kw)
  recs = []
  t0 = time.time()
  for i, s in enumerate(setups):
    r1, rb = run_setup(s, batch, draws, jax.random.PRNGKey(s.seed))
    recs += [r1, rb]
    if on_setup is not None:
      on_setup(recs)
    if progress:
      print(f"[{i + 1}/{len(setups)}] {s.scheme} {s.loss} {s.input_kind} {s.widths} "
            f"B=1 ratio={np.round(r1.corrected_w / r1.exact_w, 2)} B={batch} "
            f"batch1-model={np.round(rb.batch1_w / rb.exact_w, 3)} corrected={np.round(rb.corrected_w / rb.exact_w, 2)} "
            f"{rb.seconds:.1f}s (total {time.time() - t0:.0f}s)", flush=True)
  return recs


def _pct(r: np.ndarray) -> dict:
  r = r[np.isfinite(r)]
  if r.size == 0:
    return {"median": None, "p5": None, "p95": None}
  return {"median": float(np.median(r)), "p5": float(np.percentile(r, 5)), "p95": float(np.percentile(r, 95))}


def summarize(recs: Sequence[Record]) -> dict:
  """Per batch size: median / p5 / p95 of predicted / exact over all weight blocks of all setups, for the
  batch-1 model (`median`...), the corrected prediction (`*_corrected`), the paper's leading-order form
  (`*_leading`) and bias blocks (`*_bias_corrected`)."""
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
    rel_se = cat(lambda r: r.exact_w_se / r.exact_w)
    entry["median_exact_rel_stderr"] = float(np.nanmedian(rel_se)) if np.isfinite(rel_se).any() else None
    entry["blocks"] = int(sum(len(r.exact_w) for r in rs))
    entry["setups"] = len(rs)
    out[str(b)] = entry
  return {"batch_sizes": out}


def records_json(recs: Sequence[Record]) -> list[dict]:
  """`recs` as JSON-ready dicts, one per record (what `figures.ratio_histogram` plots)."""
  return [{"widths": list(r.setup.widths), "scheme": r.setup.scheme, "loss": r.setup.loss,
           "input": r.setup.input_kind, "seed": r.setup.seed, "batch": r.batch,
           "exact_w": r.exact_w.tolist(), "exact_w_se": r.exact_w_se.tolist(), "batch1_w": r.batch1_w.tolist(),
           "corrected_w": r.corrected_w.tolist(), "leading_w": r.leading_w.tolist(), "exact_b": r.exact_b.tolist(),
           "corrected_b": r.corrected_b.tolist(),
           "seconds": r.seconds} for r in recs]

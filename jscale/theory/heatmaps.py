"""Per-scheme Hessian blocks on fixed networks: Figure 2's exact block heat maps (`heatmaps`, on
FIG2_WIDTHS, by `jax.hessian`) and the 784-300-100-10 diagonal by the matrix-free Hutchinson estimator
(`large_diagonal`, on MNIST_WIDTHS), each beside the prediction. Setups, problems and input / loss
statistics come from `setups`; every scheme of a call sees the same keys.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jscale import mlp
from jscale.theory import hessian as hess
from jscale.theory import hutchinson, losses, predict
from jscale.theory.setups import SCHEMES, Setup, _check_setup, _problem, setup_stats

# Figure 2: exact block heat maps per scheme on a fixed small network.

FIG2_WIDTHS = (24, 96, 12, 48, 8)


def _bar(total, desc, progress):
  if not progress:
    return None
  from tqdm.auto import tqdm
  return tqdm(total=total, desc=desc, dynamic_ncols=True)


def heatmaps(widths=FIG2_WIDTHS, schemes=tuple(SCHEMES), batch: int = 1, draws: int = 8, seed: int = 0,
             loss: str = "quadratic", input_kind: str = "normal", max_bytes: int = hess.DEFAULT_MAX_BYTES,
             progress: bool = False) -> dict:
  """Mean over `draws` of the exact (jax.hessian, float32) weight-block sq.-singular-value matrix (L x L)
  and bias diagonal, per scheme; plus the predicted diagonal. Same draws (keys) for every scheme.
  Refuses (ValueError with the estimate) before any compute when the Hessian would exceed `max_bytes`."""
  for scheme in schemes:
    _check_setup(Setup(tuple(widths), scheme, loss, input_kind, seed))
  if draws < 1 or batch < 1:
    raise ValueError(f"heatmaps needs draws >= 1 and batch >= 1, got draws={draws}, batch={batch}")
  n_params = sum(a * b + b for a, b in zip(widths[:-1], widths[1:]))
  hess.check_memory(f"the exact Hessian of widths {tuple(widths)} ({n_params} parameters)", 4 * n_params ** 2,
                    max_bytes, "use smaller widths, or raise max_bytes")
  bar = _bar(len(schemes) * draws, f"heat maps B={batch}", progress)
  lossfn = losses.make_loss(loss)
  # One program for every scheme and draw (the shapes are the same; the scheme only scales the weights):
  # jax.hessian of this net takes XLA:CPU seconds to compile. The P x P Hessian stays inside it; only the
  # block matrix comes out.
  sq_sv_fn = jax.jit(lambda p, x, t, q: hess.sq_sv_matrix(hess.blocks(
      hess.hessian(lossfn, p, x, t, q, max_bytes=max_bytes), p)))
  out = {}
  for scheme in schemes:
    setup = Setup(tuple(widths), scheme, loss, input_kind, seed)
    key = jax.random.PRNGKey(seed)
    kq, kd, ki = jax.random.split(key, 3)
    q = losses.random_quadratic(kq, widths[-1])
    mats, bias, hs = [], [], []
    for k in jax.random.split(kd, draws):
      params, x, t = _problem(k, setup, batch, q, jnp.float32)
      sw, sb = hess.split_sq_sv(np.asarray(sq_sv_fn(params, x, t, q)), params)
      mats.append(np.asarray(sw))
      bias.append(np.diag(np.asarray(sb)))
      hs.append(np.asarray(losses.output_hessians(loss, mlp.apply_mlp(params, x), t, q)))
      if bar is not None:
        bar.update(1)
    ins, ls = setup_stats(setup, ki, q, np.stack(hs))
    wsq = predict.weight_second_moments(widths, SCHEMES[scheme])
    pred = predict.predict_sq_sv(widths, wsq, ins, ls, batch)
    m = np.mean(mats, axis=0)
    diag = np.diag(m)
    out[scheme] = {"weights": m.tolist(), "bias_diag": np.mean(bias, axis=0).tolist(), "diag": diag.tolist(),
                   "diag_max_over_min": float(diag.max() / diag.min()),
                   "predicted_diag": pred.weight.tolist(),
                   "predicted_max_over_min": float(pred.weight.max() / pred.weight.min())}
  if bar is not None:
    bar.close()
  return out


# ---------------------------------------------------------------------------------------------------
# The 784-300-100-10 diagonal, matrix-free.

MNIST_WIDTHS = (784, 300, 100, 10)


def large_diagonal(widths=MNIST_WIDTHS, schemes=tuple(SCHEMES), batch: int = 128, num_probes: int = 64,
                   seed: int = 0, loss: str = "xent", input_kind: str = "uniform01", kron: bool = True,
                   max_bytes: int = hess.DEFAULT_MAX_BYTES, progress: bool = False) -> dict:
  """Hutchinson (matrix-free) diagonal per scheme, with the Kronecker-form exact value (`kron`) and the
  prediction. One draw per scheme (same keys for every scheme). Refuses (ValueError with the estimate)
  before any compute when the probes or the Kronecker form would exceed `max_bytes`."""
  for scheme in schemes:
    _check_setup(Setup(tuple(widths), scheme, loss, input_kind, seed))
  hess.check_memory(f"Hutchinson with {num_probes} probes at batch {batch} on widths {tuple(widths)}",
                    hutchinson.probe_bytes(widths, batch, num_probes), max_bytes,
                    "use fewer probes or a smaller batch, or raise max_bytes")
  if kron:
    hess.check_memory(f"the Kronecker-form diagonal at batch {batch} on widths {tuple(widths)}",
                      hess.diagonal_bytes(widths, batch), max_bytes, "pass kron=False, or raise max_bytes")
  bar = _bar(len(schemes), "Hutchinson diagonal", progress)
  out = {}
  for scheme in schemes:
    setup = Setup(tuple(widths), scheme, loss, input_kind, seed)
    kq, kd, ki, kh = jax.random.split(jax.random.PRNGKey(seed), 4)
    q = losses.random_quadratic(kq, widths[-1])
    params, x, t = _problem(kd, setup, batch, q, jnp.float32)
    lossfn = losses.make_loss(loss)
    est_w, est_b = jax.jit(lambda p, a, k: hutchinson.diagonal(lossfn, p, a, k, num_probes))(params, (x, t, q), kh)
    h = losses.output_hessians(loss, mlp.apply_mlp(params, x), t, q)
    ins, ls = setup_stats(setup, ki, q, h[None])
    wsq = predict.weight_second_moments(widths, SCHEMES[scheme])
    pc = predict.predict_sq_sv(widths, wsq, ins, ls, batch)
    p1 = predict.predict_sq_sv(widths, wsq, ins, ls, batch, corrected=False)
    rec = {"hutchinson": np.asarray(est_w.mean).tolist(), "hutchinson_stderr": np.asarray(est_w.stderr).tolist(),
           "predicted_corrected": pc.weight.tolist(), "predicted_batch1": p1.weight.tolist()}
    if kron:
      kron_fn = jax.jit(hess.diagonal_sq_sv, static_argnums=0)
      rec["exact_kron"] = np.asarray(kron_fn(loss, params, x, t, q).weight).tolist()
    hw = np.asarray(est_w.mean)
    rec["hutchinson_max_over_min"] = float(hw.max() / hw.min())
    out[scheme] = rec
    if bar is not None:
      bar.update(1)
  if bar is not None:
    bar.close()
  return out

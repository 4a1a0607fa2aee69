"""The 784-300-100-10 diagonal per init scheme, matrix-free: Hutchinson estimates (`jscale.theory.hutchinson`)
beside the Kronecker-form exact value and the prediction (`scripts/hessian_figures.py mnist`). Every scheme
sees the same keys.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jscale import mlp
from jscale.experiments.hessian.heatmaps import draws_loss_stats
from jscale.experiments.hessian.mlp_family import MLPSetup, check_setup, problem, reference_input_stats
from jscale.initializers import SCHEMES
from jscale.theory import hessian as hess
from jscale.theory import hutchinson, losses, predict

MNIST_WIDTHS = (784, 300, 100, 10)


def large_diagonal(widths=MNIST_WIDTHS, schemes=tuple(SCHEMES), *, batch: int = 128, num_probes: int = 64,
                   seed: int = 0, loss: str = "xent", input_kind: str = "uniform01", kron: bool = True,
                   max_bytes: int = hess.DEFAULT_MAX_BYTES, progress: bool = False) -> dict:
  """Hutchinson (matrix-free) diagonal per scheme, with the Kronecker-form exact value (`kron`) and the
  prediction. One draw per scheme (same keys for every scheme). Refuses (ValueError with the estimate)
  before any compute when the probes or the Kronecker form would exceed `max_bytes`."""
  for scheme in schemes:
    check_setup(MLPSetup(tuple(widths), scheme, loss, input_kind, seed))
  hess.check_memory(f"Hutchinson with {num_probes} probes at batch {batch} on widths {tuple(widths)}",
                    hutchinson.probe_bytes(widths, batch, num_probes), max_bytes,
                    "use fewer probes or a smaller batch, or raise max_bytes")
  if kron:
    hess.check_memory(f"the Kronecker-form diagonal at batch {batch} on widths {tuple(widths)}",
                      hess.diagonal_bytes(widths, batch), max_bytes, "pass kron=False, or raise max_bytes")
  bar = None
  if progress:
    from tqdm.auto import tqdm
    bar = tqdm(total=len(schemes), desc="Hutchinson diagonal", dynamic_ncols=True)
  out = {}
  for scheme in schemes:
    setup = MLPSetup(tuple(widths), scheme, loss, input_kind, seed)
    kq, kd, ki, kh = jax.random.split(jax.random.PRNGKey(seed), 4)
    q = losses.random_quadratic(kq, widths[-1])
    params, x, t = problem(kd, setup, batch, jnp.float32)
    lossfn = losses.make_loss(loss)
    est_w, _ = jax.jit(lambda p, a, k: hutchinson.diagonal(lossfn, p, a, k, num_probes))(params, (x, t, q), kh)
    h = losses.output_hessians(loss, mlp.apply_mlp(params, x), t, q)
    ins, ls = reference_input_stats(ki, input_kind, widths[0]), draws_loss_stats(loss, q, h[None])
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

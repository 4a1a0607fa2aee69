"""The attention branch's backward at the draw's own projections and carried gradient (attention_own.py)."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jscale.calculus import attention_own


def test_factors_match_autodiff():
  """The model's backward factors against jax autodiff of the same attention (float64, written apart: the
  kernels' per-example gradients sum_t x_t (x) dQ_t taken by jax.grad of the projections themselves)."""
  rng = np.random.default_rng(0)
  n, T, d_in, H, d = 6, 5, 8, 2, 3
  xs = rng.standard_normal((n, T, d_in))
  projs = [(rng.standard_normal((d_in, H, d)) / math.sqrt(d_in), 0.1 * rng.standard_normal((H, d)))
           for _ in range(3)]
  G = rng.standard_normal((n, T, H, d))
  scale = 1 / math.sqrt(d)
  got = attention_own.factors(attention_own.forward(xs, *projs, scale), G, scale)

  with jax.enable_x64(True):
    def out(ws, x):   # one example: (T, d_in) -> (T, H, d)
      Q, K, V = (x @ w.reshape(d_in, -1) + b.reshape(-1) for w, (_, b) in zip(ws, projs))
      Q, K, V = (a.reshape(T, H, d) for a in (Q, K, V))
      P = jax.nn.softmax(scale * jnp.einsum("qhd,khd->hqk", Q, K), axis=-1)
      return jnp.einsum("hqk,khd->qhd", P, V)

    ws = [jnp.asarray(J) for J, _ in projs]
    grads = [jax.grad(lambda w, x, g: jnp.sum(out(w, x) * g))(ws, jnp.asarray(x), jnp.asarray(g))
             for x, g in zip(xs, G)]
    # E[dQ^2] from the kernel gradient's definition: the projection outputs' gradients by vjp
    dys = []
    for x, g in zip(xs, G):
      Qkv = [jnp.asarray(x) @ w.reshape(d_in, -1) + b.reshape(-1) for w, (_, b) in zip(ws, projs)]

      def f(q, k, v):
        q, k, v = (a.reshape(T, H, d) for a in (q, k, v))
        P = jax.nn.softmax(scale * jnp.einsum("qhd,khd->hqk", q, k), axis=-1)
        return jnp.einsum("hqk,khd->qhd", P, v)
      _, vjp = jax.vjp(f, *Qkv)
      dys.append([np.asarray(c) for c in vjp(jnp.asarray(g))])
  g_sq = float(np.mean(G * G))
  x_sq = float(np.mean(np.sum(xs * xs, -1)))
  for i, (sq, pf) in enumerate(((got.dq, got.pf_q), (got.dk, got.pf_k), (got.dv, got.pf_v))):
    dy = np.stack([dy[i] for dy in dys])                    # (n, T, H d)
    d_sq = float(np.mean(dy * dy))
    w_sq = float(np.mean([np.sum(np.square(np.asarray(gr[i]))) for gr in grads]))
    np.testing.assert_allclose(sq, d_sq / g_sq, rtol=1e-9)
    np.testing.assert_allclose(pf, w_sq / (T * x_sq * d_sq * H * d), rtol=1e-9)

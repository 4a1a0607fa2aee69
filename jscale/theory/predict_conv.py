r"""The calculus's prediction of a strided LeNet's diagonal Hessian blocks, conv and dense (`predict_lenet`).

[Derived, leading order in width; the paper's Proposition 4 extended to stride = kernel convolutions and to a
minibatch.] Write a conv layer's input as patches x_{b,p} (k n_l entries, one per output position p, disjoint
for stride = kernel) and V_{b,p} = A_b d out_b / d y_{b,p} (n_L x n_{l+1}) (the Gauss-Newton factors of
`hessian.py` per position). Then U_b U_b'^T = sum_{p,p'} (x_{b,p} . x_{b',p'}) V_{b,p} V_{b',p'}^T and ||.||_F^2
is a sum over four positions (p, p', q, q'). The backward factors of distinct positions go through independent zero-mean
weight slices somewhere above (other taps of the next conv, other rows of the first dense layer), so in
expectation only pairings of the positions survive (Wick). The pairing {p = q, p' = q'} sums to
(x_b . x_b')^2 <V V^T, V V^T>-terms over the WHOLE layer input x_b (the patches tile it); the other two carry
<M_pp, M_qq> or tr((V_p V_q^T)^2) of two different positions, smaller by O(n_L / n_{l+1}) per pair, the order the
paper also leaves out. At leading order V_{b,p} V_{b,p}^T ~ (n_{l+1} E[dy_l^2]) A_b A_b^T / (tr H / n_L), hence
with S_l = E||x_l||^2 (the whole input) and E[dy_l^2] from the calculus (`calculus.predict` on the LeNet's
Conv / Act / Flatten / Linear list; dy_out^2 = sqrt(E (tr H)^2) / n_L):
    s_l(1) = S_l^2 (n_{l+1} E[dy_l^2])^2 sh / (k n_l n_{l+1}),          sh = E tr(H^2) / E (tr H)^2,
    s_l(B) = [R_l / B + (1 - 1/B) P_l m_l c] (n_{l+1} E[dy_l^2])^2 sh / (k n_l n_{l+1}),
with R_l = E||x_l||^4, P_l = E(x_b . x_b')^2 (exact input statistics at l = 0; S_l^2 and (r_l S_l)^2 above, r_l
the calculus's correlation between two examples' entries, `calculus.relu_corr`), c = E tr(H_b H_b') /
E tr(H_b^2), and m_l = prod_{l <= k < L-1} (1 - theta_k / pi)^2, theta_k = arccos r_k: the squared fraction of
units active in both examples relative to one (4 P(both > 0)^2 per ReLU; the MLP recursion's e2 / h2 at leading
order). Biases: rho_{l+1}^2 (n_{l+1} E[dy_l^2])^2 sh [1/B + (1 - 1/B) m_l c] / n_{l+1}. A dense layer is the case
k = rho = 1 (`predict.predict_leading` at batch 1, up to R_0 for S_0^2 at the input layer).
Where it is approximate: (1) leading order in width: E||x||^4 = S^2 (1 + O(1/n)) per ReLU layer, the O(n_L / n)
parts of E tr(M^2) and the two dropped pairings (`predict.predict_sq_sv` keeps the first two for MLPs; no such
full-order recursion exists here yet: it needs the backward moments of pairs of positions by the level where
their paths meet); (2) forward and backward quantities independent (the calculus's A3); (3) Gaussian weights.
Measured on 10 sampled LeNets (hessian experiment, full grid): predicted / exact median 0.39 at batch 1 (every
layer under-predicted, 0.31 conv0 to 0.48 last layer, where the one approximation is R = S^2); at batch 1024 the
dropped cross-position pairings dominate the convs (conv0 0.005, conv1 0.04, dense layers 0.19-0.58).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from jscale import calculus, checks, initializers
from jscale.models import lenet as lenet_lib
from jscale.theory import predict


def weight_layers(config: lenet_lib.LeNetConfig) -> list[str]:
  """The weight layers' names in order: conv0, conv1, ..., dense0, dense1, ..."""
  return list(config.check().kernel_shapes())


def weight_sq(config: lenet_lib.LeNetConfig, init) -> list[float]:
  """E[W^2] of every weight layer (one spec, or one per layer), from the initializers' own moments."""
  shapes = config.check().kernel_shapes()
  specs = list(init) if isinstance(init, (list, tuple)) else [init] * len(shapes)
  if len(specs) != len(shapes):
    raise ValueError(f"init: got {len(specs)} entries for {len(shapes)} weight layers")
  return [float(initializers.get(spec).second_moment(s)) for spec, s in zip(specs, shapes.values())]


def image_input_stats(config: lenet_lib.LeNetConfig) -> predict.InputStats:
  """Statistics of one N(0, 1) image, flattened (exact)."""
  return predict.gaussian_input_stats(int(np.prod(config.image)))


def calculus_layers(config: lenet_lib.LeNetConfig, wsq: Sequence[float]) -> tuple:
  """The LeNet as a `jscale.calculus` layer list (Conv stride = kernel, ReLU, AvgPool, Flatten, Linear) with fixed
  E[W^2]."""
  config.check()
  layers, i = [], 0
  for n, k, q in zip(config.channels, config.kernels, config.pool_windows()):
    layers += [calculus.Conv(int(n), tuple(k), weight_sq=wsq[i]), calculus.Act("relu")]
    layers += [calculus.AvgPool((q, q))] if q > 1 else []
    i += 1
  layers.append(calculus.Flatten())
  for n in config.hidden:
    layers += [calculus.Linear(int(n), weight_sq=wsq[i]), calculus.Act("relu")]
    i += 1
  layers.append(calculus.Linear(int(config.n_out), weight_sq=wsq[i]))
  return tuple(layers)


def predict_lenet(config: lenet_lib.LeNetConfig, wsq: Sequence[float], inputs: predict.InputStats,
                  loss: predict.LossStats, batch_size: int = 1, *, corrected: bool = True) -> predict.BlockPrediction:
  """Leading-order prediction of every weight layer's diagonal-block average squared singular value (weight
  and bias, shape (L,)) at minibatch `batch_size` (module docstring). `inputs`: statistics of the whole
  flattened image; `corrected=False` drops the cross-example term (the batch-1 model s(1) / B)."""
  checks.positive_int(batch_size, "batch_size")
  if len(wsq) != len(weight_layers(config)) or any(not (w > 0 and math.isfinite(w)) for w in wsq):
    raise ValueError(f"wsq must hold one finite E[W^2] > 0 per weight layer, got {list(wsq)}")
  h, w, c = config.image
  n0 = h * w * c
  r0 = inputs.dot / inputs.sq_norm
  pred = calculus.predict(calculus_layers(config, wsq), c, (h, w), x0_sq=inputs.sq_norm / n0,
                          dy_out_sq=math.sqrt(loss.trace_sq) / config.n_out, x0_corr=min(max(r0, -1.0), 1.0))
  x_sq, dy_sq = np.asarray(pred.moments.x_sq, np.float64), np.asarray(pred.moments.dy_sq, np.float64)
  L = len(wsq)
  r = [r0]
  for _ in range(L - 1):
    r.append(calculus.relu_corr(r[-1]))
  theta = np.arccos(np.clip(r, -1.0, 1.0))
  frac = (1 - theta / math.pi) ** 2  # 4 P(both active)^2 for the ReLU after layer l
  mask = np.array([np.prod(frac[l:L - 1]) for l in range(L)])
  sh = loss.tr_sq / loss.trace_sq
  cross_h = loss.tr_cross / loss.tr_sq
  inv_b = 1.0 / batch_size
  cross = (1.0 - inv_b) if corrected else 0.0
  wt, bs = [], []
  for l, info in enumerate(pred.layers):
    s = info.rho_in * info.n_in * x_sq[l]
    big_r, big_p = (inputs.sq_norm_sq, inputs.dot_sq) if l == 0 else (s * s, (r[l] * s) ** 2)
    back = (info.n_out * dy_sq[l]) ** 2 * sh
    wt.append((big_r * inv_b + cross * big_p * mask[l] * cross_h) * back / (info.k * info.n_in * info.n_out))
    bs.append(info.rho_out ** 2 * back * (inv_b + cross * mask[l] * cross_h) / info.n_out)
  return predict.BlockPrediction(np.array(wt), np.array(bs))

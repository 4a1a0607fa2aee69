"""What one optimizer step does to a ReLU MLP's activations, predicted before it is taken (docs/calculus.md,
"Prescription", *After the first step*). **[derived, beyond the paper]**

After one step each layer's activation h (post-ReLU; the logits z at the top) becomes h + dh, so per example

    E|h_1|^2 = E|h_0|^2 + 2 E[h_0 . dh] + E|dh|^2,

with dh to first order in the update. The prediction is the infinite-width one, example by example on the
given minibatch: the calculus's second moments become kernels between examples (the arc-cosine map of the
ReLU, the same map the calculus's correlation rule uses), and the first-order change of layer l is a kernel
regression on the loss gradient,

    dh_l,a = -(1/B) sum_b Theta_l(a, b) (mask_l,a * mask_l,b * gamma_l,b)     (the per-layer NTK, `ntk`)
    Theta_l = eta_l X_l + fan_in_l E[W_l^2] f_l-1 * Theta_l-1,

X_l the kernel of layer l's input, f the share of units active for both examples, gamma_l,b the loss gradient
at h_l. Three facts close it:
  - the logits at init are a Gaussian process with the calculus's kernel, so E[g_b . g_c] and E[z_b . g_b]
    (g = softmax - one-hot) are expectations over Gaussian logits (`logit_moments`);
  - the cross term: for a bias-free ReLU net h_l . gamma_l = z . g exactly (positive homogeneity), and for two
    examples the forward vector is seen by the backward one only through its regression on h_l,b:
    E[h_l,a . mask_l,b gamma_l,b] = K_l(a, b) / K_l(b, b) E[z_b . g_b] (`cross_term`). Because E[z . g] > 0
    at init, the first step shrinks every layer's activations before it grows them;
  - Adam's first step is lr sign(grad) per entry; for a Gaussian entry sign(G) = sqrt(2/pi) G / sigma + N with
    N uncorrelated with G (variance 1 - 2/pi), so Adam is SGD preconditioned per input coordinate by
    1/sigma plus an isotropic part N that adds to E|dh|^2 only (`adam_noise`).

One second-order term is kept: a layer's update also acts on the change of its input, dW_l^T dx_l (`input_change`,
by the same regression rule); it matters when the output layer's step is large (standard parametrization at
width 512: the logits grow 20x in one step) and is folded into Theta_l.

Only dense ReLU stacks without biases at init (every bias zero) are covered; the model is given as its layer
widths and expected E[W^2], not traced.

`unit_response` is the first-order part alone per unit global learning rate (no second-order term): the relative
RMS change sqrt(E[dh^2] / E[h^2]) of every layer output, which `prescribe.response_drift` turns into the drift of
the optimal learning rate across widths.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np
from threadpoolctl import threadpool_limits

KAPPA = math.sqrt(2.0 / math.pi)   # E|G| / sigma for a Gaussian entry: the linear part of sign(G)
LOGIT_SAMPLES = 512                # Gaussian logit draws for E[g g^T], E[z . g] (fixed seed: deterministic)


class Kernels(NamedTuple):
  """Per weight layer l (0-based) of a dense stack, full inner products between examples (B, B):
  x[l] of the layer's input, y[l] of its output (pre-activation; the logits at the top)."""
  x: list
  y: list


def relu_kernel(k_y: np.ndarray, n: int) -> np.ndarray:
  """Full inner products of relu(y) from those of y (n units, each with covariance k_y / n): the arc-cosine
  map n sqrt(q_a q_b) / (2 pi) (sin t + (pi - t) cos t), t the angle."""
  c = k_y / n
  d = np.sqrt(np.clip(np.diag(c), 0, None))
  t = np.arccos(correlation(k_y))
  return n * np.outer(d, d) / (2 * np.pi) * (np.sin(t) + (np.pi - t) * np.cos(t))


def correlation(k: np.ndarray) -> np.ndarray:
  d = np.sqrt(np.clip(np.diag(k), 1e-300, None))
  return np.clip(k / np.outer(d, d), -1.0, 1.0)


def both_active(k_y: np.ndarray) -> np.ndarray:
  """P(y_a > 0, y_b > 0) per pair for centred Gaussian pre-activations (the orthant probability)."""
  return (np.pi - np.arccos(correlation(k_y))) / (2 * np.pi)


def all_three_active(k_y: np.ndarray) -> np.ndarray:
  """P(y_a, y_b, y_c > 0) (B, B, B): 1/8 + (asin r_ab + asin r_ac + asin r_bc) / (4 pi)."""
  s = np.arcsin(correlation(k_y))
  return 0.125 + (s[:, :, None] + s[:, None, :] + s[None, :, :]) / (4 * np.pi)


def forward_kernels(x: np.ndarray, fan_out: Sequence[int], w_sq: Sequence[float]) -> Kernels:
  """The calculus's forward pass as kernels between the examples of x (B, d): y = W^T x sums fan_out units of
  covariance E[W^2] x_a . x_b; ReLU between layers."""
  kx = np.asarray(x, np.float64).reshape(x.shape[0], -1)
  return dense_kernels(kx @ kx.T, fan_out, w_sq)


def dense_kernels(kx: np.ndarray, fan_out: Sequence[int], w_sq: Sequence[float]) -> Kernels:
  """`forward_kernels` from the first layer's input kernel kx (B, B) (a conv stack's flatten, in
  `strided_update`)."""
  xs, ys = [], []
  for l, (n, w) in enumerate(zip(fan_out, w_sq)):
    ky = n * w * kx
    xs.append(kx)
    ys.append(ky)
    if l < len(fan_out) - 1:
      kx = relu_kernel(ky, n)
  return Kernels(xs, ys)


def logit_samples(k_z: np.ndarray, labels: np.ndarray, n_out: int, samples: int = LOGIT_SAMPLES,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """(z, g), each (samples, B, n_out): logits with n_out independent classes, each a centred Gaussian over the
  examples with covariance k_z / n_out, and g = softmax(z) - onehot(label), the gradient of the per-example
  cross-entropy. Seeded, so every moment taken from one seed sees the same draws."""
  vals, vecs = np.linalg.eigh(k_z / n_out)
  root = vecs * np.sqrt(np.clip(vals, 0, None))
  eps = np.random.default_rng(seed).standard_normal((samples, k_z.shape[0], n_out))
  z = np.einsum("bk,skc->sbc", root, eps)
  p = np.exp(z - z.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  return z, p - np.eye(n_out)[np.asarray(labels)][None]


def logit_moments(k_z: np.ndarray, labels: np.ndarray, n_out: int, samples: int = LOGIT_SAMPLES,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """(E[g_b . g_c] (B, B), E[z_b . g_b] (B,)) over `logit_samples`' draws."""
  z, g = logit_samples(k_z, labels, n_out, samples, seed)
  gf = np.moveaxis(g, 1, 0).reshape(k_z.shape[0], -1)
  return gf @ gf.T / samples, np.einsum("sbk,sbk->b", z, g) / samples


def backward_kernels(k: Kernels, fan_in: Sequence[int], w_sq: Sequence[float], gg: np.ndarray) -> list:
  """E[delta_l,b . delta_l,c] (B, B) per layer, delta the loss gradient at layer l's pre-activation:
  delta_l = mask_l * W_l+1 delta_l+1, so the kernel gains fan_in_l+1 E[W_l+1^2] times both_active."""
  L = len(k.y)
  out = [None] * L
  out[-1] = gg
  for l in range(L - 2, -1, -1):
    out[l] = both_active(k.y[l]) * fan_in[l + 1] * w_sq[l + 1] * out[l + 1]
  return out


def gradient_sq(k: Kernels, back: list, batch: int) -> list:
  """E|grad_W_l|^2 of the minibatch-mean loss: (1/B^2) sum_bc (x_b . x_c)(delta_b . delta_c)."""
  return [float(np.sum(kx * d)) / batch ** 2 for kx, d in zip(k.x, back)]


def adam_inputs(x: np.ndarray, k: Kernels, back: list, fan_in: Sequence[int], fan_out: Sequence[int],
                w_sq: Sequence[float], gg: np.ndarray, samples: int = 1024, seed: int = 1):
  """Adam's effective input kernels per layer, X~_l(a, b) = E over units k [sum_i x_a,i x_b,i / sigma_ik] (the
  layer's own output mask carried as in `ntk`), the same weighted by the unit's activations for the cross term
  (X~h_l: E[x_a,i x_b,i h_a,k h_b,k / sigma_ik] / E[h_a,k h_b,k]; the top layer's is X~_l), and |x_a|^2 over the
  coordinates with a gradient.

  Given the forward pass and the layers above, the gradient entry G_ik = (1/B) sum_b x_b,i delta_b,k is Gaussian
  (linear in the next layer's weights), with variance sigma_ik^2 = (1/B^2) sum_bc x_b,i x_c,i m_b,k m_c,k
  Gamma(b, c) (m: unit k's ReLU mask, Gamma: the per-unit kernel of the gradient at the layer's output before
  the mask). sigma varies from entry to entry (a feature that is active on few examples has a small one), so the
  mean of 1/sigma is not 1/sqrt(E sigma^2), and a unit active on many examples has both a larger sigma and
  larger activations, which the cross term weighs: the expectations are taken over `samples` draws of a
  feature column (the data's coordinates themselves at layer 0) and a unit's pre-activations from the
  calculus's Gaussian kernels."""
  rng = np.random.default_rng(seed)
  B, L = x.shape[0], len(k.x)
  xf = np.asarray(x, np.float64).reshape(B, -1)
  kernels, cross_kernels, norms = [], [], []
  for l in range(L):
    top = l == L - 1
    gam = gg / fan_out[l] if top else fan_in[l + 1] * w_sq[l + 1] * back[l + 1] / fan_out[l]
    units = np.ones((samples, B)) if top else gaussian_rows(rng, k.y[l] / fan_out[l], samples)
    masks = units if top else (units > 0).astype(float)
    if l == 0:
      cols = xf.T[rng.integers(0, xf.shape[1], samples)]
      norms.append(np.sum(xf * xf, 1))
      scale = xf.shape[1]
    else:
      cols = np.maximum(gaussian_rows(rng, k.y[l - 1] / fan_in[l], samples), 0.0)
      norms.append(np.diag(k.x[l]).copy())
      scale = fan_in[l]
    v = cols * masks                                          # (S, B): x_b,i m_b,k
    sig = np.sqrt(np.clip(np.einsum("sb,bc,sc->s", v, gam, v), 0, None)) / B
    ok = sig > 0
    a = np.einsum("sa,sb,s->ab", v[ok], v[ok], 1.0 / sig[ok]) / samples * scale
    if top:
      kernels.append(a)
      cross_kernels.append(a)
      continue
    kernels.append(a / both_active(k.y[l]))
    vh = cols * np.maximum(units, 0.0)                        # x_b,i h_b,k
    ah = np.einsum("sa,sb,s->ab", vh[ok], vh[ok], 1.0 / sig[ok]) / samples * scale
    cross_kernels.append(ah / (k.x[l + 1] / fan_out[l]))
  return kernels, norms, cross_kernels


def gaussian_rows(rng, cov: np.ndarray, samples: int) -> np.ndarray:
  """(samples, B) draws of a centred Gaussian vector over the examples with covariance cov."""
  vals, vecs = np.linalg.eigh(cov)
  return rng.standard_normal((samples, cov.shape[0])) @ (vecs * np.sqrt(np.clip(vals, 0, None))).T


def ntk(k: Kernels, eta: Sequence[float], inputs: list, fan_in: Sequence[int], w_sq: Sequence[float],
        zg: np.ndarray | None = None, triples: list | None = None) -> list:
  """Theta_l (B, B) per layer: the change of layer l's output is -(1/B) sum_b Theta_l(a, b) times the (masked)
  loss gradient there. `inputs`: the kernel the update acts through per layer (x . x for SGD). With `zg` and
  `triples` (P(a, b, c active) per hidden layer) the layer's update also acts on the change of its input
  (dW^T dx, second order: `input_change`), which is what keeps a large step on the output layer from growing
  the logits as far as the first order says."""
  out, th = [], None
  for l in range(len(k.y)):
    if th is None:
      th = eta[l] * inputs[l]
    else:
      own = inputs[l]
      if zg is not None:
        own = own + input_change(th, k.x[l], triples[l - 1], zg) * (inputs[l] / k.x[l])
      th = eta[l] * own + fan_in[l] * w_sq[l] * both_active(k.y[l - 1]) * th
    out.append(th)
  return out


def input_change(theta_below: np.ndarray, k_h: np.ndarray, masks: np.ndarray, zg: np.ndarray) -> np.ndarray:
  """s(a, b) = E[x_b . dx_a] (B, B) for a layer whose input x = h (post-ReLU) changes by dh = -(1/B) sum_c
  Theta(a, c) m_a m_c gamma_c: by the regression rule E[(m_a h_b) . m_c gamma_c] = E[m_a m_c h_b . h_c] / K_h(c, c)
  E[z_c . g_c], with E[m_a m_c h_b . h_c] ~ K_h(b, c) P(a, b, c active) / P(b, c active)."""
  B = theta_below.shape[0]
  pair = masks * (k_h / both_from_triple(masks))[None, :, :]
  return -np.einsum("ac,abc,c->ab", theta_below, pair, zg / np.diag(k_h)) / B


def both_from_triple(masks: np.ndarray) -> np.ndarray:
  """P(b, c active) from the triple table: P(b, b, c)."""
  B = masks.shape[0]
  return masks[np.arange(B)[:, None], np.arange(B)[:, None], np.arange(B)[None, :]]


def cross_term(theta: np.ndarray, k_h: np.ndarray, zg: np.ndarray) -> float:
  """E_a[h_a . dh_a] = -(1/B^2) sum_ab Theta(a, b) K_h(a, b) / K_h(b, b) E[z_b . g_b] (module doc)."""
  B = theta.shape[0]
  return -float(np.sum(theta * k_h / np.diag(k_h)[None, :] * zg[None, :])) / B ** 2


def change_sq(theta: np.ndarray, grad_k: np.ndarray, masks: np.ndarray | None) -> float:
  """E_a|dh_a|^2 = (1/B^3) sum_abc Theta(a,b) Theta(a,c) P(a,b,c active) (gamma_b . gamma_c); masks None at the
  logits (no ReLU)."""
  B = theta.shape[0]
  if masks is None:
    return float(np.einsum("ab,ac,bc->", theta, theta, grad_k)) / B ** 3
  return float(np.einsum("ab,ac,abc,bc->", theta, theta, masks, grad_k)) / B ** 3


def adam_noise(norms: list, eta: Sequence[float], fan_out: Sequence[int], w_sq: Sequence[float]) -> np.ndarray:
  """E_a|dh_l,a|^2 from the part of sign(G) uncorrelated with G (variance 1 - 2/pi per entry), per layer l:
  layer j's adds eta_j^2 (1 - 2/pi) fan_out_j |x_j,a|^2 at its output, carried up as a random vector
  (each ReLU keeps half, each layer multiplies by fan_out E[W^2]); the hidden layers' own mask halves it."""
  L = len(norms)
  out = np.zeros(L)
  for j in range(L):
    v = eta[j] ** 2 * (1 - 2 / math.pi) * fan_out[j] * float(np.mean(norms[j]))
    for l in range(j, L):
      if l > j:
        v *= 0.5 * fan_out[l] * w_sq[l]
      out[l] += v * (0.5 if l < L - 1 else 1.0)
  return out


class Response(NamedTuple):
  """Per layer output (hidden post-ReLU, then the logits), per-entry mean squares over the batch."""
  act0: np.ndarray       # E[h^2] at init
  cross: np.ndarray      # 2 E[h . dh] per entry
  change: np.ndarray     # E[dh^2] per entry
  act1: np.ndarray       # act0 + cross + change: after the step
  update_rms: np.ndarray  # RMS of each kernel's update (SGD: lr |grad|; Adam: lr, sign entries)


def first_step(x, labels, fan_out: Sequence[int], w_sq: Sequence[float], lr: Sequence[float], optimizer: str,
               *, samples: int = LOGIT_SAMPLES, seed: int = 0, second_order: bool = True) -> Response:
  """The predicted activations before and after one step of `optimizer` ("sgd" or "adam", optax's, first step)
  with per-layer learning rates lr (the global rate times each layer's multiplier) on the minibatch (x, labels)
  of a bias-free ReLU MLP with layer widths fan_out and expected E[W^2] w_sq (at init: every bias zero)."""
  if optimizer not in ("sgd", "adam"):
    raise ValueError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")
  if not (len(fan_out) == len(w_sq) == len(lr)) or not fan_out:
    raise ValueError("fan_out, w_sq and lr need one entry per weight layer")
  if np.shape(labels) != (np.shape(x)[0],):
    raise ValueError(f"labels must have one entry per example ({np.shape(x)[0]}), got shape {np.shape(labels)}")
  lab = np.asarray(labels)
  if not np.issubdtype(lab.dtype, np.integer) or lab.min() < 0 or lab.max() >= fan_out[-1]:
    raise ValueError(f"labels must be integers in [0, {fan_out[-1]}) (the last layer's width)")
  if min(w_sq) <= 0 or min(lr) < 0 or not np.all(np.isfinite(x)):
    raise ValueError("w_sq must be > 0, lr >= 0 and x finite")
  # B x B matrices: a multithreaded BLAS only spins on them (an eigh of 128 x 128 took 0.4 s instead of 2 ms
  # beside a busy JAX process on 2 cores)
  with threadpool_limits(limits=1):
    return _first_step(x, labels, fan_out, w_sq, lr, optimizer, samples, seed, second_order)


def _first_step(x, labels, fan_out, w_sq, lr, optimizer, samples, seed, second_order) -> Response:
  x = np.asarray(x, np.float64).reshape(np.shape(x)[0], -1)
  B, L = x.shape[0], len(fan_out)
  fan_in = [x.shape[1]] + list(fan_out[:-1])
  k = forward_kernels(x, fan_out, w_sq)
  gg, zg = logit_moments(k.y[-1], labels, fan_out[-1], samples, seed)
  back = backward_kernels(k, fan_in, w_sq, gg)
  if optimizer == "sgd":
    inputs, eta = k.x, list(lr)
    cross_inputs = inputs
    upd = np.sqrt(np.array(gradient_sq(k, back, B)) / (np.array(fan_in) * np.array(fan_out))) * np.asarray(lr)
    noise = np.zeros(L)
  else:
    inputs, norms, cross_inputs = adam_inputs(x, k, back, fan_in, fan_out, w_sq, gg)
    eta = [KAPPA * v for v in lr]
    upd = np.asarray(lr, np.float64)
    noise = adam_noise(norms, lr, fan_out, w_sq)
  triples = [all_three_active(ky) for ky in k.y[:-1]]
  theta = ntk(k, eta, inputs, fan_in, w_sq, zg if second_order else None, triples)
  act0, cross, change = np.zeros(L), np.zeros(L), np.zeros(L)
  for l in range(L):
    top = l == L - 1
    k_h = k.y[l] if top else k.x[l + 1]
    act0[l] = float(np.mean(np.diag(k_h))) / fan_out[l]
    # the layer's own update seen by its activations (Adam: weighted by the unit's activations, `adam_inputs`)
    theta_h = theta[l] + eta[l] * (cross_inputs[l] - inputs[l])
    cross[l] = 2 * cross_term(theta_h, k_h, zg) / fan_out[l]
    grad_k = gg if top else fan_in[l + 1] * w_sq[l + 1] * back[l + 1]
    change[l] = (change_sq(theta[l], grad_k, None if top else triples[l]) + noise[l]) / fan_out[l]
  return Response(act0, cross, change, act0 + cross + change, upd)


def unit_response(x, labels, fan_out: Sequence[int], w_sq: Sequence[float], lr_multipliers: Sequence[float],
                  optimizer: str, *, samples: int = LOGIT_SAMPLES, seed: int = 0) -> np.ndarray:
  """(L,) the first-order relative RMS change sqrt(E[dh^2] / E[h^2]) of every layer output (hidden post-ReLU,
  the logits last) per unit global learning rate, the layers' learning rates being `lr_multipliers`. First
  order, E[dh^2] is quadratic in the learning rate for SGD and for Adam's first (sign) step alike, so one
  evaluation at learning rate 1 serves every rate."""
  r = first_step(x, labels, fan_out, w_sq, lr_multipliers, optimizer, samples=samples, seed=seed,
                 second_order=False)
  return np.sqrt(r.change / r.act0)

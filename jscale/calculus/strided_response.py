"""What one SGD / Adam step does to the activations of a bias-free ReLU network of strided convolutions (stride =
kernel, VALID) followed by dense layers, predicted before it is taken over (example, position) pairs
(docs/calculus.md, *After the first step over (example, position) pairs*). **[derived, beyond the paper]**

`update_response.first_step`'s per-layer NTK for dense stacks, with tokens (example, position) in place of
examples. Per layer output h (post-ReLU; the logits z at the top), per token a,

    E|h_1|^2 = E|h_0|^2 + 2 E[h_0 . dh] + E|dh|^2,   dh_a = -(1/B) sum_t Theta(a, t) (mask_a mask_t gamma_t),

t over every token of the batch (B examples), gamma the loss gradient at h. The kernels are
`strided_update.forward`'s (the CNN-GP form). The NTK's recursion carries the layer below through its
Jacobian: a stride = kernel conv's weight block for one patch offset joins only the tokens at that offset of
both patches, so

    Theta_l = eta_l X_l + c_l-1 E[W_l^2] lift(f_l-1 * Theta_l-1),

lift the same sum over offsets that takes a layer's output kernel to the next conv's input kernel
(`strided_update.patch_kernel`; the flatten sums the same position of both examples), c the channels below,
f the share of units active on both tokens. The layer's own term eta X_l sums over every token pair, since the
conv's weights are shared over positions.

The gradient at h has the calculus's part (independent backward weights) and the component along the
example's own activation, c_b h_b with c_b = z_b . g_b / |h_b|^2 over the example's positions
(`strided_update.backward`): the backward kernel E[delta_s . delta_t] of `strided_update` holds both, and per
token triple E[m_a m_s m_t gamma_s . gamma_t] ~ P(a, s, t active) E[delta_s . delta_t] / P(s, t active). The
cross term is the own component alone: E[h_a . delta_t] = K_h(a, t) E[z_b . g_b] / |h_b|^2 (b the example of t),
which gives each layer i's change along the example's own activation, beta_i(a) = E[h_i,a . dh_i,a] / |h_i,a|^2.
Unlike the dense case, these are summed over the layers below: the NTK's E[J_a J_t^T] ~ scalar drops the own
component of a lower layer's gradient when it carries the update up, but a change along h_i,a stays along the
example's own activation at every layer above (positive homogeneity: J_a y_i,a = y_l,a), so

    E[h_l,a . dh_l,a] = (sum_{i <= l} beta_i(a)) |h_l,a|^2,  E|dh_l,a|^2 = (NTK) + (2 S beta_l + S^2) |h_l,a|^2,

S = sum_{i < l} beta_i(a). In a wide MLP the lower layers' beta are small beside the top's (update_response's
Monte Carlo); with a conv's positions adding coherently they are not.

The triple P(a, s, t) = 1/8 + (asin r_as + asin r_at + asin r_st) / 4 pi is additive, so the sums over token
triples are matrix products (T^3, not a T^3 table: conv0 of a batch of 128 8x8 digits has 2048 tokens).

Adam's first step lr sign(G) is SGD through the input kernel E[x_s,i x_t,i / sigma_ik] plus noise uncorrelated
with G (`update_response.adam_inputs`' linearisation); sigma_ik^2 sums over the tokens of the batch, the own
component included (it is most of a conv's gradient at narrow width).

Kept from the dense case: the second-order term dW_l^T dx_l (the layer's update on its input's change, by the
same regression), on every layer. Mask flips only as the option flip_carry (the coherent carry of a layer's change
scaled by the share of its active units that the step keeps on, `flip_share`) and the option flip_net (each unit's
own flip term under the step's mean shift, `mean_shift_net`); Adam's sign of the own component's non-zero mean
given the unit only as the option sign_mean (`adam_inputs`' w_tok); the flips' rest carried up as rescales of h
and dh only as the option flip_rescale (`flip_rescale`; judged and not adopted: it overshoots large steps); the
coherent carry's mask after the step per token pair as the option flip_pairs (`after_mask`) and SGD's flip term
under the step's law fitted on each side of zero as the option state_split (`split_net`): judged together on three
key sets, adopted by the transfer check on the third (seventeenth session; every width-512 LeNet entry inside, the
width-128 logits keep a flip cost beyond the mask); SGD's flip
cost over the draws' own scale (each layer's gain over draws from its unit count, `spread_axes`) only as the option
draw_spread (seventeenth session); the carry's mask under the law per side only as the option split_mask (passed
its rule on keys 2^20 + 180000, no gain on development; the transfer check does not pass it) and the step law's rest per
token only as the option token_law (seventeenth session, dropped on development); the incoherent carry with
the flipped change's own square only as the option carry_square (eighteenth session); Adam's second-order term
through the sum of a dense layer's input only as the option sign_sum (eighteenth session; at the first dense
layer alone, sign_sum="first", nineteenth session); Adam's sigma per logit draw only as the option sign_draw and a
dense layer's Adam rows drawn apart, as many as asked, only as the option dense_rows (twentieth session: no gain on
development, not judged; the transfer check passes 4096); the second-order term split into the input's mean part
(the sum law) and its centred part (the regression) as the option sum_split, the sum law into the hidden dense
layers only (sign_sum="hidden") and Adam's flip term on each side of zero with the own sign step blind to the unit's
state (adam_split) (twenty-first session; the transfer check passes the three, `analysis.ADAM_SPLIT`);
not modelled: a shared W with
fewer rows than the batch's tokens.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np
from scipy.special import erf, ndtr, owens_t
from threadpoolctl import threadpool_limits

from jscale.calculus import relu_flips
from jscale.calculus import strided_update as su
from jscale.calculus import update_response as ur

KAPPA = ur.KAPPA
# BLAS threads for first_steps' products: a LeNet's conv0 has 2048 tokens, so its T x T x T products are most of
# the transfer experiment's after-step prediction (24.6 s of one core in the full grid); two threads take it
# 1.4-1.8x faster. OpenBLAS gives the same bits run to run at a fixed thread count, not across counts (6e-6 to
# 2.5e-5 relative here, where the cross term cancels most of E[h^2]): fixed at 2, a one-core machine differs
# from every other in those digits.
BLAS_THREADS = 2
# sign_draw's sample: logit draws, units, inputs (`draw_whitening`)
DRAW_LOGITS, DRAW_UNITS, DRAW_FEATURES = 48, 24, 48


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """a / b, 0 where b is 0 (a token whose input patch is all zero: digits' blank corners)."""
  return np.divide(a, b, out=np.zeros_like(a), where=b != 0)


def lift(kern: np.ndarray, k: su.Kernels, stack: su.Stack, l: int, batch: int) -> np.ndarray:
  """A kernel over the output tokens of layer l-1 taken to the input tokens of layer l: the same offset of
  both patches summed (a conv), the same position of both examples summed (the flatten), or itself (dense)."""
  n_conv = len(stack.kernels)
  if l < n_conv:
    return su.patch_kernel(kern, batch, k.grid[l - 1], *stack.kernels[l])
  if k.grid[l - 1] is not None:
    P = k.grid[l - 1][0] * k.grid[l - 1][1]
    return np.einsum("bpcp->bc", kern.reshape(batch, P, batch, P))
  return kern


def _asin_quarter(k_y: np.ndarray) -> np.ndarray:
  """asin(r) / 4 pi per token pair: the pair part of the triple orthant probability."""
  return np.arcsin(ur.correlation(k_y)) / (4 * np.pi)


def triple_sum(theta: np.ndarray, s: np.ndarray, gam: np.ndarray) -> float:
  """sum_a sum_bc Theta(a,b) Theta(a,c) P(a,b,c active) Gamma(b,c), P = 1/8 + s_ab + s_ac + s_bc (s the
  asin / 4 pi table): two matrix products. s None: no masks (the logits)."""
  if s is None:
    return float(np.sum((theta @ gam) * theta))
  m = gam @ theta.T                                     # M(b, a) = sum_c Gamma(b, c) Theta(a, c)
  first = 2 * float(np.sum(theta * (0.0625 + s) * m.T))
  second = float(np.sum(theta * ((s * gam) @ theta.T).T))
  return first + second


def triple_rows(theta: np.ndarray, s: np.ndarray, gam: np.ndarray) -> np.ndarray:
  """(T,) `triple_sum`'s terms per token a, before the sum over a: token a's own E[m_a d_a^2] up to 1 / B^2."""
  m = gam @ theta.T
  return 2 * np.sum(theta * (0.0625 + s) * m.T, 1) + np.sum(theta * ((s * gam) @ theta.T).T, 1)


def triple_forms(x: np.ndarray, y: np.ndarray, s: np.ndarray, gam: np.ndarray) -> tuple[float, float, float]:
  """(T(x, x), T(x, y), T(y, y)) of the bilinear form T(X, Y) = sum_abc X(a,b) Y(a,c) P(a,b,c active) Gamma(b,c)
  (`triple_sum`'s; Theta = eta X + eta_b Y gives triple_sum(Theta) = eta^2 T(X,X) + 2 eta eta_b T(X,Y) + eta_b^2
  T(Y,Y)), from four matrix products: s and Gamma are symmetric (`_setup` builds both from symmetric token
  kernels), so x @ Gamma and x @ (s Gamma) serve every form x is in."""
  sg = s * gam
  px, qx, py, qy = x @ gam, x @ sg, y @ gam, y @ sg
  a = 0.125 + s
  xx = float(np.sum(x * a * px)) + float(np.sum(x * s * px)) + float(np.sum(x * qx))
  xy = float(np.sum(x * a * py)) + float(np.sum(y * s * px)) + float(np.sum(x * qy))
  yy = float(np.sum(y * a * py)) + float(np.sum(y * s * py)) + float(np.sum(y * qy))
  return xx, xy, yy


def triple_pair_ones(x: np.ndarray | None, s: np.ndarray, gam: np.ndarray) -> float:
  """`triple_forms`' T(x, 1) for the all-ones kernel (SGD's bias), x None: T(1, 1). With
  1 @ A the column sums of A, two of its three T x T x T products are T x T sums (conv0's 2048 tokens)."""
  col = gam.sum(0)[None, :]
  if x is None:
    return float(np.sum((0.125 + s) * col)) + float(np.sum(s * col)) + gam.shape[0] * float(np.sum(s * gam))
  return (float(np.sum(x * (0.125 + s) * col)) + float(np.sum(s * (x @ gam)))
          + float(np.sum(x * (s * gam).sum(0)[None, :])))


def input_change_ones(s: np.ndarray, both: np.ndarray, k_h: np.ndarray, w: np.ndarray, batch: int) -> np.ndarray:
  """`input_change` for Theta the all-ones kernel (SGD's bias): its first and third products are outer ones."""
  r = k_h / both
  out = (0.125 + s) * (r @ w)[None, :] + (s * w[None, :]) @ r.T + ((s * r) @ w)[None, :]
  return -out / batch


def input_change(theta: np.ndarray, s: np.ndarray, both: np.ndarray, k_h: np.ndarray, w: np.ndarray,
                 batch: int) -> np.ndarray:
  """E[h_b . dh_a] per token pair (a, b) for dh_a = -(1/B) sum_c Theta(a, c) m_a m_c gamma_c, by the regression
  E[m_a m_c h_b . gamma_c] = K_h(b, c) P(a, b, c) / P(b, c) w_c (w_c = E[z . g] / |h|^2 of c's example):
  `update_response.input_change` with the triple split into matrix products."""
  r = k_h / both
  tw = theta * w[None, :]
  out = (0.125 + s) * (tw @ r.T) + ((theta * s) * w[None, :]) @ r.T + tw @ (s * r).T
  return -out / batch


def lift_groups(k: su.Kernels, stack: su.Stack, l: int, batch: int) -> list | None:
  """The token groups of layer l-1's output whose pairs `lift` reads into layer l (the rest of its input it never
  reads): a conv's tokens by their offset in the next patch, the flatten's by position; None (every pair) into
  a dense layer."""
  n_conv = len(stack.kernels)
  grid = k.grid[l - 1]
  if grid is None:
    return None
  p = np.arange(batch * grid[0] * grid[1]) % (grid[0] * grid[1])
  if l < n_conv:
    kh, kw = stack.kernels[l]
    off = (p // grid[1]) % kh * kw + p % grid[1] % kw
    return [np.flatnonzero(off == o) for o in range(kh * kw)]
  return [np.flatnonzero(p == o) for o in range(grid[0] * grid[1])]


# The fewest multiply-adds of lifted_change's smallest block product for it to take the blocks: OpenBLAS's
# small-matrix kernels (M N K up to 1e6 on SkylakeX) sum in another order than its blocked gemm, whose every entry
# is the same sum whatever M and N (so a block is the full product's, bit for bit); below, the full product.
BLOCK_MIN = 2 ** 24


def lifted_change(theta: np.ndarray | None, s: np.ndarray, both: np.ndarray, k_h: np.ndarray, w: np.ndarray,
                  k: su.Kernels, stack: su.Stack, l: int, batch: int) -> np.ndarray:
  """lift(input_change(theta, ...)) into layer l (theta None: `input_change_ones`), the products taken only over
  the token pairs that `lift` reads (`lift_groups`: a quarter of conv0's 2048 x 2048 pairs for the LeNet's 2 x 2
  conv1, most of the transfer check's after-step CPU time). Each entry is the same sum in the same order as the
  full product's (the same BLAS kernel over the same contraction, above `BLOCK_MIN`: bit for bit on the
  development host's OpenBLAS; tests/calculus checks it to float64 rounding, which another CPU's kernels may
  differ by), and the pairs lift does not read stay zero."""
  groups = lift_groups(k, stack, l, batch)
  if groups is not None and min(len(g) for g in groups) ** 2 * k_h.shape[0] < BLOCK_MIN:
    groups = None
  if groups is None:
    kern = (input_change_ones(s, both, k_h, w, batch) if theta is None
            else input_change(theta, s, both, k_h, w, batch))
    return lift(kern, k, stack, l, batch)
  r = k_h / both
  out = np.zeros_like(r)
  if theta is None:   # input_change_ones: its first and third products are outer ones
    rw, srw = r @ w, (s * r) @ w
    for g in groups:
      gg = np.ix_(g, g)
      out[gg] = -((0.125 + s[gg]) * rw[g][None, :] + (s[g] * w[None, :]) @ r[g].T + srw[g][None, :]) / batch
    return lift(out, k, stack, l, batch)
  for g in groups:
    gg, n = np.ix_(g, g), len(g)
    tw, rg = theta[g] * w[None, :], r[g]
    # the first two products share r's rows: one product of twice the rows (the same sums, fewer BLAS calls)
    both_p = np.concatenate([tw, (theta[g] * s[g]) * w[None, :]]) @ rg.T
    out[gg] = -((0.125 + s[gg]) * both_p[:n] + both_p[n:] + tw @ (s[g] * rg).T) / batch
  return lift(out, k, stack, l, batch)


def _factor(cov: np.ndarray) -> np.ndarray:
  """F with F F^T = cov (PSD, negative rounding clipped). LAPACK's eigh on one thread: at two it ran 2-20x slower
  on the LeNet's 512 x 512 token kernels (0.1-1.4 s against 0.03-0.06 s of CPU, one matrix timed alternately)."""
  with threadpool_limits(limits=1):
    vals, vecs = np.linalg.eigh(cov)
  return vecs * np.sqrt(np.clip(vals, 0, None))


def _rows(rng, factor: np.ndarray, samples: int) -> np.ndarray:
  """(samples, T) centred Gaussian rows over tokens with covariance factor @ factor.T: the draw of
  `update_response.gaussian_rows`."""
  return rng.standard_normal((samples, factor.shape[1])) @ factor.T


def adam_inputs(x, k: su.Kernels, stack: su.Stack, w_sq, gam: list, own: list, samples: int = 1024,
                seed: int = 1, bias: bool = False, w_tok: list | None = None, draw: dict | None = None,
                info: dict | None = None, dense_rows: int | None = None, mean_in: list | None = None):
  """Per layer Adam's effective input kernel over tokens, the same weighted by the unit's activations (for the
  cross term), and the mean |x_t|^2 per token (for the noise): `update_response.adam_inputs` with sigma_ik^2 =
  (1/B^2) sum_st x_s,i x_t,i E[delta_s,k delta_t,k] over the batch's tokens, E[delta delta] = m_s m_t gam / c
  + own (the own-activation component, x h weighted). Features: a patch coordinate (the data's at conv0, a
  channel of the layer below at one offset above), a unit: a channel's pre-activations over the tokens.

  w_tok (per hidden layer E[z . g] / |h|^2 per token, `_setup`'s; None: the linearisation): the cross kernel with
  the sign of a non-centred gradient. Given the unit's activations and the feature, the own component's mean
  m = (1/B) sum_t x_t h_t w_t is fixed and the rest is Gaussian with s^2 = sigma^2 - m^2, so E[sign G] =
  2 Phi(m / s) - 1 in place of kappa m / sigma (docs/calculus.md, *Adam's sign of a non-centred gradient*).

  draw (layer -> its backward per logit draw, option sign_draw): that dense layer's own kernel (not its cross
  kernel, which enters only to first order) scaled by the root of `draw_whitening`'s factor, from rows of their own
  seed (the kernels' rows stay those without it); info, when given, gets each factor. dense_rows (option): a
  dense layer's kernels from that many rows of their own seed, in place of `samples` rows of the shared stream (the
  conv layers' rows stay those without it): the own square is quadratic in the kernel, and at the LeNet's first
  dense layer 1024 rows leave it 3.74-4.80 over three seeds (docs/calculus.md, *Adam's own square is the rows'
  sampling*). mean_in (a list, option sum_split): gets per layer the own kernel with the row token's input
  replaced by its mean over the layer's inputs, M(a, t) = E[xbar_a m_a x_t m_t / sigma] (`input_mean`), at the
  dense layers above the first (None elsewhere): the part of the own change that a shift common to a token's
  inputs moves."""
  rng = np.random.default_rng(seed)
  B = x.shape[0]
  widths = stack.widths
  L = len(widths)
  n_conv = len(stack.kernels)
  img = np.asarray(x, np.float64).reshape((B,) + tuple(stack.image))
  patch0 = su.patches(img, *stack.kernels[0]).reshape(B * k.grid[0][0] * k.grid[0][1], -1) if n_conv else None
  kernels, cross_kernels, norms, bias_k, bias_cross = [], [], [], [], []
  factors = {}
  for l in range(L):
    top = l == L - 1
    T = k.x[l].shape[0]
    if not top:   # each hidden layer's factor serves its units and, as features, the layer above's
      factors[l] = math.sqrt(w_sq[0]) * patch0 if l == 0 and n_conv else _factor(k.y[l] / widths[l])
    own_rows = bool(dense_rows) and l >= n_conv   # option dense_rows: more rows at a dense layer, their own seed
    S, r = (dense_rows, np.random.default_rng(seed + 104729 + l)) if own_rows else (samples, rng)
    units = np.ones((S, T)) if top else _rows(r, factors[l], S)
    if l == 0:
      flat = patch0 if n_conv else img.reshape(B, -1)
      cols = flat.T[r.integers(0, flat.shape[1], S)]
      scale = flat.shape[1]
    elif own_rows:
      cols, scale = _dense_cols(k, stack, l, B, S, r, factors.get(l - 1))
    else:
      cols, scale = _pick(np.maximum(_rows(r, factors[l - 1], S), 0.0), k, stack, l, B, r)
    masks = units if top else (units > 0).astype(float)
    norms.append(float(np.mean(np.diag(k.x[l]))))
    # the kernels' coordinates, then the bias's (an input that is 1 on every token)
    parts = [(cols, scale, kernels, cross_kernels)] + ([(np.ones_like(cols), 1, bias_k, bias_cross)] if bias else [])
    for c, sc, out, out_h in parts:
      v, vh = c * masks, c * np.maximum(units, 0.0)
      q = np.einsum("st,st->s", v @ gam[l], v) / widths[l]
      if own[l] is not None:
        q = q + np.einsum("st,st->s", vh @ own[l], vh)
      sig = np.sqrt(np.clip(q, 0, None)) / B
      ok = sig > 0
      a = (v[ok] / sig[ok, None]).T @ v[ok] / S * sc
      if mean_in is not None and out is kernels:
        mk = None
        if l >= max(n_conv, 1):
          vm = masks[ok] * input_mean(k, stack, l, B)[None, :]
          mk = (vm / sig[ok, None]).T @ v[ok] / S * sc / (1.0 if top else ur.both_active(k.y[l]))
        mean_in.append(mk)
      if top:
        out.append(a)
        out_h.append(a)
        continue
      out.append(a / ur.both_active(k.y[l]))
      if w_tok is None or w_tok[l] is None:
        ah = (vh[ok] / sig[ok, None]).T @ vh[ok] / S * sc
      else:   # (2 Phi(m / s) - 1) / (kappa m): the kernel, contracted with w_tok, gives E[x h sign G] / kappa
        m = vh[ok] @ w_tok[l] / B
        s_ = np.maximum(np.sqrt(np.clip(sig[ok] ** 2 - m ** 2, 0, None)), 1e-300)
        wt = np.where(m == 0, 1.0 / s_, _ratio(erf(m / (math.sqrt(2) * s_)), KAPPA * m))
        ah = (vh[ok] * wt[:, None]).T @ vh[ok] / S * sc
      out_h.append(_ratio(ah, k.h[l] / widths[l]))
    if draw and l in draw:
      rd = np.random.default_rng(seed + 7919 + l)
      u_d = (_rows(rd, factors[l], DRAW_UNITS) > 0).astype(float)
      if l == 0:
        c_d = flat.T[rd.integers(0, flat.shape[1], DRAW_FEATURES)]
      else:
        c_d, _ = _pick(np.maximum(_rows(rd, factors[l - 1], DRAW_FEATURES), 0.0), k, stack, l, B, rd)
      f = draw_whitening(c_d, u_d, draw[l], scale)
      kernels[-1] = kernels[-1] * math.sqrt(f)
      if info is not None:
        info[l] = f
  return kernels, cross_kernels, norms, bias_k, bias_cross


def split_second_order(x_kern: np.ndarray, mean_kern: np.ndarray, rho: np.ndarray, lifted: np.ndarray,
                       k_x: np.ndarray) -> np.ndarray:
  """A dense layer's own Adam kernel with its second-order term dW^T dx (option sum_split; docs/calculus.md, *The
  second-order term's mean and centred parts*): the input's change dx_a split into its mean over the inputs,
  rho_a xbar_a (`input_sum_change`), and the centred rest, taken along the centred input x_a - xbar_a by the
  regression on the example's own activation (`lifted_change` / K_x per token pair). Row a of X + rho_a M + (lifted /
  K_x) (X - M), M = `adam_inputs`' mean_in kernel: sign_sum's X (1 + rho_a) counts the centred part of the own
  step as if it moved with the mean, and the regression alone misses the mean shift's sign."""
  return x_kern + rho[:, None] * mean_kern + lifted * _ratio(x_kern - mean_kern, k_x)


def input_mean(k: su.Kernels, stack: su.Stack, l: int, B: int) -> np.ndarray:
  """(B,) per token of dense layer l >= 1, the expected mean of its input coordinates, relu of N(0, q / c) units
  of the layer below (q its pre-activation kernel's diagonal, c its width): sqrt(q / 2 pi c), averaged over the
  positions at the flatten. `input_sum_change`'s `before`, per input."""
  q = np.diag(k.y[l - 1]) / stack.widths[l - 1]
  return np.sqrt(q / (2 * math.pi)).reshape(B, -1).mean(1)


def draw_whitening(cols: np.ndarray, masks: np.ndarray, gams: np.ndarray, n_in: int) -> float:
  """Adam's own square at a dense layer over the logits' draws, E_s Q(Gam_s) / Q(E_s Gam_s) (option sign_draw;
  docs/calculus.md, *Adam's sigma sees the draw's own logit gradient*). Per unit k and input i the sign step's
  linearisation kappa G_ik / sigma_ik normalises by the draw's own sigma, sigma_ik^2 = v_ik^T Gam v_ik (v_ik = x_i
  m_k over the batch's tokens), and a draw's backward gams[s] (`_draw_backward`: from its (B, K) logit gradient)
  has the logits' low rank, so the correlation r_ij = v_i^T Gam_s v_j / (sigma_i sigma_j) of two inputs averages
  below the one of the mean Gam. Q = sum_k sum_ij (sum_a m_ak x_ai
  x_aj) r_ij over cols (F_s, B) sampled inputs and masks (U, B) sampled units; the i = j terms (r = 1 whatever
  Gam) weighted n_in / F_s, the pairs n_in (n_in - 1) / (F_s (F_s - 1))."""
  ns = cols.shape[0]
  V = cols[None] * masks[:, None]                             # (U, F_s, B)
  xm = np.einsum("fa,ua,ea->ufe", cols, masks, cols)           # sum_a m_ak x_ai x_aj: no Gam in it
  off = ~np.eye(ns, dtype=bool)

  def pairs(gam):   # (diagonal, off-diagonal) sums of xm r
    C = (V.reshape(-1, V.shape[-1]) @ gam).reshape(V.shape) @ np.swapaxes(V, 1, 2)   # (U, F_s, F_s)
    q = np.einsum("uff->uf", C)
    w = np.where(q > 0, 1.0 / np.sqrt(np.where(q > 0, q, 1.0)), 0.0)
    r = C * w[:, :, None] * w[:, None, :]
    return float(np.einsum("uff,uff->", xm, r)), float(np.sum((xm * r)[:, off]))
  d_s, o_s = np.mean([pairs(gm) for gm in gams], 0)
  d_b, o_b = pairs(gams.mean(0))
  wd, wo = n_in / ns, n_in * (n_in - 1) / (ns * (ns - 1))
  return float((wd * d_s + wo * o_s) / (wd * d_b + wo * o_b))


def _dense_cols(k: su.Kernels, stack: su.Stack, l: int, B: int, S: int, rng, factor) -> tuple[np.ndarray, int]:
  """(S, B) input coordinates of dense layer l >= 1 and the input's size: a unit of the dense layer below, or at
  the flatten a channel at one position, drawn from that position's own (B, B) block of the conv kernel (the
  marginal of `_pick`'s row over all positions, at B^2 rather than (B P)^2 per row)."""
  c_below = stack.widths[l - 1]
  if k.grid[l - 1] is None:
    return np.maximum(_rows(rng, factor, S), 0.0), c_below
  P = k.grid[l - 1][0] * k.grid[l - 1][1]
  p = rng.integers(0, P, S)
  cols = np.empty((S, B))
  ky = k.y[l - 1].reshape(B, P, B, P)
  for q in range(P):
    at = p == q
    cols[at] = np.maximum(_rows(rng, _factor(ky[:, q, :, q] / c_below), int(at.sum())), 0.0)
  return cols, P * c_below


def _pick(feat: np.ndarray, k: su.Kernels, stack: su.Stack, l: int, B: int, rng) -> tuple[np.ndarray, int]:
  """(samples, T_l) one input coordinate of layer l per sample from rows over layer l-1's output tokens: a
  channel at one patch offset (conv), at one position (the flatten), or the unit itself (dense); and how many
  coordinates the layer's input has."""
  S = feat.shape[0]
  n_conv = len(stack.kernels)
  c_below = stack.widths[l - 1]
  if l < n_conv:
    kh, kw = stack.kernels[l]
    H, W = k.grid[l - 1]
    f6 = feat.reshape(S, B, H // kh, kh, W // kw, kw)
    i, j = rng.integers(0, kh, S), rng.integers(0, kw, S)
    cols = f6[np.arange(S), :, :, i, :, j].reshape(S, -1)
    return cols, kh * kw * c_below
  if k.grid[l - 1] is not None:
    P = k.grid[l - 1][0] * k.grid[l - 1][1]
    p = rng.integers(0, P, S)
    return feat.reshape(S, B, P)[np.arange(S), :, p], P * c_below
  return feat, c_below


def adam_noise(norms: list, eta: Sequence[float], k: su.Kernels, stack: su.Stack, w_sq,
               bias_eta: Sequence[float] | None = None) -> np.ndarray:
  """Per layer, the token mean of |dh|^2 from the part of sign(G) uncorrelated with G: layer j's adds
  eta_j^2 (1 - 2/pi) c_j |x_t|^2 at its output tokens; carried up, each ReLU keeps half, each layer multiplies
  by c_l E[W^2] and sums the tokens below one of its own (independent weight blocks per offset)."""
  widths = stack.widths
  L = len(widths)
  out = np.zeros(L)
  for j in range(L):
    v = eta[j] ** 2 * (1 - 2 / math.pi) * widths[j] * norms[j]
    if bias_eta is not None and bias_eta[j]:   # the bias's coordinate: |x|^2 = 1 on every token
      v += bias_eta[j] ** 2 * (1 - 2 / math.pi) * widths[j]
    for l in range(j, L):
      if l > j:
        v *= 0.5 * widths[l] * w_sq[l] * k.y[l - 1].shape[0] / k.y[l].shape[0]
      out[l] += v * (0.5 if l < L - 1 else 1.0)
  return out


def first_step(x, labels, stack: su.Stack, w_sq: Sequence[float], lr: Sequence[float], optimizer: str, *,
               samples: int = ur.LOGIT_SAMPLES, seed: int = 0, second_order: bool = True,
               own_activation: bool = True, bias_lr=0.0, incoherent_carry: bool = False,
               flip_carry: bool = False, flip_net: bool = False, sign_mean: bool = False,
               flip_rescale: bool = False, flip_pairs: bool = False, state_split: bool = False,
               token_law: bool = False, split_mask: bool = False) -> ur.Response:
  """`update_response.first_step` for the strided conv stack `stack` (per weight layer the expected E[W^2]
  w_sq and the learning rate lr, the global rate times its multiplier): the predicted E[h^2] per entry of
  every layer output (hidden post-ReLU, then the logits) before and after one step of `optimizer` ("sgd" or
  "adam", optax's first step) on the minibatch (x, labels), every bias zero at init and stepped at bias_lr (a
  number or one per layer; 0: the biases stay). update_rms: SGD's lr |grad| per kernel entry
  (`strided_update`'s), Adam's lr."""
  return first_steps(x, labels, stack, w_sq, [(lr, optimizer, bias_lr)], samples=samples, seed=seed,
                     second_order=second_order, own_activation=own_activation,
                     incoherent_carry=incoherent_carry, flip_carry=flip_carry, flip_net=flip_net,
                     sign_mean=sign_mean, flip_rescale=flip_rescale, flip_pairs=flip_pairs,
                     state_split=state_split, token_law=token_law,
                     split_mask=split_mask)[0]


def first_steps(x, labels, stack: su.Stack, w_sq: Sequence[float], settings: Sequence[tuple], *,
                samples: int = ur.LOGIT_SAMPLES, seed: int = 0, second_order: bool = True,
                own_activation: bool = True, incoherent_carry: bool = False, flip_carry: bool = False,
                flip_net: bool = False, sign_mean: bool = False, flip_rescale: bool = False,
                flip_pairs: bool = False, state_split: bool = False, draw_spread: bool = False,
                spread_per_layer: bool = True, spread_nodes: int = 3, token_law: bool = False,
                split_mask: bool = False, carry_square: Sequence[str] = (), sign_sum: bool | str = False,
                sign_draw: bool | str = False, info: dict | None = None, dense_rows: int | None = None,
                sum_split: bool = False, adam_split: bool | str = False, flip_along: bool = False,
                flip_second: bool = False, logit_bins: int = 0) -> list:
  """`first_step` for several settings (lr, optimizer) or (lr, optimizer, bias_lr) of one network (the same
  w_sq): the kernels, the logits' moments and Adam's input kernels are computed once (most of the cost at
  conv0's tokens). bias_lr (a number or one per layer; default 0): the biases' learning rate; a bias is a weight
  on an input that is 1 on every token, so its step adds bias_lr times the all-ones kernel (SGD; Adam: its
  sign-step kernel) to the layer's own term. incoherent_carry (docs/calculus.md, *The biases' step,
  continued*; right on the Monte Carlo's first order; the transfer coordinate check passes it with the biases'
  step and flip_carry since the thirteenth session): carry each layer's whole change below, less its part along
  the example's own activation, up through the next layer's weights as an incoherent sum (n_out E[W^2] per unit,
  half kept by a ReLU), in place of carrying only Adam's noise: the part the NTK's mean kernel W^T D W ~ k E[W^2]
  leaves out (Wishart: E|W^T D W v|^2 = k (k + p + 1) E[W^2]^2 |v|^2 for k active units, p outputs).
  flip_carry: scale that coherent carry from each hidden layer by 1 - `flip_share` of its predicted row
  (docs/calculus.md, *The flips' coherent carry as a mask share*). flip_net: add each hidden layer's own flip term
  under the step's mean shift (`mean_shift_net`) to its E[h^2] after the step and to the incoherent carry.
  sign_mean: Adam's cross kernels with the sign of the gradient's non-centred own component (`adam_inputs`'
  w_tok; docs/calculus.md, *Adam's sign of a non-centred gradient*). flip_rescale (with incoherent_carry; off by
  default): each hidden layer's flip rest c = relu(y + d) - relu(y) - m d, regressed on (h, dh) under
  `mean_shift_net`'s law (`flip_rescale`: c ~ a h + b dh + residual), goes up as a rescale of h (a, exact along
  the example's own activation) and of the coherent carry (1 + b, in place of flip_carry's share), the residual
  incoherently (docs/calculus.md, *The flips' rest as a rescale of h and dh*). flip_pairs (fifteenth session): the
  coherent carry of each hidden layer's change into the layer above sees the after-step mask per token pair,
  P(y_a + d_a > 0, y_t > 0) under `mean_shift_net`'s law (`after_mask`), in place of P(y_a > 0, y_t > 0) and of
  flip_carry's (or flip_rescale's) common factor (docs/calculus.md, *The carry's mask after the step*).
  state_split (sixteenth session; with flip_net, SGD settings only): each hidden layer's own flip term under a law
  of the step fitted on each side of zero (`split_net`), in place of `mean_shift_net`'s one law (docs/calculus.md,
  *The step's law on each side of zero*). draw_spread (seventeenth session; SGD settings only): the flip cost (the
  prediction less the same without any flip option) taken over the draws' own scale: each layer's step scaled by
  its lambda_l over the draws' log-gains (`spread_axes`, per layer or, spread_per_layer=False, one axis), every
  layer's E[h^2] weighed by its own c_m^2, in place of the cost at the mean draw (`spread_nodes` Gauss-Hermite nodes
  per axis; docs/calculus.md, *The flip cost over the draws' own scale*). split_mask (seventeenth session; with
  flip_pairs and state_split, SGD settings only): the coherent carry's mask after the step under `_split_law`'s two
  laws (`split_mask`) in place of `after_mask`'s one law. token_law (seventeenth session): each hidden layer's
  step law (l > 0) with its rest's variance per token from that token's own predicted E[m_a d_a^2], in place of the
  pooled variance spread by q_a (docs/calculus.md, *The mask after the step under the law on each side of zero*;
  neither better there; split_mask passed its judged rule). carry_square (eighteenth session; the optimizers it
  applies to, e.g. ("adam",); with incoherent_carry and flip_net): the incoherent carry of each hidden layer takes
  the square of its flipped change, E|relu(y + d) - relu(y)|^2 = change + net - 2 E[h c] (`square_hc`), in place of
  change + net (net, the unit's own flip term, holds 2 E[h c], which is no square; docs/calculus.md, *The incoherent
  carry's square after the flips*). sign_sum (eighteenth session, second part; Adam settings only, with flip_net): a
  dense layer's second-order term dW^T dx as its own change scaled per example by 1 + rho (`input_sum_change`: the
  relative change of the sum of its input, under the layer below's step law), in place of the regression of dx on
  the example's own activation (docs/calculus.md, *Adam's second-order term sees the input's sum*: right in sign
  where the regression is not, at the LeNet 512's dense0, and worse there in total: off). sign_sum="first"
  (nineteenth session): the same at the first dense layer above the convolutions only, where the input's sum
  changes by a few percent (|rho| <= 0.1) and the law, first order in rho, was checked; the layers above keep the
  regression (at the LeNet 512's dense1 rho is 1.7, and (1 + rho)^2 on its own row overshoots the logits 1.9x;
  docs/calculus.md, *Adam's first-order excess is no saturation*). An MLP has no such layer: "first" is off there.
  sign_draw (twentieth session; Adam settings): each dense hidden layer's own Adam kernel (True; "first": the
  first dense layer only) scaled by the root of `draw_whitening`'s factor, Adam's sigma normalised per logit draw
  (`_draw_backward`) in place of the mean backward (docs/calculus.md, *Adam's sigma sees the draw's own logit
  gradient*); info, when given, gets the factors per layer. dense_rows (twentieth session): Adam's input kernels at
  the dense layers from that many rows (`adam_inputs`), in place of `samples` (docs/calculus.md, *Adam's own square
  is the rows' sampling*). sum_split (twenty-first session; with sign_sum): where sign_sum applies, the sum law on
  the part of the own kernel that the input's mean carries and the regression on the centred rest
  (`split_second_order`), in place of the sum law on the whole row (docs/calculus.md, *The second-order term's mean
  and centred parts*). sign_sum="hidden" (twenty-first session): the sum law at every dense layer but the logits
  (their input's sum change is over-predicted, 1.69 against 1.32 at the LeNet 512). adam_split (twenty-first
  session; with state_split and flip_net, Adam settings, hidden layers above the first; "first": the first dense
  layer above the convolutions only): `state_split`'s flip term under the law on each side of zero for Adam too, its
  off-mask square E[(1 - m_a) d_a^2] the triple's split of Theta less its own sign step, whose off-mask square is its
  on-mask one (the step is mostly a shift shared over the batch's tokens, blind to the unit's state at a; docs/
  calculus.md, *The flips of a step that is mostly a per-unit shift*). flip_along (twenty-first session, second
  part; with carry_square's Adam and incoherent_carry, Adam settings, the dense layers above a stack's
  convolutions, none in an MLP): the change along the example's own activation that the layer above carries
  exactly is the post-ReLU one, E[h dh] = E[h m d] + E[h c] with c the flips' rest, not the pre-activation's
  E[h m d] (docs/calculus.md, *The part along h after the flips*). flip_second (twenty-first session, third part;
  with flip_along, at a layer whose input's change has no sum law, the logits here): the second-order term's input
  change along h, (x + dx) dW, takes the flips' rest too, E[h c] / E[h^2] of the layer below (docs/calculus.md,
  *The logits' own step after the flips*). logit_bins (twenty-second session, helper lg11; SGD settings; 0: off):
  the step given the logit layer's draw, the mean over `logit_bins_`' bins of the logit draws of the prediction with
  each bin's own logit moments (the backward, the own-activation coefficients E[z . g], E[g g^T]) and its logits'
  energy, in place of the prediction at the mean draw (the backward's gamma depends on z_0 = W^T h, and the flip
  cost is not linear in the step; docs/calculus.md, *SGD's step given the logit layer's draw*)."""
  widths = stack.widths
  if sign_sum not in (False, True, "first", "hidden"):
    raise ValueError(f"sign_sum must be False, True, 'first' or 'hidden', got {sign_sum!r}")
  if adam_split not in (False, True, "first"):
    raise ValueError(f"adam_split must be False, True or 'first', got {adam_split!r}")
  if sign_draw not in (False, True, "first"):
    raise ValueError(f"sign_draw must be False, True or 'first', got {sign_draw!r}")
  x = np.asarray(x)
  lab = np.asarray(labels)
  rows = []
  for setting in settings:
    lr, optimizer = setting[0], setting[1]
    bias = np.broadcast_to(np.asarray(setting[2] if len(setting) > 2 else 0.0, np.float64), (len(widths),))
    if optimizer not in ("sgd", "adam"):
      raise ValueError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")
    if len(lr) != len(widths) or min(lr) < 0 or bias.min() < 0:
      raise ValueError(f"lr needs one entry >= 0 per weight layer ({len(widths)}), got {lr!r}; bias_lr >= 0")
    rows.append((list(lr), optimizer, list(bias)))
  if len(w_sq) != len(widths) or min(w_sq) <= 0:
    raise ValueError(f"w_sq needs one positive entry per weight layer ({len(widths)}), got {w_sq!r}")
  if lab.shape != (x.shape[0],) or not np.issubdtype(lab.dtype, np.integer) or lab.min() < 0 \
      or lab.max() >= widths[-1]:
    raise ValueError(f"labels must be {x.shape[0]} integers in [0, {widths[-1]})")
  if not np.all(np.isfinite(x)):
    raise ValueError("x must be finite")
  with threadpool_limits(limits=BLAS_THREADS):
    st = _setup(x, lab, stack, list(w_sq), samples, seed, own_activation)
    bias = any(max(b) > 0 for _, _, b in rows)
    draw = _draw_backward(st.k, stack, w_sq, lab, samples, seed, sign_draw, own_activation) if sign_draw else None
    mean_k = [] if sum_split and sign_sum else None
    adam = (adam_inputs(x, st.k, stack, w_sq, st.gam, st.own, bias=bias, w_tok=st.w_tok if sign_mean else None,
                        draw=draw, info=info, dense_rows=dense_rows, mean_in=mean_k)
            if any(o == "adam" for _, o, _ in rows)
            else None)
    memo = {}   # the first layer's products per unit learning rate, shared by the settings
    flips = (flip_carry, flip_net, flip_rescale, flip_pairs, state_split)

    def step(lr, o, b, scale=None, on=True, st=st, memo=memo):
      scale = np.ones(len(widths)) if scale is None else scale
      return _step(st, stack, list(w_sq), list(scale * lr), o, list(scale * b), adam, second_order, memo,
                   incoherent_carry, *(flips if on else (False,) * len(flips)), token_law=token_law and on,
                   split_mask_=split_mask and on, carry_square=tuple(carry_square) if on else (),
                   sign_sum=sign_sum if on else False, mean_k=mean_k if on else None,
                   adam_split=adam_split if on else False, flip_along=flip_along and on,
                   flip_second=flip_second and on)
    parts = []   # logit_bins: the setups of the logit draws' bins (with their own memo), built at the first SGD row

    def binned(lr, o, b):
      # SGD's step given the logit layer's draw: each bin of the logit draws (by the draw's batch gradient) its own
      # backward, own-activation coefficients and logit scale; the after-step E[h^2] is the mean over the bins
      if not parts:
        parts.extend((_setup(x, lab, stack, list(w_sq), samples, seed, own_activation, st.k, idx, ratio), {})
                     for idx, ratio in logit_bins_(st.k.y[-1], lab, widths[-1], samples, seed, logit_bins))
      got = [step(lr, o, b, st=sq, memo=mq) for sq, mq in parts]
      return ur.Response(*(np.mean([np.asarray(r[j]) for r in got], 0) for j in range(len(got[0]))))

    done, out = {}, []
    for lr, o, b in rows:   # a setting met before (a rule that equals another at the base width) is the same step
      key = (np.asarray(lr).tobytes(), o, np.asarray(b).tobytes())
      if key not in done:   # Adam's sign step has one size whatever the draw's gradient: bins for SGD only
        done[key] = (binned if logit_bins and o == "sgd" else step)(np.asarray(lr), o, np.asarray(b))
      out.append(ur.Response(*(np.array(v, copy=True) for v in done[key])))
    if draw_spread and any(flips) and any(o == "sgd" for _, o, _ in rows):
      axes = spread_axes(st.k, stack, spread_per_layer)
      xi, wt = np.polynomial.hermite_e.hermegauss(spread_nodes)
      wt = wt / wt.sum()
      for i, (lr, o, b) in enumerate(rows):
        if o != "sgd":   # Adam's sign step has one size whatever the draw's gradient
          continue
        lr, b = np.asarray(lr, np.float64), np.asarray(b, np.float64)

        def cost(a):   # the flip cost with each layer's step scaled by its lambda_l = exp(sum_axes a coef_l / 2)
          scale = np.exp(sum(u * c for u, (_, c, _) in zip(a, axes)) / 2)
          return step(lr, o, b, scale).act1 - step(lr, o, b, scale, False).act1
        mu = np.array([-v / 2 for v, _, _ in axes])   # each log-gain N(-V / 2, V): its gain's mean is 1
        at_mean = cost(mu)
        got = at_mean.copy()
        # the axes are independent, so the cross terms vanish in the mean: each axis alone at the nodes
        for ax, (v, _, tilt) in enumerate(axes):
          f = np.array([at_mean if node == 0 else cost(mu + math.sqrt(v) * node * np.eye(len(axes))[ax])
                        for node in xi])
          # layer m's E[h^2] over draws weighs by its own scale c_m^2: the axes of the forward gains up to m tilt
          tw = wt[:, None] * np.exp(np.outer(mu[ax] + math.sqrt(v) * xi, tilt))
          got += (tw / tw.sum(0) * f).sum(0) - at_mean
        r = out[i]
        out[i] = r._replace(act1=r.act1 + got - (r.act1 - step(lr, o, b, None, False).act1))
    return out


def _draw_backward(k: su.Kernels, stack: su.Stack, w_sq, lab, samples: int, seed: int, scope,
                   own_activation: bool) -> dict:
  """sign_draw's dense hidden layers (scope "first": the first only) -> (DRAW_LOGITS, B, B): the backward kernel
  at the layer before its mask (`_setup`'s gam) per logit draw, `strided_update.backward` with the draw's own
  g g^T and (z . g)(z . g)^T in place of their means (dense layers: linear in both), over the first DRAW_LOGITS of
  `_setup`'s draws; their mean is gam up to the draws' sampling."""
  widths = stack.widths
  L = len(widths)
  n_conv = len(stack.kernels)
  B = k.y[-1].shape[0]
  layers = [n_conv] if scope == "first" else list(range(n_conv, L - 1))
  z, g = ur.logit_samples(k.y[-1], lab, widths[-1], samples, seed)
  z, g = z[:DRAW_LOGITS], g[:DRAW_LOGITS]
  zg = np.einsum("sbk,sbk->sb", z, g)
  out, back = {}, np.einsum("sbk,sck->sbc", g, g)
  for j in range(L - 2, n_conv - 1, -1):
    gam = widths[j] * w_sq[j + 1] * back
    if j in layers:
      out[j] = gam
    back = ur.both_active(k.y[j]) * gam
    if own_activation:
      norm = np.diag(k.h[j]).reshape(B, -1).sum(1)
      back = back + np.einsum("sb,sc->sbc", zg / norm, zg / norm) * k.h[j]
  return out


def unit_energy_var(k_y: np.ndarray, relu: bool = True) -> float:
  """Var / E^2 over one unit's weights ~ N(0, s^2 I) of its energy over the batch's tokens, mean_t relu(y_t)^2
  (the logits: y_t^2), y ~ N(0, k_y / n): E[relu(Y_s)^2 relu(Y_t)^2] = q_s q_t J2(rho) (the degree-2 arc-cosine
  kernel, (3 sin th cos th + (pi - th)(1 + 2 cos^2 th)) / 2 pi, th = acos rho), E[Y_s^2 Y_t^2] = q_s q_t (1 + 2
  rho^2)."""
  q = np.diag(k_y)
  rho = ur.correlation(k_y)
  if relu:
    th = np.arccos(rho)
    f = (3 * np.sin(th) * rho + (np.pi - th) * (1 + 2 * rho ** 2)) / (2 * np.pi)
    return float(q @ f @ q) / (len(q) * float(np.mean(q)) / 2) ** 2 - 1
  return float(q @ (1 + 2 * rho ** 2) @ q) / (len(q) * float(np.mean(q))) ** 2 - 1


def draw_scale_var(k: su.Kernels, widths: Sequence[int]) -> np.ndarray:
  """(L,) each layer's share of Var over draws of log C^2, C^2 a draw's E[z^2] over its mean: a layer's n units
  are independent given its input, so its mean energy's gain over draws has relative variance `unit_energy_var` /
  n, and a ReLU stack is positively homogeneous, so the gains multiply (log-variances add, each a lognormal's
  log(1 + v)); `spread_axes` turns them into the draws' spread of SGD's step (docs/calculus.md, *The flip cost
  over the draws' own scale*)."""
  L = len(widths)
  return np.array([math.log1p(unit_energy_var(k.y[l], l < L - 1) / widths[l]) for l in range(L)])


def spread_axes(k: su.Kernels, stack: su.Stack, per_layer: bool = True) -> list:
  """The independent log-gains over draws that set each layer's SGD step relative to its y, as (V, coef, tilt):
  V the log-variance, coef (L,) its weight in log lambda_l^2, tilt (L,) its share in layer m's own scale c_m^2.
  SGD's change of layer l relative to y is lr |x_l|^2 |delta_l| / |y_l| ~ prod_{i < l} g_i / g_l (g_i^2 the forward
  gain of layer i's energy, `draw_scale_var`); per_layer (the default): so, one axis per layer; otherwise one axis,
  the hidden layers' gains together taken as one scale of every layer's step (the own layer's gain with the
  others' sign; the logits' gain is E[z^2]'s, not the step's), layer m holding the share of its variance up to m.
  The backward gains |W_i^T delta_i|^2 / |delta_i|^2 (a sum over W_i's fan-in rows, each a Gaussian quadratic form
  with matrix sum_t delta_t delta_t^T) are left out: their log-variance, 2 sum_st G_st^2 / (sum_t G_tt)^2 over the
  fan-in (G the backward kernel), is below 0.003 on every layer of the transfer grid (docs/calculus.md, *The flip
  cost over the draws' own scale*)."""
  L = len(stack.widths)
  fwd = draw_scale_var(k, stack.widths)
  idx = np.arange(L)
  if per_layer:
    return [(fwd[i], (idx > i) * 1.0 - (idx == i), (idx >= i) * 1.0) for i in range(L)]
  v = float(np.sum(fwd[:-1]))
  return [(v, np.ones(L), np.minimum(np.cumsum(fwd), v) / max(v, 1e-300))]


class _Setup(NamedTuple):
  k: su.Kernels
  gg: np.ndarray
  zg: np.ndarray
  back: list
  own: list
  w_tok: list
  both: list
  s_tab: list
  grad_k: list
  gam: list


def logit_bins_(k_z: np.ndarray, lab: np.ndarray, n_out: int, samples: int, seed: int, bins: int) -> list:
  """(sample indices, energy ratio) per bin of `ur.logit_samples`' draws, `bins` groups of equal size sorted by the
  draw's batch gradient |sum_b gamma_b|^2 (what sets an SGD step's size: the NTK over the batch is mostly its
  common part), the ratio the group's mean logit energy |z|^2 over all draws'. Each sample is one draw of the logit
  layer's weights given h (the batch's logits jointly Gaussian)."""
  z, g = ur.logit_samples(k_z, lab, n_out, samples, seed)
  e = np.einsum("sbc,sbc->s", z, z)
  order = np.argsort(np.sum(g.sum(1) ** 2, -1), kind="stable")
  return [(idx, float(e[idx].mean() / e.mean())) for idx in np.array_split(order, bins)]


def _setup(x, lab, stack, w_sq, samples, seed, own_activation, k=None, pick=None, top_scale=1.0) -> _Setup:
  """pick (logit_bins): the logit moments over those draws only, and the logits' kernel scaled by their energy
  ratio top_scale (the draws' own |z|^2), for the prediction given the logit layer's draw (docs/calculus.md)."""
  B = x.shape[0]
  widths = stack.widths
  L = len(widths)
  k = su.forward(x, stack, w_sq) if k is None else k
  z, g = ur.logit_samples(k.y[-1], lab, widths[-1], samples, seed)
  if pick is not None:
    z, g, samples = z[pick], g[pick], len(pick)
  gf = np.moveaxis(g, 1, 0).reshape(B, -1)
  gg = gf @ gf.T / samples
  zgs = np.einsum("sbk,sbk->sb", z, g)
  zg, zgzg = zgs.mean(0), zgs.T @ zgs / samples
  back = su.backward(k, stack, w_sq, gg, zgzg if own_activation else None, B)
  per_ex = [None if k.h[l] is None else k.h[l].shape[0] // B for l in range(L)]
  # per hidden layer: |h_b|^2 over the example's positions, its token expansion, the own part's kernel
  norm = [None if k.h[l] is None else np.diag(k.h[l]).reshape(B, per_ex[l]).sum(1) for l in range(L)]
  w_tok = [None if k.h[l] is None else np.repeat(zg / norm[l], per_ex[l]) for l in range(L)]
  own = [None] * L
  for l in range(L - 1):
    if own_activation:
      own[l] = np.repeat(np.repeat(zgzg / np.outer(norm[l], norm[l]), per_ex[l], 0), per_ex[l], 1)
  both = [None if k.h[l] is None else ur.both_active(k.y[l]) for l in range(L)]
  s_tab = [None if k.h[l] is None else _asin_quarter(k.y[l]) for l in range(L)]
  # Gamma: the gradient at h_l before the mask, seen through a token triple (module doc)
  grad_k = [back[l] / both[l] for l in range(L - 1)] + [gg]
  gam = [(back[l] - (own[l] * k.h[l] if own[l] is not None else 0.0)) / both[l] for l in range(L - 1)] + [gg]
  if top_scale != 1.0:
    k = k._replace(y=k.y[:-1] + [k.y[-1] * top_scale])
  return _Setup(k, gg, zg, back, own, w_tok, both, s_tab, grad_k, gam)


def _step(st: _Setup, stack, w_sq, lr, optimizer, bias_lr, adam, second_order, memo: dict,
          incoherent_carry: bool = False, flip_carry: bool = False, flip_net: bool = False,
          flip_rescale_: bool = False, flip_pairs: bool = False, state_split: bool = False,
          token_law: bool = False, split_mask_: bool = False, carry_square: tuple = (),
          sign_sum: bool | str = False, mean_k: list | None = None, adam_split: bool | str = False,
          flip_along: bool = False, flip_second: bool = False) -> ur.Response:
  def first_layer(opt, what, f):
    if (opt, what) not in memo:
      memo[opt, what] = f()
    return memo[opt, what]

  k, zg, back, w_tok, both, s_tab, grad_k = st.k, st.zg, st.back, st.w_tok, st.both, st.s_tab, st.grad_k
  B = st.gg.shape[0]
  widths = stack.widths
  L = len(widths)
  if optimizer == "sgd":
    inputs, cross_inputs, eta = k.x, k.x, list(lr)
    upd = su.rms(su.kernel_gradient_sq(k, back, B), lr, [kx_fan(stack, l) for l in range(L)], widths)
    noise = np.zeros(L)
    own_noise = [0.0] * L
    eta_b = list(bias_lr)
    b_in = [np.ones_like(kx) if e else 0.0 for kx, e in zip(k.x, eta_b)]
    b_cross = b_in
  else:
    inputs, cross_inputs, norms, b_in, b_cross = adam
    eta = [KAPPA * v for v in lr]
    eta_b = [KAPPA * v for v in bias_lr]
    if not b_in:   # no bias steps in this call: adam_inputs left their kernels out
      b_in = b_cross = [0.0] * L
    upd = np.asarray(lr, np.float64)
    noise = adam_noise(norms, lr, k, stack, w_sq, bias_lr)
    own_noise = [(lr[j] ** 2 * widths[j] * norms[j] + bias_lr[j] ** 2 * widths[j]) * (1 - 2 / math.pi)
                 * (0.5 if j < L - 1 else 1.0) for j in range(L)]
  act0, cross, change, net = np.zeros(L), np.zeros(L), np.zeros(L), np.zeros(L)
  below = np.zeros(B)   # sum of the layers below's relative changes along the example's own activation
  theta, keep, mask = [], 1.0, None
  n_conv = len(stack.kernels)
  rho = None   # sign_sum: each dense token's relative change of its input's sum, from the step law below
  along = 0.0   # flip_along: the flips' rest along h of the layer below, E[h c] / E[h^2]
  for l in range(L):
    if l == 0:
      th = eta[0] * inputs[0] + eta_b[0] * b_in[0]
    else:
      own_in = inputs[l]
      if second_order:
        if l == 1:   # linear in Theta_0 = eta_0 X_0 + eta_b B_0: once per optimizer (conv0's T^3 products)
          part = lambda m: lifted_change(m, s_tab[0], both[0], k.h[0], w_tok[0], k, stack, 1, B)  # noqa: E731
          part_b = (lambda: part(None)) if optimizer == "sgd" else (lambda: part(b_in[0]))   # SGD's: all ones
          sc = (eta[0] * first_layer(optimizer, "change", lambda: part(inputs[0]))
                + (eta_b[0] * first_layer(optimizer, "change_b", part_b) if eta_b[0] else 0.0))
        else:
          sc = lifted_change(theta[-1], s_tab[l - 1], both[l - 1], k.h[l - 1], w_tok[l - 1], k, stack, l, B)
        if rho is not None and mean_k and mean_k[l] is not None:
          own_in = split_second_order(inputs[l], mean_k[l], rho, sc, k.x[l])
        elif rho is not None:   # Adam's sign shared over a unit's inputs (all >= 0) sees the sum of their change
          own_in = inputs[l] * (1.0 + rho)[:, None]
        else:
          if flip_second and along:   # the input's change along h after the flips, as the exact carry's (below)
            sc = sc + along * k.x[l]
          own_in = own_in + sc * _ratio(inputs[l], k.x[l])
      own_th = eta[l] * own_in + eta_b[l] * b_in[l]
      th = (own_th
            + (keep * widths[l - 1] * w_sq[l] * lift(both[l - 1] * theta[-1], k, stack, l, B) if mask is None
               else widths[l - 1] * w_sq[l] * lift(mask * theta[-1], k, stack, l, B)))
    theta.append(th)
    top = l == L - 1
    k_h = k.y[l] if top else k.h[l]
    T = k_h.shape[0]
    n_ex = np.diag(k_h).reshape(B, T // B).sum(1)               # |h_l,a|^2 over the example's positions
    act0[l] = float(np.sum(n_ex)) / (T * widths[l])
    theta_h = theta[l] + eta[l] * (cross_inputs[l] - inputs[l]) + eta_b[l] * (b_cross[l] - b_in[l])
    w = zg / np.diag(k_h) if top else w_tok[l]
    # beta_l(a): the regression of layer l's own change on h_l,a (E[h_a . dh_a] / |h_a|^2, per example)
    beta = -(theta_h * k_h * w[None, :]).sum(1).reshape(B, T // B).sum(1) / B / n_ex
    cross[l] = 2 * float(np.sum((below + beta) * n_ex)) / (T * widths[l])
    own_sq = float(np.sum((2 * below * beta + below ** 2) * n_ex))
    if l == 0:   # quadratic in (eta_0, eta_b): once per optimizer
      if eta_b[0] and optimizer != "sgd":   # Adam's bias kernel: the three forms from shared products
        xx, xb, bb = first_layer(optimizer, "forms", lambda: triple_forms(inputs[0], b_in[0], s_tab[0], grad_k[0]))
        tri = eta[0] ** 2 * xx + 2 * eta[0] * eta_b[0] * xb + eta_b[0] ** 2 * bb
      else:
        tri = eta[0] ** 2 * first_layer(optimizer, "xx", lambda: triple_sum(inputs[0], s_tab[0], grad_k[0]))
      if eta_b[0] and optimizer == "sgd":   # SGD's bias kernel is all ones: triple_pair_ones
        tri += (2 * eta[0] * eta_b[0] * first_layer(optimizer, "xb",
                                                    lambda: triple_pair_ones(inputs[0], s_tab[0], grad_k[0]))
                + eta_b[0] ** 2 * first_layer(optimizer, "bb", lambda: triple_pair_ones(None, s_tab[0], grad_k[0])))
    elif token_law and not top:
      tri_tok = triple_rows(theta[l], s_tab[l], grad_k[l])
      tri = float(np.sum(tri_tok))
    else:
      tri = triple_sum(theta[l], s_tab[l], grad_k[l])
    if incoherent_carry:
      # the part along h_l-1,a is carried exactly by W^T h = y (in own_sq); the rest reaches each output unit
      # through its own column of weights, summed at random over the units below
      inc = 0.0
      if l > 0:
        inc = perp * widths[l] * w_sq[l] * k.y[l - 1].shape[0] / k.y[l].shape[0] * (0.5 if not top else 1.0)
      change[l] = (tri / B ** 2 + own_sq) / (T * widths[l]) + (own_noise[l] + inc) / widths[l]
    else:
      change[l] = (tri / B ** 2 + own_sq + noise[l] * T) / (T * widths[l])
    tok = token_law and not top and l > 0
    if tok:   # token a's own E[m_a d_a^2]: its triple-sum row and own part; the rest (carries, noise) shared by q_a
      q_tok = np.diag(k.y[l])
      own_tok = np.repeat(2 * below * beta + below ** 2, T // B) * np.diag(k_h)
      share = _ratio(q_tok, np.full_like(q_tok, float(np.mean(q_tok))))
      change_tok = ((tri_tok / B ** 2 + own_tok) / widths[l]
                    + (change[l] - (tri / B ** 2 + own_sq) / (T * widths[l])) * share)
    law = change_tok if tok else change[l]
    shift = []   # `_shift_law` of this layer's step, computed once: up to four of the terms below read it

    def one_law():
      if not shift:
        shift.append(_shift_law(k.y[l], theta_h, w, below, law, widths[l], B))
      return shift[0]
    net_off = None
    if flip_net and not top and state_split and (optimizer == "sgd" or (adam_split and l > 0 and not tok
                                                                      and (adam_split != "first" or l == n_conv))):
      # E[(1 - m_a) d_a^2]: the triple sum with a's mask off, P(s, t) - P(a, s, t), from sum_a (Theta back Theta^T)_aa
      if l == 0:   # Theta_0 = eta_0 X_0 + eta_b 1 (SGD's bias kernel is all ones): once per optimizer
        fxx = first_layer(optimizer, "fxx", lambda: float(np.sum((inputs[0] @ back[0]) * inputs[0])))
        full = (eta[0] ** 2 * fxx + 2 * eta[0] * eta_b[0] * float(inputs[0].sum(0) @ back[0].sum(0))
                + eta_b[0] ** 2 * T * float(back[0].sum()))
      elif tok:
        full_tok = np.sum((theta[l] @ back[l]) * theta[l], 1)
        full = float(np.sum(full_tok))
      else:
        full = float(np.sum((theta[l] @ back[l]) * theta[l]))
      inc_off = inc / widths[l] if incoherent_carry else 0.0
      if optimizer == "adam":   # adam_split: the own sign step, a shift shared over the tokens, is blind to the
        # unit's state at a (its off-mask square its on-mask one); the rest of Theta keeps the triple's split
        tri_own = triple_sum(own_th, s_tab[l], grad_k[l])
        full_own = float(np.sum((own_th @ back[l]) * own_th))
        full = full - full_own + 2 * tri_own
        inc_off += own_noise[l] / widths[l]   # the sign's noise is blind to it too
      off = ((full_tok - tri_tok) / B ** 2 / widths[l] + inc_off * share if tok
             else (full - tri) / B ** 2 / (T * widths[l]) + inc_off)
      tables = first_layer("any", ("split", l), lambda: split_tables(k.y[l]))   # every setting's
      net[l] = split_net(k.y[l], theta_h, w, below, law, off, widths[l], B, tables)
      net_off = off
    elif flip_net and not top:
      net[l] = mean_shift_net(k.y[l], theta_h, w, below, law, widths[l], B, one_law())
    if flip_pairs and not top and split_mask_ and net_off is not None:   # the mask under the law per side
      mask = split_mask(k.y[l], theta_h, w, below, law, net_off, widths[l], B)
    elif flip_pairs and not top:   # the coherent carry's mask after the step, per token pair (in place of keep)
      mask = after_mask(k.y[l], theta_h, w, below, law, widths[l], B, both[l], one_law())
    rho = None
    if (sign_sum and optimizer == "adam" and flip_net and not top and l + 1 >= n_conv
        and (sign_sum != "first" or l + 1 == n_conv) and (sign_sum != "hidden" or l + 1 < L - 1)):
      rho = input_sum_change(k.y[l], theta_h, w, below, law, widths[l], B, one_law())
    ra = rb = hc = 0.0
    if optimizer in carry_square and incoherent_carry and flip_net and not top and not flip_rescale_:
      # the incoherent carry's square is |m d + c|^2 = change + net - 2 E[h c] (net counts 2 E[h c], no square)
      hc = square_hc(k.y[l], theta_h, w, below, law, net_off, widths[l], B,
                     None if net_off is not None else one_law())
    if flip_rescale_ and not top:   # the flips' rest c ~ ra h + rb dh + residual (docs/calculus.md)
      ra, rb, hc = flip_rescale(k.y[l], theta_h, w, below, law, widths[l], B)
    # the change along the example's own activation, carried exactly; with flip_rescale E[h (dh + c)] / E[h^2] =
    # beta + E[h c] / E[h^2] = (1 + b) beta + a
    below = (1 + rb) * (below + beta) + ra
    along = (hc / act0[l] if flip_along and optimizer == "adam" and hc and not flip_rescale_ and l >= n_conv > 0
             else 0.0)
    if along:
      # the layer above reads relu(y + d) = h + m d + c: a unit that the step turns off keeps -h, not d, so the flips'
      # rest lies along h (E[h c] > 0) and the part carried exactly is E[h dh] = E[h m d] + E[h c], not E[h m d]
      # (at the LeNet 512's dense0 under Adam, -0.98 of E[h^2] before the flips and +0.05 measured after)
      below = below + along
    if incoherent_carry:   # the unit's own flip term reaches the layer above through its own column, as the rest
      # with flip_rescale: |dh + c|^2 = change + net - 2 E[h c] (net's 2 E[h c] is no square), less its part along h
      perp = (change[l] + net[l] - 2 * hc) * widths[l] - float(np.sum(below ** 2 * n_ex)) / T
    if flip_rescale_ and not top:
      keep = 1.0 + rb
    elif flip_carry and not top:
      keep = 1.0 - flip_share(act0[l], cross[l], change[l])
  return ur.Response(act0, cross, change, act0 + cross + change + net, upd)


def input_sum_change(k_y: np.ndarray, theta_h: np.ndarray, w: np.ndarray, below: np.ndarray, change,
                     n: int, batch: int, law: tuple | None = None) -> np.ndarray:
  """Per example, the relative change of the sum of a hidden layer's outputs over its units and positions (what the
  next, dense, layer reads), E[relu(y + d)] / E[relu(y)] - 1 summed over the example's tokens, under
  `mean_shift_net`'s law of the step: y + d = (1 + kappa) y + mu + e is normal, N(mu, (1 + kappa)^2 q + s^2).
  Adam's first step on a dense layer is lr sign(G_ij), G_ij = sum_t delta_it x_tj with every x >= 0, so most of
  a unit's signs agree over its inputs and its step on a token's changed input is about lr s_i sum_j dx_aj: the
  layer's own change scaled by 1 + rho_a (docs/calculus.md, *Adam's second-order term sees the input's sum*).
  law: `_shift_law`'s result for these arguments, if the caller has it."""
  q, mu, kappa, s2 = _shift_law(k_y, theta_h, w, below, change, n, batch) if law is None else law
  sd = np.sqrt(np.maximum((1 + kappa) ** 2 * q + s2, 1e-300))
  after = sd * np.exp(-0.5 * (mu / sd) ** 2) / math.sqrt(2 * math.pi) + mu * ndtr(mu / sd)
  before = np.sqrt(q / (2 * math.pi))
  T = k_y.shape[0]
  return (after - before).reshape(batch, T // batch).sum(1) / before.reshape(batch, T // batch).sum(1)


def _shift_law(k_y, theta_h, w, below, change, n, batch):
  """`mean_shift_net`'s law of a hidden layer's step per token: (q, mu, kappa, s2) with d = mu + kappa y + e."""
  T = k_y.shape[0]
  q = np.diag(k_y) / n
  coef = -theta_h * w[None, :] / batch
  mu = coef @ np.sqrt(q / (2 * np.pi))
  # E[y_a r_a] = sum_t coef(a, t) K_y(a, t) / 2n (E[y_a relu(y_t)] = Cov / 2), over q_a
  kappa = np.maximum(np.repeat(below, T // batch) + _ratio((coef * k_y).sum(1), 2 * n * q), -0.9)
  # E[m d^2] = mu^2 / 2 + 2 mu kappa E[relu(y)] + kappa^2 q / 2 + s^2 / 2 per token; change is its token mean
  fit = mu ** 2 + 4 * mu * kappa * np.sqrt(q / (2 * np.pi)) + kappa ** 2 * q
  if np.ndim(change):   # token_law: each token's own E[m d^2], its rest its own
    return q, mu, kappa, np.maximum(2 * change - fit, 0.0)
  s2 = max(2 * change - float(np.mean(fit)), 0.0)
  return q, mu, kappa, s2 * _ratio(q, np.full_like(q, float(np.mean(q))))


def mean_shift_net(k_y: np.ndarray, theta_h: np.ndarray, w: np.ndarray, below: np.ndarray, change: float,
                   n: int, batch: int, law: tuple | None = None) -> float:
  """The per-entry flip term E[relu(y + d)^2] - E[(relu(y) + m d)^2] of a hidden layer whose step lowers its units
  on average (docs/calculus.md, *The units' mean shift and their own flip term*): the change along the example's
  own activation is r_a,j = sum_t coef(a, t) h_t,j over the units j (coef = -Theta_h w / B, `_step`'s beta before
  the sum); its mean over the units, mu_a = sum_t coef(a, t) E[h_t,j], shifts every unit of token a alike, its
  regression on y_a,j (and the layers below's change along it) rescales y; the rest of E|m d|^2 is a Gaussian e,
  its variance shared by the tokens in proportion to their q_a. `relu_flips.shift_net` per token. law:
  `_shift_law`'s result for these arguments, if the caller has it."""
  law = _shift_law(k_y, theta_h, w, below, change, n, batch) if law is None else law
  return float(np.mean(relu_flips.shift_net(*law)))


def split_tables(k_y: np.ndarray) -> tuple:
  """`_split_law`'s tables of a layer that no step changes (rho, the arc-cosine J(rho), and the three factors of
  its two sides' regressions): computed once per layer for every setting."""
  rho = ur.correlation(k_y)
  jr = (np.sqrt(np.clip(1 - rho ** 2, 0, None)) + rho * (np.pi - np.arccos(rho))) / (2 * np.pi)
  return rho, jr, 1 + rho, 1 - rho, rho / 2 - jr


def _split_law(k_y, theta_h, w, below, change, change_off, n, batch, tables=None):
  """`_shift_law` fitted on each side of zero: (q, on, off), each side (mu, kappa, s2) per token with d = mu + kappa
  y + e on that side. The own component r_a = sum_t coef(a, t) relu(y_t) is regressed on y_a within each half
  (bivariate normal moments: E[relu(Y_t) 1[Y_a > 0]] = phi(0) (1 + rho) / 2, E[relu(Y_t) Y_a 1[Y_a > 0]] = J(rho), the
  arc-cosine kernel, E[relu(Y_t) Y_a] = rho / 2), the layers below's change S y is exact on both; the rest e has the
  variance left of E[1[y > 0] d^2] (change) on the active side and of E[1[y < 0] d^2] (change_off) on the other."""
  T = k_y.shape[0]
  q = np.diag(k_y) / n
  sq = np.sqrt(q)
  rho, jr, up, down, half = split_tables(k_y) if tables is None else tables
  coef = -theta_h * w[None, :] / batch
  phi0 = 1 / math.sqrt(2 * math.pi)
  det = 0.25 - phi0 ** 2
  S = np.repeat(below, T // batch)
  out = []
  for sign, er, ery, e2 in ((1.0, (coef * up) @ sq * phi0 / 2, (coef * jr) @ sq, change),
                            (-1.0, (coef * down) @ sq * phi0 / 2, (coef * half) @ sq, change_off)):
    mu = (er / 2 - sign * phi0 * ery) / det
    kappa = _ratio((ery / 2 - sign * phi0 * er) / det, sq) + S
    # E[1_side d^2] = mu^2 / 2 + 2 sign mu kappa sqrt(q) phi(0) + kappa^2 q / 2 + s2 / 2 per token, pooled
    fit = mu ** 2 + 4 * sign * mu * kappa * sq * phi0 + kappa ** 2 * q
    if np.ndim(e2):   # token_law: each token's own side moment
      out.append((mu, kappa, np.maximum(2 * e2 - fit, 0.0)))
      continue
    s2 = max(2 * e2 - float(np.mean(fit)), 0.0)
    out.append((mu, kappa, s2 * _ratio(q, np.full_like(q, float(np.mean(q))))))
  return q, out[0], out[1]


def split_net(k_y: np.ndarray, theta_h: np.ndarray, w: np.ndarray, below: np.ndarray, change: float,
              change_off: float, n: int, batch: int, tables: tuple | None = None) -> float:
  """The per-entry flip term of a hidden layer under an SGD step whose law differs on the two sides of zero
  (docs/calculus.md, *The step's law on each side of zero*): the unit's change at token a, -(1/B) sum_t Theta(a, t)
  m_t delta_t, holds the unit's own mask m_t over the batch, so a unit off at a (mostly off at the tokens that
  correlate with a) gets a smaller change than an active one, E[1[y < 0] d^2] < E[1[y > 0] d^2] (the triple orthant
  with a's mask off), and the own component relu(y_t) is not linear in y_a. `relu_flips.half_net` per token of
  `_split_law`'s two laws (tables: `split_tables(k_y)`, given to share them over settings)."""
  q, on, off = _split_law(k_y, theta_h, w, below, change, change_off, n, batch, tables)
  return float(np.mean(relu_flips.half_net(q, on, off)))


def square_hc(k_y: np.ndarray, theta_h: np.ndarray, w: np.ndarray, below: np.ndarray, change, change_off,
              n: int, batch: int, law: tuple | None = None) -> float:
  """A hidden layer's per-entry E[h c] (h = relu(y), c = relu(y + d) - h - m d the flip rest) under the step's law:
  `_split_law`'s active side where change_off is given (only units on at the token give c along h), else
  `_shift_law`'s one law (`relu_flips.shift_regression`); law: that one law for these arguments, if the caller
  has it."""
  if change_off is None:
    law = _shift_law(k_y, theta_h, w, below, change, n, batch) if law is None else law
  else:
    q, on, _ = _split_law(k_y, theta_h, w, below, change, change_off, n, batch)
    law = (q,) + tuple(on)
  return float(np.mean(relu_flips.shift_regression(*law)[0]))


def flip_rescale(k_y: np.ndarray, theta_h: np.ndarray, w: np.ndarray, below: np.ndarray, change: float,
                 n: int, batch: int) -> tuple[float, float, float]:
  """(a, b, E[h c]) of a hidden layer: the flip rest c = relu(y + d) - relu(y) - m d regressed on (h, dh) over
  the layer's entries under `mean_shift_net`'s law (`relu_flips.shift_regression` per token, pooled), and its
  per-entry E[h c] (docs/calculus.md, *The flips' rest as a rescale of h and dh*)."""
  hc, dc, hh, hd, dd, _ = (float(np.mean(m)) for m in
                           relu_flips.shift_regression(*_shift_law(k_y, theta_h, w, below, change, n, batch)))
  det = hh * dd - hd * hd
  if det <= 0:
    return 0.0, 0.0, hc
  return (dd * hc - hd * dc) / det, (hh * dc - hd * hc) / det, hc


def after_mask(k_y: np.ndarray, theta_h: np.ndarray, w: np.ndarray, below: np.ndarray, change: float,
               n: int, batch: int, both: np.ndarray | None = None, law: tuple | None = None) -> np.ndarray:
  """(T, T) P(y_a + d_a > 0, y_t > 0) of a hidden layer's units under `mean_shift_net`'s law (d_a = mu_a +
  kappa_a y_a + e_a, e_a ~ N(0, s2_a) independent of y): the mask that the coherent carry of the layer's change
  into the layer above sees, in place of the first order's P(y_a > 0, y_t > 0). By Stein's lemma on the weights
  above (the change d_a,j is linear in unit j's outgoing weights through the backward signal), the layer above
  gets relu(y + d) - relu(y) through its slope in d at the step's end, 1[y_a + d_a > 0], paired with the
  gradient's own mask at token t, 1[y_t > 0] (docs/calculus.md, *The carry's mask after the step*). Where the
  shift is large relative to y the pair is nearly independent: the mask tends to P(u_a > 0) / 2, not to
  flip_share's diagonal law, which reads every pair as the token with itself. both: `ur.both_active(k_y)`, given
  to share it over settings; law: `_shift_law`'s result for these arguments, if the caller has it."""
  q, mu, kappa, s2 = _shift_law(k_y, theta_h, w, below, change, n, batch) if law is None else law
  g = 1 + kappa
  sd = np.sqrt(g ** 2 * q + s2)
  cov = k_y / n
  rho = np.clip(_ratio(g[:, None] * cov, sd[:, None] * np.sqrt(q)[None, :]), -1 + 1e-12, 1 - 1e-12)
  h = _ratio(mu, sd)
  # Phi2(h, 0; rho) = Phi(h) / 2 - T(h, -rho / sqrt(1 - rho^2)) (Owen's T), P(u > 0, y > 0) with u = mu + sd Z
  out = (0.5 * ndtr(h))[:, None] - owens_t(np.broadcast_to(h[:, None], rho.shape), -rho / np.sqrt(1 - rho ** 2))
  ok = (sd[:, None] > 0) & (q[None, :] > 0)
  return np.where(ok, out, ur.both_active(k_y) if both is None else both)


MASK_NODES = 16   # Gauss-Legendre nodes on each half of y_a (its standard score in [0, 6]) for `split_mask`


def split_mask(k_y: np.ndarray, theta_h: np.ndarray, w: np.ndarray, below: np.ndarray, change, change_off,
               n: int, batch: int) -> np.ndarray:
  """(T, T) P(y_a + d_a > 0, y_t > 0) of a hidden layer's units under `_split_law`'s two laws (SGD: a unit off at
  a, mostly off where a's change comes from, moves less): `after_mask` with the step's law on each side of y_a's
  zero. Given y_a = sqrt(q_a) z, y_t > 0 with probability Phi(rho z / sqrt(1 - rho^2)) and the step's end is
  above zero with Phi((mu + (1 + kappa) sqrt(q_a) z) / s) (the side's law, e independent of y within it): one
  integral over z on each half."""
  q, on, off = _split_law(k_y, theta_h, w, below, change, change_off, n, batch)
  sq = np.sqrt(q)
  rho = np.clip(ur.correlation(k_y), -1 + 1e-12, 1 - 1e-12)
  c = rho / np.sqrt(1 - rho ** 2)
  z, wt = np.polynomial.legendre.leggauss(MASK_NODES)
  z, wt = 3 * (z + 1), 3 * wt

  def up(law, zi):   # phi(z) times P(y_a + d_a > 0 | z) on the side of z
    mu, kappa, s2 = law
    s, u = np.sqrt(s2), mu + (1 + kappa) * sq * zi
    return math.exp(-zi * zi / 2) / math.sqrt(2 * math.pi) * np.where(s > 0, ndtr(_ratio(u, s)), (u > 0) * 1.0)
  # at -z, P(y_t > 0 | z) = 1 - Phi(c z): one T x T table per node serves both halves
  out = np.zeros_like(rho)
  for zi, wi in zip(z, wt):
    hi, lo = wi * up(on, zi), wi * up(off, -zi)
    out += lo[:, None] + (hi - lo)[:, None] * ndtr(c * zi)
  ok = q[:, None] * q[None, :] > 0
  return np.where(ok, out, ur.both_active(k_y))


def flip_share(act0: float, cross: float, change: float) -> float:
  """The share of a ReLU layer's active units that the step switches off, over the active share, for a zero-mean
  Gaussian pre-activation y ~ N(0, v) and a change d = kappa y + e (e ~ N(0, s^2) independent of y), from the
  layer's predicted E[h^2] = v / 2, cross term 2 E[h . dh] = 2 kappa E[h^2] and E|dh|^2 = kappa^2 E[h^2] + s^2 / 2:
  P(y > 0 > (1 + kappa) y + e) / P(y > 0) = atan(s / ((1 + kappa) sqrt v)) / pi. By Stein's lemma on the part of
  the step that the weights above carry coherently (linear in them), that part passes relu(y + d) - relu(y) with
  the slope 1[y + d > 0] where the first order has 1[y > 0]: against the first-order change it is scaled by
  1 - P(off) / P(on) (docs/calculus.md, *The flips' coherent carry as a mask share*)."""
  kappa = cross / (2 * act0)
  s2 = max(2 * (change - kappa ** 2 * act0), 0.0)
  g = max(1 + kappa, 1e-12)
  return math.atan(math.sqrt(s2) / (g * math.sqrt(2 * act0))) / math.pi


def kx_fan(stack: su.Stack, l: int) -> int:
  """Layer l's fan-in: a conv's kh kw c_in, a dense layer's input width."""
  n_conv = len(stack.kernels)
  if l < n_conv:
    c_in = stack.image[2] if l == 0 else stack.channels[l - 1]
    return stack.kernels[l][0] * stack.kernels[l][1] * c_in
  if l == n_conv:
    if n_conv:
      H, W = stack.image[:2]
      for kh, kw in stack.kernels:
        H, W = H // kh, W // kw
      return H * W * stack.channels[-1]
    return int(np.prod(stack.image))
  return stack.dense[l - n_conv - 1]

"""SGD's first update of a bias-free ReLU network of strided convolutions (stride = kernel, VALID) followed by
dense layers, predicted over (example, position) pairs (docs/calculus.md, *The first update over (example,
position) pairs*). **[derived, beyond the paper]**

The update of a weight layer is -lr grad, grad = (1/B) sum_{b,p} x_b,p delta_b,p^T over the examples b and the
layer's output positions p (a dense layer has one), so

    E|grad|^2 = (1/B^2) sum_{(b,p),(c,q)} K_x((b,p),(c,q)) K_delta((b,p),(c,q)),

the input kernel and the backward kernel over pairs of (example, position) tokens. The forward kernels are the
calculus's, as `update_response.forward_kernels` builds them for a dense stack (the dense layers here are its
`dense_kernels`), in the CNN-GP form: a stride = kernel conv is a dense layer on each non-overlapping patch,
the next conv's input kernel sums its patch's offsets, the flatten sums the positions.

The backward kernel has two parts. The calculus's: the backward weights independent of the forward ones, so
the gradient at a layer's output correlates only between tokens that a shared weight block joins (a conv's
input offsets; the flatten's positions do not share weights, so that part is diagonal in the positions). And
the part those independent weights lack: the next layer's weights W are seen by the forward pass through
y = W^T h, so given the forward pass W = W_perp + h (h^T W) / |h|^2 and the gradient at h is
W_perp delta + c h, with c = y . delta / |h|^2 = z . g / |h|^2 (positive homogeneity: h . gamma = z . g at every
layer of a bias-free ReLU net; z the logits, g the loss gradient there). So the pre-activation gradient of
every hidden layer carries c_b h_b (the mask keeps h), coherent over all positions of an example and, since
ReLU features are positive, over examples: it adds E[c_b c_c] K_h((b,p),(c,q)) to the backward kernel over
every pair of tokens, where a conv's update sums them (B^2 P^2 pairs) and the calculus's part has only the
pairs a weight joins. Per example it is O(1/n) of the gradient (n the units per example), which is why a dense
layer hardly sees it and a conv, with P positions adding coherently, does.

The regression is on one example's own forward pass: with B examples and a shared W of fewer than B rows the
forward pass constrains W further (a finite-width effect the independent part keeps), not modelled.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
from threadpoolctl import threadpool_limits

from jscale.calculus.update_response import LOGIT_SAMPLES, both_active, dense_kernels, logit_samples, relu_kernel


class Stack(NamedTuple):
  """A strided conv stack: image (H, W, C); per conv its kernel (kh, kw) (stride = kernel) and output channels;
  then the dense layers' widths (the logits last)."""
  image: tuple
  kernels: tuple
  channels: tuple
  dense: tuple

  @property
  def widths(self) -> tuple:
    """Every weight layer's output width: the convs' channels, then the dense layers'."""
    return tuple(self.channels) + tuple(self.dense)

  @classmethod
  def of_shapes(cls, image: Sequence[int], kernel_shapes: Sequence[tuple]) -> "Stack":
    """From the input's shape (H, W, C) and the kernels' shapes in layer order, convs (kh, kw, c_in, c_out) then
    dense (n_in, n_out) (what `models.Model.kernel_shapes` lists)."""
    convs = [tuple(s) for s in kernel_shapes if len(s) == 4]
    dense = [tuple(s) for s in kernel_shapes if len(s) == 2]
    if len(convs) + len(dense) != len(kernel_shapes) or any(len(s) == 4 for s in kernel_shapes[len(convs):]):
      raise ValueError(f"kernel shapes must be convs (4-d) then dense (2-d), got {kernel_shapes!r}")
    return cls(tuple(image), tuple(s[:2] for s in convs), tuple(s[3] for s in convs), tuple(s[1] for s in dense))


class Kernels(NamedTuple):
  """Per weight layer over its tokens (example-major: b * P + p): x the input patch kernel, y the output's,
  h the post-ReLU output's (None at the logits), and its grid (H, W) (None for a dense layer)."""
  x: list
  y: list
  h: list
  grid: list


def patches(x: np.ndarray, kh: int, kw: int) -> np.ndarray:
  """(B, H/kh * W/kw, kh * kw * C): the non-overlapping patches of images (B, H, W, C), in the order of
  `models.lenet.strided_conv_matmul`."""
  b, h, w, c = x.shape
  return x.reshape(b, h // kh, kh, w // kw, kw, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, -1, kh * kw * c)


def patch_kernel(k: np.ndarray, batch: int, grid: tuple, kh: int, kw: int) -> np.ndarray:
  """The next conv's input kernel over its tokens from the previous layer's output kernel k over (b, i, j):
  a patch's inner product sums the same offset of both patches."""
  h, w = grid
  k6 = k.reshape(batch, h // kh, kh, w // kw, kw, batch, h // kh, kh, w // kw, kw)
  out = np.einsum("bHiWjcKiLj->bHWcKL", k6)
  n = (h // kh) * (w // kw)
  return out.reshape(batch * n, batch * n)


def forward(x: np.ndarray, stack: Stack, w_sq: Sequence[float]) -> Kernels:
  """The calculus's forward kernels over tokens: a layer's output kernel fan_out E[W^2] K_x, ReLU by the
  arc-cosine map."""
  B = x.shape[0]
  img = np.asarray(x, np.float64).reshape((B,) + tuple(stack.image))
  widths = stack.widths
  kx_, ky_, kh_, grids = [], [], [], []
  grid = tuple(stack.image[:2])
  for l, n in enumerate(stack.channels):
    kh, kw = stack.kernels[l]
    if l == 0:
      p = patches(img, kh, kw).reshape(-1, kh * kw * img.shape[-1])
      kx = p @ p.T
    else:
      kx = patch_kernel(kh_[-1], B, grid, kh, kw)
    grid = (grid[0] // kh, grid[1] // kw)
    grids.append(grid)
    ky = n * w_sq[l] * kx
    kx_.append(kx)
    ky_.append(ky)
    kh_.append(relu_kernel(ky, n) if l < len(widths) - 1 else None)
  if stack.dense:
    if grids:   # the flatten: a dense row block per position, so positions sum
      P = grids[-1][0] * grids[-1][1]
      kx = np.einsum("bpcp->bc", kh_[-1].reshape(B, P, B, P))
    else:
      flat = img.reshape(B, -1)
      kx = flat @ flat.T
    d = dense_kernels(kx, stack.dense, w_sq[len(stack.channels):])
    kx_ += d.x
    ky_ += d.y
    kh_ += d.x[1:] + [None]
    grids += [None] * len(d.x)
  return Kernels(kx_, ky_, kh_, grids)


def logit_products(k_z: np.ndarray, labels: np.ndarray, n_out: int, samples: int = LOGIT_SAMPLES,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """(E[g_b . g_c], E[(z_b . g_b)(z_c . g_c)]) (B, B) over the draws of `update_response.logit_samples` (the
  same seed as `logit_moments`), g = softmax(z) - onehot(label)."""
  z, g = logit_samples(k_z, labels, n_out, samples, seed)
  gf = np.moveaxis(g, 1, 0).reshape(k_z.shape[0], -1)
  zg = np.einsum("sbk,sbk->sb", z, g)
  return gf @ gf.T / samples, zg.T @ zg / samples


def backward(k: Kernels, stack: Stack, w_sq: Sequence[float], gg: np.ndarray, zgzg: np.ndarray | None,
             batch: int) -> list:
  """E[delta_l,s . delta_l,t] over the output tokens s, t of every weight layer l: the calculus's part
  (independent backward weights, the mask's share `both_active`) plus, with `zgzg`, the component along the
  example's own activation E[c_b c_c] K_h (module doc)."""
  L = len(k.y)
  n_conv = len(stack.kernels)
  widths = stack.widths
  out = [None] * L
  out[-1] = gg
  B = batch
  for l in range(L - 2, -1, -1):
    up, w = out[l + 1], w_sq[l + 1]
    if l + 1 >= n_conv and k.grid[l] is not None:   # into the flatten: position blocks of the dense rows
      P = k.grid[l][0] * k.grid[l][1]
      gam = np.einsum("bc,pq->bpcq", widths[l] * w * up, np.eye(P)).reshape(B * P, B * P)
    elif l + 1 >= n_conv:                            # dense into dense
      gam = widths[l] * w * up
    else:                                            # conv into conv: the same offset of the next patch
      kh, kw = stack.kernels[l + 1]
      H, W = k.grid[l]
      u = up.reshape(B, H // kh, W // kw, B, H // kh, W // kw)
      same = np.einsum("ik,jl->ijkl", np.eye(kh), np.eye(kw))   # offset (i, j) of one patch, (k, l) of the other
      g10 = np.einsum("bHWcKL,ijkl->bHiWjcKkLl", widths[l] * w * u, same)
      gam = g10.reshape(B * H * W, B * H * W)
    d = both_active(k.y[l]) * gam
    if zgzg is not None:
      per_ex = k.h[l].shape[0] // B
      norm = np.diag(k.h[l]).reshape(B, per_ex).sum(1)           # |h_l,b|^2 over the example's positions
      cc = np.repeat(np.repeat(zgzg / np.outer(norm, norm), per_ex, 0), per_ex, 1)
      d = d + cc * k.h[l]
    out[l] = d
  return out


def gradient_sq(x, labels, stack: Stack, w_sq: Sequence[float], *, own_activation: bool = True,
                samples: int = LOGIT_SAMPLES, seed: int = 0) -> np.ndarray:
  """(L,) E|grad W_l|^2 of the minibatch-mean softmax cross-entropy at init (every bias zero; expected E[W^2]
  w_sq per layer); own_activation False leaves out the component along the example's own activation (the
  calculus's independent backward weights alone: for a dense stack `update_response.gradient_sq`)."""
  x = np.asarray(x)
  B = x.shape[0]
  widths = stack.widths
  if len(w_sq) != len(widths) or min(w_sq) <= 0:
    raise ValueError(f"w_sq needs one positive entry per weight layer ({len(widths)}), got {w_sq!r}")
  lab = np.asarray(labels)
  if lab.shape != (B,) or lab.min() < 0 or lab.max() >= widths[-1]:
    raise ValueError(f"labels must be {B} integers in [0, {widths[-1]})")
  with threadpool_limits(limits=1):
    k = forward(x, stack, w_sq)
    gg, zgzg = logit_products(k.y[-1], lab, widths[-1], samples, seed)
    back = backward(k, stack, w_sq, gg, zgzg if own_activation else None, B)
    return kernel_gradient_sq(k, back, B)


def update_rms(x, labels, stack: Stack, w_sq: Sequence[float], lr: Sequence[float], fan_in: Sequence[int],
               **kw) -> np.ndarray:
  """(L,) RMS of each kernel's first SGD update lr_l |grad W_l| / sqrt(entries), fan_in the kernels' fan-in
  (a conv's kh kw c_in)."""
  return rms(gradient_sq(x, labels, stack, w_sq, **kw), lr, fan_in, stack.widths)


def kernel_gradient_sq(k: Kernels, back: list, batch: int) -> np.ndarray:
  """(L,) E|grad W_l|^2 of the minibatch mean from the input kernels k.x and the backward kernels `back`."""
  return np.array([float(np.sum(kx * d)) for kx, d in zip(k.x, back)]) / batch ** 2


def rms(g: np.ndarray, lr: Sequence[float], fan_in: Sequence[int], widths: Sequence[int]) -> np.ndarray:
  """(L,) RMS of each kernel's SGD update lr_l |grad W_l| / sqrt(entries), from E|grad W_l|^2 g."""
  return np.asarray(lr, np.float64) * np.sqrt(g / (np.asarray(fan_in, float) * np.asarray(widths, float)))

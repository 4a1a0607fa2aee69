"""Any elementwise activation's moment maps, by Gauss-Hermite quadrature (docs/calculus.md, "Any activation").

For a pre-activation y ~ N(0, q) the calculus needs, of an activation phi:
  forward    E[phi(y)^2]                       (the second moment it hands on)
  backward   E[phi'(y)^2]                      (the factor on E[Delta^2] going back)
  pair maps  E[phi(y) phi(y')], E[phi'(y) phi'(y')] for (y, y') jointly normal with variances q, q and
             correlation rho: what the minibatch terms (two examples) and the correlation (C) map need.
`maps(phi, q, rho)` returns all of them as an `ActivationMaps`; `phi` is any vectorised function of a float32
array (a jnp function, or one recovered from a jaxpr by rules.py), its derivative taken by `jax.jvp`.

The quadrature: E[f(z)], z ~ N(0, 1), = sum_i w_i f(z_i) with the probabilists' Hermite nodes (exact for
polynomials of degree < 2 * ORDER); the pair expectation is the tensor product over (z1, z2) with
y = sqrt(q) z1, y' = sqrt(q) (rho z1 + sqrt(1 - rho^2) z2). At kinks (ReLU) it converges slowly (error ~ ORDER^-1.5,
about 1e-3 at the default order), which the ReLU / leaky-ReLU closed forms in tests bound.

`NAMED` holds the common activations by name; `identify(phi)` finds which of them a recovered function is.
`depth_profile` iterates the maps through a stack of dense layers: the forward and backward moments over depth
and the whole net's correlation-map numbers C(0) and C'(1) (what DKS and TAT target), with a verdict.
"""
from __future__ import annotations

import functools
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy import special  # scikit-learn depends on scipy, so it is always installed

ORDER = 100   # even: no node at 0, where a kink (ReLU) has no one derivative


@functools.lru_cache(maxsize=8)
def hermite(order: int = ORDER) -> tuple[np.ndarray, np.ndarray]:
  """Nodes and weights for E[f(z)], z ~ N(0, 1) (weights sum to 1)."""
  z, w = np.polynomial.hermite_e.hermegauss(order)
  return z, w / w.sum()


# phi is evaluated on blocks of CHUNK points (the last padded with its final point): an activation recovered
# from a jaxpr runs eagerly, one compiled program per primitive and array size, and the grids come in many
# sizes (maps's ORDER and ORDER^2 nodes, offset_nodes's entries x order, ...); in blocks, every size reuses
# the same programs. Elementwise, a point's value does not depend on the block it is in (bitwise, checked
# in tests/calculus/test_activation_maps.py); ~1 ms of dispatch per block.
CHUNK = 16384


def _blocks(y: np.ndarray) -> list:
  y = np.asarray(y, np.float32).reshape(-1)
  n = y.size
  padded = np.full(max(-(-n // CHUNK), 1) * CHUNK, y[-1] if n else 0.0, np.float32)
  padded[:n] = y
  return [padded[i:i + CHUNK] for i in range(0, padded.size, CHUNK)]


def value_and_slope(phi: Callable, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """phi(y) and phi'(y) elementwise, in float64 on the host (phi evaluated in float32, in blocks of CHUNK
  points; the grid and the unit tangent made on the host: as jnp arrays they compiled programs too)."""
  ones = np.ones(CHUNK, np.float32)
  got = [jax.jvp(phi, (b,), (ones,)) for b in _blocks(y)]
  n, shape = np.size(y), np.shape(y)
  v = np.concatenate([np.asarray(a, np.float64) for a, _ in got])[:n].reshape(shape)
  d = np.concatenate([np.asarray(b, np.float64) for _, b in got])[:n].reshape(shape)
  return v, d


def values(phi: Callable, y: np.ndarray) -> np.ndarray:
  """phi(y) elementwise in float64 on the host (phi evaluated in float32, in blocks as `value_and_slope`)."""
  got = [np.asarray(phi(b), np.float64) for b in _blocks(y)]
  return np.concatenate(got)[:np.size(y)].reshape(np.shape(y))


class ActivationMaps(NamedTuple):
  q: float              # the input's E[y^2]
  rho: float            # the input pair's correlation
  mean: float           # E[phi(y)]
  fwd_sq: float         # E[phi(y)^2]
  bwd_sq: float         # E[phi'(y)^2]
  fwd_pair: float       # E[phi(y) phi(y')]
  bwd_pair: float       # E[phi'(y) phi'(y')]
  odd: bool             # phi(-y) = -phi(y) on the nodes (the output's law is symmetric)

  @property
  def fwd_corr(self) -> float:
    """The output pair's uncentred correlation E[phi phi'] / E[phi^2]."""
    return self.fwd_pair / self.fwd_sq if self.fwd_sq > 0 else 0.0

  @property
  def bwd_corr(self) -> float:
    """The factor on the gradient pair's correlation: E[phi'(y) phi'(y')] / E[phi'^2]."""
    return self.bwd_pair / self.bwd_sq if self.bwd_sq > 0 else 1.0


def maps(phi: Callable, q: float, rho: float = 0.0, order: int = ORDER) -> ActivationMaps:
  """All moment maps of phi at input second moment q and pair correlation rho (see the module docstring)."""
  if not (q >= 0 and math.isfinite(q)):
    raise ValueError(f"q must be finite and >= 0, got {q!r}")
  rho = min(max(float(rho), -1.0), 1.0)
  z, w = hermite(order)
  s = math.sqrt(q)
  v, d = value_and_slope(phi, s * z)
  vm, _ = value_and_slope(phi, -s * z)
  # pair: phi at y = s z1 (v, d above) times phi at y' = s (rho z1 + c z2), on the tensor grid
  c = math.sqrt(max(1.0 - rho * rho, 0.0))
  y2 = s * (rho * z[:, None] + c * z[None, :])
  v2, d2 = value_and_slope(phi, y2.reshape(-1))
  v2, d2 = v2.reshape(y2.shape), d2.reshape(y2.shape)
  ww = w[:, None] * w[None, :]
  scale = max(float(np.max(np.abs(v))), 1e-30)
  return ActivationMaps(
      q=float(q), rho=rho, mean=float(w @ v), fwd_sq=float(w @ (v * v)), bwd_sq=float(w @ (d * d)),
      fwd_pair=float(np.sum(ww * v[:, None] * v2)), bwd_pair=float(np.sum(ww * d[:, None] * d2)),
      odd=bool(np.allclose(vm, -v, rtol=1e-5, atol=1e-6 * scale)))


def slope_pair(phi: Callable, q: float, rho: float, order: int = ORDER) -> float:
  """E[y y' phi'(y) phi'(y')] for a pair of N(0, q) inputs of correlation rho (the same tensor rule as `maps`):
  how a unit's slopes at two inputs follow the inputs' own projections (elementwise.gate_coupling)."""
  rho = min(max(float(rho), -1.0), 1.0)
  z, w = hermite(order)
  s = math.sqrt(q)
  _, d = value_and_slope(phi, s * z)
  y2 = s * (rho * z[:, None] + math.sqrt(max(1.0 - rho * rho, 0.0)) * z[None, :])
  _, d2 = value_and_slope(phi, y2.reshape(-1))
  ww = w[:, None] * w[None, :]
  return float(np.sum(ww * (s * z * d)[:, None] * (y2 * d2.reshape(y2.shape))))


@functools.lru_cache(maxsize=4)
def he4_weights(order: int) -> np.ndarray:
  """Weights c with d^2 E[f(m + s z)] / d(s^2)^2 = (f at the nodes m + s z) @ c / (4 s^4): He_4(z) times the
  weights of `hermite(order)` (Stein twice). The lognormal Jensen term of each example's own scale takes it
  (example_scale.response, draw_mean.activation_mean)."""
  z, w = hermite(order)
  return (z ** 4 - 6 * z * z + 3) * w


class OffsetNodes(NamedTuple):
  """phi at the quadrature nodes y = m_i + s_i z of each entry i (rows), with the nodes and weights."""
  y: np.ndarray   # (entries, order)
  v: np.ndarray   # phi(y)
  d: np.ndarray   # phi'(y)
  z: np.ndarray   # hermite(order)
  w: np.ndarray


def offset_nodes(phi: Callable, m: np.ndarray, s, order: int = 32) -> OffsetNodes:
  """phi and phi' at y = m_i + s_i z for each entry's own offset m_i and spread s_i (a scalar s: one common
  spread): the expectations over one draw's entries (`offset_moments`, example_scale.py, unit_coupling.py)
  are weighted sums of these rows."""
  z, w = hermite(order)
  y = np.asarray(m, np.float64).reshape(-1, 1) + np.reshape(s, (-1, 1)) * z.reshape(1, -1)
  v, d = value_and_slope(phi, y.reshape(-1))
  return OffsetNodes(y, v.reshape(y.shape), d.reshape(y.shape), z, w)


class OffsetMoments(NamedTuple):
  """An activation's moments over one draw's units, each with its own offset (see `offset_moments`)."""
  mean: np.ndarray      # E[phi(m_i + s z)] per entry
  fwd_sq: float         # mean over entries of E[phi(m_i + s z)^2]
  bwd_sq: float         # mean over entries of E[phi'(m_i + s z)^2]


def offset_spread(m: np.ndarray, q: float) -> float:
  """The common spread s = sqrt(q - mean(m^2)) around per-entry offsets m (0 where q is below mean(m^2))."""
  m = np.asarray(m, np.float64)
  return math.sqrt(max(q - float(np.mean(m * m)), 0.0))


def offset_moments(phi: Callable, m: np.ndarray, q: float, order: int = 32,
                   nodes: OffsetNodes | None = None) -> OffsetMoments:
  """The moments when entry i of the input has its own mean m_i over the batch (one draw's per-unit offsets)
  and a common spread s^2 = q - mean(m^2) around it. For an activation with a mean (GELU, SiLU, ReLU) one
  draw's offsets m = mu W have a mean over units of s.d. ~E[phi] sqrt(2 / width), and E[phi^2] is linear in
  it to first order (ReLU: s^2 / 2 + 2 phi(0) s m), so the expectation's E[phi(sqrt(q) z)^2] wanders by
  ~0.1 in log per layer at width 64 (docs/calculus.md, "The draw's own mean"). `nodes`: this phi's
  `offset_nodes(phi, m, offset_spread(m, q), order)`, where the caller has it already."""
  m = np.asarray(m, np.float64)
  nd = nodes if nodes is not None else offset_nodes(phi, m, offset_spread(m, q), order)
  v, d, w = nd.v, nd.d, nd.w
  return OffsetMoments(mean=(v @ w).reshape(m.shape), fwd_sq=float(np.mean((v * v) @ w)),
                       bwd_sq=float(np.mean((d * d) @ w)))


# -------------------------------------------------------------------------------------------------
# Named activations (jax.nn's forms, so that `identify` recognises what a Flax model traces).

def _gelu_tanh(y):
  return jax.nn.gelu(y, approximate=True)


def _gelu_erf(y):
  return jax.nn.gelu(y, approximate=False)


NAMED: dict[str, Callable] = {
    "relu": jax.nn.relu,
    "gelu": _gelu_erf,
    "gelu_tanh": _gelu_tanh,
    "silu": jax.nn.silu,
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "softplus": jax.nn.softplus,
    "elu": jax.nn.elu,
    "identity": lambda y: y,
}


def get(name: str) -> Callable:
  """A named activation; `leaky_relu:A` and `tanh:S` (tanh(S y)) take a parameter."""
  if not isinstance(name, str):
    raise ValueError(f"activation name must be a string, got {type(name).__name__}")
  base, _, arg = name.partition(":")
  if base == "leaky_relu":
    a = float(arg) if arg else 0.01
    return lambda y: jax.nn.leaky_relu(y, a)
  if base == "tanh" and arg:
    s = float(arg)
    return lambda y: jnp.tanh(s * y)
  if base not in NAMED or arg:
    raise ValueError(f"unknown activation {name!r}; known: {sorted(NAMED) + ['leaky_relu:A', 'tanh:S']}")
  return NAMED[base]


def identify(phi: Callable) -> str | None:
  """The name in NAMED of the activation phi is (to float32 rounding on [-6, 6]), else None."""
  v = values(phi, _IDENTIFY_GRID)
  for name, ref in _named_values().items():
    if np.allclose(v, ref, rtol=1e-5, atol=1e-6):
      return name
  return None


_IDENTIFY_GRID = np.linspace(-6.0, 6.0, 97)


# NAMED's functions in float64 numpy, for `identify`'s references: no XLA program at all (jitted, the references
# were one ~0.2 CPU s compile of every fresh process's first inspect; docs/performance.md, "Eighteenth session").
# Their float32 jax forms differ from these by float32 rounding, far inside identify's 1e-5 (tested).
_REFERENCES: dict[str, Callable] = {
    "relu": lambda y: np.maximum(y, 0.0),
    "gelu": lambda y: 0.5 * y * (1.0 + special.erf(y / math.sqrt(2.0))),
    "gelu_tanh": lambda y: 0.5 * y * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (y + 0.044715 * y ** 3))),
    "silu": lambda y: y / (1.0 + np.exp(-y)),
    "tanh": np.tanh,
    "sigmoid": lambda y: 1.0 / (1.0 + np.exp(-y)),
    "softplus": lambda y: np.logaddexp(y, 0.0),
    "elu": lambda y: np.where(y > 0, y, np.expm1(np.minimum(y, 0.0))),
    "identity": lambda y: np.array(y, np.float64),
}


@functools.lru_cache(maxsize=1)
def _named_values() -> dict:
  """NAMED's activations on `identify`'s grid: the numpy references, and any name added to NAMED without one
  evaluated in jax."""
  y = np.asarray(_IDENTIFY_GRID, np.float64)
  return {name: (_REFERENCES[name](y) if name in _REFERENCES
                 else np.asarray(f(np.asarray(y, np.float32)), np.float64)) for name, f in NAMED.items()}


# -------------------------------------------------------------------------------------------------
# Depth: a stack of dense layers y_{l+1} = W phi(y_l) + b with E[W^2] fan_in = weight_gain, E[b^2] = bias_sq.

class DepthProfile(NamedTuple):
  q: tuple             # E[y_l^2], pre-activation of layer l (l = 0 is the input to the first activation)
  grad: tuple          # E[Delta_l^2] / E[Delta_L^2] at the pre-activations, from the top
  c0: float            # C(0): the output correlation of two inputs with correlation 0 (whole net)
  c_slope_1: float     # C'(1): the whole net's correlation-map slope at 1 (product of the local slopes)
  verdict: str


def depth_profile(phi: Callable, depth: int, *, weight_gain: float = 2.0, bias_sq: float = 0.0, q0: float = 1.0,
                  order: int = 60) -> DepthProfile:
  """Forward and backward second moments over `depth` dense layers and the whole net's C(0), C'(1).

  Forward q_{l+1} = weight_gain E[phi(y_l)^2] + bias_sq; backward E[Delta_l^2] = weight_gain E[phi'(y_l)^2]
  E[Delta_{l+1}^2] (independent gradients, the calculus's assumption); the correlation map
  c_{l+1} = (weight_gain E[phi phi']_{c_l} + bias_sq) / q_{l+1}, its slope at c = 1 being
  weight_gain q_l E[phi'^2] / q_{l+1} (Price's theorem: d/dc E[phi(y) phi(y')] = q E[phi'(y) phi'(y')])."""
  if not (isinstance(depth, int) and depth >= 1):
    raise ValueError(f"depth must be an int >= 1, got {depth!r}")
  for name, v in (("weight_gain", weight_gain), ("q0", q0)):
    if not (v > 0 and math.isfinite(v)):
      raise ValueError(f"{name} must be finite and > 0, got {v!r}")
  if not (bias_sq >= 0 and math.isfinite(bias_sq)):
    raise ValueError(f"bias_sq must be finite and >= 0, got {bias_sq!r}")
  qs, chis, c, slope = [float(q0)], [], 0.0, 1.0
  for _ in range(depth):
    q = qs[-1]
    m = maps(phi, q, c, order=order)
    q_next = weight_gain * m.fwd_sq + bias_sq
    chis.append(weight_gain * m.bwd_sq)
    slope *= weight_gain * q * m.bwd_sq / q_next if q_next > 0 else float("nan")
    c = (weight_gain * m.fwd_pair + bias_sq) / q_next if q_next > 0 else 0.0
    qs.append(q_next)
    if not math.isfinite(q_next) or q_next > 1e30 or q_next < 1e-30:
      break
  grads = [1.0]
  for chi in reversed(chis):
    grads.append(grads[-1] * chi)
  grads = tuple(reversed(grads))
  return DepthProfile(q=tuple(qs), grad=grads, c0=float(c), c_slope_1=float(slope),
                      verdict=depth_verdict(qs, grads, c, slope))


def depth_verdict(qs, grads, c0: float, slope: float) -> str:
  """One line: what breaks first over this depth, or that nothing does (factor-of-10 drifts are flagged)."""
  fwd, bwd = qs[-1] / qs[0], grads[0] / grads[-1]
  problems = []
  if not math.isfinite(fwd) or fwd > 10 or fwd < 0.1:
    problems.append(f"forward second moment changes by {fwd:.3g}x over depth")
  if not math.isfinite(bwd) or bwd > 10 or bwd < 0.1:
    problems.append(f"gradient second moment changes by {bwd:.3g}x over depth")
  if c0 > 0.9:
    problems.append(f"C(0) = {c0:.3g}: unrelated inputs come out nearly parallel (the kernel degenerates)")
  if slope > 10:
    problems.append(f"C'(1) = {slope:.3g}: nearby inputs are pulled apart (chaotic regime)")
  return "; ".join(problems) if problems else "stable at this depth"

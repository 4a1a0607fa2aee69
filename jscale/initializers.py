"""Weight initializers as pure functions with the `jax.nn.initializers` signature.

Every initializer here is an `Initializer`: call it as `init(key, shape, dtype)` (so it plugs into
`flax.linen.Dense(kernel_init=...)` unchanged), and ask it for the moments it is *designed* to have with
`init.variance(shape)`, `init.mean(shape)` and `init.second_moment(shape)`. The scaling calculus
(`jscale.calculus`) reads those moments instead of sampling, and the tests check every sample against
them, so a wrong constant shows up in both places.

Shapes follow flax: dense kernels are `(fan_in_channels, fan_out_channels)`, conv kernels are
`(*spatial, c_in, c_out)`. With k = prod(spatial) kernel taps, fan_in = k c_in and fan_out = k c_out.

`get("normal:0.1")`, `get("he_normal:fan_out")`, `get("geometric:c=2")` turn a spec string into an
initializer; `names()` lists what `get` accepts.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jscale import checks, kernel_normals
from jscale.keys import check_key

Shape = Sequence[int]
# Std of a unit normal truncated to [-2, 2]; dividing by it makes `truncated_normal(sigma)` have std sigma.
_TRUNC2_STD = 0.87962566103423978


@dataclasses.dataclass(frozen=True)
class Fans:
  """Fan counts of a kernel shape: k kernel taps, n_in / n_out channels."""
  k: int
  n_in: int
  n_out: int

  @property
  def fan_in(self) -> int:
    return self.k * self.n_in

  @property
  def fan_out(self) -> int:
    return self.k * self.n_out


def fans(shape: Shape) -> Fans:
  """Kernel taps and channels of a parameter shape. A 1-D shape (n,) is a bias: it counts as (1, n),
  fan_in 1 and fan_out n, as `jscale.mlp` draws its biases; a 0-D shape (a scalar) as (1, 1)."""
  try:
    shape = tuple(shape)
  except TypeError:
    raise ValueError(f"shape must be a sequence of positive ints, got {shape!r}") from None
  if not all(checks.is_int(s) for s in shape):
    raise ValueError(f"shape must be a sequence of positive ints, got {shape!r}")
  shape = tuple(int(s) for s in shape)
  if any(s <= 0 for s in shape):
    raise ValueError(f"shape dimensions must be positive, got shape {shape}")
  if len(shape) < 2:
    return Fans(k=1, n_in=1, n_out=shape[0] if shape else 1)
  return Fans(k=math.prod(shape[:-2]), n_in=shape[-2], n_out=shape[-1])


@dataclasses.dataclass(frozen=True)
class Initializer:
  """A `(key, shape, dtype) -> Array` initializer that also knows its own first two moments."""
  name: str
  sample: Callable[[jax.Array, tuple, Any], jax.Array] = dataclasses.field(repr=False)
  variance: Callable[[Shape], float] = dataclasses.field(repr=False)
  mean: Callable[[Shape], float] = dataclasses.field(repr=False, default=lambda shape: 0.0)
  # Declared, not probed: True when `sample` is exactly sqrt(float32 variance) * jax.random.normal(key, shape),
  # so a sweep's traced choice among such initializers needs one normal draw per kernel (`normal_scales`).
  scaled_normal: bool = dataclasses.field(repr=False, default=False)

  def __call__(self, key, shape, dtype=jnp.float32):
    check_key(key, f"initializer {self.name!r}: key")
    fans(shape)  # a bad shape -> ValueError naming it, before sampling
    return self.sample(key, tuple(shape), dtype)

  def normal_std(self, shape: Shape) -> np.float32 | None:
    """The std s with which this initializer draws s * normal(key, shape) (float32, as `sample` computes it),
    or None when it samples otherwise (uniform, truncated, orthogonal, a non-zero constant)."""
    if not self.scaled_normal:
      return None
    return np.sqrt(np.float32(self.variance(tuple(shape))))

  def second_moment(self, shape: Shape) -> float:
    """E[W^2] per entry: what the calculus's propagation rules use."""
    return self.variance(shape) + self.mean(shape) ** 2


def _check_nonneg(name: str, **values):
  for arg, v in values.items():
    if isinstance(v, (str, bytes)) or v is None:
      raise ValueError(f"{name}: {arg} must be a number, got {v!r}")
    if isinstance(v, numbers.Real) and not (v >= 0 and math.isfinite(v)):
      raise ValueError(f"{name}: {arg} must be a finite number >= 0, got {v!r}")


def _variance_scaled(name: str, var_of: Callable[[Fans], float], distribution: str) -> Initializer:
  """Zero-mean normal / uniform / truncated normal whose variance is `var_of(fans(shape))`."""
  if distribution not in ("normal", "uniform", "truncated_normal"):
    raise ValueError(f"{name}: distribution must be normal, uniform or truncated_normal, got {distribution!r}")

  def sample(key, shape, dtype):
    std = jnp.sqrt(jnp.asarray(var_of(fans(shape)), dtype))
    if distribution == "normal":
      return std * jax.random.normal(key, shape, dtype)
    if distribution == "uniform":
      # U(-a, a) has variance a^2 / 3.
      return std * jnp.sqrt(jnp.asarray(3.0, dtype)) * jax.random.uniform(key, shape, dtype, -1.0, 1.0)
    return std / _TRUNC2_STD * jax.random.truncated_normal(key, -2.0, 2.0, shape, dtype)

  return Initializer(name, sample, lambda shape: float(var_of(fans(shape))), scaled_normal=distribution == "normal")


# ---------------------------------------------------------------------------------------------------
# The initializers. Each returns an `Initializer`.


def zeros() -> Initializer:
  return Initializer("zeros", lambda key, shape, dtype: jnp.zeros(shape, dtype), lambda shape: 0.0,
                     scaled_normal=True)  # 0 * normal


def constant(value: float) -> Initializer:
  """Every entry equal to `value`: never breaks the symmetry between hidden units."""
  if isinstance(value, (str, bytes, bool)) or not isinstance(value, numbers.Real) or not math.isfinite(value):
    raise ValueError(f"constant: value must be a finite number, got {value!r}")
  return Initializer(f"constant:{value}", lambda key, shape, dtype: jnp.full(shape, value, dtype),
                     lambda shape: 0.0, lambda shape: float(value), scaled_normal=value == 0)  # 0 * normal


def uniform(a: float) -> Initializer:
  """U(-a, a), variance a^2 / 3."""
  _check_nonneg("uniform", a=a)
  return Initializer(f"uniform:{a}", lambda key, shape, dtype: jax.random.uniform(key, shape, dtype, -a, a),
                     lambda shape: a * a / 3.0)


def normal(sigma: float) -> Initializer:
  """N(0, sigma^2): the tutorial's fixed-scale rule, blind to the layer's widths."""
  _check_nonneg("normal", sigma=sigma)
  return _variance_scaled(f"normal:{sigma}", lambda f: sigma * sigma, "normal")


def truncated_normal(sigma: float) -> Initializer:
  """Normal truncated at +-2 std, rescaled so the result's std is `sigma` (not the pre-truncation std)."""
  _check_nonneg("truncated_normal", sigma=sigma)
  return _variance_scaled(f"truncated_normal:{sigma}", lambda f: sigma * sigma, "truncated_normal")


def orthogonal(gain: float = 1.0) -> Initializer:
  """Saxe et al.: the (fan_in, n_out) matrix has orthonormal rows or columns, times `gain`.

  Conv kernels are flattened to (k n_in, n_out) first. Per-entry second moment gain^2 / max(k n_in, n_out).
  """
  _check_nonneg("orthogonal", gain=gain)

  def sample(key, shape, dtype):
    f = fans(shape)
    rows, cols = f.fan_in, f.n_out
    tall = jax.random.normal(key, (max(rows, cols), min(rows, cols)), jnp.float32)
    q, r = jnp.linalg.qr(tall)
    # Fixing the signs by diag(R) makes Q Haar-distributed rather than biased by the QR convention.
    q = q * jnp.where(jnp.diag(r) < 0, -1.0, 1.0)
    mat = q if rows >= cols else q.T
    return (gain * mat).reshape(shape).astype(dtype)

  return Initializer(f"orthogonal:{gain}", sample,
                     lambda shape: gain * gain / max(fans(shape).fan_in, fans(shape).n_out))


def lecun(distribution: str = "normal") -> Initializer:
  """Var = 1 / fan_in: keeps forward second moments for linear / tanh-near-0 layers."""
  return _variance_scaled(f"lecun_{distribution}", lambda f: 1.0 / f.fan_in, distribution)


def glorot(distribution: str = "normal") -> Initializer:
  """Glorot/Xavier, the calculus's *arithmetic* mean rule: Var = 2 / (fan_in + fan_out)."""
  return _variance_scaled(f"glorot_{distribution}", lambda f: 2.0 / (f.fan_in + f.fan_out), distribution)


def he(mode: str = "fan_in", distribution: str = "normal") -> Initializer:
  """He/Kaiming: Var = 2 / fan_in (keeps forward moments through ReLU) or 2 / fan_out (backward)."""
  if mode not in ("fan_in", "fan_out"):
    raise ValueError(f"he: mode must be 'fan_in' or 'fan_out', got {mode!r}")
  return _variance_scaled(f"he_{distribution}:{mode}",
                          lambda f: 2.0 / (f.fan_in if mode == "fan_in" else f.fan_out), distribution)


def geometric(c: float = 2.0, distribution: str = "normal") -> Initializer:
  """Defazio-Bottou geometric-mean rule: E[W^2] = c / sqrt(k n_in n_out).

  This makes every layer's gradient-to-weight ratio G_l = nu / c^2, whatever the widths. In fan terms
  it is c sqrt(k) / sqrt(fan_in fan_out): for conv kernels it scales as 1/sqrt(k), not 1/k, which is
  where it parts from `variance_scaling(mode="fan_geo_avg")` (equal for dense layers only).
  """
  _check_nonneg("geometric", c=c)
  if c == 0:
    raise ValueError("geometric: c must be > 0 (c = 0 gives all-zero weights; use 'zeros' for that), got 0")
  name = f"geometric:c={c}" + ("" if distribution == "normal" else f",distribution={distribution}")
  return _variance_scaled(name, lambda f: c / math.sqrt(f.k * f.n_in * f.n_out), distribution)


def scaled(init: Initializer | str, factor: float) -> Initializer:
  """`init` (an initializer or a spec) times a constant (the question's `weight_scale_factor` is
  `scaled(glorot(), 1 / 255)`)."""
  init = get(init)
  if isinstance(factor, (bool, str, bytes)) or not isinstance(factor, numbers.Real) or not math.isfinite(factor):
    raise ValueError(f"scaled: factor must be a finite number, got {factor!r}")
  return Initializer(f"{init.name}*{factor}", lambda key, shape, dtype: factor * init(key, shape, dtype),
                     lambda shape: factor * factor * init.variance(shape),
                     lambda shape: factor * init.mean(shape), scaled_normal=init.scaled_normal)


# ---------------------------------------------------------------------------------------------------
# Registry: spec strings -> initializers.

# name -> (factory, ordered parameter names, fixed keyword arguments)
_REGISTRY: dict[str, tuple[Callable[..., Initializer], tuple[str, ...], dict]] = {
    "zeros": (zeros, (), {}),
    "constant": (constant, ("value",), {}),
    "uniform": (uniform, ("a",), {}),
    "normal": (normal, ("sigma",), {}),
    "truncated_normal": (truncated_normal, ("sigma",), {}),
    "orthogonal": (orthogonal, ("gain",), {}),
    "lecun_normal": (lecun, (), {"distribution": "normal"}),
    "lecun_uniform": (lecun, (), {"distribution": "uniform"}),
    "glorot_normal": (glorot, (), {"distribution": "normal"}),
    "glorot_uniform": (glorot, (), {"distribution": "uniform"}),
    "he_normal": (he, ("mode",), {"distribution": "normal"}),
    "he_uniform": (he, ("mode",), {"distribution": "uniform"}),
    "geometric": (geometric, ("c", "distribution"), {}),
}
_ALIASES = {"xavier_normal": "glorot_normal", "xavier_uniform": "glorot_uniform",
            "kaiming_normal": "he_normal", "kaiming_uniform": "he_uniform", "arithmetic": "glorot_normal",
            "fan_in": "he_normal", "fan_out": "he_normal:fan_out", "geometric_uniform": "geometric:distribution=uniform"}
# The paper's four init schemes (Xavier is its "arithmetic"), name -> spec for `get`.
SCHEMES = {"fan_in": "he_normal:fan_in", "fan_out": "he_normal:fan_out", "xavier": "glorot_normal",
           "geometric": "geometric:c=2"}


def names() -> list[str]:
  return sorted(_REGISTRY) + sorted(_ALIASES)


def _parse_value(text: str):
  try:
    return float(text)
  except ValueError:
    return text


def get(spec: str | Initializer) -> Initializer:
  """Spec string -> Initializer: "name", "name:v1,v2" (positional) or "name:key=v,..."; see `names()`."""
  if isinstance(spec, Initializer):
    return spec
  if not isinstance(spec, str) or not spec.strip():
    hint = (" (a plain function has no designed moments: wrap it as jscale.initializers.Initializer(name, sample, "
            "variance))" if callable(spec) else "")
    raise ValueError(f"initializer spec must be a non-empty string or an Initializer, got {spec!r}{hint}; "
                     f"valid names: {', '.join(names())}")
  name, _, argtext = spec.strip().partition(":")
  name = name.strip().lower()
  if name in _ALIASES:
    alias_name, _, alias_args = _ALIASES[name].partition(":")
    name, argtext = alias_name, ",".join(a for a in (alias_args, argtext) if a)
  if name not in _REGISTRY:
    raise ValueError(f"unknown initializer {name!r} in spec {spec!r}; valid names: {', '.join(names())}")
  factory, params, fixed = _REGISTRY[name]
  kwargs = dict(fixed)
  positional = 0
  for part in filter(None, (p.strip() for p in argtext.split(","))):
    if "=" in part:
      key, _, val = part.partition("=")
      key = key.strip()
      if key not in params:
        raise ValueError(f"initializer {name!r} takes parameters {params or '(none)'}, got {key!r} in {spec!r}")
    else:
      if positional >= len(params):
        raise ValueError(f"initializer {name!r} takes parameters {params or '(none)'}; too many in {spec!r}")
      key, val = params[positional], part
      positional += 1
    kwargs[key] = _parse_value(val.strip())
  try:
    return factory(**kwargs)
  except TypeError as e:  # a required parameter left out, say
    example = f"{name}:" + ",".join(f"{p}=..." for p in params)
    raise ValueError(f"bad parameters for initializer {name!r} in {spec!r} (write it as {example!r}): {e}") from None


def weight_variance(spec: str | Initializer, shape: Shape) -> float:
  """Theoretical Var(W) per entry of `spec` for a kernel of `shape`."""
  return get(spec).variance(shape)


# ---------------------------------------------------------------------------------------------------
# A sweep's traced initializer choice, drawn once.

def normal_scales(candidates: Sequence[Sequence[Initializer]], shapes: Sequence[Shape]) -> np.ndarray | None:
  """(candidates, kernels) float32 stds s such that candidate c draws kernel l as s[c, l] * normal(key, shapes[l])
  (each initializer's declared `normal_std`: normal:sigma, he_normal, glorot_normal, geometric, zeros, ...);
  None when some candidate samples otherwise. `candidates[c][l]` is candidate c's initializer of kernel l."""
  out = np.zeros((len(candidates), len(shapes)), np.float32)
  for c, inits in enumerate(candidates):
    for l, (ini, shape) in enumerate(zip(inits, shapes)):
      std = ini.normal_std(shape)
      if std is None:
        return None
      out[c, l] = std
  return out


def draw_scaled_normals(keys: Sequence[jax.Array], shapes: Sequence[Shape], stds, dtype=jnp.float32) -> list:
  """[stds[l] * normal(keys[l], shapes[l]) for each kernel l], the normals drawn by one random program.

  Why: XLA:CPU takes ~1-2 s to compile each threefry draw, and a sweep program draws every kernel (measured:
  the kernel draws were 2.7 s of a 7.4 s compile of a 3-layer training program). A flat draw of n entries,
  cut to a kernel's size, is the same numbers as that kernel's shape drawn directly (threefry is
  counter-based: tested), so every kernel is cut from one vmapped flat draw of the largest size; the numbers
  are those of drawing each kernel on its own. `dtype`: one for every kernel, or one per kernel. float32
  kernels with Threefry keys (the usual case) are hashed kernel by kernel by `jscale.kernel_normals` (an
  unrolled Threefry, exactly the kernels' entries: the flat draw hashed max(sizes) per kernel, 2.7x the
  784-300-100-10 net's).
  Otherwise: when the kernels' dtypes differ, or the flat draw would hold more than 4x the kernels' entries
  (very unequal kernels), each kernel is drawn on its own."""
  shapes = [tuple(s) for s in shapes]
  sizes = [math.prod(s) for s in shapes]
  dtypes = list(dtype) if isinstance(dtype, (list, tuple)) else [dtype] * len(shapes)
  if len(shapes) > 1 and kernel_normals.usable(keys, dtypes):
    # The same numbers, hashed over exactly the kernels' entries (no padding to the largest kernel).
    normals = kernel_normals.kernel_normals(keys, shapes)
  elif len(shapes) > 1 and len(set(dtypes)) == 1 and len(shapes) * max(sizes) <= 4 * sum(sizes):
    flat = jax.vmap(lambda k: jax.random.normal(k, (max(sizes),), dtypes[0]))(jnp.stack(list(keys)))
    normals = [flat[l, :n].reshape(s) for l, (n, s) in enumerate(zip(sizes, shapes))]
  else:
    normals = [jax.random.normal(k, s, d) for k, s, d in zip(keys, shapes, dtypes)]
  return [jnp.asarray(stds[l]).astype(d) * z for l, (z, d) in enumerate(zip(normals, dtypes))]

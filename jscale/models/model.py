"""`Model`: any classifier in the form `jscale.train.make_train` trains -- an init function and an apply function,
or a Flax module; the MLP of `TrainSpec.widths` is one too (`jscale.models.mlp`), so training has one path.

  Model.from_functions(init, apply, input_shape)   init(key) -> params; apply(params, x) -> logits
  Model.from_flax(module, input_shape)             a linen module with parameters only (no batch statistics)
  Model.lenet(LeNetConfig(...))                    the paper's strided LeNet (jscale.models.lenet)
  models.mlp(widths), models.get_model("lenet", n_out=10, image=(8, 8, 1))   the named models (catalog.py)

What a sweep varies stays a traced argument of `train` because the model is reduced to what the engine touches:

  input_shape  one example's shape. The data are flat rows (N, prod(input_shape)) as `jscale.datasets` gives
               them; `forward` reshapes them, so the runner's data path (stacking, sharding) is the MLP's.
  kernels      the float leaves with >= 2 dimensions (dense and conv kernels; biases are 1-D), in tree-flatten
               order (a dict's keys sorted: conv0, conv1, dense0, ... for the LeNet; Conv_0, Dense_0, ... for
               Flax): `layer_scale[l]`, `g_ratio[:, l]` and a per-layer `kernel_init` entry index them.
  draw         `draw(key, kernel_init)`: the model's own parameters (its biases) with every kernel redrawn by
               `kernel_init` (one spec, or one per kernel) from keys split off `key` the same way whatever the
               initializer (`split_key`), so a sweep's traced choice of initializer (`make_draw`) sees common
               random numbers.
  hidden       the activations saturation statistics are measured on: the LeNet reports its post-ReLU
               activations; `from_functions(..., returns_hidden=True)` takes `apply -> (logits, [arrays])`; a
               Flax module reports what it `sow`s into "intermediates". Otherwise none (the metrics are NaN:
               not measured).

A `Model` is compared by identity and copied as itself (`dataclasses.asdict` of a TrainSpec keeps it; its
`str` is what a run's config.json records). Only jscale.initializers, jax, flax and numpy are imported.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jscale import checks, initializers
from jscale.models import lenet as lenet_lib


def _check_shape(input_shape) -> tuple:
  try:
    shape = tuple(input_shape)
  except TypeError:
    raise ValueError(f"input_shape must be a tuple of positive ints (one example's shape), "
                     f"got {input_shape!r}") from None
  if not shape or not all(checks.is_int(s) and s >= 1 for s in shape):
    raise ValueError(f"input_shape must be a tuple of positive ints (one example's shape), got {input_shape!r}")
  return tuple(int(s) for s in shape)


def _leaf_name(path) -> str:
  parts = []
  for k in path:
    parts.append(str(next((getattr(k, a) for a in ("key", "name", "idx") if hasattr(k, a)), k)))
  return "/".join(parts)


def _is_kernel(leaf) -> bool:
  return hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jnp.floating) and len(leaf.shape) >= 2


def _per_example_size(fn, args_of_batch) -> int:
  """Entries per example of every intermediate value of `fn` (all equations' outputs, nested jaxprs included):
  the difference between batch 2 and batch 1, so parameter-sized values cancel."""
  def total(jaxpr) -> int:
    n = 0
    for eqn in jaxpr.eqns:
      n += sum(math.prod(v.aval.shape) for v in eqn.outvars if hasattr(v.aval, "shape"))
      for p in eqn.params.values():
        for sub in (p if isinstance(p, (tuple, list)) else (p,)):
          inner = getattr(sub, "jaxpr", sub)
          if hasattr(inner, "eqns"):
            n += total(inner)
    return n
  sizes = [total(jax.make_jaxpr(fn)(*args_of_batch(b)).jaxpr) for b in (1, 2)]
  return max(sizes[1] - sizes[0], 1)


class Model:
  """A classifier for `jscale.train`: see the module doc. Build it with a constructor, not directly."""

  def __init__(self, name: str, init: Callable, apply: Callable, input_shape: Sequence[int], *,
               returns_hidden: bool = False, description: str = "", split_key: Callable | None = None,
               flops: tuple[float, float] | None = None):
    if not isinstance(name, str) or not name:
      raise ValueError(f"model name must be a non-empty string, got {name!r}")
    if not callable(init) or not callable(apply):
      raise ValueError(f"model {name!r}: init and apply must be callables, got {type(init).__name__} and "
                       f"{type(apply).__name__}")
    if not isinstance(returns_hidden, bool):
      raise ValueError(f"model {name!r}: returns_hidden must be True or False, got {returns_hidden!r}")
    self.name, self.init, self.apply = name, init, apply
    self.input_shape = _check_shape(input_shape)
    self.returns_hidden = returns_hidden
    self.description = description or name
    # How a key becomes (init's key, one key per kernel): the default splits off the kernels' keys; the MLP keeps
    # `jscale.mlp.init_mlp`'s layout (kernel l from key 2l) so its numbers do not depend on the path taken.
    self._split_key = split_key
    self._flops_override = flops
    key = jax.random.PRNGKey(0)
    try:
      shapes = jax.eval_shape(init, key)
    except Exception as e:  # noqa: BLE001 - the user's init failing: say so before any compute
      raise ValueError(f"model {name!r}: init(key) failed: {type(e).__name__}: {e}") from e
    with_path, self._treedef = jax.tree_util.tree_flatten_with_path(shapes)
    self._leaf_shapes = [(_leaf_name(p), tuple(l.shape), l.dtype) for p, l in with_path]
    self._kernel_idx = tuple(i for i, (_, l) in enumerate(with_path) if _is_kernel(l))
    if not self._kernel_idx:
      raise ValueError(f"model {name!r}: its parameters have no kernel (float leaf with >= 2 dims): "
                       f"{[n for n, _, _ in self._leaf_shapes]}")
    x = jax.ShapeDtypeStruct((2,) + self.input_shape, jnp.float32)
    try:
      out = jax.eval_shape(self._apply, shapes, x)
    except Exception as e:  # noqa: BLE001
      raise ValueError(f"model {name!r}: apply(params, x) failed on inputs of shape {(2,) + self.input_shape} "
                       f"(input_shape {self.input_shape}): {type(e).__name__}: {e}") from e
    logits, hidden = out
    if len(logits.shape) != 2 or logits.shape[0] != 2:
      raise ValueError(f"model {name!r}: apply must return logits of shape (batch, classes), got {logits.shape} "
                       f"for a batch of 2")
    if any(not h.shape or h.shape[0] != 2 for h in hidden):
      raise ValueError(f"model {name!r}: hidden activations must have the batch axis first, got "
                       f"{[h.shape for h in hidden]} for a batch of 2")
    self.n_out = int(logits.shape[1])
    self._hidden_units = sum(math.prod(h.shape[1:]) for h in hidden)

  # -- constructors -----------------------------------------------------------------------------------

  @classmethod
  def from_functions(cls, init: Callable, apply: Callable, input_shape: Sequence[int], *, name: str = "custom",
                     returns_hidden: bool = False, description: str = "") -> "Model":
    """`init(key) -> params` (any pytree), `apply(params, x) -> logits` for x of shape (batch,) + input_shape
    (with `returns_hidden`, `apply -> (logits, sequence of hidden activations)`)."""
    return cls(name, init, apply, input_shape, returns_hidden=returns_hidden, description=description)

  @classmethod
  def from_flax(cls, module, input_shape: Sequence[int], *, name: str | None = None) -> "Model":
    """A `flax.linen` module `module(x) -> logits` whose only variables are "params" (plus what it `sow`s into
    "intermediates", used as its hidden activations)."""
    import flax.linen as nn
    if not isinstance(module, nn.Module):
      raise ValueError(f"from_flax expects a flax.linen Module, got {type(module).__name__}")
    shape = _check_shape(input_shape)
    name = name or type(module).__name__
    dummy = jnp.zeros((1,) + shape, jnp.float32)
    try:
      variables = jax.eval_shape(module.init, jax.random.PRNGKey(0), dummy)
    except Exception as e:  # noqa: BLE001
      raise ValueError(f"model {name!r}: module.init failed on inputs of shape {dummy.shape} (input_shape "
                       f"{shape}): {type(e).__name__}: {e}") from e
    other = sorted(set(variables) - {"params", "intermediates"})
    if other:
      raise ValueError(f"model {name!r}: only modules with parameters alone can be trained here (the loop "
                       f"keeps no mutable state), but it has the collections {other}")
    if not jax.tree_util.tree_leaves(variables.get("params", {})):
      raise ValueError(f"model {name!r}: the module has no parameters (module.init gave the collections "
                       f"{sorted(variables) or 'none'}): there is nothing to initialize or train")
    # init leaves "intermediates" out (flax's default): what the module sows shows in an apply.
    _, state = jax.eval_shape(lambda v, x: module.apply(v, x, mutable=["intermediates"]), variables, dummy)
    sows = bool(jax.tree_util.tree_leaves(state.get("intermediates", {})))

    def init(key):
      return module.init(key, jnp.zeros((1,) + shape, jnp.float32))["params"]

    def apply(params, x):
      if not sows:
        return module.apply({"params": params}, x)
      logits, state = module.apply({"params": params}, x, mutable=["intermediates"])
      return logits, tuple(jax.tree_util.tree_leaves(state.get("intermediates", {})))

    return cls(name, init, apply, shape, returns_hidden=sows, description=f"flax {module!r}".replace("\n", " "))

  @classmethod
  def lenet(cls, config: lenet_lib.LeNetConfig = lenet_lib.LeNetConfig()) -> "Model":
    """The strided LeNet of `config` (`jscale.models.lenet`); its hidden activations are its four ReLU outputs.
    The convolutions run as matmuls over non-overlapping patches (`conv="matmul"`: equal to XLA's convolution
    to float rounding, faster under vmap on CPU)."""
    if not isinstance(config, lenet_lib.LeNetConfig):
      raise ValueError(f"Model.lenet expects a LeNetConfig, got {type(config).__name__}")
    config.check()
    desc = (f"lenet(image={tuple(config.image)}, channels={tuple(config.channels)}, kernels="
            f"{tuple(map(tuple, config.kernels))}, hidden={tuple(config.hidden)}, n_out={config.n_out}"
            + (f", pools={tuple(config.pools)})" if config.pools else ")"))
    return cls("lenet", functools.partial(lenet_lib.init_lenet, config=config),
               functools.partial(lenet_lib.apply_lenet, return_hidden=True, conv="matmul", pools=config.pools),
               config.image,
               returns_hidden=True, description=desc)

  # -- what the engine reads ----------------------------------------------------------------------------

  def _apply(self, params, x):
    """(logits, tuple of hidden activations) for x of shape (batch,) + input_shape."""
    out = self.apply(params, x)
    if self.returns_hidden:
      logits, hidden = out
      return logits, tuple(hidden)
    return out, ()

  @property
  def n_in(self) -> int:
    """Features per flat example row: prod(input_shape)."""
    return math.prod(self.input_shape)

  @property
  def n_layers(self) -> int:
    """Kernel leaves (what layer_scale, a per-layer kernel_init and g_ratio index)."""
    return len(self._kernel_idx)

  @property
  def kernel_names(self) -> list[str]:
    return [self._leaf_shapes[i][0] for i in self._kernel_idx]

  @property
  def kernel_shapes(self) -> list[tuple]:
    return [self._leaf_shapes[i][1] for i in self._kernel_idx]

  def check_features(self, n_features: int, what: str = "the data") -> None:
    if n_features != self.n_in:
      raise ValueError(f"model {self.name!r} takes inputs of shape {self.input_shape} ({self.n_in} features per "
                       f"row) but {what} has {n_features} features per row")

  def kernel_inits(self, kernel_init) -> list[initializers.Initializer]:
    """One initializer per kernel from a spec (all kernels) or a tuple of specs (one per kernel)."""
    if isinstance(kernel_init, (list, tuple)):
      if len(kernel_init) != self.n_layers:
        raise ValueError(f"model {self.name!r}: kernel_init has {len(kernel_init)} entries for its "
                         f"{self.n_layers} kernels {self.kernel_names}")
      return [initializers.get(k) for k in kernel_init]
    return [initializers.get(kernel_init)] * self.n_layers

  def draw(self, key: jax.Array, kernel_init="he_normal"):
    """The model's parameters from `init` (its biases, any other leaf) with every kernel drawn by `kernel_init`.
    The kernels' keys are split off `key` the same way for every initializer (common random numbers)."""
    inits = self.kernel_inits(kernel_init)
    k_model, kernel_keys = self.split_key(key)
    leaves = self._treedef.flatten_up_to(self.init(k_model))
    for l, (i, k) in enumerate(zip(self._kernel_idx, kernel_keys)):
      leaves[i] = inits[l](k, leaves[i].shape, leaves[i].dtype)
    return jax.tree_util.tree_unflatten(self._treedef, leaves)

  def split_key(self, key: jax.Array) -> tuple[jax.Array, list]:
    """(the key `init` gets, one key per kernel), the same for every initializer (common random numbers)."""
    if self._split_key is not None:
      return self._split_key(key)
    k_model, k_kernels = jax.random.split(key)
    return k_model, list(jax.random.split(k_kernels, self.n_layers))

  def normal_scales(self, kernel_inits: Sequence) -> np.ndarray | None:
    """(candidates, kernels) stds s such that candidate c draws kernel l as s[c, l] * normal(key, shape), from what
    each initializer declares (`Initializer.normal_std`); None when some candidate samples otherwise."""
    return initializers.normal_scales([self.kernel_inits(c) for c in kernel_inits], self.kernel_shapes)

  def make_draw(self, kernel_inits: Sequence) -> Callable[[jax.Array, jax.Array], Any]:
    """`draw(key, index)`: `self.draw(key, kernel_inits[index])` with `index` traced (a sweep's initializer
    choice; clipped into range). When every candidate is a scaled normal (`normal_scales`) the kernels' normals
    are drawn once, by one random program (`initializers.draw_scaled_normals`), and scaled by the chosen
    candidate's stds: the same numbers as `draw`, without a `lax.switch` (under vmap it computes every branch)
    or one threefry program per kernel and candidate, which XLA:CPU compiles for seconds each. Otherwise a
    `lax.switch` over the candidates."""
    kernel_inits = tuple(kernel_inits)
    if not kernel_inits:
      raise ValueError("make_draw needs at least one kernel initializer")
    for k in kernel_inits:
      self.kernel_inits(k)  # bad specs / lengths -> ValueError now
    scales = self.normal_scales(kernel_inits)
    if scales is None:
      fns = [functools.partial(self.draw, kernel_init=k) for k in kernel_inits]
      if len(fns) == 1:
        return lambda key, index: fns[0](key)
      return lambda key, index: jax.lax.switch(jnp.clip(index, 0, len(fns) - 1), fns, key)
    table = jnp.asarray(scales)

    def draw(key, index):
      k_model, kernel_keys = self.split_key(key)
      stds = table[jnp.clip(index, 0, len(kernel_inits) - 1)]
      params = self.init(k_model)
      ws = self.kernels(params)
      kernels = initializers.draw_scaled_normals(kernel_keys, [w.shape for w in ws], stds, [w.dtype for w in ws])
      return self.map_kernels(lambda l, w: kernels[l], params)
    return draw

  def kernels(self, params) -> list:
    leaves = self._treedef.flatten_up_to(params)
    return [leaves[i] for i in self._kernel_idx]

  def map_kernels(self, fn: Callable[[int, jax.Array], jax.Array], params):
    """params with kernel l replaced by fn(l, kernel_l); every other leaf unchanged."""
    leaves = self._treedef.flatten_up_to(params)
    for l, i in enumerate(self._kernel_idx):
      leaves[i] = fn(l, leaves[i])
    return jax.tree_util.tree_unflatten(self._treedef, leaves)

  def forward(self, params, x, input_scale=None, output_scale=None):
    """(logits, hidden activations) for flat rows x (batch, n_in) or examples (batch,) + input_shape."""
    if x.shape[1:] != self.input_shape:
      self.check_features(math.prod(x.shape[1:]), f"an input of shape {x.shape}")
      x = x.reshape((x.shape[0],) + self.input_shape)
    if input_scale is not None:
      x = x * input_scale
    logits, hidden = self._apply(params, x)
    return (logits if output_scale is None else logits * output_scale), hidden

  # -- cost models (jscale.sweeps.cost) ------------------------------------------------------------------

  @functools.cached_property
  def _one_example(self):
    params = jax.eval_shape(self.init, jax.random.PRNGKey(0))
    return params, jax.ShapeDtypeStruct((1,) + self.input_shape, jnp.float32)

  def num_params(self) -> int:
    return sum(math.prod(s) for _, s, _ in self._leaf_shapes)

  @functools.cached_property
  def _units(self) -> int:
    if self.returns_hidden:
      return self._hidden_units + self.n_out
    params = self._one_example[0]
    return _per_example_size(lambda p, x: self._apply(p, x)[0],
                             lambda b: (params, jax.ShapeDtypeStruct((b,) + self.input_shape, jnp.float32)))

  def units(self) -> int:
    """Activations per example (hidden activations and logits; for a model that reports none, every
    intermediate value of its forward pass, a generous count)."""
    return self._units

  @functools.cached_property
  def _flops(self) -> float:
    if self._flops_override is not None:
      return float(self._flops_override[0])
    params, x = self._one_example
    try:
      cost = jax.jit(lambda p, x_: self._apply(p, x_)[0]).lower(params, x).cost_analysis()
      cost = cost[0] if isinstance(cost, (list, tuple)) else cost
      flops = float(cost.get("flops", float("nan")))
    except Exception:  # noqa: BLE001 - a backend without cost analysis: count the kernels' MACs at least
      flops = float("nan")
    if not (flops > 0 and math.isfinite(flops)):
      flops = 2.0 * sum(math.prod(s) for s in self.kernel_shapes)
    return flops

  def forward_flops(self) -> float:
    """FLOPs of one example's forward pass (XLA's cost analysis of `apply`, unless the model counts its own)."""
    return self._flops

  def backward_flops(self) -> float:
    """FLOPs of one example's backward pass: the model's own count, else twice the forward pass."""
    return float(self._flops_override[1]) if self._flops_override is not None else 2 * self._flops

  def __repr__(self) -> str:
    return (f"Model({self.description}, input_shape={self.input_shape}, kernels={self.n_layers}, "
            f"n_out={self.n_out})")

  __str__ = __repr__

  def __deepcopy__(self, memo):
    return self  # immutable: `dataclasses.asdict(TrainSpec)` keeps the object (json records its str)

  def __copy__(self):
    return self

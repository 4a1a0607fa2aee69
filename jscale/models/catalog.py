"""The named models, as `Model`s a sweep trains: the MLP of a width list, the strided LeNet; `get_model` by name.

  mlp(widths, activation, bias_init)   the MLP of `jscale.mlp` (what `TrainSpec(widths=...)` trains)
  lenet(n_out, image, ...)             the paper's strided LeNet from plain options (an Experiment's
                                       `model_options`)
  transformer(n_out, vocab, ...)       the small pre-LN transformer of `models/transformer.py` on one-hot
                                       token rows
  get_model("lenet", n_out=10, ...)    by name (`MODELS`), memoized so a sweep's compiled programs are reused
  model_of(settings, n_out)            the named model a sweep configuration's settings ask for (None: the MLP)
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np

from jscale import checks, mlp as mlp_lib
from jscale.models import lenet as lenet_lib
from jscale.models import transformer as transformer_lib
from jscale.models.model import Model


def mlp(widths: Sequence[int], activation="relu", bias_init="zeros") -> Model:
  """The MLP of `widths` (input first) as a `Model`: its kernels are the weight layers, its hidden activations
  the hidden layers' outputs, its keys laid out as `jscale.mlp.init_mlp` lays them (kernel l from key 2l, bias l
  from key 2l + 1), and its FLOPs counted analytically (matmuls only, 2 per multiply-add: the forward pass
  sum_l 2 n_l n_{l+1}; the backward pass dW_l for every layer and dX_l for every layer but the first)."""
  return _mlp(mlp_lib.check_widths(widths), activation, bias_init)


@functools.lru_cache(maxsize=64)   # the same MLP is the same object: a sweep's compiled programs are reused
def _mlp(widths: tuple, activation, bias_init) -> Model:
  act = mlp_lib.get_activation(activation)
  n_layers = len(widths) - 1
  mm = [widths[l] * widths[l + 1] for l in range(n_layers)]

  def init(key):   # the biases at their init_mlp keys; the kernels are redrawn by `Model.draw`
    return mlp_lib.init_mlp(key, widths, "zeros", bias_init)

  def apply(params, x):
    logits, trace = mlp_lib.apply_mlp(params, x, act, return_trace=True)
    return logits, tuple(trace.inputs[1:])

  def split_key(key):
    keys = jax.random.split(key, 2 * n_layers)
    return key, [keys[2 * l] for l in range(n_layers)]

  name = "mlp"
  desc = f"mlp(widths={widths}, activation={getattr(activation, '__name__', activation)}, bias_init={bias_init})"
  return Model(name, init, apply, (widths[0],), returns_hidden=True, description=desc, split_key=split_key,
               flops=(2.0 * sum(mm), 2.0 * sum(mm) + 2.0 * sum(mm[1:])))


def lenet(n_out: int = 10, image: Sequence[int] = (8, 8, 1), channels: Sequence[int] = (6, 16),
          kernels: Sequence = ((2, 2), (2, 2)), hidden: Sequence[int] = (120, 84)) -> Model:
  """The strided LeNet as a `Model` from plain options (what an Experiment's `model_options` hold)."""
  cfg = lenet_lib.LeNetConfig(image=tuple(image), channels=tuple(channels),
                              kernels=tuple(tuple(k) for k in kernels), hidden=tuple(hidden), n_out=int(n_out))
  return Model.lenet(cfg)


def transformer(n_out: int = 10, vocab: int = 32, seq_len: int = 16, width: int = 64, heads: int = 4,
                depth: int = 2, mlp_ratio: int = 4, causal: bool = False) -> Model:
  """The pre-LN transformer classifier as a `Model` on flat one-hot token rows (seq_len * vocab features);
  every float leaf with >= 2 dims (embeddings, projections) is a kernel the sweep redraws."""
  cfg = transformer_lib.TransformerConfig(vocab=int(vocab), seq_len=int(seq_len), width=int(width),
                                          heads=int(heads), depth=int(depth), mlp_ratio=int(mlp_ratio),
                                          n_out=int(n_out), causal=bool(causal)).check()
  return Model.from_functions(lambda key: transformer_lib.init_transformer(key, cfg),
                              lambda p, x: transformer_lib.apply_transformer(p, x, cfg), (cfg.seq_len, cfg.vocab),
                              name="transformer", description=f"transformer({cfg})")


MODELS: dict[str, Callable[..., Model]] = {"lenet": lenet, "transformer": transformer}


def _freeze(v):
  if isinstance(v, dict):
    return tuple(sorted((k, _freeze(x)) for k, x in v.items()))
  if isinstance(v, (list, tuple)):
    return tuple(_freeze(x) for x in v)
  if isinstance(v, np.ndarray):
    return _freeze(v.tolist())
  return v


@functools.lru_cache(maxsize=64)
def _get_model(name: str, n_out: int, frozen_options: tuple) -> Model:
  options = dict(frozen_options)
  try:
    return MODELS[name](n_out=n_out, **options)
  except TypeError as e:  # an unknown option
    raise ValueError(f"model {name!r}: bad options {options!r}: {e}") from None


def get_model(name: str, n_out: int, **options) -> Model:
  """The named model with `n_out` classes (memoized: the same options give the same object, so a sweep's
  compiled programs are reused). Names: `MODELS`."""
  if not isinstance(name, str) or name not in MODELS:
    raise ValueError(f"unknown model {name!r}; valid: {', '.join(MODELS)}")
  n_out = checks.positive_int(n_out, f"model {name!r}: n_out")
  return _get_model(name, n_out, _freeze(options))


def model_of(settings: Mapping[str, Any], n_out: int = 2) -> Model | None:
  """The named `Model` of a sweep configuration's settings (its "model" and "model_options") (None: the MLP of `hidden`). `n_out`: the data's
  classes (the number of kernels, hence of layer_scale entries, does not depend on it)."""
  name = settings["model"]
  if name is None:
    return None
  if not isinstance(name, str):
    raise ValueError(f"model must be None (the MLP of hidden) or a model name ({', '.join(MODELS)}), "
                     f"got {name!r}")
  opts = settings["model_options"]
  if not isinstance(opts, Mapping):
    raise ValueError(f"model_options must be a mapping of the model's options, got {opts!r}")
  return get_model(name, n_out, **dict(opts))

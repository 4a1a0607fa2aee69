"""A small pre-LayerNorm transformer encoder (or causal decoder) classifier, for the calculus on modern blocks.

  one-hot tokens (batch, seq_len, vocab) -> token embedding + position embedding
  -> depth x [x + attention(LN(x)); x + MLP(LN(x))] -> LN -> mean over tokens -> dense head

Attention: `heads` heads of width/heads, softmax(q k^T / sqrt(d_head)) v, with a causal mask when `causal`;
the MLP: dense(mlp_ratio * width) -> GELU (tanh form, jax.nn.gelu's default) -> dense(width). The inputs are
one-hot float rows, so the token embedding is a dense leaf (what `jscale.inspect` reads as a weight layer) and
`x @ embed` equals an embedding lookup. As pure functions (`init_transformer`, `apply_transformer`) and a Flax
module (`Transformer`) with the same parameter tree:
  {"embed": {"tokens": (vocab, width), "positions": (seq_len, width)},
   "block0": {"ln1": {"scale", "bias"}, "attn": {"query"|"key"|"value": {"kernel": (width, heads, d_head),
              "bias": (heads, d_head)}, "out": {"kernel": (heads, d_head, width), "bias"}},
              "ln2": ..., "mlp": {"dense0": {"kernel", "bias"}, "dense1": ...}}, ...,
   "ln_final": ..., "head": {"kernel": (width, n_out), "bias"}}
Kernels are drawn by `init` (an initializer spec, fans of the matrix each kernel is), embeddings by
`embed_init`; biases 0, LayerNorm scales 1.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jscale import checks, initializers

LN_EPS = 1e-6


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
  vocab: int = 32
  seq_len: int = 16
  width: int = 64
  heads: int = 4
  depth: int = 2
  mlp_ratio: int = 4
  n_out: int = 10
  causal: bool = False

  def check(self) -> "TransformerConfig":
    for name in ("vocab", "seq_len", "width", "heads", "depth", "mlp_ratio", "n_out"):
      checks.positive_int(getattr(self, name), f"TransformerConfig.{name}")
    if self.width % self.heads:
      raise ValueError(f"TransformerConfig: width {self.width} must be divisible by heads {self.heads}")
    if not isinstance(self.causal, bool):
      raise ValueError(f"TransformerConfig.causal must be True or False, got {self.causal!r}")
    return self

  @property
  def d_head(self) -> int:
    return self.width // self.heads


def _dense(key, init, shape, fan_shape, dtype):
  """A kernel of `shape` drawn as the (fan_in, fan_out) matrix `fan_shape` it acts as, then reshaped."""
  return initializers.get(init)(key, fan_shape, dtype).reshape(shape)


def _ln(width, dtype):
  return {"scale": jnp.ones(width, dtype), "bias": jnp.zeros(width, dtype)}


def init_block(key, config: TransformerConfig, init: Any = "lecun_normal", dtype=jnp.float32) -> dict:
  c = config
  D, H, dh, F = c.width, c.heads, c.d_head, c.mlp_ratio * c.width
  ks = jax.random.split(key, 6)
  attn = {name: {"kernel": _dense(k, init, (D, H, dh), (D, D), dtype), "bias": jnp.zeros((H, dh), dtype)}
          for name, k in zip(("query", "key", "value"), ks[:3])}
  attn["out"] = {"kernel": _dense(ks[3], init, (H, dh, D), (D, D), dtype), "bias": jnp.zeros(D, dtype)}
  mlp = {"dense0": {"kernel": _dense(ks[4], init, (D, F), (D, F), dtype), "bias": jnp.zeros(F, dtype)},
         "dense1": {"kernel": _dense(ks[5], init, (F, D), (F, D), dtype), "bias": jnp.zeros(D, dtype)}}
  return {"ln1": _ln(D, dtype), "attn": attn, "ln2": _ln(D, dtype), "mlp": mlp}


def init_transformer(key: jax.Array, config: TransformerConfig = TransformerConfig(), init: Any = "lecun_normal",
                     embed_init: Any = "normal:1.0", dtype=jnp.float32) -> dict:
  """The parameter tree of the module docstring."""
  c = config.check()
  init = "lecun_normal" if init is None else init
  k_tok, k_pos, k_head, *k_blocks = jax.random.split(key, 3 + c.depth)
  emb = initializers.get(embed_init)
  params = {"embed": {"tokens": emb(k_tok, (c.vocab, c.width), dtype),
                      "positions": emb(k_pos, (c.seq_len, c.width), dtype)}}
  for l, k in enumerate(k_blocks):
    params[f"block{l}"] = init_block(k, c, init, dtype)
  params["ln_final"] = _ln(c.width, dtype)
  params["head"] = {"kernel": _dense(k_head, init, (c.width, c.n_out), (c.width, c.n_out), dtype),
                    "bias": jnp.zeros(c.n_out, dtype)}
  return params


def layer_norm(p: dict, x: jax.Array) -> jax.Array:
  mean = jnp.mean(x, axis=-1, keepdims=True)
  h = x - mean
  var = jnp.mean(jnp.square(h), axis=-1, keepdims=True)
  return h * jax.lax.rsqrt(var + LN_EPS) * p["scale"] + p["bias"]


def attention(p: dict, x: jax.Array, causal: bool) -> jax.Array:
  """Multi-head softmax attention of x: (batch, tokens, width)."""
  q = jnp.einsum("btd,dhk->bthk", x, p["query"]["kernel"]) + p["query"]["bias"]
  k = jnp.einsum("btd,dhk->bthk", x, p["key"]["kernel"]) + p["key"]["bias"]
  v = jnp.einsum("btd,dhk->bthk", x, p["value"]["kernel"]) + p["value"]["bias"]
  logits = jnp.einsum("bqhk,bshk->bhqs", q / math.sqrt(q.shape[-1]), k)
  if causal:
    T = x.shape[1]
    mask = jnp.tril(jnp.ones((T, T), bool))
    logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
  weights = jax.nn.softmax(logits, axis=-1)
  o = jnp.einsum("bhqs,bshk->bqhk", weights, v)
  return jnp.einsum("bqhk,hkd->bqd", o, p["out"]["kernel"]) + p["out"]["bias"]


def mlp_block(p: dict, x: jax.Array) -> jax.Array:
  h = jax.nn.gelu(x @ p["dense0"]["kernel"] + p["dense0"]["bias"])
  return h @ p["dense1"]["kernel"] + p["dense1"]["bias"]


def apply_transformer(params: dict, x: jax.Array, config: TransformerConfig = TransformerConfig()) -> jax.Array:
  """Logits (batch, n_out) for one-hot tokens x: (batch, seq_len, vocab) (or flat rows of that size)."""
  c = config
  x = x.reshape(x.shape[0], c.seq_len, c.vocab)
  h = x @ params["embed"]["tokens"] + params["embed"]["positions"]
  for l in range(c.depth):
    p = params[f"block{l}"]
    h = h + attention(p["attn"], layer_norm(p["ln1"], h), c.causal)
    h = h + mlp_block(p["mlp"], layer_norm(p["ln2"], h))
  h = layer_norm(params["ln_final"], h)
  return jnp.mean(h, axis=1) @ params["head"]["kernel"] + params["head"]["bias"]


def random_tokens(key: jax.Array, batch: int, config: TransformerConfig = TransformerConfig()) -> jax.Array:
  """A batch of i.i.d. uniform tokens, one-hot: (batch, seq_len, vocab) float32."""
  ids = jax.random.randint(key, (batch, config.seq_len), 0, config.vocab)
  return jax.nn.one_hot(ids, config.vocab, dtype=jnp.float32)


class Transformer(nn.Module):
  """Flax module of `apply_transformer`; its params equal `init_transformer`'s tree (drawn with flax's key)."""
  config: TransformerConfig = TransformerConfig()
  kernel_init: Any = "lecun_normal"   # (`init` would shadow nn.Module.init)
  embed_init: Any = "normal:1.0"

  @nn.compact
  def __call__(self, x):
    params = self.param("transformer", lambda key: init_transformer(key, self.config, self.kernel_init,
                                                                    self.embed_init))
    return apply_transformer(params, x, self.config)

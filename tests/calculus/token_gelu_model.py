"""The token model the draw's-mean and draw's-gradient tests both trace (one definition, two test files)."""
import jax
import jax.numpy as jnp


def apply(p, x):
  """One-hot tokens -> token + position embedding -> dense -> GELU -> dense -> mean over tokens -> head."""
  h = x @ p["tokens"] + p["positions"]
  z = jax.nn.gelu(h @ p["w0"]) @ p["w1"]
  return jnp.mean(z, axis=1) @ p["head"]

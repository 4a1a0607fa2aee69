"""The explainers' experiment: per-layer activations of a deep tanh / ReLU net at initialisation.

Forward only, no training. A `depth`-layer net of `width` units per layer (default 10 x 500, input width
500, zero biases, the activation after every layer) is fed `n_samples` unit-Gaussian inputs. For each
(activation, init scheme) we record, per layer, a histogram on fixed bins, the mean and std, the
saturation fraction, and the std the scaling calculus predicts:

  ReLU  E[y_l^2] = n E[W^2] E[x_l^2] and E[x_{l+1}^2] = E[y_l^2] / 2 (`calculus.activation_std`, the
        closed form); a zero-mean Gaussian pre-activation of variance q gives relu output std
        sqrt(q (1/2 - 1/(2 pi))).
  tanh  the calculus's rule for any elementwise activation (`calculus.activation_maps`: E[phi(y)^2] and
        E[phi(y)] for y ~ N(0, q) by Gauss-Hermite quadrature), which follows saturation. Beside it,
        `linear_std`: the older linear regime (tanh(y) ~ y, the identity rules), std_l = sqrt(E[y_l^2]),
        which holds while |y| << 1 and FAILS once units saturate (N(0, 0.1^2): n E[W^2] = 5 per layer, the
        linear prediction grows 5^(l/2) while tanh stays below 1). The report shows both.

`replicates` independent nets (each its own inputs and weights) give the measured/predicted ratio an
interval: one net's last-layer std moves by ~10% at 10 x 500 (finite width: every input shares W).

Saturation: for tanh the fraction |x| > 0.99 (stuck on the flat tails); for ReLU the fraction of outputs
that are exactly 0 (the tutorial's "near-zero ReLU activations": inactive units, zero gradient).

Histogram bins are fixed per activation so layers and schemes compare on one axis: tanh 56 bins on
[-1, 1];  ReLU 56 log-spaced bins over positive values 1e-10 .. 1e4 (values outside are clipped into the
end bins; the exact zeros, half of all ReLU outputs, are in `saturation_frac`, not in the counts).

Run it (writes the results and, through the report, its section with figures):
  python scripts/sweep.py --experiment activations --grid quick
"""
from __future__ import annotations

import math
from typing import Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jscale import calculus, checks, initializers
from jscale.calculus import activation_maps
from jscale.sweeps import store

# The explainers' schemes (label -> initializer spec). For square 500x500 layers geometric (c=2) has
# E[W^2] = 2/500 = He's: the two coincide here, by design of the rule (it differs when widths change).
INIT_SPECS: dict[str, str] = {
    "N(0,0.01^2)": "normal:0.01",
    "N(0,0.1^2)": "normal:0.1",
    "LeCun": "lecun_normal",
    "Xavier": "glorot_normal",
    "He": "he_normal",
    "geometric": "geometric:c=2",
}
ACTIVATIONS = ("tanh", "relu")
TANH_SATURATION = 0.99


def default_bin_edges(activation: str) -> np.ndarray:
  if activation == "tanh":
    return np.linspace(-1.0, 1.0, 57)
  if activation == "relu":
    return np.logspace(-10.0, 4.0, 57)
  raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")


class ActivationStats(NamedTuple):
  """Per-layer statistics, every array indexed by layer l = 0..depth-1 (the output of weight layer l)."""
  bin_edges: np.ndarray        # (bins + 1,)
  counts: np.ndarray           # (depth, bins) int64
  mean: np.ndarray             # (depth,)
  std: np.ndarray              # (depth,)
  saturation_frac: np.ndarray  # (depth,) tanh: |x| > 0.99; relu: x == 0
  predicted_std: np.ndarray    # (depth,) the calculus (tanh: quadrature of the activation's moment maps)
  linear_std: np.ndarray       # (depth,) the identity rules' linear regime (= predicted_std for relu)
  weight_sq: np.ndarray        # (depth,) the initializer's E[W^2]


def _check(activation, depth, width, n_samples):
  checks.one_of(activation, "activation", ACTIVATIONS)
  for name, v in (("depth", depth), ("width", width), ("n_samples", n_samples)):
    checks.positive_int(v, name)


def layer_activations(key: jax.Array, activation: str, init, *, depth: int = 10, width: int = 500,
                      n_samples: int = 1000) -> jax.Array:
  """Activations x_1..x_depth of the net, shape (depth, n_samples, width), for x_0 ~ N(0, I)."""
  _check(activation, depth, width, n_samples)
  init = initializers.get(init)
  act = jnp.tanh if activation == "tanh" else jax.nn.relu
  k_x, k_w = jax.random.split(key)
  x_NxD = jax.random.normal(k_x, (n_samples, width))
  outs = []
  for k_l in jax.random.split(k_w, depth):
    x_NxD = act(x_NxD @ init(k_l, (width, width)))
    outs.append(x_NxD)
  return jnp.stack(outs)


def linear_std(activation: str, weight_sq: Sequence[float], width: int, x0_sq: float = 1.0) -> np.ndarray:
  """Per-layer std from the homogeneous propagation rules (tanh: its linear regime, the identity rules)."""
  return calculus.activation_std((width,) * (len(weight_sq) + 1), weight_sq, x0_sq, activation)


def predicted_std(activation: str, weight_sq: Sequence[float], width: int, x0_sq: float = 1.0) -> np.ndarray:
  """Per-layer std the calculus predicts: ReLU by its closed form; any other activation by the quadrature of
  its moment maps (`calculus.activation_maps.maps`): pre-activation y_l ~ N(0, q_l), q_l = n E[W^2] E[x_l^2],
  E[x_{l+1}^2] = E[phi(y_l)^2], std = sqrt(E[phi^2] - E[phi]^2)."""
  if activation == "relu":
    return linear_std(activation, weight_sq, width, x0_sq)
  phi = activation_maps.get(activation)
  x_sq, out = float(x0_sq), []
  for wsq in np.asarray(weight_sq, np.float64):
    m = activation_maps.maps(phi, width * wsq * x_sq)
    x_sq = m.fwd_sq
    out.append(math.sqrt(max(m.fwd_sq - m.mean ** 2, 0.0)))
  return np.asarray(out)


def activation_stats(key: jax.Array, activation: str, init, *, depth: int = 10, width: int = 500,
                     n_samples: int = 1000, bin_edges: np.ndarray | None = None) -> ActivationStats:
  """Measure one (activation, init) net: histograms, moments and saturation per layer, plus predictions."""
  init = initializers.get(init)
  xs = np.asarray(layer_activations(key, activation, init, depth=depth, width=width, n_samples=n_samples),
                  np.float64).reshape(depth, -1)
  edges = default_bin_edges(activation) if bin_edges is None else np.asarray(bin_edges, np.float64)
  lo, hi = edges[0], edges[-1]
  counts = []
  for x in xs:
    v = x[x > 0] if activation == "relu" else x
    # Clip (not drop) out-of-range values so every counted activation lands in a bin.
    counts.append(np.histogram(np.clip(v, lo, np.nextafter(hi, lo)), edges)[0])
  sat = (np.abs(xs) > TANH_SATURATION) if activation == "tanh" else (xs == 0)
  wsq = np.full(depth, init.second_moment((width, width)))
  return ActivationStats(
      bin_edges=edges, counts=np.asarray(counts, np.int64), mean=xs.mean(1), std=xs.std(1),
      saturation_frac=sat.mean(1), predicted_std=predicted_std(activation, wsq, width),
      linear_std=linear_std(activation, wsq, width), weight_sq=wsq)


def run(key: jax.Array, activations: Sequence[str] = ACTIVATIONS, schemes: Mapping[str, str] = INIT_SPECS, *,
        depth: int = 10, width: int = 500, n_samples: int = 1000) -> dict[str, dict[str, ActivationStats]]:
  """All (activation, scheme) pairs. Every pair uses the same key: common random numbers, so schemes
  differ only by their scale (for these zero-mean normal initializers), not by the draw."""
  if not schemes:
    raise ValueError("schemes is empty")
  for a in activations:
    _check(a, depth, width, n_samples)
  return {a: {label: activation_stats(key, a, spec, depth=depth, width=width, n_samples=n_samples)
              for label, spec in schemes.items()} for a in activations}


def experiment(exp_dir: str, seed: int = 0, *, replicates: int = 1, activations: Sequence[str] = ACTIVATIONS,
               schemes: Mapping[str, str] = INIT_SPECS, depth: int = 10, width: int = 500,
               n_samples: int = 1000) -> str:
  """Run `replicates` independent nets (replicate i: key fold_in(key(seed), i), new inputs and weights) and save
  the results (`jscale.sweeps.store.write_results`) into `exp_dir`: per-layer statistics for every replicate,
  histograms of replicate 0. The figures are drawn by this experiment's report section from those arrays."""
  checks.positive_int(replicates, "replicates")
  base = jax.random.key(seed)
  reps = [run(jax.random.fold_in(base, i), activations, schemes, depth=depth, width=width, n_samples=n_samples)
          for i in range(replicates)]
  acts, labels = list(activations), list(schemes)

  def stack(field, results):
    return np.stack([np.stack([getattr(results[a][s], field) for s in labels]) for a in acts])

  results = reps[0]
  if len({len(results[a][labels[0]].bin_edges) for a in acts}) != 1:
    raise ValueError("every activation needs the same number of histogram bins to be saved together")
  edges = np.stack([results[a][labels[0]].bin_edges for a in acts])
  metrics = {f: (("replicate", "activation", "scheme", "layer"), np.stack([stack(f, r) for r in reps]))
             for f in ("mean", "std", "saturation_frac")}
  metrics.update({f: (("activation", "scheme", "layer"), stack(f, results))
                  for f in ("predicted_std", "linear_std", "weight_sq")})
  counts = stack("counts", results)
  metrics["counts"] = (("activation", "scheme", "layer", "bin"), counts)
  metrics["bin_edges"] = (("activation", "bin_edge"), edges)
  store.write_results(
      exp_dir, axes={"replicate": list(range(replicates)), "activation": acts, "scheme": labels,
                     "layer": list(range(1, depth + 1)), "bin": list(range(counts.shape[-1])),
                     "bin_edge": list(range(counts.shape[-1] + 1))},
      metrics=metrics, experiment="activations", seeds=[seed], replicates=replicates, schemes=dict(schemes),
      depth=depth, width=width, n_samples=n_samples)
  return exp_dir

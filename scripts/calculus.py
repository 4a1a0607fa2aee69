"""Use the scaling calculus before you train: predicted vs measured nu, G, saturation, recommendations.

  python scripts/calculus.py                                   # 784-300-100-10, geometric init
  python scripts/calculus.py --widths 784,300,100,10 --init geometric
  python scripts/calculus.py --compare he_normal,glorot_normal,geometric
  python scripts/calculus.py --init glorot_normal --data pixels --feature-scale 1 --weight-scale 255
  python scripts/calculus.py --init glorot_normal --data pixels --feature-scale 255 --weight-scale 1
  python scripts/calculus.py --json > calculus.json

Predicted columns come from the propagation rules (docs/calculus.md); measured ones from one forward/backward
pass (`jax.vjp`, random-projection loss v ~ N(0, 1) per example) on one batch. G is the per-example
(batch-1) gradient-to-weight ratio, Gb the same for the minibatch-mean gradient of --batch examples.
Data: `gaussian` draws N(0, --x-sq) inputs; `pixels` draws i.i.d. uniform integers 0..255 (a stand-in
for raw image pixels, no download); `fashion_mnist` / `mnist` read raw pixels through tfds from the local
data dir only. Inputs are divided by --feature-scale and the first layer's weights by --weight-scale,
as in the feature- vs weight-scaling question (docs/sources.md).
"""
from __future__ import annotations

import argparse
import json
import math
import sys

import jax
import jax.numpy as jnp
import numpy as np

from jscale import calculus, initializers, mlp


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
  p.add_argument("--widths", default="784,300,100,10", help="comma-separated widths n_0,...,n_L")
  p.add_argument("--init", default="geometric", help="initializer spec, e.g. he_normal, glorot_normal, "
                 "geometric:c=2, normal:0.1 (see jscale.initializers.names())")
  p.add_argument("--compare", default=None, help="comma-separated init names to put side by side "
                 "(names only; use --init for a spec with parameters)")
  p.add_argument("--activation", default="relu", choices=calculus.ACT_KINDS)
  p.add_argument("--data", default="gaussian", choices=("gaussian", "pixels", "fashion_mnist", "mnist"))
  p.add_argument("--x-sq", type=float, default=1.0, help="E[x^2] of the gaussian inputs (before --feature-scale)")
  p.add_argument("--batch", type=int, default=256, help="examples in the measured batch")
  p.add_argument("--feature-scale", type=float, default=1.0, help="divide the inputs by this")
  p.add_argument("--weight-scale", type=float, default=1.0, help="divide the first layer's weights by this")
  p.add_argument("--target-std", type=float, default=0.05, help="logit std for the output multiplier")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--json", action="store_true", help="print JSON instead of tables")
  args = p.parse_args(argv)
  try:
    args.widths = mlp.check_widths(int(w) for w in args.widths.split(","))
  except ValueError as e:
    p.error(f"--widths: {e}" if "widths" in str(e) else f"--widths must be comma-separated ints: {args.widths!r}")
  inits = args.compare.split(",") if args.compare else [args.init]
  for spec in inits:
    try:
      initializers.get(spec)
    except ValueError as e:
      p.error(str(e))
  args.inits = inits
  for name in ("batch",):
    if getattr(args, name) < 1:
      p.error(f"--{name} must be >= 1")
  for name in ("x_sq", "feature_scale", "weight_scale", "target_std"):
    v = getattr(args, name)
    if not (v > 0 and math.isfinite(v)):
      p.error(f"--{name.replace('_', '-')} must be finite and > 0, got {v}")
  if args.data in ("fashion_mnist", "mnist", "pixels") and args.widths[0] != 784 and args.data != "pixels":
    p.error(f"--data {args.data} has 784 features; --widths must start with 784")
  return args


def load_inputs(args, key) -> jax.Array:
  n_0, B = args.widths[0], args.batch
  if args.data == "gaussian":
    x = math.sqrt(args.x_sq) * jax.random.normal(key, (B, n_0))
  elif args.data == "pixels":
    x = jax.random.randint(key, (B, n_0), 0, 256).astype(jnp.float32)
  else:
    try:
      import tensorflow_datasets as tfds
      ds = tfds.load(args.data, split="train", download=False, batch_size=B, as_supervised=True)
      images, _ = next(iter(tfds.as_numpy(ds)))
    except Exception as e:  # noqa: BLE001 - any failure means the data is not there offline
      raise SystemExit(f"--data {args.data}: could not read it from the local tfds data dir "
                       f"(no download is attempted): {type(e).__name__}: {e}")
    x = jnp.asarray(images.reshape(images.shape[0], -1), jnp.float32)
  return x / args.feature_scale


def fmt(v, width=9):
  if v is None:
    return "-".rjust(width)
  if isinstance(v, str):
    return v.rjust(width)
  if v != 0 and (abs(v) >= 1e4 or abs(v) < 1e-3):
    return f"{v:.2e}".rjust(width)
  return f"{v:.4g}".rjust(width)


COLUMNS = [("l", "layer", 2), ("fan_in", "fan_in", 6), ("fan_out", "fan_out", 7), ("Var(W)", "weight_var", 9),
           ("x2 pred", "x_sq_pred", 9), ("x2 meas", "x_sq_meas", 9), ("dx2 pred", "dx_sq_pred", 9),
           ("dx2 meas", "dx_sq_meas", 9), ("nu pred", "nu_pred", 9), ("nu meas", "nu_meas", 9),
           ("G pred", "G_pred", 9), ("G meas", "G_meas", 9), ("Gb pred", "G_batch_pred", 9),
           ("Gb meas", "G_batch_meas", 9), ("sat", "saturation", 5), ("G/med", "G_over_median", 8),
           ("verdict", "verdict", 8)]


def render(rep) -> str:
  lines = [f"widths {'-'.join(map(str, rep['widths']))}  init {rep['init']}  activation {rep['activation']}  "
           f"batch {rep['batch_size']}  E[x0^2] {rep['x0_sq']:.4g}  first-layer weights / {rep['weight_scale']:g}"]
  lines.append("  ".join(h.rjust(w) for h, _, w in COLUMNS))
  for row in rep["layers"]:
    cells = []
    for _, key, w in COLUMNS:
      v = row[key]
      cells.append(str(v).rjust(w) if key == "layer" else fmt(v, w))
    lines.append("  ".join(cells))
  o, pc, chk, rec = rep["output"], rep["preconditioning"], rep["calculus_check"], rep["recommendations"]
  lines.append(f"output E[y^2]: pred {fmt(o['out_sq_pred'], 0)}  meas {fmt(o['out_sq_meas'], 0)}  "
               f"(logit std {fmt(o['out_std_meas'], 0)})")
  g1 = pc["G1_over_rest_meas"]
  lines.append(f"preconditioning score max|log10(G/median)|: pred {fmt(pc['score_pred'], 0)}  meas "
               f"{fmt(pc['score_meas'], 0)}" + (f"   G_1 / median(G_2..G_L) = {fmt(g1, 0)}" if g1 is not None else ""))
  lines.append(f"calculus check: {'ok' if chk['ok'] else 'OUTSIDE THE CALCULUS'} -- {chk['reason']} "
               f"(nu spread {fmt(chk['nu_spread'], 0)})")
  lines.append("recommendations:")
  lines.append(f"  output multiplier {fmt(rec['output_multiplier'], 0)} gives logit std {rec['target_logit_std']:g} "
               "on this batch (fixed, untrained)")
  lines.append(f"  input scale {fmt(rec['input_scale_for_bias_balance'], 0)} gives E[x0^2] = 1/sqrt(n_0) = "
               f"{rec['x0_sq_for_bias_balance']:.4g} (first-layer weight/bias balance; now {rep['x0_sq']:.4g})")
  geo = ", ".join(f"{v:.4g}" for v in rec["geometric_weight_sq"])
  lines.append(f"  geometric init c={rec['geometric_c']:g}: E[W^2] = {geo}; G_l = "
               f"{fmt(rec['geometric_G_pred'], 0)} for every layer")
  bad = [r for r in rep["layers"] if r["verdict"] in ("poor", "severe")]
  for r in bad:
    lines.append(f"  layer {r['layer']}: G is {fmt(r['G_over_median'], 0)}x the median ({r['verdict']}): "
                 "one SGD step moves it that much more, relative to its size, than the typical layer")
  for n in rep["notes"]:
    lines.append(f"  note: {n}")
  return "\n".join(lines)


def main(argv=None) -> int:
  args = parse_args(argv)
  key = jax.random.PRNGKey(args.seed)
  k_data, k_net = jax.random.split(key)
  x = load_inputs(args, k_data)
  reports = [calculus.report(args.widths, spec, x, k_net, activation=args.activation,
                             weight_scale=args.weight_scale, target_std=args.target_std) for spec in args.inits]
  if args.json:
    if len(reports) == 1:
      out = reports[0]
    else:
      out = dict(schemes=reports, layers=[dict(row, init=r["init"]) for r in reports for row in r["layers"]])
    print(json.dumps(out, indent=1))
  else:
    print("\n\n".join(render(r) for r in reports))
    if len(reports) > 1:
      print("\nside by side (measured G per layer):")
      print("".join(f"{r['init']:>22}" for r in reports))
      for l in range(len(args.widths) - 1):
        print("".join(fmt(r["layers"][l]["G_meas"], 22) for r in reports))
      print("".join(f"{'score ' + fmt(r['preconditioning']['score_meas'], 0):>22}" for r in reports))
  return 0


if __name__ == "__main__":
  sys.exit(main())

"""Use the scaling calculus before you train: predicted vs measured nu, G, saturation, recommendations.

  python scripts/calculus.py                                   # 784-300-100-10, geometric init
  python scripts/calculus.py --widths 784,300,100,10 --init geometric
  python scripts/calculus.py --compare he_normal,glorot_normal,geometric
  python scripts/calculus.py --init glorot_normal --data pixels --feature-scale 1 --weight-scale 255
  python scripts/calculus.py --init glorot_normal --data pixels --feature-scale 255 --weight-scale 1
  python scripts/calculus.py --json > calculus.json
  python scripts/calculus.py --model lenet --compare fan_in,fan_out,xavier,geometric
  python scripts/calculus.py --model resnet --init geometric
  python scripts/calculus.py --model transformer --init lecun_normal --json
  python scripts/calculus.py --model my_net.py:make --init he_normal --json
  python scripts/calculus.py --depth-profile --activation gelu --depth 50 [--weight-gain 2] [--json]

`--model mlp` (the default) is the MLP given by --widths. `--model lenet` / `resnet` are the paper's strided
LeNet and a small pre-activation bottleneck ResNet with the Section 11 scalars (jscale.models), on --batch
random images; `--model transformer` is jscale.models.Transformer's defaults (2 pre-LN blocks, or --depth,
width 64, 4 heads, 16 tokens of a 32-word vocabulary, GELU MLP, mean over tokens) on --batch uniform random
tokens (per leaf: G and the minibatch Gb predicted and measured, e.g. `--model transformer --init lecun_normal
--depth 6 --batch 128 --seed 3`); `--model PATH.py:FUNCTION` calls FUNCTION(key, init) from that file, which returns
(apply_fn, params, x) or (apply_fn, params, x, loss) (`init` is the --init spec string, or None when not given).
Any model other than mlp goes through `jscale.calculus.inspect`: its table has one row per parameter leaf.

`--depth-profile` predicts, with no network drawn, a stack of --depth dense layers y_{l+1} = W phi(y_l) + b with
fan_in E[W^2] = --weight-gain and E[b^2] = --bias-sq, from E[y_0^2] = --q0: the forward E[y_l^2] and the
gradient's E[Delta_l^2] (relative to the top) over depth, the whole net's C(0) (the output correlation of two
uncorrelated inputs) and C'(1) (the correlation map's slope at 1: > 1 pulls nearby inputs apart), and a verdict
(`jscale.calculus.activation_maps.depth_profile`). --activation then takes any name `activation_maps.get`
knows: relu, gelu, gelu_tanh, silu, tanh, sigmoid, softplus, elu, identity, leaky_relu:A, tanh:S.

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
import importlib.util
import json
import math
import os
import sys

import jax
import jax.numpy as jnp

from jscale import checks, initializers, memory, mlp
from jscale.calculus import activation_maps
from jscale.calculus.inspection import inspect
from jscale.calculus.inspection_records import WEIGHT_KINDS
from jscale.calculus.inspection_table import cell, render as render_inspection
from jscale.calculus.measurement import mlp_bytes
from jscale.calculus.moments import ACT_KINDS
from jscale.calculus.summary import MlpSummary, mlp_summary
from jscale.cli.parser import Parser

MODELS = ("mlp", "lenet", "resnet", "transformer")



def _spec(name: str) -> str:
  """The paper's scheme names (fan_in, fan_out, xavier, geometric) or any initializer spec."""
  return initializers.SCHEMES.get(name, name)


def parse_args(argv=None):
  p = Parser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
              epilog=__doc__)
  p.add_argument("--model", default="mlp", help="mlp, lenet, resnet or PATH.py:FUNCTION (see below)")
  p.add_argument("--widths", default="784,300,100,10", help="comma-separated widths n_0,...,n_L")
  p.add_argument("--init", default=None, help="initializer spec, e.g. he_normal, glorot_normal, "
                 "geometric:c=2, normal:0.1 (see jscale.initializers.names())")
  p.add_argument("--compare", default=None, help="comma-separated init names to put side by side "
                 "(names only; use --init for a spec with parameters)")
  p.add_argument("--activation", default="relu", help=f"MLP: one of {', '.join(ACT_KINDS)}; with "
                 "--depth-profile any activation_maps name (gelu, silu, tanh:S, leaky_relu:A, ...)")
  p.add_argument("--data", default="gaussian", choices=("gaussian", "pixels", "fashion_mnist", "mnist"))
  p.add_argument("--x-sq", type=float, default=1.0, help="E[x^2] of the gaussian inputs (before --feature-scale)")
  p.add_argument("--batch", type=int, default=256, help="examples in the measured batch")
  p.add_argument("--feature-scale", type=float, default=1.0, help="divide the inputs by this")
  p.add_argument("--weight-scale", type=float, default=1.0, help="divide the first layer's weights by this")
  p.add_argument("--target-std", type=float, default=0.05, help="logit std for the output multiplier")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--json", action="store_true", help="print JSON instead of tables")
  p.add_argument("--depth-profile", action="store_true", help="predicted moments and C(0), C'(1) over --depth "
                 "dense layers of --activation (no network is drawn)")
  p.add_argument("--depth", type=int, default=None, help="layers of the --depth-profile stack (default 50), or "
                 "blocks of --model transformer (default 2)")
  p.add_argument("--weight-gain", type=float, default=2.0, help="fan_in E[W^2] per layer (--depth-profile; "
                 "2 is He)")
  p.add_argument("--bias-sq", type=float, default=0.0, help="E[b^2] per layer (--depth-profile)")
  p.add_argument("--q0", type=float, default=1.0, help="E[y_0^2] at the first activation (--depth-profile)")
  args = p.parse_args(argv)
  if args.depth_profile:
    args.depth = 50 if args.depth is None else args.depth
    return _check_depth_profile(p, args)
  if args.depth is not None:
    if args.model != "transformer":
      p.error("--depth applies to --depth-profile and --model transformer only")
    try:
      checks.positive_int(args.depth, "--depth")
    except ValueError as e:
      p.error(str(e))
  _refuse_unused(p, args)
  if args.activation not in ACT_KINDS:
    p.error(f"--activation: invalid choice {args.activation!r} for an MLP (choose from {', '.join(ACT_KINDS)}; "
            "--depth-profile takes any activation_maps name)")
  try:
    args.widths = mlp.check_widths(int(w) for w in args.widths.split(","))
  except ValueError as e:
    p.error(f"--widths: {e}" if "widths" in str(e) else f"--widths must be comma-separated ints: {args.widths!r}")
  if args.model not in MODELS:
    path, sep, func = args.model.rpartition(":")
    if not sep or not path.endswith(".py") or not func:
      p.error(f"--model must be one of {', '.join(MODELS)} or PATH.py:FUNCTION, got {args.model!r}")
    if not os.path.isfile(path):
      p.error(f"--model {args.model}: no file {path!r}")
  elif args.model != "mlp" and args.data in ("fashion_mnist", "mnist"):
    p.error(f"--data {args.data} works with --model mlp only")
  custom_default = args.init is None and args.model not in MODELS
  args.init = "geometric" if args.init is None else args.init
  inits = [_spec(n) for n in args.compare.split(",")] if args.compare else [None if custom_default else args.init]
  for spec in inits:
    if spec is None:
      continue
    try:
      initializers.get(spec)
    except ValueError as e:
      p.error(str(e))
  args.inits = inits
  try:
    checks.positive_int(args.batch, "--batch")
    checks.int_at_least(args.seed, "--seed", 0)
    for name in ("x_sq", "feature_scale", "weight_scale", "target_std"):
      checks.finite_real(getattr(args, name), f"--{name.replace('_', '-')}", minimum=0, strict=True)
  except ValueError as e:
    p.error(str(e))
  if args.data in ("fashion_mnist", "mnist", "pixels") and args.widths[0] != 784 and args.data != "pixels":
    p.error(f"--data {args.data} has 784 features; --widths must start with 784")
  return args


# Flags a mode reads; a flag given to a mode that ignores it is refused (a silently ignored --widths reads as
# "measured at these widths"). --depth-profile's own check is _check_depth_profile.
_PROFILE_ONLY = ("weight_gain", "bias_sq", "q0")
_MLP_ONLY = ("widths", "activation", "weight_scale")
_OWN_INPUTS = ("data", "x_sq", "feature_scale")   # inputs jscale draws; a transformer takes tokens, PATH its own x


def _refuse_unused(p, args) -> None:
  unused = list(_PROFILE_ONLY)
  if args.model != "mlp":
    unused += _MLP_ONLY
  if args.model == "transformer" or args.model not in MODELS:
    unused += _OWN_INPUTS
  if args.model not in MODELS:
    unused += ["batch"]
  given = p.changed(args, unused)
  if given:
    mode = (f"--model {args.model}" if args.model in MODELS else f"--model {args.model} (its x is its own)")
    p.error(f"{mode} does not use {', '.join(given)}" + (" (--weight-gain, --bias-sq and --q0 are "
            "--depth-profile's)" if set(given) & {"--weight-gain", "--bias-sq", "--q0"} else ""))
  if args.compare is not None and args.init is not None:
    p.error(f"--init {args.init} and --compare {args.compare} both choose the initializer: --compare puts the "
            "named schemes side by side, --init gives one spec; use one of them")


def _check_depth_profile(p, args):
  """--depth-profile's own flags, checked before any compute; flags of the other modes are refused."""
  other = sorted(p.changed(args, ("model", "widths", "init", "compare", "data", "x_sq", "batch", "feature_scale",
                                  "weight_scale", "target_std", "seed")))
  if other:
    p.error(f"--depth-profile draws no network; it does not take {', '.join(other)}")
  try:
    args.phi = activation_maps.get(args.activation)
    checks.positive_int(args.depth, "--depth")
    checks.finite_real(args.weight_gain, "--weight-gain", minimum=0, strict=True)
    checks.finite_real(args.q0, "--q0", minimum=0, strict=True)
    checks.finite_real(args.bias_sq, "--bias-sq", minimum=0)
  except ValueError as e:
    p.error(str(e))
  if args.depth > 10000:
    p.error(f"--depth must be at most 10000, got {args.depth}")
  return args


def depth_profile_dict(args, prof: activation_maps.DepthProfile) -> dict:
  L = len(prof.q) - 1
  return dict(activation=args.activation, depth=args.depth, layers_computed=L, weight_gain=args.weight_gain,
              bias_sq=args.bias_sq, q0=args.q0, q=list(prof.q), grad=list(prof.grad),
              forward_change=prof.q[-1] / prof.q[0], gradient_change=prof.grad[0] / prof.grad[-1],
              C0=prof.c0, C_slope_1=prof.c_slope_1, verdict=prof.verdict)


def render_depth_profile(d: dict) -> str:
  L = d["layers_computed"]
  lines = [f"depth profile: {d['activation']}, {d['depth']} dense layers, fan_in E[W^2] = {d['weight_gain']:g}, "
           f"E[b^2] = {d['bias_sq']:g}, E[y_0^2] = {d['q0']:g}"]
  if L < d["depth"]:
    lines.append(f"  (stopped after {L} layers: E[y^2] left [1e-30, 1e30])")
  lines.append(f"{'l':>5}  {'E[y_l^2]':>10}  {'E[dy_l^2] / E[dy_L^2]':>22}")
  step = max(1, L // 10)
  for l in sorted(set(range(0, L + 1, step)) | {L}):
    lines.append(f"{l:>5}  {cell(d['q'][l], 10)}  {cell(d['grad'][l], 22)}")
  lines.append(f"forward E[y_L^2] / E[y_0^2] = {cell(d['forward_change'], 0)}; gradient E[dy_0^2] / E[dy_L^2] = "
               f"{cell(d['gradient_change'], 0)}")
  lines.append(f"C(0) = {cell(d['C0'], 0)} (output correlation of two uncorrelated inputs); C'(1) = "
               f"{cell(d['C_slope_1'], 0)} (> 1: nearby inputs pulled apart)")
  lines.append(f"verdict: {d['verdict']}")
  return "\n".join(lines)


def main_depth_profile(args) -> int:
  prof = activation_maps.depth_profile(args.phi, args.depth, weight_gain=args.weight_gain, bias_sq=args.bias_sq,
                                       q0=args.q0)
  d = depth_profile_dict(args, prof)
  print(json.dumps(d, indent=1) if args.json else render_depth_profile(d))
  return 0


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
      first = (str(e).strip().splitlines() or [""])[0]
      raise ValueError(f"--data {args.data}: could not read it from the local tfds data dir (no download is "
                       f"attempted; prepare it on a machine with internet: `tfds.load({args.data!r}, "
                       f"download=True)`): {type(e).__name__}: {first}") from e
    x = jnp.asarray(images.reshape(images.shape[0], -1), jnp.float32)
  return x / args.feature_scale


COLUMNS = [("l", "layer", 2), ("fan_in", "fan_in", 6), ("fan_out", "fan_out", 7), ("Var(W)", "weight_var", 9),
           ("x2 pred", "x_sq_pred", 9), ("x2 meas", "x_sq_meas", 9), ("dx2 pred", "dx_sq_pred", 9),
           ("dx2 meas", "dx_sq_meas", 9), ("nu pred", "nu_pred", 9), ("nu meas", "nu_meas", 9),
           ("G pred", "G_pred", 9), ("G meas", "G_meas", 9), ("Gb pred", "G_batch_pred", 9),
           ("Gb meas", "G_batch_meas", 9), ("sat", "saturation", 5), ("G/med", "G_over_median", 8),
           ("verdict", "verdict", 8)]


def render(rep: MlpSummary) -> str:
  lines = [f"widths {'-'.join(map(str, rep.widths))}  init {rep.init}  activation {rep.activation}  "
           f"batch {rep.batch_size}  E[x0^2] {rep.x0_sq:.4g}  first-layer weights / {rep.weight_scale:g}"]
  lines.append("  ".join(h.rjust(w) for h, _, w in COLUMNS))
  for row in rep.layers:
    cells = []
    for _, key, w in COLUMNS:
      v = getattr(row, key)
      cells.append(str(v).rjust(w) if key == "layer" else cell(v, w))
    lines.append("  ".join(cells))
  o, pc, chk, rec = rep.output, rep.preconditioning, rep.calculus_check, rep.recommendations
  lines.append(f"output E[y^2]: pred {cell(o.out_sq_pred, 0)}  meas {cell(o.out_sq_meas, 0)}  "
               f"(logit std {cell(o.out_std_meas, 0)})")
  g1 = pc.G1_over_rest_meas
  lines.append(f"preconditioning score max|log10(G/median)|: pred {cell(pc.score_pred, 0)}  meas "
               f"{cell(pc.score_meas, 0)}" + (f"   G_1 / median(G_2..G_L) = {cell(g1, 0)}" if g1 is not None else ""))
  lines.append(f"calculus check: {'ok' if chk.ok else 'OUTSIDE THE CALCULUS'} -- {chk.reason} "
               f"(nu spread {cell(chk.nu_spread, 0)})")
  lines.append("recommendations:")
  lines.append(f"  output multiplier {cell(rec.output_multiplier, 0)} gives logit std {rec.target_logit_std:g} "
               "on this batch (fixed, untrained)")
  lines.append(f"  input scale {cell(rec.input_scale_for_bias_balance, 0)} gives E[x0^2] = 1/sqrt(n_0) = "
               f"{rec.x0_sq_for_bias_balance:.4g} (first-layer weight/bias balance; now {rep.x0_sq:.4g})")
  geo = ", ".join(f"{v:.4g}" for v in rec.geometric_weight_sq)
  lines.append(f"  geometric init c={rec.geometric_c:g}: E[W^2] = {geo}; G_l = "
               f"{cell(rec.geometric_G_pred, 0)} for every layer")
  for r in (r for r in rep.layers if r.verdict in ("poor", "severe")):
    lines.append(f"  layer {r.layer}: G is {cell(r.G_over_median, 0)}x the median ({r.verdict}): "
                 "one SGD step moves it that much more, relative to its size, than the typical layer")
  for n in rep.notes:
    lines.append(f"  note: {n}")
  return "\n".join(lines)


def load_model(args, spec, key):
  """(apply_fn, params, x, loss, title) of a non-MLP --model."""
  k_data, k_net = jax.random.split(key)
  loss = None
  if args.model == "transformer":
    from jscale import models
    from jscale.models.transformer import random_tokens
    cfg = models.TransformerConfig() if args.depth is None else models.TransformerConfig(depth=args.depth)
    params = models.init_transformer(k_net, cfg, spec)
    apply_fn = lambda p, x_: models.apply_transformer(p, x_, cfg)  # noqa: E731
    x = random_tokens(k_data, args.batch, cfg)
  elif args.model in ("lenet", "resnet"):
    from jscale import models
    if args.model == "lenet":
      cfg = models.LeNetConfig()
      apply_fn, params = models.apply_lenet, models.init_lenet(k_net, cfg, spec)
    else:
      cfg = models.ResNetConfig()
      params = models.init_resnet(k_net, cfg, spec)
      apply_fn = lambda p, x_: models.apply_resnet(p, x_, cfg, spec)  # noqa: E731
    shape = (args.batch,) + tuple(cfg.image)
    if args.data == "pixels":
      x = jax.random.randint(k_data, shape, 0, 256).astype(jnp.float32)
    else:
      x = math.sqrt(args.x_sq) * jax.random.normal(k_data, shape)
    x = x / args.feature_scale
  else:
    path, _, func = args.model.rpartition(":")
    mod_spec = importlib.util.spec_from_file_location("calculus_user_model", path)
    if mod_spec is None:
      raise ValueError(f"--model {args.model}: {path} is not a Python file (PATH.py:FUNCTION)")
    module = importlib.util.module_from_spec(mod_spec)
    try:
      mod_spec.loader.exec_module(module)
    except Exception as e:  # noqa: BLE001 - the user's file failing: one line naming it, not their traceback
      raise ValueError(f"--model {args.model}: loading {path} raised {type(e).__name__}: {e}") from e
    make = getattr(module, func, None)
    if not callable(make):
      raise ValueError(f"--model {args.model}: {path} has no function {func!r}")
    try:
      got = make(k_net, spec)
    except Exception as e:  # noqa: BLE001
      raise ValueError(f"--model {args.model}: {func}(key, init) raised {type(e).__name__}: {e}") from e
    if not isinstance(got, tuple) or len(got) not in (3, 4):
      raise ValueError(f"--model {args.model}: {func}(key, init) must return (apply_fn, params, x) or "
                       f"(apply_fn, params, x, loss), got {type(got).__name__}")
    apply_fn, params, x = got[:3]
    loss = got[3] if len(got) == 4 else None
  title = f"model {args.model}  init {spec if spec is not None else '(its own)'}"
  return apply_fn, params, x, loss, title


def main_model(args) -> int:
  key = jax.random.PRNGKey(args.seed)
  k_model, k_loss = jax.random.split(key)
  reps = []
  for i, spec in enumerate(args.inits):
    apply_fn, params, x, loss, title = load_model(args, spec, k_model)
    # One inspection traces and compiles the model's passes: tens of seconds on 2 cores for the transformer or the
    # ResNet, silent before. Only on a terminal, so a log or a pipe keeps one `error:` line or pure JSON.
    if sys.stderr.isatty():
      print(f"calculus: inspecting {title} ({i + 1} of {len(args.inits)}) ...", file=sys.stderr, flush=True)
    reps.append((title, spec, inspect(apply_fn, params, x, loss=loss, key=k_loss, target_std=args.target_std)))
  if args.json:
    if len(reps) == 1:
      out = dict(reps[0][2].to_dict(), model=args.model)
    else:
      out = dict(schemes=[dict(r.to_dict(), init=s) for _, s, r in reps])
    print(json.dumps(out, indent=1))
    return 0
  print("\n\n".join(render_inspection(r, t) for t, _, r in reps))
  if len(reps) > 1:
    first = reps[0][2].layers
    width = max(len(row.path) for row in first)
    print("\nside by side (G pred / G meas per leaf):")
    print(" " * width + "".join(f"{s:>24}" for _, s, _ in reps))
    for i, row in enumerate(first):
      if row.kind not in WEIGHT_KINDS:
        continue
      cells = [f"{cell(r.layers[i].G_pred, 0)} / {cell(r.layers[i].G_meas, 0)}" for _, _, r in reps]
      print(row.path.ljust(width) + "".join(f"{c:>24}" for c in cells))
    scores = [f"{cell(r.verdict.preconditioning_score_pred, 0)} / {cell(r.verdict.preconditioning_score_meas, 0)}"
              for _, _, r in reps]
    print("score".ljust(width) + "".join(f"{c:>24}" for c in scores))
  return 0


def main(argv=None) -> int:
  args = parse_args(argv)
  try:
    if args.depth_profile:
      return main_depth_profile(args)
    if args.model != "mlp":
      return main_model(args)
    memory.check_bytes(mlp_bytes(args.widths, args.batch), f"--widths {','.join(map(str, args.widths))} "
                       f"with --batch {args.batch}")
    return main_mlp(args)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2


def main_mlp(args) -> int:
  key = jax.random.PRNGKey(args.seed)
  k_data, k_net = jax.random.split(key)
  x = load_inputs(args, k_data)
  reports = [mlp_summary(args.widths, spec, x, k_net, activation=args.activation, weight_scale=args.weight_scale,
                         target_std=args.target_std) for spec in args.inits]
  if args.json:
    if len(reports) == 1:
      out = reports[0].to_dict()
    else:
      out = dict(schemes=[r.to_dict() for r in reports],
                 layers=[dict(row.to_dict(), init=r.init) for r in reports for row in r.layers])
    print(json.dumps(out, indent=1))
  else:
    print("\n\n".join(render(r) for r in reports))
    if len(reports) > 1:
      print("\nside by side (measured G per layer):")
      print("".join(f"{r.init:>22}" for r in reports))
      for l in range(len(args.widths) - 1):
        print("".join(cell(r.layers[l].G_meas, 22) for r in reports))
      print("".join(f"{'score ' + cell(r.preconditioning.score_meas, 0):>22}" for r in reports))
  return 0

"""Figure 1 summary: predicted / exact average squared singular value of the diagonal Hessian blocks.

  python scripts/hessian_check.py --family mlp --setups 40 --seed 1 --json
  python scripts/hessian_check.py --family lenet --setups 40 --seed 1 --json --save runs/hessian-check/lenet.json

  python scripts/hessian_check.py --repredict results/hessian/full_order/mlp_seed0.json --json [--save FILE]

--repredict FILE: today's prediction on a saved run's setups and exact values, nothing re-measured
(`jscale.experiments.hessian.repredict`: the development loop of the full order; --save writes the run back with
the new predictions and summaries; the other flags are ignored).
--json prints {"family", "seed", "batch_sizes": {"1": {...}, "1024": {...}}}, each batch entry the full-order
prediction's (`jscale.theory.full_order`) "median", "p5", "p95", noise-removed "median_nr", "p5_nr", "p95_nr",
"by_loss" (the same per loss), "blocks", "tautological_blocks" (left out: exact equals prediction by
construction) and the paper's leading-order form under "leading"; the bias blocks under "bias" (the same keys
and "by_loss", their own "tautological_blocks": constant blocks), apart from the kernel blocks' numbers
(`full_summary.full_order_summary`), and "guarded": each setup whose cross-entropy coupling factors were set to 1
(too few loss draws, or too noisy to apply), with the reasons (a line on stderr says when there are any).
--save writes that, the older summary (`summary.ratio_summary`: "median" the batch-1 model s(1) / B,
"median_corrected" the MLP recursion with cross-example terms ...) and the per-setup records. In these: r is the
prediction over the exact value (the expectation over draws, `jscale.theory.pairs`: same-example and
two-example terms of the Gauss-Newton form, with control variates), pooled over every weight block of
every sampled setup; batch 1 comes from the same draws. "median" is the batch-1 model (s(1) / B),
"median_corrected" the prediction with cross-example terms (with "median_corrected_ci95" and the
noise-removed "*_corrected_nr"), "median_leading" the paper's nu G_l form; see the hessian experiment's
protocol, jscale/experiments/hessian/ (`rounds.figure1` on the `MLPFamily`, `summary.ratio_summary`).
A progress bar goes to stderr. `scripts/hessian_figures.py fig1 --records FILE` plots saved records.
"""
import argparse
import json
import os
import sys
import time

from jscale import checks
from jscale.cli import paths
from jscale.cli.parser import Parser
from jscale.experiments.hessian import full_summary, records, repredict, rounds, summary
from jscale.experiments.hessian.lenet_family import LeNetFamily
from jscale.experiments.hessian.mlp_family import MLPFamily
from jscale.experiments.hessian.settings import Figure1Settings

MEASURE_FLAGS = ("family", "setups", "seed", "batch", "draws", "examples", "target_rel_se", "max_draws")
FAMILIES = {"mlp": MLPFamily, "lenet": lambda: LeNetFamily(varied=True)}  # lenet: issue 20's varied sampling


def main(argv=None):
  ap = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--family", default="mlp", help="mlp or lenet")
  ap.add_argument("--setups", type=int, default=100)
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--batch", type=int, default=1024, help="minibatch size (batch 1 comes from the same draws)")
  ap.add_argument("--draws", type=int, default=256, help="draws of (weights, examples) per setup (the minimum "
                  "with --target-rel-se)")
  ap.add_argument("--examples", type=int, default=8, help="examples per draw (all their pairs are used)")
  ap.add_argument("--target-rel-se", type=float, default=0.05,
                  help="draw more until every exact weight block's relative SE is at most this (0: off)")
  ap.add_argument("--max-draws", type=int, default=1024, help="cap on draws per setup")
  ap.add_argument("--json", action="store_true", help="print only the JSON summary")
  ap.add_argument("--save", default=None, help="write summary + per-setup records to this JSON file (a new one, "
                  "or --overwrite; --repredict FILE --save FILE rewrites FILE's predictions in place)")
  ap.add_argument("--overwrite", action="store_true", help="let --save replace an existing file")
  ap.add_argument("--no-progress", action="store_true", help="no progress bar")
  ap.add_argument("--progress", action="store_true", help=argparse.SUPPRESS)  # the default now; kept for old commands
  ap.add_argument("--repredict", default=None, metavar="FILE",
                  help="re-predict a saved run (--save output) without re-measuring it")
  args = ap.parse_args(argv)
  if args.repredict:
    measuring = sorted(ap.changed(args, MEASURE_FLAGS))
    if measuring:   # the saved run's own settings are re-predicted; these would be silently ignored
      ap.error(f"--repredict re-predicts the saved run with its own settings; it does not take {', '.join(measuring)}")
    return _repredict(args)
  checks.one_of(args.family, "--family", tuple(FAMILIES))
  checks.positive_int(args.setups, "--setups")
  checks.int_at_least(args.seed, "--seed", 0)
  checks.int_at_least(args.batch, "--batch", 2)
  checks.int_at_least(args.draws, "--draws", 3)
  checks.int_at_least(args.examples, "--examples", 2)
  checks.in_range(args.target_rel_se, "--target-rel-se", 0, 1, hi_open=True)
  checks.int_at_least(args.max_draws, "--max-draws", args.draws)
  if args.save:
    _new_save_file(args)
  t0 = time.time()
  family = FAMILIES[args.family]()

  def save(recs):
    out = full_summary.full_order_summary(family, args.seed, recs, args.family)
    old = summary.ratio_summary(recs, args.target_rel_se or 0.05)
    config = {"family": args.family, "setups": len(recs) // 2, "seed": args.seed, "batch": args.batch,
              "draws": args.draws, "examples": args.examples, "target_rel_se": args.target_rel_se,
              "max_draws": args.max_draws, "seconds": round(time.time() - t0, 1)}
    if args.save:
      os.makedirs(os.path.dirname(os.path.abspath(args.save)), exist_ok=True)
      with open(args.save + ".tmp", "w") as f:
        json.dump({"full_order": out, "summary": old, "config": config,
                   "records": records.records_json(family, recs)}, f, indent=1)
      os.replace(args.save + ".tmp", args.save)
    return out

  try:
    fig1 = Figure1Settings(args.setups, args.batch, args.draws, args.seed, examples=args.examples,
                           target_rel_se=args.target_rel_se or None, max_draws=args.max_draws)
    recs = rounds.figure1(family, fig1, progress=not args.no_progress, on_setup=save if args.save else None)
  except (ValueError, TypeError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  out = save(recs)
  _say_guarded(out)
  print(json.dumps(out) if args.json else json.dumps(out, indent=1))
  return 0


def _say_guarded(out) -> None:
  """One stderr line when the summary's predictions skipped a coupling factor (its reasons are under "guarded")."""
  g = out.get("guarded") or []
  if g:
    n = sum(len(e["notes"]) for e in g)
    print(f"note: {n} coupling factor(s) of {len(g)} setup(s) set to 1 (too few loss draws or too noisy); "
          "the reasons are under \"guarded\"", file=sys.stderr)


def _new_save_file(args) -> None:
  """--save's file is writable and, unless --overwrite (or --repredict of that same file), new: the measuring run
  writes it at its first setup, so a second run into the same path would replace an hour's saved run."""
  paths.out_file(args.save, "--save")
  if not os.path.exists(args.save) or args.overwrite:
    return
  if not (args.repredict and os.path.exists(args.repredict) and os.path.samefile(args.save, args.repredict)):
    raise ValueError(f"--save {args.save}: the file exists (a saved run?); pass --overwrite to replace it, or "
                     "another file name")


def _repredict(args) -> int:
  if args.save:
    _new_save_file(args)
  try:
    with open(args.repredict) as f:
      saved = json.load(f)
    name = saved["config"]["family"]
    checks.one_of(name, "the saved run's family", tuple(FAMILIES))
  except (OSError, ValueError, KeyError, TypeError) as e:
    why = f"no {e} in it" if isinstance(e, KeyError) else f"{type(e).__name__}: {e}"
    print(f"error: --repredict {args.repredict}: {why}", file=sys.stderr)
    return 2
  family = FAMILIES[name]()
  recs, out = repredict.repredict(family, saved, name, progress=not args.no_progress)
  if args.save:
    saved = dict(saved, full_order=out, summary=summary.ratio_summary(recs, saved["config"].get("target_rel_se") or 0.05),
                 records=records.records_json(family, recs))
    os.makedirs(os.path.dirname(os.path.abspath(args.save)), exist_ok=True)
    with open(args.save + ".tmp", "w") as f:
      json.dump(saved, f, indent=1)
    os.replace(args.save + ".tmp", args.save)
  _say_guarded(out)
  print(json.dumps(out) if args.json else json.dumps(out, indent=1))
  return 0


if __name__ == "__main__":
  from jscale import cli
  cli.run(main)

"""The paper's Hessian figures, one subcommand each (PNG + JSON under --out, by default a new run
directory runs/hessian-<timestamp>, never the files tracked under results/):

  python scripts/hessian_figures.py fig1                                        # runs 100 setups
  python scripts/hessian_figures.py fig1 --records results/hessian/fig1_records.json --out runs/fig1
  python scripts/hessian_figures.py fig2                                        # block heat maps, 4 schemes
  python scripts/hessian_figures.py mnist                                       # 784-300-100-10, Hutchinson

fig1: histogram of log10(predicted / exact) per batch size, batch-1 model vs corrected (Figure 1).
fig2: exact (jax.hessian) average squared singular value of every weight-block pair, fan-in / fan-out /
      Xavier / geometric on a fixed 24-96-12-48-8 net, at batch 1 (mean over draws) and at a minibatch.
mnist: the diagonal on 784-300-100-10 by the matrix-free Hutchinson estimator, against the
      Kronecker-form exact value and the prediction.
"""
import argparse
import datetime
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from jscale import checks  # noqa: E402
from jscale.cli import paths  # noqa: E402
from jscale.cli.parser import Parser  # noqa: E402
from jscale.experiments.hessian import figures, heatmaps, records, rounds, summary  # noqa: E402
from jscale.experiments.hessian.large_diagonal import MNIST_WIDTHS, large_diagonal  # noqa: E402
from jscale.experiments.hessian.mlp_family import MLPFamily  # noqa: E402
from jscale.experiments.hessian.settings import Figure1Settings, Figure2Settings  # noqa: E402
from jscale.initializers import SCHEMES  # noqa: E402


def _save(out, name, obj):
  path = os.path.join(out, name)
  with open(path, "w") as f:
    json.dump(obj, f, indent=1)
  print("wrote", path)


def read_records(path: str) -> dict:
  """A fig1_records.json (what `fig1` or `hessian_check.py --save` wrote), refused before any work unless it is
  JSON with a "records" list and a "summary" object."""
  if not os.path.isfile(path):
    raise ValueError(f"--records {path}: no such file")
  try:
    with open(path) as f:
      data = json.load(f)
  except (ValueError, UnicodeDecodeError) as e:
    raise ValueError(f"--records {path}: not valid JSON ({e})") from None
  if not isinstance(data, dict) or not isinstance(data.get("records"), list) or not isinstance(data.get("summary"),
                                                                                              dict):
    raise ValueError(f"--records {path}: not a fig1_records.json (a JSON object with a 'records' list and a "
                     f"'summary' object), got {type(data).__name__}"
                     + (f" with keys {sorted(data)}" if isinstance(data, dict) else ""))
  return data


def fig1(args):
  if args.records:
    data = read_records(args.records)
  else:
    fig1 = Figure1Settings(args.setups, args.batch, args.draws, args.seed, examples=args.examples,
                           target_rel_se=args.target_rel_se or None, max_draws=args.max_draws)
    recs = rounds.figure1(MLPFamily(), fig1, progress=not args.no_progress)
    data = {"summary": summary.ratio_summary(recs), "records": records.records_json(MLPFamily(), recs)}
    _save(args.out, "fig1_records.json", data)
  path = figures.ratio_histogram(data["records"], os.path.join(args.out, "fig1_ratio_hist.png"))
  print("wrote", path)
  _save(args.out, "fig1_summary.json", data["summary"])


def fig2(args):
  family = MLPFamily()
  res = heatmaps.figure2(family, Figure2Settings(args.draws_batch1_fig2, args.minibatch), seed=args.seed,
                         progress=not args.no_progress)
  schemes = list(SCHEMES)
  path = figures.block_heatmaps(res, family.fig2_net.widths, os.path.join(args.out, "fig2_heatmaps.png"))
  print("wrote", path)
  _save(args.out, "fig2.json", {"widths": list(family.fig2_net.widths), "seed": args.seed, "batch_sizes": res})
  for b, per in res.items():
    for s in schemes:
      print(f"B={b} {s:9s} diag max/min exact {per[s]['diag_max_over_min']:.2f} "
            f"predicted {per[s]['predicted_max_over_min']:.2f}")


def mnist(args):
  res = large_diagonal(batch=args.minibatch, num_probes=args.probes, seed=args.seed,
                       progress=not args.no_progress)
  _save(args.out, "mnist_diagonal.json", {"widths": list(MNIST_WIDTHS), "batch": args.minibatch,
                                          "probes": args.probes, "seed": args.seed, "schemes": res})
  schemes = list(res)
  fig, ax = plt.subplots(figsize=(7, 3.6))
  for i, s in enumerate(schemes):
    h = np.array(res[s]["hutchinson"])
    x = np.arange(len(h)) + 0.2 * (i - 1.5)
    ax.errorbar(x, h, yerr=2 * np.array(res[s]["hutchinson_stderr"]), fmt="o", label=f"{s} (Hutchinson)")
    ax.plot(x, res[s]["predicted_corrected"], "x", color=ax.lines[-1].get_color())
  ax.set_yscale("log")
  ax.set_xticks(range(len(MNIST_WIDTHS) - 1))
  ax.set_xticklabels([f"W{l}" for l in range(len(MNIST_WIDTHS) - 1)])
  ax.set_title(f"784-300-100-10, batch {args.minibatch}: o Hutchinson (+-2 SE), x predicted")
  ax.legend(fontsize=7)
  fig.tight_layout()
  path = os.path.join(args.out, "mnist_diagonal.png")
  fig.savefig(path, dpi=120)
  print("wrote", path)
  for s in schemes:
    print(s, "hutchinson", np.round(res[s]["hutchinson"], 6), "max/min", round(res[s]["hutchinson_max_over_min"], 2))


# What each figure computes (the rest of its files are drawn from it): never overwritten by a later run.
COMPUTED = {"fig1": "fig1_records.json", "fig2": "fig2.json", "mnist": "mnist_diagonal.json"}
# The flags each figure reads beyond --out, --seed and --no-progress.
FIGURE_FLAGS = {"fig1": {"records", "setups", "batch", "draws", "examples", "target_rel_se", "max_draws"},
                "fig2": {"draws_batch1_fig2", "minibatch"}, "mnist": {"minibatch", "probes"}}


def main(argv=None):
  ap = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("figure", choices=["fig1", "fig2", "mnist"])
  ap.add_argument("--out", default=None, help="output directory (default: a new runs/hessian-<timestamp>)")
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--records", default=None, help="fig1: plot saved records instead of running")
  ap.add_argument("--setups", type=int, default=100)
  ap.add_argument("--batch", type=int, default=1024)
  ap.add_argument("--draws", type=int, default=256, help="fig1: draws per setup (minimum with --target-rel-se)")
  ap.add_argument("--examples", type=int, default=8, help="fig1: examples per draw")
  ap.add_argument("--target-rel-se", type=float, default=0.05, help="fig1: relative SE target (0: off)")
  ap.add_argument("--max-draws", type=int, default=1024, help="fig1: cap on draws per setup")
  ap.add_argument("--draws-batch1-fig2", type=int, default=8)
  ap.add_argument("--minibatch", type=int, default=128, help="fig2 / mnist minibatch size")
  ap.add_argument("--probes", type=int, default=64)
  ap.add_argument("--no-progress", action="store_true", help="no progress bars")
  args = ap.parse_args(argv)
  unused = sorted(ap.changed(args, set().union(*FIGURE_FLAGS.values()) - FIGURE_FLAGS[args.figure]))
  if unused:   # silently ignored, they would read as part of the figure
    ap.error(f"{args.figure} does not use {', '.join(unused)}")
  checks.int_at_least(args.seed, "--seed", 0)   # checked later, after --out was made
  checks.positive_int(args.setups, "--setups")
  checks.int_at_least(args.batch, "--batch", 2)
  checks.int_at_least(args.draws, "--draws", 3)
  checks.int_at_least(args.examples, "--examples", 2)
  checks.int_at_least(args.max_draws, "--max-draws", args.draws)
  checks.in_range(args.target_rel_se, "--target-rel-se", 0, 1, hi_open=True)
  checks.int_at_least(args.probes, "--probes", 2)
  checks.positive_int(args.minibatch, "--minibatch")
  checks.positive_int(args.draws_batch1_fig2, "--draws-batch1-fig2")
  if args.records:
    read_records(args.records)
  if args.out is None:
    args.out = os.path.join("runs", "hessian-" + datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
  paths.out_dir(args.out, "--out")
  kept = COMPUTED[args.figure] if not (args.figure == "fig1" and args.records) else None
  if kept and os.path.exists(os.path.join(args.out, kept)):   # hours of draws, overwritten by a second run
    raise ValueError(f"--out {args.out} already holds {args.figure}'s results ({kept}); pick a new --out"
                     + (f", or replot them with --records {os.path.join(args.out, kept)}" if args.figure == "fig1"
                        else ""))
  os.makedirs(args.out, exist_ok=True)
  print("writing to", args.out)
  try:
    {"fig1": fig1, "fig2": fig2, "mnist": mnist}[args.figure](args)
  except (ValueError, TypeError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  from jscale import cli
  cli.run(main)

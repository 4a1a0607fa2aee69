"""The paper's Hessian figures, one subcommand each (PNG + JSON under --out):

  python scripts/hessian_figures.py fig1 --out results/hessian                 # runs 100 setups (slow)
  python scripts/hessian_figures.py fig1 --records results/hessian/fig1_records.json --out results/hessian
  python scripts/hessian_figures.py fig2 --out results/hessian                 # block heat maps, 4 schemes
  python scripts/hessian_figures.py mnist --out results/hessian                # 784-300-100-10, Hutchinson

fig1: histogram of log10(predicted / exact) per batch size, batch-1 model vs corrected (Figure 1).
fig2: exact (jax.hessian) average squared singular value of every weight-block pair, fan-in / fan-out /
      Xavier / geometric on a fixed 24-96-12-48-8 net, at batch 1 (mean over draws) and at a minibatch.
mnist: the diagonal on 784-300-100-10 by the matrix-free Hutchinson estimator, against the
      Kronecker-form exact value and the prediction.
"""
import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from jscale.experiments.hessian import figures  # noqa: E402
from jscale.theory import heatmaps, setups  # noqa: E402


def _save(out, name, obj):
  path = os.path.join(out, name)
  with open(path, "w") as f:
    json.dump(obj, f, indent=1)
  print("wrote", path)


def fig1(args):
  if args.records:
    with open(args.records) as f:
      data = json.load(f)
  else:
    recs = setups.figure1(args.setups, args.batch, args.draws, args.seed, progress=True)
    data = {"summary": setups.summarize(recs), "records": setups.records_json(recs)}
    _save(args.out, "fig1_records.json", data)
  path = figures.ratio_histogram(data["records"], os.path.join(args.out, "fig1_ratio_hist.png"))
  print("wrote", path)
  summary = data["summary"]
  _save(args.out, "fig1_summary.json", summary)


def fig2(args):
  res = {}
  for b, draws in ((1, args.draws_batch1_fig2), (args.minibatch, 1)):
    res[str(b)] = heatmaps.heatmaps(batch=b, draws=draws, seed=args.seed)
  schemes = list(setups.SCHEMES)
  path = figures.block_heatmaps(res, heatmaps.FIG2_WIDTHS, os.path.join(args.out, "fig2_heatmaps.png"))
  print("wrote", path)
  _save(args.out, "fig2.json", {"widths": list(heatmaps.FIG2_WIDTHS), "seed": args.seed, "batch_sizes": res})
  for b, per in res.items():
    for s in schemes:
      print(f"B={b} {s:9s} diag max/min exact {per[s]['diag_max_over_min']:.2f} "
            f"predicted {per[s]['predicted_max_over_min']:.2f}")


def mnist(args):
  res = heatmaps.large_diagonal(batch=args.minibatch, num_probes=args.probes, seed=args.seed)
  _save(args.out, "mnist_diagonal.json", {"widths": list(heatmaps.MNIST_WIDTHS), "batch": args.minibatch,
                                          "probes": args.probes, "seed": args.seed, "schemes": res})
  schemes = list(res)
  fig, ax = plt.subplots(figsize=(7, 3.6))
  for i, s in enumerate(schemes):
    h = np.array(res[s]["hutchinson"])
    x = np.arange(len(h)) + 0.2 * (i - 1.5)
    ax.errorbar(x, h, yerr=2 * np.array(res[s]["hutchinson_stderr"]), fmt="o", label=f"{s} (Hutchinson)")
    ax.plot(x, res[s]["predicted_corrected"], "x", color=ax.lines[-1].get_color())
  ax.set_yscale("log")
  ax.set_xticks(range(3))
  ax.set_xticklabels([f"W{l}" for l in range(3)])
  ax.set_title(f"784-300-100-10, batch {args.minibatch}: o Hutchinson (+-2 SE), x predicted")
  ax.legend(fontsize=7)
  fig.tight_layout()
  path = os.path.join(args.out, "mnist_diagonal.png")
  fig.savefig(path, dpi=120)
  print("wrote", path)
  for s in schemes:
    print(s, "hutchinson", np.round(res[s]["hutchinson"], 6), "max/min", round(res[s]["hutchinson_max_over_min"], 2))


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("figure", choices=["fig1", "fig2", "mnist"])
  ap.add_argument("--out", default="results/hessian")
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--records", default=None, help="fig1: plot saved records instead of running")
  ap.add_argument("--setups", type=int, default=100)
  ap.add_argument("--batch", type=int, default=1024)
  ap.add_argument("--draws", type=int, default=8)
  ap.add_argument("--draws-batch1-fig2", type=int, default=8)
  ap.add_argument("--minibatch", type=int, default=128, help="fig2 / mnist minibatch size")
  ap.add_argument("--probes", type=int, default=64)
  args = ap.parse_args(argv)
  os.makedirs(args.out, exist_ok=True)
  {"fig1": fig1, "fig2": fig2, "mnist": mnist}[args.figure](args)


if __name__ == "__main__":
  main()

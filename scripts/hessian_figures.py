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

from jscale.theory import experiments  # noqa: E402


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
    recs = experiments.figure1(args.setups, args.batch, args.draws, args.seed, progress=True)
    data = {"summary": experiments.summarize(recs), "records": experiments.records_json(recs)}
    _save(args.out, "fig1_records.json", data)
  recs = data["records"]
  batches = sorted({r["batch"] for r in recs})
  fig, axes = plt.subplots(1, len(batches), figsize=(5 * len(batches), 3.6), squeeze=False)
  for ax, b in zip(axes[0], batches):
    rs = [r for r in recs if r["batch"] == b]
    ratio = lambda key: np.log10(np.concatenate([np.array(r[key]) / np.array(r["exact_w"]) for r in rs]))
    bins = np.linspace(-3.5, 1.5, 61)
    if b == 1:
      ax.hist(ratio("corrected_w"), bins, alpha=0.8, label="prediction (batch 1)")
    else:
      ax.hist(ratio("batch1_w"), bins, alpha=0.6, label="batch-1 model, s(1)/B")
      ax.hist(ratio("corrected_w"), bins, alpha=0.6, label="with cross-example terms")
    ax.axvline(0, color="k", lw=0.8)
    ax.set_title(f"batch {b}: {len(rs)} setups, {sum(len(r['exact_w']) for r in rs)} weight blocks")
    ax.set_xlabel("log10(predicted / exact) avg squared singular value")
    ax.legend(fontsize=8)
  fig.tight_layout()
  path = os.path.join(args.out, "fig1_ratio_hist.png")
  fig.savefig(path, dpi=120)
  print("wrote", path)
  summary = data["summary"]
  _save(args.out, "fig1_summary.json", summary)


def fig2(args):
  res = {}
  for b, draws in ((1, args.draws_batch1_fig2), (args.minibatch, 1)):
    res[str(b)] = experiments.heatmaps(batch=b, draws=draws, seed=args.seed)
  schemes = list(experiments.SCHEMES)
  fig, axes = plt.subplots(len(res), len(schemes), figsize=(3.2 * len(schemes), 3.0 * len(res)), squeeze=False)
  for row, (b, per) in zip(axes, res.items()):
    for ax, s in zip(row, schemes):
      m = np.log10(np.array(per[s]["weights"]))
      im = ax.imshow(m, cmap="viridis")
      ax.set_title(f"{s}, B={b}\ndiag max/min {per[s]['diag_max_over_min']:.2f}", fontsize=9)
      ax.set_xticks(range(m.shape[0]))
      ax.set_yticks(range(m.shape[0]))
      fig.colorbar(im, ax=ax, fraction=0.046, label="log10")
  fig.suptitle(f"avg squared singular value of Hessian blocks (W_i, W_j), widths {experiments.FIG2_WIDTHS}")
  fig.tight_layout()
  path = os.path.join(args.out, "fig2_heatmaps.png")
  fig.savefig(path, dpi=120)
  print("wrote", path)
  _save(args.out, "fig2.json", {"widths": list(experiments.FIG2_WIDTHS), "seed": args.seed, "batch_sizes": res})
  for b, per in res.items():
    for s in schemes:
      print(f"B={b} {s:9s} diag max/min exact {per[s]['diag_max_over_min']:.2f} "
            f"predicted {per[s]['predicted_max_over_min']:.2f}")


def mnist(args):
  res = experiments.large_diagonal(batch=args.minibatch, num_probes=args.probes, seed=args.seed)
  _save(args.out, "mnist_diagonal.json", {"widths": list(experiments.MNIST_WIDTHS), "batch": args.minibatch,
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

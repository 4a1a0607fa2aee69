"""Figure 1 summary: predicted / exact average squared singular value of the diagonal Hessian blocks.

  python scripts/hessian_check.py --setups 100 --json
  python scripts/hessian_check.py --setups 100 --json --save results/hessian/fig1_records.json

prints {"batch_sizes": {"1": {"median", "p5", "p95", "median_corrected", ...}, "1024": {...}}}: r is the
prediction over the exact value (mean over draws of `jscale.theory.hessian.diagonal_sq_sv`), pooled over
every weight block of every sampled setup. Batch 1 is each example's own Hessian from the same draws.
"median" is the batch-1 model (s(1) / B), "median_corrected"
the prediction with cross-example terms, "median_leading" the paper's nu G_l form; see
jscale/theory/setups.py and jscale/theory/predict.py. `scripts/hessian_figures.py fig1 --records FILE`
plots saved records.
"""
import argparse
import json
import os
import time

from jscale.theory import setups


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--setups", type=int, default=100)
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--batch", type=int, default=1024, help="minibatch size (batch 1 comes from the same draws)")
  ap.add_argument("--draws", type=int, default=8, help="draws of (weights, inputs, targets) averaged per setup")
  ap.add_argument("--json", action="store_true", help="print only the JSON summary")
  ap.add_argument("--save", default=None, help="write summary + per-setup records to this JSON file")
  ap.add_argument("--progress", action="store_true")
  args = ap.parse_args(argv)
  if args.setups < 1 or args.batch < 2 or args.draws < 2:
    ap.error("--setups must be >= 1, --batch and --draws >= 2")
  t0 = time.time()

  def save(recs):
    summary = setups.summarize(recs)
    summary["config"] = {"setups": len(recs) // 2, "seed": args.seed, "batch": args.batch, "draws": args.draws,
                         "seconds": round(time.time() - t0, 1)}
    if args.save:
      os.makedirs(os.path.dirname(os.path.abspath(args.save)), exist_ok=True)
      with open(args.save, "w") as f:
        json.dump({"summary": summary, "records": setups.records_json(recs)}, f, indent=1)
    return summary

  recs = setups.figure1(args.setups, args.batch, args.draws, args.seed, progress=args.progress,
                        on_setup=save if args.save else None)
  summary = save(recs)
  if args.json:
    print(json.dumps(summary))
  else:
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
  main()

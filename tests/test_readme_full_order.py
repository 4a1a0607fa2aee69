"""README's full-order table (section "Check the calculus against exact Hessians") quotes the stored
`hessian_check --json` runs in results/hessian/full_order/ (issue 25: quoted numbers tied to a stored run).

Each row is rebuilt from the JSON at the README's own precision (3 decimals for medians, 2 for p5/p95, the
leading order to 3); a hand-edited or drifted number fails here, and so does a stored run without its row."""
import json
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STORE = os.path.join(ROOT, "results", "hessian", "full_order")
FAMILY = {"MLP": "mlp", "LeNet": "lenet"}


def _readme_rows():
  text = open(os.path.join(ROOT, "README.md")).read()
  head = "| family | seeds | batch | loss | full order: median [p5, p95] |"
  block = text[text.index(head):].split("\n\n")[0].splitlines()[2:]
  return [[c.strip() for c in line.strip("|").split("|")] for line in block]


def _expected(family, seed, batch, loss):
  with open(os.path.join(STORE, f"{family}_seed{seed}.json")) as f:
    e = json.load(f)["full_order"]["batch_sizes"][batch]
  v = e if loss == "all" else e["by_loss"][loss]
  lead = e["leading"] if loss == "all" else e["leading"]["by_loss"][loss]
  blocks = f"{v['blocks']} ({e['tautological_blocks']})" if loss == "all" else str(v["blocks"])
  return [f"{v['median']:.3f} [{v['p5']:.2f}, {v['p95']:.2f}]",
          f"{v['median_nr']:.3f} [{v['p5_nr']:.2f}, {v['p95_nr']:.2f}]", blocks, f"{lead['median']:.3f}"]


def test_full_order_table_quotes_the_stored_runs():
  rows = _readme_rows()
  seen = set()
  for fam, seeds, batch, loss, *quoted in rows:
    seed = re.search(r"seed (\d+)", seeds).group(1)
    assert quoted == _expected(FAMILY[fam], seed, batch, loss), (fam, seeds, batch, loss)
    seen.add((FAMILY[fam], seed))
  stored = {tuple(re.match(r"(\w+)_seed(\d+)\.json", n).groups()) for n in os.listdir(STORE)}
  assert seen == stored, "every stored run is quoted, and nothing else"
  assert len(rows) == 6 * len(stored)   # batch 1 and 1024, each all / quadratic / xent

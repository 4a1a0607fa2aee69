"""The full-order tables quote the stored `hessian_check --save` runs in results/hessian/full_order/ (issue 25:
quoted numbers tied to a stored run): docs/calculus.md's "Every stored run" quotes every one of them, README's
(section "Check the calculus against exact Hessians") each family's development seed and latest judged seed.

Each row is rebuilt from the JSON at the tables' own precision (3 decimals for medians, 2 for p5/p95, the
leading order to 3); a hand-edited or drifted number fails here, and so does a stored run without its row."""
import json
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STORE = os.path.join(ROOT, "results", "hessian", "full_order")
FAMILY = {"MLP": "mlp", "LeNet": "lenet"}


def _table_rows(path, after=""):
  text = open(os.path.join(ROOT, path)).read()
  text = text[text.index(after):]
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


def _check_rows(rows):
  seen = set()
  for fam, seeds, batch, loss, *quoted in rows:
    seed = re.search(r"seed (\d+)", seeds).group(1)
    assert quoted == _expected(FAMILY[fam], seed, batch, loss), (fam, seeds, batch, loss)
    seen.add((FAMILY[fam], seed))
  assert len(rows) == 6 * len(seen)   # batch 1 and 1024, each all / quadratic / xent
  return seen


def _stored():
  return {tuple(re.match(r"(\w+)_seed(\d+)\.json", n).groups()) for n in os.listdir(STORE)}


def test_docs_table_quotes_every_stored_run():
  seen = _check_rows(_table_rows(os.path.join("docs", "calculus.md"), after="#### Every stored run"))
  assert seen == _stored(), "every stored run is quoted, and nothing else"


def test_readme_table_quotes_each_familys_development_and_latest_judged_seed():
  seen = _check_rows(_table_rows("README.md"))
  stored = _stored()
  want = set()
  for fam in FAMILY.values():
    seeds = sorted(int(s) for f, s in stored if f == fam)
    want |= {(fam, "0"), (fam, str(seeds[-1]))}
  assert seen == want

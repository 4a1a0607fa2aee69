"""Re-predict a saved Figure 1 run without re-measuring it: the development loop of `jscale.theory.full_order`.

A `hessian_check --save` file holds every setup with its exact blocks and their SEs. `repredict` rebuilds each
setup's `Measurement` from the setup's own key (as `rounds.measure_setup` does), draws nothing of the judged
rounds, and asks it for the prediction again (cross-entropy's loss statistics come from their own round, as in
the run), so a change to the prediction is judged on the stored exact side in seconds instead of a new run.
Develop on one seed's file; judge a held-out seed's file once (docs/calculus.md, "Full order").
"""
from __future__ import annotations

from typing import Mapping, Sequence

import jax

from jscale.experiments.hessian import full_summary, records
from jscale.experiments.hessian.family import Family
from jscale.experiments.hessian.settings import Figure1Settings


def repredict_records(family: Family, recs: Sequence[records.Record], config: Mapping,
                      progress: bool = False) -> list[records.Record]:
  """`recs` (batch 1 and the minibatch per setup, as `rounds.figure1` returns them) with every prediction redone
  by today's code; the exact fields are kept as they are."""
  fig1 = Figure1Settings(int(config["setups"]), int(config["batch"]), int(config["draws"]), int(config["seed"]),
                         examples=int(config["examples"]))
  by_setup: dict = {}
  for r in recs:
    by_setup.setdefault(r.setup, []).append(r)
  items = list(by_setup.items())
  if progress:
    from tqdm.auto import tqdm
    items = tqdm(items, desc="re-predicting", unit="setup")
  new = {}
  for setup, rs in items:
    m = family.start(setup, jax.random.PRNGKey(setup.seed), examples=fig1.examples, round_draws=fig1.round_draws,
                     draws=fig1.draws, max_bytes=fig1.max_bytes)
    for r in rs:
      p = m.predict(r.batch)
      new[id(r)] = r._replace(batch1_w=p.batch1.weight, batch1_b=p.batch1.bias, corrected_w=p.corrected.weight,
                              corrected_b=p.corrected.bias, leading_w=p.leading_w,
                              full_w=None if p.full is None else p.full.weight,
                              full_b=None if p.full is None else p.full.bias, notes=p.notes)
  return [new[id(r)] for r in recs]


def repredict(family: Family, saved: Mapping, family_name: str, progress: bool = False) -> tuple[list, dict]:
  """(re-predicted records, their `full_summary.full_order_summary`) of a `hessian_check --save` JSON."""
  recs = [records.record_from_json(family, d) for d in saved["records"]]
  recs = repredict_records(family, recs, saved["config"], progress)
  return recs, full_summary.full_order_summary(family, int(saved["config"]["seed"]), recs, family_name)

"""Blocks: several jaxpr equations that the calculus reads as one layer (an activation built from elementwise
primitives, a LayerNorm / RMSNorm, a softmax attention).

Some layers have no per-primitive rule: GELU is `x * 0.5 * erfc(-x / sqrt 2)`, a LayerNorm divides by a
statistic of its own input, attention multiplies two activations. `find_blocks` recognises them in the flat
graph (tracing.py) and returns, per block, the equation whose output is the block's output (where its rule
runs), its input activations and the block's other equations (skipped by the pass: their values are used
inside the block only). The recognisers live beside their rules: elementwise.py, normalisation.py,
attention.py; the normalisation and attention ones run first, so that their statistics (a square, an exp)
are not read as activations.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

from jscale.calculus.tracing import Graph, Lit


class Block(NamedTuple):
  kind: str             # "activation", "layer_norm", "rms_norm", "attention"
  out_eqn: int          # index of the equation whose output is the block's output
  inputs: tuple         # the activation value ids the block reads
  eqns: frozenset       # all its equations (out_eqn included)
  rule: Callable        # rule(predictor, eqn) -> None, or why it does not apply
  info: dict            # what the recogniser found (for the rule)


class Uses(NamedTuple):
  producer: dict        # value id -> index of the equation making it
  consumers: dict       # value id -> indices of the equations reading it
  outputs: frozenset    # value ids that are outputs of the graph


def uses(graph: Graph) -> Uses:
  producer, consumers = {}, {}
  for n, e in enumerate(graph.eqns):
    for o in e.outs:
      producer[o] = n
    for a in e.ins:
      if not isinstance(a, Lit):
        consumers.setdefault(a, []).append(n)
  return Uses(producer, consumers, frozenset(a for a in graph.out_atoms if not isinstance(a, Lit)))


def between(graph: Graph, u: Uses, out: int, inputs) -> frozenset | None:
  """The equations computing `out` from `inputs` (walking back from out, stopping at inputs and at values
  not computed from an activation), or None when one of their values is also used outside them."""
  inputs, eqns, todo = set(inputs), set(), [out]
  while todo:
    v = todo.pop()
    if v in inputs or v not in u.producer:
      continue
    n = u.producer[v]
    if n in eqns:
      continue
    eqns.add(n)
    todo += [a for a in graph.eqns[n].ins if not isinstance(a, Lit)]
  for n in eqns:
    for o in graph.eqns[n].outs:
      if o == out:
        continue
      if o in u.outputs or any(c not in eqns for c in u.consumers.get(o, ())):
        return None
  return frozenset(eqns)


def find_blocks(graph: Graph, tags: dict, const: Callable) -> list:
  """All blocks of the graph, normalisations and attentions first; no equation is in two blocks."""
  from jscale.calculus import attention, elementwise, normalisation  # they import Block from here
  u = uses(graph)
  taken, found = set(), []
  for finder in (normalisation.find, attention.find, elementwise.find):
    for b in finder(graph, tags, const, u, frozenset(taken)):
      if not (b.eqns & taken):
        found.append(b)
        taken |= b.eqns
  return found

"""Reading a JAX function as calculus layers: its jaxpr, flattened, and each equation classified.

`flatten(fn, leaves, x)` traces `fn(leaves, x)` and inlines every `jit` / `custom_jvp_call` / `custom_vjp_call`
(jax.nn.relu is a custom_jvp around a jit around `max`) into one flat list of equations over integer value
ids, so that any intermediate value can be read or perturbed (`evaluate`). `classify` then tags each value as
derived from one parameter leaf ("param"), from neither parameters nor input ("const"), from the input ("act"),
or a boolean gate on an activation; `rules.Predictor` applies the moment rules per equation.

The batch (example) axis is axis 0 of the input and must stay axis 0 of every activation.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core

# Call-like primitives whose body is inlined, and the parameter that holds the body.
_INLINE = {"jit": ("jaxpr",), "pjit": ("jaxpr",), "closed_call": ("call_jaxpr",), "core_call": ("call_jaxpr",),
           "custom_jvp_call": ("call_jaxpr",), "custom_vjp_call": ("call_jaxpr", "fun_jaxpr"),
           "custom_vjp_call_jaxpr": ("fun_jaxpr",), "remat": ("jaxpr",), "remat2": ("jaxpr",),
           "checkpoint": ("jaxpr",)}


@dataclasses.dataclass(frozen=True)
class Lit:
  """A literal constant operand."""
  val: Any


@dataclasses.dataclass(frozen=True)
class Eqn:
  prim: Any        # the jax primitive (bind it to evaluate)
  ins: list        # int ids or Lit
  outs: list       # int ids
  params: dict

  @property
  def name(self) -> str:
    return self.prim.name


@dataclasses.dataclass(frozen=True)
class Graph:
  eqns: list
  leaf_ids: list       # ids of the parameter leaves, in order
  x_id: int
  out_atoms: list      # ids or Lit, the flattened outputs
  out_tree: Any
  avals: dict          # id -> ShapedArray
  consts: dict         # id -> concrete value of a jaxpr constant


class _Builder:
  def __init__(self):
    self.eqns, self.avals, self.consts, self.next = [], {}, {}, 0

  def fresh(self, aval) -> int:
    i, self.next = self.next, self.next + 1
    self.avals[i] = aval
    return i

  def atom(self, env, a):
    if isinstance(a, core.Literal):
      return Lit(a.val)
    return env[a]

  def inline(self, jaxpr, consts, in_atoms) -> list:
    env = {}
    for v, c in zip(jaxpr.constvars, consts):
      i = self.fresh(v.aval)
      self.consts[i] = c
      env[v] = i
    for v, a in zip(jaxpr.invars, in_atoms):
      env[v] = a
    for e in jaxpr.eqns:
      ins = [self.atom(env, a) for a in e.invars]
      body = next((e.params[k] for k in _INLINE.get(e.primitive.name, ()) if k in e.params), None)
      if body is not None:
        sub, sub_consts = (body.jaxpr, body.consts) if hasattr(body, "consts") else (body, ())
        outs = self.inline(sub, sub_consts, ins)
        for v, a in zip(e.outvars, outs):
          env[v] = a
        continue
      outs = [self.fresh(v.aval) for v in e.outvars]
      for v, i in zip(e.outvars, outs):
        env[v] = i
      self.eqns.append(Eqn(e.primitive, ins, outs, dict(e.params)))
    return [self.atom(env, a) for a in jaxpr.outvars]


def flatten(fn, leaves, x) -> Graph:
  """The flat equation graph of `fn(leaves, x)` (leaves: a list of arrays)."""
  closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(leaves, x)
  out_tree = jax.tree_util.tree_structure(out_shape)
  b = _Builder()
  jaxpr = closed.jaxpr
  in_ids = [b.fresh(v.aval) for v in jaxpr.invars]
  outs = b.inline(jaxpr, closed.consts, in_ids)
  return Graph(b.eqns, in_ids[:-1], in_ids[-1], outs, out_tree, b.avals, b.consts)


def read(env, a):
  return a.val if isinstance(a, Lit) else env[a]


def evaluate(graph: Graph, leaves, x, eps: dict | None = None, keep=()):
  """Run the graph; `eps[id]` is added to value `id` where it is made (a zero whose cotangent is the
  gradient there). Returns (outputs as a flat list, {id: value for id in keep})."""
  eps = eps or {}
  env = dict(graph.consts)
  for i, v in zip(graph.leaf_ids, leaves):
    env[i] = v
  env[graph.x_id] = x
  for i in list(env):
    if i in eps:
      env[i] = env[i] + eps[i]
  for e in graph.eqns:
    vals = e.prim.bind(*[read(env, a) for a in e.ins], **e.params)
    vals = vals if e.prim.multiple_results else [vals]
    for i, v in zip(e.outs, vals):
      env[i] = v + eps[i] if i in eps else v
  return [read(env, a) for a in graph.out_atoms], {i: env[i] for i in keep}


# -------------------------------------------------------------------------------------------------
# Value tags: where a value comes from.

@dataclasses.dataclass(frozen=True)
class Tag:
  kind: str                 # "param", "const", "act", "gate", "pdata" (computed from parameters), "other"
  leaf: int | None = None   # the parameter leaf for "param" (a view of it: reshape, convert, broadcast)
  base: int | None = None   # "act": the value this one is a constant multiple of (for activation patterns)
  coef: float = 1.0         # ... and the multiple
  gate: tuple | None = None  # "gate": (act id, True when the gate is "u > 0")


_VIEW = {"reshape", "convert_element_type", "broadcast_in_dim", "squeeze", "expand_dims", "copy", "copy_p",
         "transpose", "reduce_precision"}
_CMP_POS = {"gt": True, "ge": True, "lt": False, "le": False}


def is_float(aval) -> bool:
  return hasattr(aval, "dtype") and jnp.issubdtype(aval.dtype, jnp.inexact)


def scalar_value(v) -> float | None:
  """The value of a constant whose entries are all equal, else None."""
  try:
    a = np.asarray(v)
  except Exception:  # noqa: BLE001 - key arrays and the like are not scalars
    return None
  if a.size == 0 or not np.issubdtype(a.dtype, np.number) and a.dtype != bool:
    return None
  flat = a.reshape(-1).astype(np.float64)
  return float(flat[0]) if np.all(flat == flat[0]) else None


def classify(graph: Graph, const_vals: dict | None = None) -> dict:
  """Tag every value id (see `Tag`). `const_vals` holds concrete values of constants computed in the graph
  (from `evaluate`), used to recognise constant multiples inside activation patterns."""
  const_vals = const_vals or {}
  tags = {i: Tag("param", leaf=n) for n, i in enumerate(graph.leaf_ids)}
  tags[graph.x_id] = Tag("act")
  for i in graph.consts:
    tags[i] = Tag("const")

  def tag(a):
    return Tag("const") if isinstance(a, Lit) else tags.get(a, Tag("const"))

  def cval(a):
    if isinstance(a, Lit):
      return scalar_value(a.val)
    if a in graph.consts:
      return scalar_value(graph.consts[a])
    return scalar_value(const_vals[a]) if a in const_vals else None

  for e in graph.eqns:
    ts = [tag(a) for a in e.ins]
    kinds = {t.kind for t in ts}
    out = Tag("other")
    if kinds <= {"const"}:
      out = Tag("const")
    elif kinds <= {"param", "const", "pdata"} and "act" not in kinds:
      params = [t for t in ts if t.kind == "param"]
      if e.name in _VIEW and len(params) == 1 and ts[0].kind == "param":
        out = Tag("param", leaf=params[0].leaf)
      else:
        out = Tag("pdata")
    elif "act" in kinds:
      if all(is_float(graph.avals[o]) for o in e.outs):
        out = Tag("act")
        acts = [(a, t) for a, t in zip(e.ins, ts) if t.kind == "act"]
        if e.name in ("mul", "div") and len(acts) == 1 and len(e.ins) == 2:
          a, t = acts[0]
          other = e.ins[1] if e.ins[0] == a else e.ins[0]
          c = cval(other) if tag(other).kind == "const" else None
          if c is not None and (e.name == "mul" or e.ins[0] == a) and c != 0:
            c = c if e.name == "mul" else 1.0 / c
            out = Tag("act", base=t.base if t.base is not None else a, coef=t.coef * c)
        elif e.name == "neg":
          a, t = acts[0]
          out = Tag("act", base=t.base if t.base is not None else a, coef=-t.coef)
        elif e.name in ("convert_element_type", "copy", "copy_p"):
          a, t = acts[0]
          out = Tag("act", base=t.base if t.base is not None else a, coef=t.coef)
      elif e.name in _CMP_POS and len(e.ins) == 2:
        a, b = e.ins
        if tag(a).kind == "act" and cval(b) == 0:
          out = Tag("gate", gate=(a, _CMP_POS[e.name]))
        elif tag(b).kind == "act" and cval(a) == 0:
          out = Tag("gate", gate=(b, not _CMP_POS[e.name]))
    for o in e.outs:
      tags[o] = out
  return tags


def const_operands(graph: Graph, tags: dict) -> list:
  """Ids of computed constants that feed an equation with an activation operand (dropout masks, scalars):
  their concrete values are needed to recognise the pattern."""
  need = []
  for e in graph.eqns:
    if any(not isinstance(a, Lit) and tags.get(a, Tag("const")).kind == "act" for a in e.ins):
      need += [a for a in e.ins if not isinstance(a, Lit) and a not in graph.consts
               and tags.get(a, Tag("const")).kind == "const" and a not in need]
  return need

"""draw_mean.bind_eqn computes data movement and add / subtract / multiply of concrete operands on the host
(each eager XLA op compiled a program per shape): the result must be the primitive's own, bit for bit, and a
subnormal operand (which XLA:CPU flushes to zero, numpy does not) must send it back to the primitive."""
import jax.numpy as jnp
import numpy as np

from jscale.calculus import draw_mean
from jscale.calculus.tracing import Lit, flatten


def _eqns(fn, *args):
  g = flatten(lambda leaves, x: fn(x, *leaves), list(args[1:]), args[0])
  return g


def _check(fn, *args):
  g = _eqns(fn, *args)
  env = dict(g.consts)
  env[g.x_id] = np.asarray(args[0])
  env.update(zip(g.leaf_ids, [np.asarray(a) for a in args[1:]]))
  hosted = 0
  for e in g.eqns:
    vals = [a.val if isinstance(a, Lit) else env[a] for a in e.ins]
    ref = e.prim.bind(*vals, **e.params)
    host = draw_mean._on_host(e, vals)
    if host is not None:
      hosted += 1
      assert host.dtype == ref.dtype and host.shape == ref.shape, e.name
      np.testing.assert_array_equal(host, np.asarray(ref), err_msg=e.name)
    env[e.outs[0]] = np.asarray(ref)
  return hosted


def test_host_ops_give_the_primitives_bits():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(8, 5, 6)).astype(np.float32)
  b = rng.normal(size=(6,)).astype(np.float32)
  w = rng.normal(size=(5, 6)).astype(np.float32)

  def fn(x, b, w):
    h = x * 0.3 + b - w.reshape(1, 5, 6) * 1.7
    h = jnp.transpose(h, (2, 0, 1)).reshape(6, 40)
    return (h[None] * 3.1).squeeze(0) - 0.25

  assert _check(fn, x, b, w) >= 6   # the muls, adds, subs, broadcasts, transpose, reshape, squeeze


def test_subnormals_go_to_the_primitive():
  e = next(e for e in _eqns(lambda x, y: x * y, np.ones(4, np.float32), np.ones(4, np.float32)).eqns
           if e.name == "mul")
  a = np.array([1e-20, 1.0, 2.0, 3.0], np.float32)
  assert draw_mean._on_host(e, [a, a]) is None        # 1e-40: subnormal result
  assert draw_mean._on_host(e, [np.array([1e-39, 1.0, 1.0, 1.0], np.float32), a]) is None
  np.testing.assert_array_equal(draw_mean._on_host(e, [a[1:], a[1:]]), a[1:] * a[1:])

"""A chunk's compute on the device mesh (jscale.sweeps.runner's step 3): per-configuration keys and
hyperparameters as rows, one jit(shard_map(vmap or lax.map)) program per group, arrays placed (and gathered)
across processes."""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jscale import train as train_lib


def config_keys(base_seed: int, seeds: Sequence[int]) -> jax.Array:
  """Per-configuration keys: fold_in(key(base_seed), seed), independent of the chunk a config lands in."""
  base = jax.random.key(base_seed)
  return jax.vmap(lambda s: jax.random.fold_in(base, s))(jnp.asarray(seeds, jnp.uint32))


def stacked_hparams(spec: train_lib.TrainSpec, settings: Sequence[dict]) -> train_lib.HParams:
  f32 = lambda name: np.asarray([s[name] for s in settings], np.float32)
  return train_lib.HParams(
      init_scale=f32("init_scale"), layer_scale=np.asarray([s["layer_scale"] for s in settings], np.float32),
      input_scale=f32("input_scale"), output_scale=f32("output_scale"), lr=f32("lr"),
      weight_decay=f32("weight_decay"),
      init_index=np.asarray([spec.init_index(s["kernel_init"]) for s in settings], np.int32))


_EXECUTORS: dict = {}


def executor_for(spec: train_lib.TrainSpec, devices: Sequence, group_size: int | None):
  """`make_executor(make_train(spec), ...)`, memoized on (spec, devices, group_size): re-running or
  resuming a sweep in the same process (a notebook, the tests) reuses the compiled programs."""
  key = (spec, tuple(d.id for d in devices), group_size)
  if key not in _EXECUTORS:
    _EXECUTORS[key] = make_executor(train_lib.make_train(spec), Mesh(np.array(devices), ("config",)), group_size)
  return _EXECUTORS[key]


def make_executor(train, mesh: Mesh, group_size: int | None):
  """jit(shard_map(per-device vmap)) of `train` over the mesh's "config" axis.

  The executor is `f(keys, hparams, data_rows, stacked)`: `stacked` is `stack_data` of the group's
  draws (replicated), `data_rows` (int32, one per configuration, sharded with it) picks each
  configuration's draw. With a single draw (known from its shape at trace time) it is shared unstacked,
  as before; with several, each configuration indexes its own (a gather under vmap, a slice under
  `lax.map` one at a time).
  """
  def local(keys, hp, rows, stacked):
    if stacked.x_train.shape[0] == 1:
      shared = jax.tree.map(lambda a: a[0], stacked)
      one = lambda k, h, r: train(k, h, shared)
    else:
      one = lambda k, h, r: train(k, h, jax.tree.map(lambda a: a[r], stacked))
    if group_size is None:
      return jax.vmap(one)(keys, hp, rows)
    if group_size == 1:   # a plain loop: vmap of size 1 makes every matmul a batched dot, 4x slower on XLA:CPU
      return jax.lax.map(lambda khr: one(*khr), (keys, hp, rows))
    return jax.lax.map(lambda khr: one(*khr), (keys, hp, rows), batch_size=group_size)

  sharded = jax.shard_map(local, mesh=mesh, in_specs=(P("config"), P("config"), P("config"), P()),
                          out_specs=P("config"), check_vma=False)
  return jax.jit(sharded)


def put_global(tree, sharding: NamedSharding):
  """`jax.device_put(tree, sharding)`; with several processes (a mesh this process cannot address whole)
  each process builds the global arrays from its identical host copy, placing its own devices' slices."""
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)

  def put(a):
    if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
      return jax.random.wrap_key_data(put(jax.random.key_data(a)), impl=jax.random.key_impl(a))
    host = np.asarray(a)
    return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])

  return jax.tree.map(put, tree)


def gather(tree):
  """Every process's rows of `tree`, as host numpy arrays."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    return jax.tree.map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))
  return jax.tree.map(np.asarray, tree)

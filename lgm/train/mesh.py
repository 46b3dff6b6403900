"""The device mesh and how arrays are laid out on it, described by the config.

`config.mesh` maps axis names to sizes, one size may be -1 ("the rest"). ConfigDicts sort their keys,
so the axes are laid out in alphabetical order, the first outermost: with the default names,
`data` spans hosts and `fsdp` groups stay inside neighbouring devices. The batch is split
over every axis. Parameters (and optimizer state, EMA) are replicated, except over an axis named
`fsdp`: there each large parameter is split along its largest divisible dimension (FSDP / ZeRO-3
style); XLA inserts the gathers.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Callable

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

FSDP_AXIS = 'fsdp'
MIN_SHARDED_SIZE = 2**12  # smaller parameters stay replicated: splitting them only adds traffic
COMPILE_BARRIER_TIMEOUT_MS = 30 * 60 * 1000
_barrier_ids = itertools.count()  # every process compiles the same programs in the same order


def mesh_shape(mesh_config: ml_collections.ConfigDict | dict, num_devices: int) -> dict[str, int]:
  """Resolve the -1 entry of `config.mesh` against the device count; check the product."""
  shape = dict(mesh_config.items())
  if any(not isinstance(size, int) or size == 0 or size < -1 for size in shape.values()):
    raise ValueError(f'config.mesh {shape}: sizes must be positive integers or -1 (the rest).')
  rest = [name for name, size in shape.items() if size == -1]
  if len(rest) > 1:
    raise ValueError(f'config.mesh {shape} has more than one -1 axis; give all but one a size.')
  known = math.prod(size for size in shape.values() if size != -1)
  if rest:
    if num_devices % known:
      raise ValueError(f'config.mesh {shape}: {num_devices} devices are not divisible by {known}.')
    shape[rest[0]] = num_devices // known
  if math.prod(shape.values()) != num_devices:
    raise ValueError(f'config.mesh {shape} needs {math.prod(shape.values())} devices, '
                     f'but {num_devices} are present; use -1 for one axis.')
  return shape


def make_mesh(mesh_config: ml_collections.ConfigDict | dict, devices=None) -> Mesh:
  """A mesh over all (global) devices, ordered by process so each host holds a contiguous block."""
  devices = list(jax.devices() if devices is None else devices)
  devices.sort(key=lambda d: (d.process_index, d.id))
  shape = mesh_shape(mesh_config, len(devices))
  return Mesh(np.array(devices).reshape(tuple(shape.values())), tuple(shape))


def batch_sharding(mesh: Mesh, stacked: bool = False) -> NamedSharding:
  """Leading (batch) axis split over every mesh axis; `stacked`: batches stacked on a new leading axis, the
  batch axis second (several train steps per call)."""
  return NamedSharding(mesh, P(None, mesh.axis_names) if stacked else P(mesh.axis_names))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def _param_spec(shape: tuple[int, ...], fsdp_size: int) -> P:
  if fsdp_size == 1 or math.prod(shape) < MIN_SHARDED_SIZE:
    return P()
  for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
    if shape[dim] % fsdp_size == 0:
      spec = [None] * len(shape)
      spec[dim] = FSDP_AXIS
      return P(*spec)
  return P()


def param_shardings(mesh: Mesh, abstract_tree: Any) -> Any:
  """NamedShardings for a pytree of parameter-like arrays (params, EMA, optimizer moments)."""
  fsdp_size = dict(zip(mesh.axis_names, mesh.devices.shape)).get(FSDP_AXIS, 1)
  return jax.tree.map(lambda x: NamedSharding(mesh, _param_spec(tuple(x.shape), fsdp_size)),
                      abstract_tree)


def compile_then_synchronize(jitted: Callable, name: str) -> Callable:
  """`jitted`, compiled ahead of its first call per input layout, then a wait for every process.

  XLA's CPU collectives (gloo) give up after 30 s when one process reaches a collective while another
  is still compiling the same program, which a loaded 2-core host does (seen in CI: `GetKeyValue() timed
  out`). The coordination service's barrier waits as long as the slowest compile. One process: `jitted`.
  """
  if jax.process_count() == 1:
    return jitted
  from jax._src import distributed  # the coordination client; orbax's barriers use it the same way
  compiled: dict[Any, Callable] = {}

  def call(*args):
    leaves, treedef = jax.tree.flatten(args)
    key = (treedef, tuple((np.shape(x), np.result_type(x), getattr(x, 'sharding', None)) for x in leaves))
    if key not in compiled:
      compiled[key] = jitted.lower(*args).compile()
      distributed.global_state.client.wait_at_barrier(f'lgm_compiled_{name}_{next(_barrier_ids)}',
                                                      COMPILE_BARRIER_TIMEOUT_MS)
    return compiled[key](*args)

  return call

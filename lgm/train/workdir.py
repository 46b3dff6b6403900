"""The work directory of one run: its resolved config and its orbax checkpoints.

Reading a trained model back (config + task + parameters) is `lgm.stages.load_trained`.

DIR/config.json       the resolved config of the run
DIR/checkpoints/      orbax: {'state': TrainState, 'meta': {'step', 'data': {'next_step', 'seed'}}}
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp

from lgm import files

# Keys a resumed run may change: they alter how long or how verbosely it runs, not what it learns.
RESUMABLE_KEYS = ('train.num_steps', 'train.log_every', 'train.checkpoint_every', 'train.keep_checkpoints',
                  'data.num_threads', 'eval.')


def config_path(workdir: str) -> str:
  return os.path.join(workdir, 'config.json')


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), 'checkpoints')


def read_config(workdir: str) -> ml_collections.ConfigDict:
  path = config_path(workdir)
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path} not found: {workdir} is not an lgm work directory; '
                            'train into it first with `python -m experiments.train`.')
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def write_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  os.makedirs(workdir, exist_ok=True)
  files.write_text(config_path(workdir), config.to_json(indent=2, sort_keys=True))


def _flatten(tree: Any, prefix: str = '') -> dict[str, Any]:
  if isinstance(tree, dict):
    out = {}
    for key, value in tree.items():
      out.update(_flatten(value, f'{prefix}{key}.'))
    return out
  return {prefix[:-1]: list(tree) if isinstance(tree, tuple) else tree}


def config_differences(old: ml_collections.ConfigDict, new: ml_collections.ConfigDict) -> list[str]:
  """'key: old -> new' for every key that changes what is learned (RESUMABLE_KEYS excepted)."""
  a = _flatten(json.loads(old.to_json()))
  b = _flatten(json.loads(new.to_json()))
  keys = sorted(k for k in set(a) | set(b) if not k.startswith(RESUMABLE_KEYS))
  return [f'{k}: {a.get(k, "<absent>")} -> {b.get(k, "<absent>")}' for k in keys if a.get(k) != b.get(k)]


def checkpoint_manager(workdir: str, keep: int = 3) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=True, create=True)
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options)


def save(manager: ocp.CheckpointManager, step: int, state: Any, meta: dict) -> None:
  manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                             meta=ocp.args.JsonSave(meta)))


def restore(manager: ocp.CheckpointManager, step: int, abstract_state: Any) -> tuple[Any, dict]:
  """Restore `step` into the layout (shapes, dtypes, shardings) of `abstract_state`."""
  restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                                            meta=ocp.args.JsonRestore()))
  return restored['state'], restored['meta']


def abstract_like(tree: Any, shardings: Any) -> Any:
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)

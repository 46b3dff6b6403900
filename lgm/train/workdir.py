"""The work directory: resolved config, orbax checkpoints, and loading a trained model back.

DIR/config.json       the resolved config of the run
DIR/checkpoints/      orbax: {'state': TrainState, 'meta': {'step', 'data': {'next_step', 'seed'}}}
"""

from __future__ import annotations

import dataclasses
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


@dataclasses.dataclass
class Trained:
  """A trained model read back from a work directory."""
  config: ml_collections.ConfigDict
  task: Any
  params: Any
  step: int


def load_trained(workdir: str, use_ema: bool | None = None, mesh: jax.sharding.Mesh | None = None) -> Trained:
  """The task of DIR/config.json with the parameters of its latest checkpoint.

  EMA parameters when `use_ema` (default: the run's `config.eval.use_ema`).

  Laid out on `mesh` as in training when given, else on the first device.
  """
  from lgm import tasks  # deferred: tasks import models, which this module's users may not need
  from lgm.train import state as state_lib

  config = read_config(workdir)
  task = tasks.get_task(config, workdir)
  manager = checkpoint_manager(workdir)
  step = manager.latest_step()
  if step is None:
    raise FileNotFoundError(f'no checkpoint in {checkpoint_dir(workdir)}; train first '
                            f'(python -m experiments.train --config=... --workdir={workdir}).')
  tx, _ = state_lib.make_optimizer(config)
  init = state_lib.state_initializer(task.init, tx)
  abstract = jax.eval_shape(init, jax.random.PRNGKey(0))
  if mesh is None:
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    shardings = jax.tree.map(lambda _: device, abstract)
  else:
    shardings = state_lib.state_shardings(mesh, abstract)
  state, _ = restore(manager, step, abstract_like(abstract, shardings))
  manager.close()
  use_ema = config.eval.use_ema if use_ema is None else use_ema
  return Trained(config=config, task=task, params=state.ema_params if use_ema else state.params, step=step)

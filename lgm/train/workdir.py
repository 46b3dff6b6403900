"""The resolved config of a run, DIR/config.json, and which of its keys a resumed run may change.

Checkpoints are `lgm.train.checkpoints`; reading a trained model back (config + task + parameters) is
`lgm.stages.load_trained`.
"""

from __future__ import annotations

import json
import os
from typing import Any

import ml_collections

from lgm import files
from lgm.train import checkpoints

# Keys a resumed run may change: they alter how long or how verbosely it runs, not what it learns.
RESUMABLE_KEYS = ('train.num_steps', 'train.log_every', 'train.checkpoint_every', 'train.keep_checkpoints',
                  'train.steps_per_call', 'data.num_threads', 'eval.')


def check_path(workdir: str) -> None:
  """A work directory is a path every process sees: a shared file system or a gs:// bucket (`lgm.files`)."""
  files.check_work_directory(workdir)


def config_path(workdir: str) -> str:
  return os.path.join(workdir, 'config.json')


def read_config(workdir: str) -> ml_collections.ConfigDict:
  path = config_path(workdir)
  if not files.exists(path):
    raise FileNotFoundError(f'{path} not found: {workdir} is not an lgm work directory; '
                            'train into it first with `python -m experiments.train`.')
  return ml_collections.ConfigDict(files.read_json(path))


def write_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  """DIR/config.json, rewritten only when its text changes (a rerun of a finished run changes nothing)."""
  text = config.to_json(indent=2, sort_keys=True)
  path = config_path(workdir)
  if files.exists(path) and files.read_text(path) == text:
    return
  files.makedirs(workdir)
  files.write_text(path, text)


def flatten(tree: Any, prefix: str = '') -> dict[str, Any]:
  """A nested config dict as dotted key -> value (tuples as lists, as in config.json)."""
  if isinstance(tree, dict):
    out = {}
    for key, value in tree.items():
      out.update(flatten(value, f'{prefix}{key}.'))
    return out
  return {prefix[:-1]: list(tree) if isinstance(tree, tuple) else tree}


def config_differences(old: ml_collections.ConfigDict, new: ml_collections.ConfigDict) -> list[str]:
  """'key: old -> new' for every key that changes what is learned (RESUMABLE_KEYS excepted)."""
  a = flatten(json.loads(old.to_json()))
  b = flatten(json.loads(new.to_json()))
  keys = sorted(k for k in set(a) | set(b) if not k.startswith(RESUMABLE_KEYS))
  return [f'{k}: {a.get(k, "<absent>")} -> {b.get(k, "<absent>")}' for k in keys if a.get(k) != b.get(k)]


def check_resumable(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Refuse to go on from checkpoints that another config wrote (call it before writing anything)."""
  try:
    old = read_config(workdir)
  except FileNotFoundError:
    return
  if not checkpoints.saved_step(workdir):
    return
  diffs = config_differences(old, config)
  if diffs:
    raise ValueError(f'{workdir} holds checkpoints of another config ({"; ".join(diffs[:4])}'
                     f'{"; ..." if len(diffs) > 4 else ""}); use a new --workdir, or the config it was trained with.')

"""Sweeps: one config trained at several points, each point a dict of dotted config keys -> values.

A config module defines `get_sweep(arg=None)` from `sweep` and `product` (big_vision's hyper helpers):

  def get_sweep(arg=None):
    return sweeps.product(sweeps.sweep('model.ch', [16, 32]), sweeps.sweep('optim.learning_rate', [1e-3, 3e-3]))

`run_sweep` trains the points one after the other, each an ordinary resumable run in WORKDIR/<name>; the
name spells the point's values (`ch=16,learning_rate=0.001`), so a listing of WORKDIR says which run is
which. Every point is checked before the first one trains: a typo in the last point fails at once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shlex
from typing import Any, Iterable, Mapping, Sequence

import ml_collections
import numpy as np
from absl import logging

from lgm import files
from lgm import overrides as overrides_lib

# Config files import this module for `sweep` and `product`, so the trainer and jax are imported only where
# they are used: loading a config stays fast, and jax.distributed can still start after it.

SWEEP_FILE = 'sweep.json'
_MAX_NAME = 120  # characters; a longer name is cut and ends with a hash of its point


def sweep(key: str, values: Iterable[Any]) -> list[dict[str, Any]]:
  """One axis: a point per value of `key`."""
  return [{key: value} for value in values]


def product(*axes: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
  """Every combination of one point from each axis; the last axis varies fastest."""
  points: list[dict[str, Any]] = [{}]
  for axis in axes:
    shared = {key for point in points for key in point} & {key for other in axis for key in other}
    if shared:
      raise ValueError(f'{", ".join(sorted(shared))} on two axes of one product; give each key one axis.')
    points = [{**point, **other} for point in points for other in axis]
  return points


def load_points(spec: str) -> list[dict[str, Any]]:
  """The points of config file `PATH[:ARG]`: its get_sweep, called with ARG as get_config is."""
  return overrides_lib.call(spec, 'get_sweep')


def short_keys(keys: Sequence[str]) -> dict[str, str]:
  """Each dotted key -> its shortest tail that no other key ends with ('model.ch' -> 'ch')."""
  def short(key: str) -> str:
    parts = key.split('.')
    for n in range(1, len(parts)):
      tail = '.'.join(parts[-n:])
      if not any(other != key and (other == tail or other.endswith('.' + tail)) for other in keys):
        return tail
    return key
  return {key: short(key) for key in keys}


def point_names(points: Sequence[Mapping[str, Any]]) -> list[str]:
  """A directory name per point, from its values: readable, the same on every run, and unique."""
  short = short_keys(list(dict.fromkeys(key for point in points for key in point)))
  names, seen = [], {}
  for point in points:
    name = ','.join(f'{short[key]}={_text(value)}' for key, value in point.items()) or 'base'
    name = re.sub(r'[^A-Za-z0-9._,=+-]', '_', name)
    if len(name) > _MAX_NAME:
      digest = hashlib.sha256(json.dumps(point, sort_keys=True).encode()).hexdigest()[:8]
      name = f'{name[:_MAX_NAME - 9]}-{digest}'
    if name in seen:
      raise ValueError(f'sweep points {seen[name]} and {dict(point)} get the same directory name {name!r}: a point '
                       'listed twice, or values that differ only in characters a file name cannot hold.')
    seen[name] = dict(point)
    names.append(name)
  return names


def _text(value: Any) -> str:
  return '-'.join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


@dataclasses.dataclass(frozen=True)
class Point:
  name: str
  overrides: dict[str, Any]
  config: ml_collections.ConfigDict
  workdir: str


def plan(config: str | ml_collections.ConfigDict, points: Sequence[Mapping[str, Any]], workdir: str,
         overrides: Mapping[str, Any] | None = None) -> list[Point]:
  """Every point's name, full config and work directory, all checked before anything is written.

  `config` is a config file `PATH[:ARG]` or a config; `overrides` (dotted keys -> values) apply to every
  point, the point's own values on top. A URL that cannot hold work directories, a key the config lacks, a
  value of another type than its key's, a value `lgm.config_checks` refuses, or a point directory holding
  checkpoints of another config: one line.
  """
  from lgm import config_checks, jobs
  from lgm.train import workdir as workdir_lib
  workdir_lib.check_path(workdir)
  base = overrides_lib.call(config) if isinstance(config, str) else config
  base = overrides_lib.apply(base, overrides or {})
  if jobs.is_job(base):
    raise ValueError('sweeps train single-run configs, not jobs (stage_order); sweep one stage\'s config.')
  if isinstance(points, Mapping) or not points or not all(isinstance(point, Mapping) for point in points):
    raise ValueError(f'a sweep is a non-empty list of points, each a dict of dotted config keys -> values; '
                     f'got {points!r:.200}.')
  points = [{key: value.item() if isinstance(value, np.generic) else value for key, value in point.items()}
            for point in points]
  planned = []
  for name, point in zip(point_names(points), points):
    point_dir = os.path.join(workdir, name)
    try:
      point_config = overrides_lib.apply(base, point)
      config_checks.check_run(point_config)
      workdir_lib.check_resumable(point_dir, point_config)
    except (KeyError, ValueError) as e:
      raise type(e)(f'sweep point {name}: {e.args[0]}') from None
    planned.append(Point(name, point, point_config, point_dir))
  return planned


def run_sweep(config: str | ml_collections.ConfigDict, points: Sequence[Mapping[str, Any]], workdir: str,
              overrides: Mapping[str, Any] | None = None) -> dict[str, dict[str, float]]:
  """Train every point in WORKDIR/<name>, one after the other; returns name -> its final `eval/...` metrics.

  A finished point (its latest checkpoint at its last step) is skipped without building its task; a
  half-finished one resumes where its checkpoints stop. A point stopped by SIGTERM stops the sweep there:
  the same call goes on from it. WORKDIR/sweep.json records the config, `overrides` and every point.
  """
  import jax

  from lgm.train import checkpoints
  from lgm.train import metrics as metrics_lib
  from lgm.train import trainer
  planned = plan(config, points, workdir, overrides)
  if jax.process_index() == 0:
    files.makedirs(workdir)
    record = {'config': config if isinstance(config, str) else None, 'overrides': dict(overrides or {}),
              'points': [{'name': point.name, 'overrides': point.overrides} for point in planned]}
    files.write_json(os.path.join(workdir, SWEEP_FILE), record, indent=2)
  results = {}
  for i, point in enumerate(planned, 1):
    num_steps = point.config.train.num_steps
    if checkpoints.saved_step(point.workdir) >= num_steps:
      logging.info('Point %d/%d %s: finished, skipped.', i, len(planned), point.name)
      results[point.name] = metrics_lib.last_evaluation(point.workdir)
      continue
    logging.info('Point %d/%d -> %s', i, len(planned), point.workdir)
    results[point.name] = trainer.train_and_evaluate(point.config, point.workdir)
    if checkpoints.saved_step(point.workdir) < num_steps:
      logging.warning('Point %s stopped before its last step; run the same command to go on.', point.name)
      break
  return results


def launch_commands(config: str, points: Sequence[Mapping[str, Any]], workdir: str,
                    overrides: Mapping[str, Any] | None = None, launcher: str = 'local') -> list[str]:
  """One `./launch.sh LAUNCHER CONFIG WORKDIR/<name> --config.KEY=VALUE ...` line per point, checked as
  `run_sweep` checks them, for sending the points to a pod or a queue instead of training them here."""
  flags = [f'--config.{key}={_flag_text(value)}' for key, value in (overrides or {}).items()]
  return [shlex.join(['./launch.sh', *shlex.split(launcher), config, point.workdir, *flags,
                      *(f'--config.{key}={_flag_text(value)}' for key, value in point.overrides.items())])
          for point in plan(config, points, workdir, overrides)]


def _flag_text(value: Any) -> str:
  """`value` as config_flags parses it back."""
  return str(tuple(value)) if isinstance(value, (list, tuple)) else str(value)

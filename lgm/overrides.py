"""Config files and dotted-key overrides, shared by the entry points (`--config.KEY=VALUE`) and sweeps.

A key that does not exist is refused with the valid keys at the level where it went wrong, and a value
must have the type the config gives its key, so that a typo fails at once rather than after hours of
training with the default.
"""

from __future__ import annotations

import numbers
import os
import runpy
from typing import Any, Mapping

import ml_collections


def call(spec: str, function: str = 'get_config') -> Any:
  """`function` of the config file `PATH[:ARG]`, called as config_flags calls get_config: with ARG if given."""
  path, _, arg = spec.partition(':')
  if not os.path.exists(path):
    raise FileNotFoundError(f'config file {path} not found; configs live in configs/NAME.py.')
  module = runpy.run_path(path)
  if function not in module:
    raise ValueError(f'{path} defines no {function}(arg=None).')
  return module[function](arg) if arg else module[function]()


def lookup(config: ml_collections.ConfigDict, key: str) -> Any:
  """The value of dotted `key` ('model.ch'); a KeyError naming the valid keys where the path breaks."""
  node, path = config, []
  for part in key.split('.'):
    if not hasattr(node, 'keys') or part not in node:
      where = '.'.join(path) or 'the top level'
      valid = sorted(node.keys()) if hasattr(node, 'keys') else []
      raise KeyError(f'unknown config key {key!r}; valid keys at {where}: {", ".join(valid)}')
    node, path = node[part], path + [part]
  return node


def apply(config: ml_collections.ConfigDict, values: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """A copy of `config` with dotted keys set to `values`, each key checked to exist and each value to have
  its key's type (an int for a float key is fine; None in the config accepts anything)."""
  config = config.copy_and_resolve_references()
  for key, value in values.items():
    old = lookup(config, key)
    if hasattr(old, 'keys'):
      raise KeyError(f'{key} is a section of the config, not a value; its keys: {", ".join(sorted(old.keys()))}')
    if not _same_kind(old, value):
      raise ValueError(f'{key}={value!r} has type {type(value).__name__}; the config\'s {key} is {old!r} '
                       f'({type(old).__name__}).')
    *parents, leaf = key.split('.')
    node = lookup(config, '.'.join(parents)) if parents else config
    node[leaf] = value
  return config


# bool before Integral (a bool is an Integral too); Integral before Real.
_KINDS = (bool, numbers.Integral, numbers.Real, str, (list, tuple))


def _kind(value: Any) -> Any:
  return next((kind for kind in _KINDS if isinstance(value, kind)), type(value))


def _same_kind(old: Any, new: Any) -> bool:
  if old is None:
    return True
  if _kind(old) is numbers.Real:
    return _kind(new) in (numbers.Integral, numbers.Real)
  return _kind(old) == _kind(new)

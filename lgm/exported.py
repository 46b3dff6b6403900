"""The format of an exported lgm model (`lgm.export` writes it): file names, version, reading parameters.

Apart from the writer so that `lgm.stages` can load an exported stage without importing the jobs and
reports that exporting a job needs.
"""

from __future__ import annotations

import json
import os
from typing import Any

import flax
import numpy as np
import safetensors

from lgm import files

FORMAT = 'lgm-model'
VERSION = 1
MANIFEST = 'lgm_model.json'
PARAMS_FILE = 'params.safetensors'


def flatten_params(params: Any) -> dict[str, np.ndarray]:
  """'a/b/kernel' -> array, each in C order: safetensors writes an array's buffer as it lies in memory, so a
  transposed view (what a converter makes) would be saved transposed."""
  flat = flax.traverse_util.flatten_dict(params)
  return {'/'.join(path): np.asarray(value, order='C') for path, value in flat.items()}


def unflatten_params(flat: dict[str, np.ndarray]) -> dict[str, Any]:
  return flax.traverse_util.unflatten_dict({tuple(name.split('/')): value for name, value in flat.items()})


def is_exported(directory: str) -> bool:
  return files.exists(os.path.join(directory, PARAMS_FILE))


def check_version(version: Any, where: str) -> None:
  if not isinstance(version, int) or version > VERSION:
    raise ValueError(f'{where} is an lgm model of format version {version}; this lgm reads versions up to '
                     f'{VERSION}: upgrade lgm (pip install -U lgm) to load it.')


def read_manifest(directory: str) -> dict[str, Any]:
  path = os.path.join(directory, MANIFEST)
  if not files.exists(path):
    raise FileNotFoundError(f'{path} not found: {directory} is not an exported lgm model; export one with '
                            f'python -m experiments.export --workdir=RUN --out={directory}')
  manifest = files.read_json(path)
  if manifest.get('format') != FORMAT:
    raise ValueError(f'{path} is not an lgm model manifest (format {manifest.get("format")!r}).')
  check_version(manifest.get('version'), directory)
  return manifest


def _metadata(data: bytes) -> dict[str, str]:
  """The `__metadata__` of a safetensors file: its header is 8 bytes of length, then that much JSON."""
  length = int.from_bytes(data[:8], 'little')
  return json.loads(data[8:8 + length]).get('__metadata__') or {}


def load_params(directory: str, abstract: Any) -> tuple[Any, int]:
  """(params, step) of an exported stage, checked against `abstract` (the task's parameter shapes)."""
  path = os.path.join(directory, PARAMS_FILE)
  with files.open_file(path, 'rb') as f:
    data = f.read()
  metadata = _metadata(data)
  check_version(int(metadata.get('version', 0)) if metadata.get('format') == FORMAT else None, path)
  flat = safetensors.numpy.load(data)
  shapes = {'/'.join(path): leaf.shape for path, leaf in flax.traverse_util.flatten_dict(abstract).items()}
  problems = sorted(set(shapes) ^ set(flat)) + [
      f'{name} {flat[name].shape} != {shapes[name]}' for name in sorted(set(flat) & set(shapes))
      if flat[name].shape != shapes[name]]
  if problems:
    raise ValueError(f'{path} does not fit the model of its config.json ({len(problems)} differences: '
                     f'{", ".join(problems[:4])}); re-export it with this lgm.')
  return unflatten_params(flat), int(metadata.get('step', 0))

"""Where a generated image comes from, written into the image: its recipe as a PNG text chunk.

Every PNG lgm writes from a generation (`experiments.sample`) carries, under the key `lgm-recipe`, a JSON
object: the generator (lgm and its version), the model (`model_id`: a SHA-256 of every parameter that took
part), the prompt and negative prompt, the seeds, sampler, steps and guidance, the road, and the network
evaluations per image. `read_metadata(path)` reads it back; any PNG tool lists it. The chunk survives
copying the file, not re-encoding it (a screenshot, a JPEG): it documents, it does not prove.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from typing import Any, Mapping

import jax
from PIL import Image

from lgm import exported, files

RECIPE_KEY = 'lgm-recipe'


def model_id(*param_trees: Any) -> str:
  """SHA-256 (hex) of parameter trees: every array's name, dtype, shape and bytes, in name order. The same
  parameters give the same id whether they come from a checkpoint, an export or a conversion."""
  digest = hashlib.sha256()
  for tree in param_trees:
    for name, array in sorted(exported.flatten_params(jax.device_get(tree)).items()):
      digest.update(f'{name}|{array.dtype}|{array.shape}|'.encode())
      digest.update(array.tobytes())
  return digest.hexdigest()


def recipe(model: str, **settings: Any) -> dict[str, Any]:
  """The recipe of one generation: the generator, `model` (a `model_id`) and the settings given."""
  return {'generator': f'lgm {importlib.metadata.version("lgm")}', 'model': model, **settings}


def png_text(recipe_: Mapping[str, Any]) -> dict[str, str]:
  """The PNG text chunks that carry a recipe (`lgm.images.save_png(..., text=...)`)."""
  return {RECIPE_KEY: json.dumps(recipe_, ensure_ascii=False)}


def read_metadata(path: str) -> dict[str, Any]:
  """The recipe of a PNG written by lgm ({} for an image without one)."""
  with files.open_file(path, 'rb') as f, Image.open(f) as image:
    text = getattr(image, 'text', {}).get(RECIPE_KEY)
  return json.loads(text) if text else {}

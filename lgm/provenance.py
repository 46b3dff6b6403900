"""Where a generated image comes from, written into the image twice: its recipe as a PNG text chunk, and a
signature in its pixels.

Every PNG lgm writes from a generation (`experiments.sample`) carries, under the key `lgm-recipe`, a JSON
object: the generator (lgm and its version), the model (`model_id`: a SHA-256 of every parameter that took
part), the prompt and negative prompt, the seeds, sampler, steps and guidance, the road, and the network
evaluations per image. `read_metadata(path)` reads it back; any PNG tool lists it. The chunk survives
copying the file, not re-encoding it (a screenshot, a JPEG): it documents, it does not prove.

The signature survives re-encoding: a job with a `signature` stage (`lgm.tasks.signature`) decodes every image
with a decoder fine-tuned to embed a k-bit message. `Detector` reads the bits back and counts those that match
the message; `p_value` is the exact chance of that many matches or more for an image without the signature
(Binomial(k, 1/2)), which holds because the detector whitens the extractor's logits on unsigned images
(centred, decorrelated: each bit a fair coin, independent of the others). An image is called signed when its
p-value is at most the false-positive rate asked for (`experiments.verify`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import math
from typing import Any, Callable, Mapping

import jax
import numpy as np
from PIL import Image

from lgm import batching, distortions, exported, files, stages
from lgm.data import loader as loader_lib
from lgm.tasks import Trained

RECIPE_KEY = 'lgm-recipe'
SIGNATURE_STAGE = 'signature'
DETECTOR_FILE = 'detector.json'  # in the signature stage: the message and the whitening of its extractor


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


# --- the signature ---------------------------------------------------------------------------------------
def p_value(matches: int | np.ndarray, bits: int) -> np.ndarray:
  """P(X >= matches) for X ~ Binomial(bits, 1/2): the chance that an image without the signature matches the
  message in `matches` bits or more. Exact: integer counts, one division."""
  tails = [sum(math.comb(bits, j) for j in range(m, bits + 1)) / 2**bits for m in range(bits + 2)]
  return np.asarray(tails)[np.asarray(matches)]


def match_threshold(bits: int, false_positive_rate: float) -> int:
  """The fewest matching bits whose p-value is at most `false_positive_rate` (bits + 1 when none is)."""
  return int(np.argmax(np.append(p_value(np.arange(bits + 1), bits) <= false_positive_rate, True)))


def fit_whitening(logits: np.ndarray, eps: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
  """(mean, W) with W (logits - mean) of identity covariance over `logits` (N, bits) (ZCA: W symmetric, the
  whitened bits stay as close to the raw ones as decorrelation allows)."""
  logits = np.asarray(logits, np.float64)
  mean = logits.mean(axis=0)
  values, vectors = np.linalg.eigh(np.cov(logits - mean, rowvar=False))
  return mean, (vectors / np.sqrt(np.maximum(values, eps))) @ vectors.T


@dataclasses.dataclass(frozen=True)
class Detector:
  """Reads the signature of a signed decoder from images (N, H, W, C) in [-1, 1], any H and W."""
  extract: Callable[[np.ndarray], np.ndarray]  # images -> (N, bits) extractor logits
  message: np.ndarray  # (bits,) bool
  mean: np.ndarray  # `fit_whitening` on unsigned images
  whitening: np.ndarray
  image_shape: tuple[int, int, int] = (32, 32, 3)  # of the images the signed decoder makes

  @property
  def bits(self) -> int:
    return len(self.message)

  def read(self, images: np.ndarray) -> np.ndarray:
    """(N, bits) bool: the whitened logits' signs."""
    return (np.asarray(self.extract(images), np.float64) - self.mean) @ self.whitening.T > 0

  def matches(self, images: np.ndarray) -> np.ndarray:
    """(N,) how many bits of each image match the message."""
    return (self.read(images) == self.message).sum(axis=1)

  def verdicts(self, images: np.ndarray, false_positive_rate: float) -> dict[str, np.ndarray]:
    """Per image: `matches`, `p_value`, and `signed` (p-value at most `false_positive_rate`)."""
    matches = self.matches(images)
    p = p_value(matches, self.bits)
    return {'matches': matches, 'p_value': p, 'signed': p <= false_positive_rate}

  def to_json(self) -> dict[str, Any]:
    return {'message': ''.join('1' if b else '0' for b in self.message), 'mean': self.mean.tolist(),
            'whitening': self.whitening.tolist()}


def signature_stage(path: str) -> str:
  """The signature stage of `path`: a job directory with one, or the stage's own directory."""
  for candidate in (path, files.normjoin(path, SIGNATURE_STAGE)):
    config_path = files.normjoin(candidate, 'config.json')
    if files.exists(config_path) and files.read_json(config_path).get('task') == SIGNATURE_STAGE:
      return candidate
  raise FileNotFoundError(f'{path} has no signature stage; a text-to-image job trains one when its stage_order '
                          "has 'signature' (configs/t2i_shapes.py), or train configs/signature_shapes.py.")


def load_detector(path: str, batch_size: int = 250, trained: Trained | None = None) -> Detector:
  """The detector of the signature stage of `path` (`signature_stage`; `trained`: that stage, when the caller has
  loaded it). Its whitening is read from STAGE/detector.json; on first use it is measured on
  `signature.calibration_images` training images, written to 8 bits as files are, and saved there."""
  directory = signature_stage(path)
  trained = trained or stages.load_trained(directory)
  task = trained.task
  extract = lambda images: batching.map_in_batches(task.extract, trained.params, images, batch_size)
  saved = files.normjoin(directory, DETECTOR_FILE)
  if files.exists(saved):
    fitted = files.read_json(saved)
    return Detector(extract, task.message, np.asarray(fitted['mean']), np.asarray(fitted['whitening']),
                    task.image_shape)
  config = trained.config
  real = loader_lib.load_arrays(config, config.data.train_split, config.signature.calibration_images)[0]['image']
  mean, whitening = fit_whitening(extract(distortions.to_8_bit(real)))
  detector = Detector(extract, task.message, mean, whitening, task.image_shape)
  if jax.process_index() == 0:
    files.write_json(saved, {**detector.to_json(), 'num_images': len(real)}, indent=1)
  return detector

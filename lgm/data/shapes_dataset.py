"""The stored `shapes` dataset: a tfds `GeneratorBasedBuilder` of `lgm.data.shapes`' renders, written as
array_record under `data_dir` (default `$LGM_DATA_DIR` or `~/.cache/lgm/tensorflow_datasets`), built on
first use (under a file lock, so concurrent processes build it once) and reused afterwards.
"""

from __future__ import annotations

import dataclasses
import fcntl
import io
import os

import numpy as np
import PIL.Image
import tensorflow_datasets as tfds

from lgm.data import shapes
from lgm.data.shapes import ATTRIBUTES, IMAGE_SIZE, LABEL_ATTRIBUTE, make_examples
from lgm.data.sources import SourceInfo, captions_of_records


@dataclasses.dataclass(eq=False)
class ShapesConfig(tfds.core.BuilderConfig):
  """Split sizes and seed; give a small config a new `name` (it names the directory)."""
  num_train: int = 20_000
  num_test: int = 2_000
  seed: int = 0


DEFAULT_CONFIG = ShapesConfig(name='default')
_RENDER_CHUNK = 256


def _png(image: np.ndarray) -> bytes:
  # Encoded here because tfds encodes numpy images with TensorFlow, which lgm does not need.
  buffer = io.BytesIO()
  PIL.Image.fromarray(image).save(buffer, format='PNG')
  return buffer.getvalue()


class Shapes(tfds.core.GeneratorBasedBuilder):
  """tfds builder of the `shapes` dataset (registered as 'shapes')."""

  VERSION = tfds.core.Version('1.1.0')
  RELEASE_NOTES = {
      '1.0.0': 'First version.',
      '1.1.0': 'Clearer yellow and purple, triangles centred by area, small shapes 10.5 px.',
  }
  BUILDER_CONFIGS = [DEFAULT_CONFIG]
  # Nothing is downloaded. Left to tfds, looking for a checksums file next to this module
  # imports the `importlib_resources` backport, which tfds does not install on Python >= 3.9.
  url_infos = None

  def _info(self) -> tfds.core.DatasetInfo:
    attributes = {name: tfds.features.ClassLabel(names=values)
                  for name, values in ATTRIBUTES.items()}
    return self.dataset_info_from_configs(
        description=shapes.__doc__,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(IMAGE_SIZE, IMAGE_SIZE, 3)),
            'caption': tfds.features.Text(),
            'label': tfds.features.ClassLabel(names=ATTRIBUTES[LABEL_ATTRIBUTE]),
            **attributes,
        }),
        supervised_keys=('image', 'label'),
        disable_shuffling=True,  # record i is example i, re-renderable by make_examples
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    sizes = {'train': self.builder_config.num_train, 'test': self.builder_config.num_test}
    return {split: self._generate_examples(split, n) for split, n in sizes.items()}

  def _generate_examples(self, split: str, num_examples: int):
    for start in range(0, num_examples, _RENDER_CHUNK):
      indices = range(start, min(start + _RENDER_CHUNK, num_examples))
      for i, example in zip(indices, make_examples(self.builder_config.seed, split, indices)):
        yield i, dict(example, image=_png(example['image']))


def default_data_dir() -> str:
  """`$LGM_DATA_DIR`, else `~/.cache/lgm/tensorflow_datasets`."""
  return os.environ.get('LGM_DATA_DIR') or os.path.expanduser('~/.cache/lgm/tensorflow_datasets')


def prepared_builder(data_dir: str | None = None,
                     config: ShapesConfig = DEFAULT_CONFIG) -> Shapes:
  """The builder, generating the dataset into `data_dir` first if it is not there yet."""
  data_dir = data_dir or default_data_dir()
  os.makedirs(data_dir, exist_ok=True)
  # Processes sharing data_dir take turns: the first builds, the others then find it built
  # (tfds alone would let them race to rename their finished copies into place).
  with open(os.path.join(data_dir, f'.shapes-{config.name}.lock'), 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    builder = Shapes(config=config, data_dir=data_dir, file_format='array_record')
    builder.download_and_prepare()
  return builder


class ShapesSource:
  """Random-access `shapes` records: image, label, caption, colour, shape, size, position."""

  def __init__(self, split: str, data_dir: str | None = None,
               config: ShapesConfig = DEFAULT_CONFIG):
    builder = prepared_builder(data_dir, config)
    if split not in builder.info.splits:
      raise ValueError(
          f'shapes has no split {split!r}; valid splits: {sorted(builder.info.splits)}')
    self._records = builder.as_data_source(split)
    self.info = SourceInfo(
        name='shapes', num_examples=len(self._records),
        label_names=tuple(ATTRIBUTES[LABEL_ATTRIBUTE]),
        attributes={name: tuple(values) for name, values in ATTRIBUTES.items()},
        has_captions=True)

  def __len__(self) -> int:
    return len(self._records)

  def __getitem__(self, index: int) -> dict:
    record = self._records[index]
    return {
        'image': record['image'],
        'label': int(record['label']),
        'caption': record['caption'].decode('utf-8'),  # tfds Text reads back as bytes
        **{name: int(record[name]) for name in ATTRIBUTES},
    }

  def captions(self, limit: int | None = None) -> list[str]:
    return captions_of_records(self, limit)

  @staticmethod
  def partial_caption(record: dict, rng: np.random.Generator) -> str:
    return shapes.partial_caption(record, rng)

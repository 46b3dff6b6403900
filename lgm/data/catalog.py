"""Any other dataset name: a tfds catalog dataset (`mnist`, `cifar10`, `celeb_a`, ...).

It must already be prepared in array_record format (random access, no TensorFlow at read
time). Preparing needs TensorFlow and the network once, so it is a separate step:

  pip install -e '.[prepare]' && tfds build NAME --file_format=array_record --data_dir=DIR

with DIR the `data_dir` given to lgm (default `$TFDS_DATA_DIR`, else ~/tensorflow_datasets).
Records map the dataset's `image` feature to 'image' and its `label` (when present) to 'label';
captions are ''.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from lgm.data.sources import SourceInfo

IMAGE_KEY = 'image'
LABEL_KEY = 'label'


def prepare_command(name: str, data_dir: str | None) -> str:
  """The shell command that prepares `name` where `CatalogSource` looks for it."""
  data_dir = data_dir or tfds.core.constants.get_default_data_dir()
  return (f"pip install -e '.[prepare]' && tfds build {name} --file_format=array_record "
          f"--data_dir={data_dir}")


def _split_names(split: str) -> list[str]:
  """Base split names of a tfds split expression such as 'train[:90%]+test'."""
  return [part.split('[')[0].strip() for part in split.split('+')]


class CatalogSource:
  """Records {'image', 'label', 'caption': ''} of a prepared tfds catalog dataset."""

  def __init__(self, name: str, split: str, data_dir: str | None = None):
    try:
      builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
      raise ValueError(f"unknown dataset {name!r}: use 'shapes', 'digits', 'folder:PATH' or a "
                       'tfds catalog name (e.g. mnist, cifar10).') from None
    random_access = builder.info.available_file_formats() & set(
        tfds.core.FileFormat.with_random_access())
    if not builder.is_prepared() or not random_access:
      raise ValueError(f'tfds dataset {name!r} is not prepared as array_record in '
                       f'{builder.data_dir}; prepare it with: {prepare_command(name, data_dir)}')
    splits = sorted(builder.info.splits)
    if any(base not in splits for base in _split_names(split)):
      raise ValueError(f'{name} has no split {split!r}; valid splits: {splits}')
    features = builder.info.features
    if IMAGE_KEY not in features:
      raise ValueError(f'{name} has no {IMAGE_KEY!r} feature; its features: {sorted(features)}')
    self._has_label = LABEL_KEY in features
    label_feature = features[LABEL_KEY] if self._has_label else None
    self._records = builder.as_data_source(split)
    self.info = SourceInfo(
        name=name, num_examples=len(self._records),
        label_names=tuple(getattr(label_feature, 'names', ())), attributes={},
        has_captions=False)

  def __len__(self) -> int:
    return len(self._records)

  def __getitem__(self, index: int) -> dict:
    record = self._records[index]
    image = np.asarray(record[IMAGE_KEY])
    return {
        'image': image if image.ndim == 3 else image[..., None],
        'label': int(record[LABEL_KEY]) if self._has_label else 0,
        'caption': '',
    }

  def captions(self, limit: int | None = None) -> list[str]:
    return [''] * (len(self) if limit is None else min(limit, len(self)))

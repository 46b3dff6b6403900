"""The one interface every dataset exposes to the loader: random access to plain records.

A record is `{'image': uint8 HxWxC, 'label': int, 'caption': str, **attributes}`; sources
without labels give label 0, without captions ''. Sources are picklable and thread-safe to read,
so a grain `RandomAccessDataSource` can wrap them directly, in threads or worker processes.

`config.data.dataset` names a source:
  'shapes'       the embedded procedural dataset (built locally on first use), lgm.data.shapes
  'digits'       scikit-learn's bundled 8x8 handwritten digits, lgm.data.digits
  'folder:PATH'  your own images, lgm.data.folder
  anything else  a tfds catalog dataset prepared as array_record, lgm.data.catalog
"""

from __future__ import annotations

import dataclasses
from typing import Protocol


@dataclasses.dataclass(frozen=True)
class SourceInfo:
  """What a model needs to know about a source before reading it."""
  name: str
  num_examples: int
  label_names: tuple[str, ...]              # class names of 'label' ('' allowed); () if none
  attributes: dict[str, tuple[str, ...]]    # extra int fields of each record -> class names
  has_captions: bool


class Source(Protocol):
  info: SourceInfo

  def __len__(self) -> int: ...

  def __getitem__(self, index: int) -> dict: ...

  def captions(self, limit: int | None = None) -> list[str]:
    """The first `limit` captions (all if None), read without decoding the images where the source can."""

  # Sources whose captions are made from their attributes (shapes) also offer
  # `partial_caption(record, rng) -> str`: a caption naming only some of the record's attributes.


def captions_of_records(source: Source, limit: int | None = None) -> list[str]:
  """`captions` of a source that stores captions inside its records: each record is read."""
  return [source[i]['caption'] for i in range(len(source) if limit is None else min(limit, len(source)))]


FOLDER_PREFIX = 'folder:'


def get_source(dataset: str, split: str, data_dir: str | None = None) -> Source:
  """The source named by `dataset` (see the module docstring), for `split`.

  `data_dir` is where tfds datasets live (shapes builds there; catalog datasets are read from
  there); None means each source's default. Raises ValueError for an unknown split.
  """
  # Imported here: the source modules import SourceInfo from this one, and only the chosen
  # source should pay for its dependencies (tfds is not needed for digits or folders).
  if dataset == 'shapes':
    from lgm.data import shapes_dataset
    return shapes_dataset.ShapesSource(split, data_dir)
  if dataset == 'digits':
    from lgm.data import digits
    return digits.DigitsSource(split)
  if dataset.startswith(FOLDER_PREFIX):
    from lgm.data import folder
    return folder.FolderSource(dataset[len(FOLDER_PREFIX):], split)
  from lgm.data import catalog
  return catalog.CatalogSource(dataset, split, data_dir)

"""`digits`: scikit-learn's bundled handwritten digits (1797 real 8x8 grey images), captioned.

Small real data that needs no download: useful to check that a model learns something real,
fast. Records: image uint8 (8, 8, 1) scaled from 0..16 to 0..255, label = the digit, a caption
from a few templates. The split is a fixed permutation: 1497 train, 300 test.
"""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits

from lgm.data.sources import SourceInfo

NUM_TEST = 300
_SPLIT_SEED = 0
NUMBER_WORDS = ('zero', 'one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine')
TEMPLATES = (
    'a handwritten digit {word}',
    'the number {word}, written by hand',
    'a handwritten {digit}',
    'a hand-drawn digit {digit}',
    'digit {word}',
)


def _split_indices(num_examples: int) -> dict[str, np.ndarray]:
  order = np.random.default_rng(_SPLIT_SEED).permutation(num_examples)
  return {'train': np.sort(order[NUM_TEST:]), 'test': np.sort(order[:NUM_TEST])}


def caption(digit: int, rng: np.random.Generator) -> str:
  """One of TEMPLATES for `digit`, chosen by `rng`."""
  template = TEMPLATES[rng.integers(len(TEMPLATES))]
  return template.format(word=NUMBER_WORDS[digit], digit=digit)


class DigitsSource:
  """In-memory records {'image', 'label', 'caption'}; caption i is fixed by the dataset index."""

  def __init__(self, split: str):
    data = load_digits()
    splits = _split_indices(len(data.target))
    if split not in splits:
      raise ValueError(f'digits has no split {split!r}; valid splits: {sorted(splits)}')
    self.indices = splits[split]
    self._images = np.round(data.images[self.indices] * (255 / 16)).astype(np.uint8)[..., None]
    self._labels = data.target[self.indices].astype(np.int64)
    self._captions = [caption(int(label), np.random.default_rng([_SPLIT_SEED, int(i)]))
                      for i, label in zip(self.indices, self._labels)]
    self.info = SourceInfo(
        name='digits', num_examples=len(self.indices),
        label_names=tuple(str(d) for d in range(10)), attributes={}, has_captions=True)

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, index: int) -> dict:
    return {'image': self._images[index], 'label': int(self._labels[index]),
            'caption': self._captions[index]}

  def captions(self, limit: int | None = None) -> list[str]:
    return self._captions[:limit]

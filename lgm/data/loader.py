"""Batches for training and evaluation, read with grain, sharded by JAX process.

The order is a pure function of (seed, step): global batch `step` holds the examples at stream
positions [step * B, (step + 1) * B), where the stream visits a fresh permutation of the split every
epoch. Process p of P reads only rows [p * B/P, (p + 1) * B/P) of each global batch, so every
example is read by exactly one process, the global batch is the same for any process count, and
resuming needs nothing but the step number. Each example carries `index`, its row in the split, so
that a task can look up what it precomputed for that example (lgm.tasks.text_to_image's latents).
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Iterator

import grain
import ml_collections
import numpy as np

from lgm.data import sources, transforms

NUMERIC_KINDS = 'biuf'


@dataclasses.dataclass
class Loader:
  """Process-local batches of one split. `train=True`: shuffled, endless; else one ordered pass."""
  source: sources.Source
  global_batch_size: int
  image_size: int
  channels: int
  seed: int = 0
  train: bool = True
  random_flip: bool = False
  partial_captions: float = 0.0
  process_index: int = 0
  process_count: int = 1
  num_threads: int = 2
  max_examples: int | None = None

  def __post_init__(self):
    if self.partial_captions and not hasattr(self.source, 'partial_caption'):
      raise ValueError(f'{self.source.info.name} cannot write partial captions (its captions are not made from '
                       'attributes, as those of shapes are); set data.partial_captions=0.')
    if self.global_batch_size % self.process_count:
      raise ValueError(f'batch size {self.global_batch_size} is not divisible by the '
                       f'{self.process_count} processes; choose a multiple of {self.process_count}.')
    self.local_batch_size = self.global_batch_size // self.process_count
    self.num_examples = len(self.source)
    if self.max_examples is not None:
      self.num_examples = min(self.num_examples, self.max_examples)
    if self.num_examples < 1:
      raise ValueError('the split has no examples; check config.data.dataset and the split names.')
    if not self.train and self.num_examples < self.global_batch_size:
      raise ValueError(f'the split has {self.num_examples} examples, fewer than one batch of '
                       f'{self.global_batch_size}; lower the eval batch size.')
    self._permutations: dict[int, np.ndarray] = {}
    self._lock = threading.Lock()

  @property
  def num_eval_batches(self) -> int:
    """Full global batches in one ordered pass (the remainder is not evaluated)."""
    return self.num_examples // self.global_batch_size

  def _permutation(self, epoch: int) -> np.ndarray:
    with self._lock:  # grain reads batches from several threads; batches may straddle two epochs
      permutation = self._permutations.get(epoch)
      if permutation is None:
        permutation = np.random.default_rng([self.seed, epoch]).permutation(self.num_examples)
        self._permutations = {e: p for e, p in self._permutations.items() if e >= epoch - 1}
        self._permutations[epoch] = permutation
      return permutation

  def index_at(self, position: int) -> int:
    """Example index at a position of the stream (train: epoch-wise shuffled; eval: in order)."""
    if not self.train:
      return position
    epoch, offset = divmod(position, self.num_examples)
    return int(self._permutation(epoch)[offset])

  def local_positions(self, step: int) -> range:
    start = step * self.global_batch_size + self.process_index * self.local_batch_size
    return range(start, start + self.local_batch_size)

  def _example(self, position: int) -> dict:
    index = self.index_at(position)
    record = self.source[index]
    image = transforms.to_model_image(record['image'], self.image_size, self.channels)
    if self.random_flip and np.random.default_rng([self.seed, 1, position]).random() < 0.5:
      image = transforms.hflip(image)
    if self.partial_captions:
      rng = np.random.default_rng([self.seed, 2, position])
      if rng.random() < self.partial_captions:
        record = {**record, 'caption': self.source.partial_caption(record, rng)}
    return {**record, 'image': image, 'index': np.int32(index)}

  def read_batch(self, step: int) -> dict[str, np.ndarray]:
    """The process-local part of global batch `step`: numeric fields stacked, captions as a str array."""
    examples = [self._example(p) for p in self.local_positions(step)]
    return {key: np.stack([np.asarray(e[key]) for e in examples]) for key in examples[0]}

  def batches(self, start_step: int = 0, num_steps: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Batches start_step, start_step + 1, ... read ahead by grain threads."""
    if not self.train:
      stop = self.num_eval_batches
    else:
      stop = start_step + (2**31 - 1 - start_step if num_steps is None else max(num_steps, 0))
    dataset = grain.MapDataset.range(start_step, stop).map(self.read_batch)
    options = grain.ReadOptions(num_threads=self.num_threads, prefetch_buffer_size=2 * self.num_threads)
    return iter(dataset.to_iter_dataset(options))


def device_fields(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """The fields that can go to the accelerator (captions stay on the host)."""
  return {k: v for k, v in batch.items() if v.dtype.kind in NUMERIC_KINDS}


def make_loader(config: ml_collections.ConfigDict, split: str, *, train: bool, process_index: int = 0,
                process_count: int = 1, batch_size: int | None = None,
                max_examples: int | None = None) -> Loader:
  """A `Loader` for `config.data` (dataset, image_size, channels, random_flip, partial_captions, num_threads)."""
  data = config.data
  return Loader(
      source=sources.get_source(data.dataset, split, data.get('data_dir')),
      global_batch_size=batch_size or config.train.batch_size,
      image_size=data.image_size, channels=data.channels, seed=config.seed, train=train,
      random_flip=train and data.random_flip, partial_captions=data.get('partial_captions', 0.0) if train else 0.0,
      process_index=process_index,
      process_count=process_count, num_threads=data.num_threads, max_examples=max_examples)


def load_arrays(config: ml_collections.ConfigDict, split: str,
                max_examples: int | None = None) -> tuple[dict[str, np.ndarray], sources.SourceInfo]:
  """The first `max_examples` of a split, preprocessed, in memory (for analysis and figures)."""
  source = sources.get_source(config.data.dataset, split, config.data.get('data_dir'))
  num = min(len(source), max_examples or len(source))
  loader = Loader(source=source, global_batch_size=num, image_size=config.data.image_size,
                  channels=config.data.channels, train=False, num_threads=1)
  return loader.read_batch(0), source.info

"""The loader's order: a function of (seed, step), split across processes without overlap or gaps."""

import numpy as np
import pytest

from lgm.data import loader as loader_lib


class IndexSource:
  """A source whose images encode their own index, so batches can be checked exactly."""

  def __init__(self, n):
    self.n = n

  def __len__(self):
    return self.n

  def __getitem__(self, i):
    image = np.full((4, 4, 1), i % 256, np.uint8)
    return {'image': image, 'label': i, 'caption': f'example {i}'}


def make(process_index=0, process_count=1, train=True, n=50, batch=8, seed=3):
  return loader_lib.Loader(IndexSource(n), global_batch_size=batch, image_size=4, channels=1, seed=seed,
                           train=train, process_index=process_index, process_count=process_count)


@pytest.mark.parametrize('processes', [2, 4, 8])
def test_processes_read_disjoint_parts_whose_union_is_the_single_process_batch(processes):
  single = make()
  parts = [make(p, processes) for p in range(processes)]
  for step in (0, 1, 6, 13):  # 13 * 8 > 50: batches that cross an epoch boundary too
    whole = single.read_batch(step)['label']
    pieces = [part.read_batch(step)['label'] for part in parts]
    np.testing.assert_array_equal(np.concatenate(pieces), whole)
    positions = [set(part.local_positions(step)) for part in parts]
    assert sum(len(p) for p in positions) == len(set().union(*positions)) == 8


def test_each_epoch_visits_every_example_once_in_a_fresh_order():
  loader = make(n=48, batch=8)
  epoch0 = np.concatenate([loader.read_batch(s)['label'] for s in range(6)])
  epoch1 = np.concatenate([loader.read_batch(s)['label'] for s in range(6, 12)])
  assert sorted(epoch0) == sorted(epoch1) == list(range(48))
  assert not np.array_equal(epoch0, epoch1)
  np.testing.assert_array_equal(loader.read_batch(7)['index'], loader.read_batch(7)['label'])  # the row read
  assert not np.array_equal(epoch0, np.arange(48))


def test_order_depends_on_seed_only_and_resuming_needs_only_the_step():
  a, b, c = make(seed=3), make(seed=3), make(seed=4)
  np.testing.assert_array_equal(a.read_batch(5)['label'], b.read_batch(5)['label'])
  assert not np.array_equal(a.read_batch(5)['label'], c.read_batch(5)['label'])
  stream = a.batches(start_step=0, num_steps=10)
  straight = [next(stream)['label'] for _ in range(10)]
  resumed = list(b.batches(start_step=7, num_steps=3))
  for got, want in zip(resumed, straight[7:]):
    np.testing.assert_array_equal(got['label'], want)


def test_eval_pass_is_ordered_complete_batches_and_captions_stay_on_host():
  loader = make(train=False, n=50, batch=8)
  batches = list(loader.batches())
  assert len(batches) == loader.num_eval_batches == 6
  np.testing.assert_array_equal(np.concatenate([b['label'] for b in batches]), np.arange(48))
  assert batches[0]['caption'][1] == 'example 1'
  assert set(loader_lib.device_fields(batches[0])) == {'image', 'label', 'index'}
  np.testing.assert_array_equal(batches[1]['index'], np.arange(8, 16))
  np.testing.assert_allclose(batches[0]['image'][3], 3 / 127.5 - 1, rtol=1e-6)


class AttributeSource(IndexSource):
  """Captions made from one attribute, `partial_caption` naming it as a bare word."""

  def partial_caption(self, record, rng):
    return f'part of {record["label"]} ({rng.integers(1000)})'


def test_partial_captions_are_a_function_of_seed_and_position_and_only_in_training():
  loader = loader_lib.Loader(AttributeSource(400), global_batch_size=400, image_size=4, channels=1, seed=3,
                             partial_captions=0.25)
  first, again = loader.read_batch(2)['caption'], loader.read_batch(2)['caption']
  np.testing.assert_array_equal(first, again)  # a resumed run reads the same captions
  partial = np.char.startswith(first.astype(str), 'part of')
  assert 0.18 < partial.mean() < 0.32
  labels = loader.read_batch(2)['label']
  assert all(c == f'example {i}' or c.startswith(f'part of {i} ') for c, i in zip(first, labels))
  other_seed = loader_lib.Loader(AttributeSource(400), global_batch_size=400, image_size=4, channels=1, seed=4,
                                 partial_captions=0.25).read_batch(2)['caption']
  assert (other_seed != first).any()
  config = _config(partial_captions=0.25)
  config.data.dataset = 'digits'
  with pytest.raises(ValueError, match='cannot write partial captions'):
    loader_lib.make_loader(config, 'train', train=True)
  eval_loader = loader_lib.make_loader(config, 'test', train=False)  # evaluation reads the stored captions
  assert eval_loader.partial_captions == 0.0


def _config(**data):
  from configs import base
  config = base.base_config()
  config.data.update(data)
  return config


def test_batch_not_divisible_by_processes_and_tiny_eval_split_are_clear_errors():
  with pytest.raises(ValueError, match='not divisible by the 3 processes'):
    make(0, 3)
  with pytest.raises(ValueError, match='fewer than one batch'):
    make(train=False, n=5, batch=8)

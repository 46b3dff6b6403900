"""map_in_batches: equal batches (the last zero-padded), outputs in order with the padding dropped."""

import numpy as np

from lgm import batching


def test_outputs_match_one_call_and_every_batch_has_the_same_size():
  inputs = np.arange(7 * 2, dtype=np.float32).reshape(7, 2)
  sizes = []

  def fn(params, batch):
    sizes.append(len(batch))
    return {'sum': batch.sum(-1) + params, 'first': batch[:, 0]}

  out = batching.map_in_batches(fn, 10.0, inputs, 3)
  assert sizes == [3, 3, 3]
  np.testing.assert_array_equal(out['sum'], inputs.sum(-1) + 10.0)
  np.testing.assert_array_equal(out['first'], inputs[:, 0])


def test_a_pytree_of_inputs_is_split_along_its_shared_leading_axis():
  inputs = {'x': np.arange(5, dtype=np.float32), 'y': np.arange(10, dtype=np.int32).reshape(5, 2)}
  firsts = []

  def fn(params, batch):
    firsts.append(int(batch['y'][0, 0]))
    return batch['x'][:, None] * batch['y'] + params

  out = batching.map_in_batches(fn, 1, inputs, 2)
  assert firsts == [0, 4, 8]  # each batch starts at its own first real example
  np.testing.assert_array_equal(out, inputs['x'][:, None] * inputs['y'] + 1)

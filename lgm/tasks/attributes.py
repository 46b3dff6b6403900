"""Reading a dataset's attributes (shapes: colour, shape, size, position), or its labels, from images.

Trained on real renders, it is the judge of text-to-image fidelity: `lgm.evaluation.fidelity` asks it
what a generated image shows and compares that with what the prompt asked for.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from lgm import batching, xla
from lgm.models import build_model
from lgm.tasks.base import Task

PyTree = Any


class AttributeTask(Task):
  """Cross-entropy over every attribute of the dataset; accuracy per attribute and all at once."""

  @classmethod
  def needs(cls, config: ml_collections.ConfigDict) -> tuple[str, ...]:
    return ('attributes',)

  def __init__(self, config: ml_collections.ConfigDict, attributes: dict[str, Sequence[str]]):
    """`attributes`: attribute name -> the names of its values, in label order (the dataset's info)."""
    if not attributes:
      raise ValueError(f'{config.data.dataset} has neither attributes nor labels (two or more classes) to '
                       "classify; leave the classifier stage out of the job (and set report.classifier_stage='').")
    self.attributes = list(attributes)
    self.value_names = {name: tuple(values) for name, values in attributes.items()}
    self.model = build_model(config.model, config.train.compute_dtype,
                             num_classes=tuple(len(v) for v in attributes.values()))
    size, channels = config.data.image_size, config.data.channels
    self.image_shape = (size, size, channels)

  def init(self, rng: jax.Array) -> PyTree:
    return self.model.init(rng, jnp.zeros((1, *self.image_shape), jnp.float32))['params']

  def batch_spec(self, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
    labels = {name: jax.ShapeDtypeStruct((batch_size,), jnp.int32) for name in self.attributes}
    return {**super().batch_spec(batch_size), **labels}

  def logits(self, params: PyTree, images: jax.Array) -> list[jax.Array]:
    return self.model.apply({'params': params}, images)

  @functools.partial(xla.jit, static_argnums=0)
  def predict(self, params: PyTree, images: jax.Array) -> dict[str, jax.Array]:
    """Attribute name -> predicted value index (batch,)."""
    return {name: logits.argmax(-1) for name, logits in zip(self.attributes, self.logits(params, images))}

  def _terms(self, params, batch):
    logits = self.logits(params, batch['image'])
    losses, right = {}, {}
    for name, lg in zip(self.attributes, logits):
      labels = batch[name]
      losses[name] = (jax.nn.logsumexp(lg, -1) - jnp.take_along_axis(lg, labels[:, None], -1)[:, 0]).mean()
      right[name] = lg.argmax(-1) == labels
    accuracy = {f'accuracy_{n}': r.mean() for n, r in right.items()}
    accuracy['accuracy_all'] = jnp.stack(list(right.values())).all(axis=0).mean()
    return sum(losses.values()), accuracy

  def loss(self, params: PyTree, batch: dict, rng: jax.Array, train: bool = True):
    del rng, train
    return self._terms(params, batch)

  def evaluate(self, params: PyTree, batch: dict, rng: jax.Array) -> dict[str, jax.Array]:
    del rng
    loss, accuracy = self._terms(params, batch)
    return {'loss': loss, **accuracy}


def read_attributes(task: AttributeTask, params: PyTree, images: np.ndarray, batch_size: int = 250) -> dict[str, np.ndarray]:
  """Predicted attribute indices of many images (numpy), in fixed-size batches."""
  return batching.map_in_batches(task.predict, params, images, batch_size)

"""The task protocol: what the one trainer, the CLIs and the pipeline may ask of any task.

A task is what a model learns and how it is measured. It is built from its config and the trained
parts it depends on, passed in as objects (a `Trained` autoencoder, a text tower, a tokenizer); it never
opens a work directory. `lgm.stages` is the layer that reads runs from disk and builds tasks.

Subclasses implement `init`, `loss` and `evaluate`; everything else has a default here.
"""

from __future__ import annotations

import dataclasses
import types
from typing import Any, ClassVar, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

PyTree = Any


@dataclasses.dataclass
class Trained:
  """A trained model: its config, its task and the parameters of one checkpoint step."""
  config: ml_collections.ConfigDict
  task: Task
  params: PyTree
  step: int


class Task:
  """Base class of every task; the defaults suit an image-only task with no generator."""

  image_shape: tuple[int, int, int]
  # Options of `sample` a user may set from the command line (e.g. 'sampler', 'steps').
  sample_flags: ClassVar[tuple[str, ...]] = ()
  # The default settings of `sample`'s sampler (lgm.sampling's names: method, num_steps, ...); read-only here,
  # score tasks set their own from the config; empty for a task that samples without one (a VAE's prior).
  sampling: Mapping[str, Any] = types.MappingProxyType({})
  # True where images are generated from text by `lgm.pipeline.TextToImage` rather than `sample`.
  generates_from_text: ClassVar[bool] = False
  # The kind of semantic space the model learns, for `experiments.explore`: 'image' (encode / decode),
  # 'text_image' (encode_text / encode_images), or None.
  semantic_space: ClassVar[str | None] = None

  @classmethod
  def needs(cls, config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """The constructor's arguments beyond `config`, in order; `lgm.stages` provides them by these names."""
    del config
    return ()

  # --- what the trainer calls ---------------------------------------------------------------------
  def init(self, rng: jax.Array) -> PyTree:
    """Fresh parameters."""
    raise NotImplementedError

  def loss(self, params: PyTree, batch: dict, rng: jax.Array, train: bool = True) -> tuple[jax.Array, dict]:
    """(scalar loss, dict of scalar metrics); jitted by the trainer."""
    raise NotImplementedError

  def evaluate(self, params: PyTree, batch: dict, rng: jax.Array) -> dict[str, jax.Array]:
    """Scalar metrics (averaged over the eval batches) and per-example arrays (handed to `summarize`)."""
    raise NotImplementedError

  def prepare_batch(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Host-side work on each process-local numpy batch before it is sharded (e.g. tokenizing)."""
    return batch

  def batch_spec(self, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
    """The device fields of a training batch, to compile without data."""
    return {'image': jax.ShapeDtypeStruct((batch_size, *self.image_shape), jnp.float32)}

  def summarize(self, params: PyTree, outputs: dict[str, np.ndarray]) -> dict[str, float]:
    """Whole-set metrics from `evaluate`'s per-example arrays, concatenated over the eval set."""
    del params, outputs
    return {}

  def images(self, params: PyTree, batch: dict, rng: jax.Array) -> dict[str, jax.Array]:
    """Name -> image batch in [-1, 1], saved as grids in DIR/samples during training."""
    del params, batch, rng
    return {}

  # --- what the sample CLI calls ------------------------------------------------------------------
  def sample(self, params: PyTree, rng: jax.Array, num: int, **options: Any) -> tuple[jax.Array, int]:
    """(num images in [-1, 1], network evaluations per image) from the model's generator."""
    del params, rng, num, options
    raise ValueError(f'a {type(self).__name__} model generates no images.')


class TextConditioned(Task):
  """A task that reads captions: tokenized on the host, sent to the devices as `tokens`."""

  tokenizer: Any

  def tokenize(self, texts: str | list[str]) -> np.ndarray:
    return self.tokenizer(texts)

  def prepare_batch(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {**batch, 'tokens': self.tokenize(list(batch['caption']))}

  def batch_spec(self, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
    return {**super().batch_spec(batch_size),
            'tokens': jax.ShapeDtypeStruct((batch_size, self.tokenizer.context_length), jnp.int32)}

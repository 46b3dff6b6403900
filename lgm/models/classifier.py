"""A small convolutional classifier with one head per attribute: the evaluation network that reads
colour, shape, size and position back from images (real or generated)."""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any


class AttributeClassifier(nn.Module):
  """Images (B, H, W, C) in [-1, 1] -> one logits array per attribute. No global pooling: position is
  an attribute, so the last feature map is flattened rather than averaged."""
  num_classes: Sequence[int]
  ch: int = 32
  ch_mult: Sequence[int] = (1, 2, 4)
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> list[jax.Array]:
    del train
    x = images.astype(self.dtype)
    for mult in self.ch_mult:
      x = nn.swish(nn.Conv(self.ch * mult, (3, 3), dtype=self.dtype)(x))
      x = nn.swish(nn.Conv(self.ch * mult, (3, 3), strides=(2, 2), dtype=self.dtype)(x))
    x = nn.swish(nn.Dense(4 * self.ch, dtype=self.dtype)(x.reshape(x.shape[0], -1)))
    return [nn.Dense(n, dtype=jnp.float32, name=f'head_{i}')(x) for i, n in enumerate(self.num_classes)]

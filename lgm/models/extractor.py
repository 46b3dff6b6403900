"""The watermark extractor of the signature stage: an image -> one logit per bit of the signature.

A HiDDeN-style reader (Zhu et al. 2018): convolutions that halve the resolution level by level, then an
average over all positions and a linear map to the bits. The average makes it read an image of any size,
so a cropped image is read as it is, without resizing it back. Each channel of the input is first
standardised over the image: a signature cannot be a global tint or brightness (which real images have
too, and which an edit changes), only a pattern.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any


class WatermarkExtractor(nn.Module):
  """Images (B, H, W, C) in [-1, 1] -> (B, bits) float32 logits; bit i reads 1 where logit i > 0."""
  bits: int
  ch: int = 32
  ch_mult: Sequence[int] = (1, 2, 4)
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    mean = images.mean(axis=(1, 2), keepdims=True)
    x = (images - mean) / jnp.sqrt(jnp.square(images - mean).mean(axis=(1, 2), keepdims=True) + 1e-4)
    x = nn.gelu(nn.Conv(self.ch, (3, 3), dtype=self.dtype)(x.astype(self.dtype)))
    for mult in self.ch_mult:
      x = nn.gelu(nn.Conv(self.ch * mult, (3, 3), strides=(2, 2), dtype=self.dtype)(x))
      x = nn.gelu(nn.Conv(self.ch * mult, (3, 3), dtype=self.dtype)(x))
    return nn.Dense(self.bits, dtype=jnp.float32)(x.mean(axis=(1, 2)))

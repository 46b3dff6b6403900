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


class WatermarkEmbedder(nn.Module):
  """HiDDeN's encoder: (images, message as +-1 per bit) -> the images with the message added.

  Each bit has a learned carrier, an image-sized pattern (spread-spectrum watermarking): the message's pattern
  is the carriers' sum signed by the bits, added at a learned strength, and refined by convolutions that also
  see the image. Convolutions alone, given the bits as constant planes, could only add constants, which the
  extractor's per-image standardisation removes. Sized for one image size; it only teaches the extractor to
  read any message (`lgm.tasks.signature`), and never signs anything."""
  bits: int
  ch: int = 32
  depth: int = 2
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, message: jax.Array) -> jax.Array:
    carriers = self.param('carriers', nn.initializers.normal(1.0), (self.bits, *images.shape[1:]))
    strength = self.param('strength', nn.initializers.constant(0.02), ())
    pattern = jnp.einsum('bk,khwc->bhwc', message, carriers) / jnp.sqrt(self.bits)
    x = jnp.concatenate([images, pattern], axis=-1).astype(self.dtype)
    for _ in range(self.depth):
      x = nn.gelu(nn.Conv(self.ch, (3, 3), dtype=self.dtype)(x))
    residual = nn.Conv(images.shape[-1], (3, 3), dtype=jnp.float32, kernel_init=nn.initializers.zeros)(x)
    return images + strength * pattern + residual

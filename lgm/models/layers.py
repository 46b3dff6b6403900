"""Building blocks shared by lgm's convolutional networks."""

from __future__ import annotations

import math
from typing import Any

import einops
import flax.linen as nn
import jax.numpy as jnp

Dtype = Any


def group_norm(channels: int, dtype: Dtype = jnp.float32) -> nn.GroupNorm:
  """GroupNorm with groups of at least 4 channels (32 groups once channels >= 128)."""
  return nn.GroupNorm(num_groups=math.gcd(max(channels // 4, 1), 32), dtype=dtype)


def space_to_depth(x: jnp.ndarray, factor: int) -> jnp.ndarray:
  """(B, H, W, C) -> (B, H/f, W/f, f*f*C): a free first downsampling (no convolution at full size)."""
  if factor == 1:
    return x
  return einops.rearrange(x, 'b (h p) (w q) c -> b h w (p q c)', p=factor, q=factor)


def depth_to_space(x: jnp.ndarray, factor: int) -> jnp.ndarray:
  """Inverse of `space_to_depth`."""
  if factor == 1:
    return x
  return einops.rearrange(x, 'b h w (p q c) -> b (h p) (w q) c', p=factor, q=factor)


class ResBlock(nn.Module):
  """Pre-activation residual block: (GroupNorm, swish, 3x3 conv) twice, 1x1 skip on a width change."""
  out_channels: int
  dropout: float = 0.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    h = nn.swish(group_norm(x.shape[-1], self.dtype)(x))
    h = nn.Conv(self.out_channels, (3, 3), dtype=self.dtype)(h)
    h = nn.swish(group_norm(self.out_channels, self.dtype)(h))
    h = nn.Dropout(self.dropout, deterministic=not train)(h)
    h = nn.Conv(self.out_channels, (3, 3), dtype=self.dtype, kernel_init=nn.initializers.zeros)(h)
    if x.shape[-1] != self.out_channels:
      x = nn.Conv(self.out_channels, (1, 1), dtype=self.dtype)(x)
    return x + h


class SpatialAttention(nn.Module):
  """Single-head self-attention over all spatial positions, residual, zero-initialised output."""
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    b, h, w, c = x.shape
    y = group_norm(c, self.dtype)(x).reshape(b, h * w, c)
    q, k, v = (nn.Dense(c, dtype=self.dtype, name=n)(y) for n in ('query', 'key', 'value'))
    weights = nn.softmax(jnp.einsum('bqc,bkc->bqk', q, k) / math.sqrt(c), axis=-1)
    y = jnp.einsum('bqk,bkc->bqc', weights, v)
    y = nn.Dense(c, dtype=self.dtype, kernel_init=nn.initializers.zeros, name='out')(y)
    return x + y.reshape(b, h, w, c)


class Downsample(nn.Module):
  """Halve the resolution with a stride-2 3x3 convolution."""
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    return nn.Conv(x.shape[-1], (3, 3), strides=(2, 2), dtype=self.dtype)(x)


class Upsample(nn.Module):
  """Double the resolution: nearest-neighbour resize, then a 3x3 convolution."""
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    return nn.Conv(x.shape[-1], (3, 3), dtype=self.dtype)(x)

"""Building blocks shared by lgm's convolutional networks."""

from __future__ import annotations

import functools
import math
from typing import Any, Sequence

import einops
import flax.linen as nn
import jax.numpy as jnp
import numpy as np
from jax import lax

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


def _fir_taps(kernel: Sequence[int], gain: float) -> np.ndarray:
  """Separable 1-D taps -> normalised 2-D FIR filter whose DC gain is `gain`."""
  taps = np.outer(kernel, kernel).astype(np.float32)
  return taps * (gain / taps.sum())


def upfirdn2d(x: jnp.ndarray, taps: np.ndarray, up: int = 1, down: int = 1,
              pad: tuple[int, int] = (0, 0)) -> jnp.ndarray:
  """StyleGAN2's upfirdn on NHWC, per channel: insert up-1 zeros after each pixel, pad (low, high),
  convolve with the 2-D FIR `taps`, keep every `down`-th pixel. One depthwise XLA convolution."""
  channels = x.shape[-1]
  filt = jnp.asarray(taps[::-1, ::-1].copy(), x.dtype)  # convolution, not correlation
  filt = jnp.tile(filt[:, :, None, None], (1, 1, 1, channels))
  padding = ((pad[0], pad[1] + up - 1),) * 2  # lhs_dilation leaves no zeros after the last pixel
  return lax.conv_general_dilated(x, filt, window_strides=(down, down), padding=padding,
                                  lhs_dilation=(up, up), feature_group_count=channels,
                                  dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def fir_upsample(x: jnp.ndarray, kernel: Sequence[int] = (1, 3, 3, 1)) -> jnp.ndarray:
  """Double the resolution with an anti-aliasing FIR filter (nearest-neighbour for kernel (1, 1))."""
  p = len(kernel) - 2
  return upfirdn2d(x, _fir_taps(kernel, 4.0), up=2, pad=((p + 1) // 2 + 1, p // 2))


def fir_downsample(x: jnp.ndarray, kernel: Sequence[int] = (1, 3, 3, 1)) -> jnp.ndarray:
  """Halve the resolution with an anti-aliasing FIR filter (2x2 average pooling for kernel (1, 1))."""
  p = len(kernel) - 2
  return upfirdn2d(x, _fir_taps(kernel, 1.0), down=2, pad=((p + 1) // 2, p // 2))


class FIRConv(nn.Module):
  """Convolution fused with FIR resampling (StyleGAN2): up = transposed stride-2 conv then FIR filter,
  down = FIR filter then stride-2 conv, so the signal is padded once and never aliased. Without
  `up`/`down` it is a plain 'SAME' convolution. Parameters are those of `nn.Conv` (kernel, bias)."""
  features: int
  kernel_size: int = 3
  up: bool = False
  down: bool = False
  fir_kernel: Sequence[int] = (1, 3, 3, 1)
  use_bias: bool = True
  kernel_init: Any = nn.initializers.lecun_normal()
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    if self.up and self.down:
      raise ValueError('FIRConv: up and down are exclusive')
    k = self.kernel_size
    w = self.param('kernel', self.kernel_init, (k, k, x.shape[-1], self.features)).astype(self.dtype)
    x = x.astype(self.dtype)
    conv = functools.partial(lax.conv_general_dilated, dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    p = len(self.fir_kernel) - 2
    if self.up:  # zero-stuffed ("transposed") full convolution: (2H + k - 2)^2, then filter to (2H)^2
      x = conv(x, w, window_strides=(1, 1), padding=((k - 1, k - 1),) * 2, lhs_dilation=(2, 2))
      x = upfirdn2d(x, _fir_taps(self.fir_kernel, 4.0), pad=((p - k + 2) // 2 + 1, (p - k + 1) // 2 + 1))
    elif self.down:
      x = upfirdn2d(x, _fir_taps(self.fir_kernel, 1.0), pad=((p + k) // 2, (p + k - 1) // 2))
      x = conv(x, w, window_strides=(2, 2), padding='VALID')
    else:
      x = conv(x, w, window_strides=(1, 1), padding='SAME')
    if self.use_bias:
      x = x + self.param('bias', nn.initializers.zeros, (self.features,)).astype(self.dtype)
    return x

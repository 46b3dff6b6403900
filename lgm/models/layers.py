"""The building blocks of lgm's convolutional networks: the autoencoder and the score U-Nets.

One GroupNorm rule, one residual block, one attention block and one resampling module (with FIR
filtering beside them) serve every network. The networks differ in their initialisation, so each
block that owns weights takes `kernel_init`, a map from a layer's init scale to its initialiser:
`ddpm_init` (score_sde's, the score networks') or `lecun_init` (flax's default, the autoencoder's).
The scales themselves are DDPM's: 1 for most layers, 0.1 for 1x1 shortcuts of DDPM blocks and for
attention's q/k/v, `init_scale` for the layers that close a residual branch.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Sequence

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from lgm import xla
from lgm.models import winograd

Dtype = Any
Initializer = nn.initializers.Initializer
Init = Callable[[float], Initializer]


def ddpm_init(scale: float = 1.0) -> Initializer:
  """DDPM's initialiser: fan-average uniform variance scaling; scale 0 means "almost zero" (1e-10)."""
  return nn.initializers.variance_scaling(max(scale, 1e-10), 'fan_avg', 'uniform')


def lecun_init(scale: float = 1.0) -> Initializer:
  """flax's default (LeCun normal) at any non-zero scale, and exact zeros at scale 0: the initialisation
  the autoencoder has always been trained with."""
  return nn.initializers.zeros if scale == 0 else nn.initializers.lecun_normal()


def _group_sums(t: jnp.ndarray, groups: int) -> jnp.ndarray:
  return t.reshape(t.shape[0], groups, -1).sum(-1)  # (B, C) -> (B, G)


def _per_channel(t: jnp.ndarray, channels: int) -> jnp.ndarray:
  return jnp.repeat(t, channels // t.shape[1], axis=1)  # (B, G) -> (B, C)


def _over_positions(t: jnp.ndarray, ndim: int) -> jnp.ndarray:
  return t.reshape(t.shape[:1] + (1,) * (ndim - 2) + t.shape[1:])  # (B, C) -> broadcastable to (B, ..., C)


def _group_norm_forward(x, scale, bias, groups, epsilon):
  positions = tuple(range(1, x.ndim - 1))
  count = math.prod(x.shape[1:-1]) * (x.shape[-1] // groups)
  mean = _group_sums(x.sum(positions), groups) / count
  var = jnp.maximum(_group_sums(jnp.square(x).sum(positions), groups) / count - jnp.square(mean), 0.0)
  rstd = lax.rsqrt(var + epsilon)
  expand = lambda t: _over_positions(_per_channel(t, x.shape[-1]), x.ndim)
  y = (x - expand(mean)) * (expand(rstd) * scale) + bias
  return y, (x, scale, mean, rstd)


def _group_norm_backward(groups, epsilon, saved, dy):
  x, scale, mean, rstd = saved
  positions = tuple(range(1, x.ndim - 1))
  count = math.prod(x.shape[1:-1]) * (x.shape[-1] // groups)
  mean, rstd = _per_channel(mean, x.shape[-1]), _per_channel(rstd, x.shape[-1])  # (B, C)
  sum_dy = dy.sum(positions)  # (B, C): the two sums every gradient below is made of
  sum_dy_xhat = ((dy * x).sum(positions) - mean * sum_dy) * rstd
  expand = lambda t: _over_positions(t, x.ndim)
  mean_g = _per_channel(_group_sums(sum_dy * scale, groups) / count, x.shape[-1])
  mean_g_xhat = _per_channel(_group_sums(sum_dy_xhat * scale, groups) / count, x.shape[-1])
  xhat = (x - expand(mean)) * expand(rstd)
  dx = expand(rstd) * (dy * scale - expand(mean_g) - xhat * expand(mean_g_xhat))
  return dx, sum_dy_xhat.sum(0), sum_dy.sum(0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def group_normalize(x: jnp.ndarray, scale: jnp.ndarray, bias: jnp.ndarray, groups: int,
                    epsilon: float) -> jnp.ndarray:
  """Group normalisation of float32 `x` (B, ..., C) over all axes but the batch, per group of C / `groups`
  channels, then `scale` and `bias` per channel. The variance is E[x^2] - E[x]^2, as flax's GroupNorm computes
  it by default. Its gradient is written out: it is two per-channel sums and one elementwise pass, where
  differentiating the forward pass gave XLA about twice the operations (1.3-2x the time on 2 CPU cores)."""
  return _group_norm_forward(x, scale, bias, groups, epsilon)[0]


group_normalize.defvjp(_group_norm_forward, _group_norm_backward)


class GroupNorm(nn.Module):
  """flax's `nn.GroupNorm` (the same parameters, `scale` and `bias`, and the same result) by
  `group_normalize`: statistics in float32, the result in `dtype`."""
  num_groups: int
  epsilon: float = 1e-6
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    channels = x.shape[-1]
    scale = self.param('scale', nn.initializers.ones, (channels,), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (channels,), jnp.float32)
    y = group_normalize(x.astype(jnp.float32), scale, bias, self.num_groups, self.epsilon)
    return y.astype(self.dtype)


def group_norm(channels: int, dtype: Dtype = jnp.float32, groups: int | None = None) -> GroupNorm:
  """GroupNorm with `groups` groups, or by default min(C / 4, 32) as in score_sde, reduced to a divisor of C
  where it is not one (Stable Diffusion's autoencoder: always 32)."""
  if groups is None:
    groups = math.gcd(max(min(channels // 4, 32), 1), channels)
  elif channels % groups:
    raise ValueError(f'{channels} channels do not split into {groups} normalisation groups; change one of them.')
  return GroupNorm(num_groups=groups, dtype=dtype)


def conv3x3(features: int, kernel_init: Initializer, dtype: Dtype, stride: int = 1,
            algorithm: str = 'xla') -> nn.Conv:
  """A 3x3 'SAME' convolution; `algorithm` as `winograd.conv_general_dilated` (same parameters either way)."""
  return nn.Conv(features, (3, 3), strides=(stride, stride), kernel_init=kernel_init, dtype=dtype,
                 conv_general_dilated=winograd.conv_general_dilated(algorithm))


def norm_act_conv(h: jnp.ndarray, features: int, kernel_init: Initializer, dtype: Dtype,
                  norm_groups: int | None = None, algorithm: str = 'xla') -> jnp.ndarray:
  """GroupNorm, swish, 3x3 conv: the output head of the networks (and of the score nets' pyramids)."""
  conv = conv3x3(features, kernel_init, dtype, algorithm=algorithm)
  return conv(nn.swish(group_norm(h.shape[-1], dtype, norm_groups)(h)))


def skip_sum(x: jnp.ndarray, h: jnp.ndarray, rescale: bool) -> jnp.ndarray:
  """Residual sum; divided by sqrt(2) with `rescale` so that variances do not grow with depth. Stored
  (`xla.materialize`): on CPU XLA otherwise recomputes the residual stream's gradient in each consumer."""
  return xla.materialize((x + h) / math.sqrt(2.0) if rescale else x + h)


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


# --- resampling -------------------------------------------------------------------------------------

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


def resample(x: jnp.ndarray, up: bool, fir: bool = False,
             fir_kernel: Sequence[int] = (1, 3, 3, 1)) -> jnp.ndarray:
  """Double (`up`) or halve the resolution without weights: FIR-filtered, or nearest-neighbour / 2x2 average
  (the FIR results for kernel (1, 1), computed without a convolution)."""
  if fir:
    return fir_upsample(x, tuple(fir_kernel)) if up else fir_downsample(x, tuple(fir_kernel))
  if up:
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
  b, h, w, c = x.shape
  return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


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
  kernel_init: Initializer = nn.initializers.lecun_normal()
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


class Resample(nn.Module):
  """Double (`up`) or halve the resolution: `resample`, or with a 3x3 conv to `out_ch` channels
  (FIR: fused into `FIRConv`; otherwise nearest-neighbour then conv, or a stride-2 conv)."""
  up: bool
  out_ch: int | None = None
  with_conv: bool = False
  fir: bool = False
  fir_kernel: Sequence[int] = (1, 3, 3, 1)
  kernel_init: Init = ddpm_init
  conv_algorithm: str = 'xla'  # `winograd.ALGORITHMS`
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    if not self.with_conv:
      return resample(x, self.up, self.fir, self.fir_kernel)
    out_ch, init = self.out_ch or x.shape[-1], self.kernel_init(1.0)
    if self.fir:
      return FIRConv(out_ch, up=self.up, down=not self.up, fir_kernel=tuple(self.fir_kernel),
                     kernel_init=init, dtype=self.dtype)(x)
    if self.up:
      return conv3x3(out_ch, init, self.dtype, algorithm=self.conv_algorithm)(resample(x, up=True))
    return conv3x3(out_ch, init, self.dtype, stride=2)(x)


# --- residual and attention blocks ------------------------------------------------------------------

class ResBlock(nn.Module):
  """Pre-activation residual block: (GroupNorm, swish, 3x3 conv) twice, with a per-channel bias from the
  conditioning vector `temb` in between when one is given (None: no projection of it exists).

  kind 'biggan': BigGAN's block, which may also resample (`up` / `down`, both branches, see `resample`)
  and has a 1x1 shortcut whenever the width or the resolution changes. kind 'ddpm': Ho et al.'s block,
  1x1 shortcut at init scale 0.1 on a width change only. The closing conv starts at `init_scale`
  (0: the residual branch starts silent).
  """
  out_ch: int | None = None
  kind: str = 'biggan'
  up: bool = False
  down: bool = False
  dropout: float = 0.0
  fir: bool = False
  fir_kernel: Sequence[int] = (1, 3, 3, 1)
  skip_rescale: bool = False
  init_scale: float = 0.0
  kernel_init: Init = ddpm_init
  norm_groups: int | None = None  # None: `group_norm`'s rule
  conv_algorithm: str = 'xla'  # `winograd.ALGORITHMS`
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, temb: jnp.ndarray | None = None, train: bool = False) -> jnp.ndarray:
    if self.kind not in ('biggan', 'ddpm'):
      raise ValueError(f"ResBlock kind {self.kind!r}; valid: 'biggan', 'ddpm'")
    in_ch = x.shape[-1]
    out_ch = self.out_ch or in_ch
    h = nn.swish(group_norm(in_ch, self.dtype, self.norm_groups)(x))
    if self.up or self.down:
      h, x = (resample(y, self.up, self.fir, self.fir_kernel) for y in (h, x))
    h = conv3x3(out_ch, self.kernel_init(1.0), self.dtype, algorithm=self.conv_algorithm)(h)
    if temb is not None:
      bias = dense(out_ch, kernel_init=self.kernel_init(1.0), dtype=self.dtype)(nn.swish(temb))
      h = h + bias[:, None, None, :]
    h = nn.swish(group_norm(out_ch, self.dtype, self.norm_groups)(h))
    h = nn.Dropout(self.dropout, deterministic=not train)(h)
    h = conv3x3(out_ch, self.kernel_init(self.init_scale), self.dtype, algorithm=self.conv_algorithm)(h)
    if in_ch != out_ch or (self.kind == 'biggan' and (self.up or self.down)):
      shortcut_scale = 0.1 if self.kind == 'ddpm' else 1.0
      x = dense(out_ch, kernel_init=self.kernel_init(shortcut_scale), dtype=self.dtype)(x)
    return skip_sum(x, h, self.skip_rescale)


def attend(q: jnp.ndarray, k: jnp.ndarray, v: jnp.ndarray, num_heads: int,
           mask: jnp.ndarray | None = None) -> jnp.ndarray:
  """Multi-head dot-product attention, (B, Lq, C) x (B, Lk, C) -> (B, Lq, C); softmax in float32.

  The softmax is normalised after the weighted sum of values (a (B, Lq, C) division, not a (B, H, Lq, Lk)
  one), and queries are scaled before the product: on XLA:CPU 8x8 self-attention ran ~20% faster (forward
  and backward with its projections). Masked keys (mask (B, Lk) False) get weight exactly 0, also when a
  whole row is masked."""
  b, lq, c = q.shape
  split = lambda t: t.reshape(b, t.shape[1], num_heads, c // num_heads)
  q, k, v = split(q * (1 / math.sqrt(c // num_heads))), split(k), split(v)
  logits = jnp.einsum('bqhd,bkhd->bhqk', q, k).astype(jnp.float32)
  valid = None if mask is None else mask[:, None, None, :]
  if valid is not None:
    logits = jnp.where(valid, logits, jnp.finfo(jnp.float32).min)
  weights = jnp.exp(logits - lax.stop_gradient(logits.max(-1, keepdims=True)))  # in (0, 1], unnormalised
  if valid is not None:
    weights = jnp.where(valid, weights, 0.0)
  total = weights.sum(-1)  # (B, H, Lq); 0 where a whole row is masked
  if valid is not None:
    total = jnp.where(total > 0, total, 1.0)
  out = jnp.einsum('bhqk,bkhd->bqhd', weights.astype(v.dtype), v)
  return (out / jnp.moveaxis(total, 1, 2)[..., None].astype(out.dtype)).reshape(b, lq, c)


@jax.custom_vjp
def matmul(x: jnp.ndarray, kernel: jnp.ndarray) -> jnp.ndarray:
  """x (..., C) @ kernel (C, O). Its kernel gradient is x^T g with x^T stored first: left to itself XLA:CPU
  laid out g transposed and ran that product 4-5x below its matmul rate inside a train step."""
  return jnp.dot(x, kernel)


def _matmul_forward(x, kernel):
  return jnp.dot(x, kernel), (x, kernel)


def _matmul_backward(saved, g):
  x, kernel = saved
  rows = xla.materialize(x.reshape(-1, x.shape[-1]).T)
  return jnp.dot(g, kernel.T), jnp.dot(rows, g.reshape(-1, g.shape[-1])).astype(kernel.dtype)


matmul.defvjp(_matmul_forward, _matmul_backward)


def dense_dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
  """`nn.Dense(dot_general=...)`: its product by `matmul`."""
  (contracting, batch) = dimension_numbers
  if (rhs.ndim != 2 or contracting != ((lhs.ndim - 1,), (0,)) or batch != ((), ()) or precision
      or preferred_element_type):
    return lax.dot_general(lhs, rhs, dimension_numbers, precision, preferred_element_type=preferred_element_type)
  return matmul(lhs, rhs)


# nn.Dense (same class, parameter names and auto-names) with its product by `matmul`: lgm's dense layers.
dense = functools.partial(nn.Dense, dot_general=dense_dot_general)


class DenseParams(nn.Module):
  """The parameters of an `nn.Dense` (the same names, shapes and initialisation) without its matmul, for
  projections of one input that `project` runs as one."""
  features: int
  kernel_init: Initializer

  @nn.compact
  def __call__(self, in_features: int) -> tuple[jnp.ndarray, jnp.ndarray]:
    return (self.param('kernel', self.kernel_init, (in_features, self.features), jnp.float32),
            self.param('bias', nn.initializers.zeros_init(), (self.features,), jnp.float32))


def project(x: jnp.ndarray, params: Sequence[tuple[jnp.ndarray, jnp.ndarray]], dtype: Dtype) -> list[jnp.ndarray]:
  """`x` through several dense layers (kernel, bias) as one matmul with their kernels side by side: on
  XLA:CPU attention's three narrow projections (48 or 96 wide) ran faster as one, forward and backward."""
  kernels, biases = zip(*params)
  y = matmul(x.astype(dtype), jnp.concatenate(kernels, axis=1).astype(dtype))
  y = y + jnp.concatenate(biases).astype(dtype)
  return jnp.split(y, np.cumsum([k.shape[1] for k in kernels])[:-1].tolist(), axis=-1)


class AttnBlock(nn.Module):
  """Self-attention over all positions (DDPM's block), plus cross-attention to `context` when given.

  Each sublayer: GroupNorm, q/k/v projections, `attend`, an output projection at `init_scale` (0: the
  sublayer starts as the identity), and a residual sum (rescaled with `skip_rescale`). Positions where
  `context_mask` (B, L) is False are ignored."""
  num_heads: int = 1
  skip_rescale: bool = False
  init_scale: float = 0.0
  kernel_init: Init = ddpm_init
  norm_groups: int | None = None  # None: `group_norm`'s rule
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, context: jnp.ndarray | None = None,
               context_mask: jnp.ndarray | None = None) -> jnp.ndarray:
    b, height, width, c = x.shape
    if c % self.num_heads:
      raise ValueError(f'{c} channels do not split into {self.num_heads} heads')

    def sublayer(x, kv_source, mask, name):
      h = group_norm(c, self.dtype, self.norm_groups)(x).reshape(b, height * width, c)
      query, key, value = (DenseParams(c, self.kernel_init(0.1), name=f'{name}_{n}')
                           for n in ('query', 'key', 'value'))
      if kv_source is None:
        q, k, v = project(h, (query(c), key(c), value(c)), self.dtype)
      else:
        (q,) = project(h, (query(c),), self.dtype)
        k, v = project(kv_source, (key(kv_source.shape[-1]), value(kv_source.shape[-1])), self.dtype)
      h = attend(q, k, v, self.num_heads, mask)
      h = dense(c, kernel_init=self.kernel_init(self.init_scale), dtype=self.dtype, name=f'{name}_out')(h)
      return skip_sum(x, h.reshape(x.shape), self.skip_rescale)

    x = sublayer(x, None, None, 'self')
    if context is not None:
      x = sublayer(x, context, context_mask, 'cross')
    return x

"""Score networks of Song et al. 2021 (score SDEs): NCSN++ / DDPM++, and Ho et al.'s DDPM U-Net.

`NCSNpp` is score_sde's `ncsnpp` model: one U-Net whose fields select the paper's variants.
DDPM++ = residual blocks from BigGAN, rescaled skips, sinusoidal time embedding, plain resampling
(VP / sub-VP SDEs); NCSN++ adds FIR (anti-aliased) resampling, an input pyramid and Gaussian
Fourier features of log(sigma), and divides its output by sigma (VE SDE). `DDPM` is score_sde's
`ddpm` model, Ho et al. 2020's network, expressed as NCSNpp defaults. With the paper's CIFAR-10
settings the parameter counts match the reference code (61.80M, 62.76M, 106.63M, 107.59M and
35.22M; pinned to the unit in tests/test_score_unet.py). The blocks are lgm.models.layers', at their
default DDPM initialisation (`layers.ddpm_init`).

Calling convention (all models here):
  model.apply({'params': p}, x, time_cond, train=False, labels=None, vector=None, context=None,
              context_mask=None, rngs={'dropout': r}) -> same shape as x (B, H, W, C)
`time_cond` (B,) is sigma for the 'fourier' embedding (it embeds log sigma) and the continuous
timestep t * 999 for 'positional'. `scale_by_sigma` divides the output by `time_cond`, so use it
only where `time_cond` is sigma (VE). Data scaling ([0, 1] or [-1, 1]) is the task's concern.

Conditioning hooks beyond time, all off by default (then no parameter exists for them):
  num_classes > 0: `labels` (B,) int -> nn.Embed, added to the time embedding;
  vector_dim > 0:  `vector` (B, vector_dim) -> Dense, added to the time embedding;
  context_dim > 0: every attention block (those at `attn_resolutions` and the middle one) gains a
    cross-attention sublayer whose keys/values come from `context` (B, L, context_dim); positions
    where `context_mask` (B, L) is False are ignored exactly (with an all-False row the sublayer adds
    only its output bias: the natural "null" context for classifier-free guidance).
`num_heads` splits every attention layer's channels into heads (1 in the reference networks).

`space_to_depth` = s > 1 folds s x s pixel blocks into channels before the first convolution and
unfolds the output, so a CPU-sized model runs its convolutions at 1/s resolution. Note that
`attn_resolutions` are feature-map sizes, i.e. image size / s at the top level.

`conv_algorithm` picks how the 3x3 stride-1 convolutions are computed, not what they compute: 'xla' (XLA's
convolution), 'winograd' (F(2x2, 3x3) where it pays: `lgm.models.winograd.applies`; float32) or 'auto'
(Winograd on the CPU backend, XLA's elsewhere). The parameters are the same under all three.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from lgm.models import layers, winograd

Dtype = Any


def sinusoidal_embedding(t: jnp.ndarray, dim: int, max_period: float = 10000.0) -> jnp.ndarray:
  """Transformer / DDPM sinusoidal features of a (B,) float: (B, dim), frequencies 1 .. 1/max_period."""
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / (half - 1))
  args = t.astype(jnp.float32)[:, None] * freqs
  emb = jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)
  return jnp.pad(emb, ((0, 0), (0, dim % 2)))


class FourierFeatures(nn.Module):
  """Random Fourier features [sin, cos](2 pi W t), W ~ N(0, scale^2), fixed: a parameter that gets no
  gradient, as in score_sde, so that checkpoints carry it (keep it out of any weight decay)."""
  size: int
  scale: float = 16.0

  @nn.compact
  def __call__(self, t: jnp.ndarray) -> jnp.ndarray:
    w = jax.lax.stop_gradient(self.param('W', nn.initializers.normal(self.scale), (self.size,)))
    args = 2 * math.pi * t.astype(jnp.float32)[:, None] * w
    return jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)


class Combine(nn.Module):
  """Merge the input pyramid into the feature map: 1x1 projection of `x` to y's width, then sum or concat."""
  method: str = 'sum'
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, y: jnp.ndarray) -> jnp.ndarray:
    h = nn.Dense(y.shape[-1], kernel_init=layers.ddpm_init(), dtype=self.dtype)(x)
    return h + y if self.method == 'sum' else jnp.concatenate([h, y], axis=-1)


_CHOICES = {
    'resblock_type': ('ddpm', 'biggan'),
    'progressive': ('none', 'output_skip', 'residual'),
    'progressive_input': ('none', 'input_skip', 'residual'),
    'progressive_combine': ('sum', 'cat'),
    'embedding_type': ('fourier', 'positional'),
    'conv_algorithm': winograd.ALGORITHMS,
}


class NCSNpp(nn.Module):
  """The NCSN++ / DDPM++ U-Net (score_sde's `ncsnpp`); defaults = NCSN++ on CIFAR-10 (VE SDE).

  Fields as in score_sde's config.model: `nf` base width, `ch_mult` width multipliers per resolution,
  `num_res_blocks` per resolution (the decoder has one more), `attn_resolutions` feature-map sizes
  with self-attention, `resblock_type` ('ddpm' or 'biggan', the latter also resamples), `fir` /
  `fir_kernel` anti-aliased resampling, `resamp_with_conv`, `progressive` ('output_skip': sum of
  per-resolution output images; 'residual': upsampled residual stream), `progressive_input`
  ('input_skip' / 'residual': a downsampled copy of the input joins each resolution, merged by
  `progressive_combine`), `skip_rescale`, `init_scale` (of every layer closing a residual branch),
  `conditional` (time conditioning on / off). Other fields: see the module docstring.
  """
  nf: int = 128
  ch_mult: Sequence[int] = (1, 2, 2, 2)
  num_res_blocks: int = 4
  attn_resolutions: Sequence[int] = (16,)
  dropout: float = 0.1
  resblock_type: str = 'biggan'
  resamp_with_conv: bool = True
  fir: bool = True
  fir_kernel: Sequence[int] = (1, 3, 3, 1)
  skip_rescale: bool = True
  progressive: str = 'none'
  progressive_input: str = 'residual'
  progressive_combine: str = 'sum'
  embedding_type: str = 'fourier'
  fourier_scale: float = 16.0
  init_scale: float = 0.0
  scale_by_sigma: bool = True
  conditional: bool = True
  space_to_depth: int = 1
  num_classes: int = 0
  vector_dim: int = 0
  context_dim: int = 0
  num_heads: int = 1
  conv_algorithm: str = 'xla'  # 3x3 convolutions: 'xla', 'winograd' or 'auto' (`lgm.models.winograd`)
  dtype: Dtype = jnp.float32

  def _check(self, labels, vector, context) -> None:
    for field, valid in _CHOICES.items():
      if getattr(self, field) not in valid:
        raise ValueError(f'{field}={getattr(self, field)!r}; valid: {valid}')
    for size, value, name in ((self.num_classes, labels, 'labels'), (self.vector_dim, vector, 'vector'),
                              (self.context_dim, context, 'context')):
      if (size > 0) != (value is not None):
        raise ValueError(f'{name} must be given exactly when the model is built for it '
                         f'(num_classes / vector_dim / context_dim > 0)')

  def _embedding(self, time_cond, labels, vector) -> jnp.ndarray | None:
    """(B, 4 nf) conditioning vector fed to every residual block, or None when there is nothing."""
    width = 4 * self.nf
    dense = functools.partial(nn.Dense, width, kernel_init=layers.ddpm_init(), dtype=self.dtype)
    terms = []
    if self.conditional:
      if self.embedding_type == 'fourier':
        temb = FourierFeatures(self.nf, self.fourier_scale)(jnp.log(time_cond))
      else:
        temb = sinusoidal_embedding(time_cond, self.nf)
      temb = dense()(temb)
      terms.append(dense()(nn.swish(temb)))
    if self.num_classes:
      terms.append(nn.Embed(self.num_classes, width, dtype=self.dtype)(labels))
    if self.vector_dim:
      terms.append(dense()(vector.astype(self.dtype)))
    return sum(terms) if terms else None

  @nn.compact
  def __call__(self, x: jnp.ndarray, time_cond: jnp.ndarray, train: bool = False,
               labels: jnp.ndarray | None = None, vector: jnp.ndarray | None = None,
               context: jnp.ndarray | None = None,
               context_mask: jnp.ndarray | None = None) -> jnp.ndarray:
    self._check(labels, vector, context)
    dtype, nf, levels = self.dtype, self.nf, len(self.ch_mult)
    temb = self._embedding(time_cond, labels, vector)
    kv = dict(context=context, context_mask=context_mask)
    block = functools.partial(layers.ResBlock, kind=self.resblock_type, dropout=self.dropout, fir=self.fir,
                              fir_kernel=tuple(self.fir_kernel), skip_rescale=self.skip_rescale,
                              init_scale=self.init_scale, conv_algorithm=self.conv_algorithm, dtype=dtype)
    attention = functools.partial(layers.AttnBlock, num_heads=self.num_heads, skip_rescale=self.skip_rescale,
                                  init_scale=self.init_scale, dtype=dtype)
    resample = functools.partial(layers.Resample, fir=self.fir, fir_kernel=tuple(self.fir_kernel),
                                 conv_algorithm=self.conv_algorithm, dtype=dtype)
    head = functools.partial(layers.norm_act_conv, dtype=dtype, algorithm=self.conv_algorithm)
    biggan = self.resblock_type == 'biggan'

    x = layers.space_to_depth(x, self.space_to_depth).astype(dtype)
    out_ch = x.shape[-1]
    input_pyramid = x

    # Encoder: residual blocks per resolution, then a downsampling step (all kept for the skips).
    hs = [layers.conv3x3(nf, layers.ddpm_init(), dtype, algorithm=self.conv_algorithm)(x)]
    for level, mult in enumerate(self.ch_mult):
      for _ in range(self.num_res_blocks):
        h = block(nf * mult)(hs[-1], temb, train)
        if h.shape[1] in self.attn_resolutions:
          h = attention()(h, **kv)
        hs.append(h)
      if level == levels - 1:
        break
      if biggan:
        h = block(down=True)(hs[-1], temb, train)
      else:
        h = resample(up=False, with_conv=self.resamp_with_conv)(hs[-1])
      if self.progressive_input == 'input_skip':
        input_pyramid = resample(up=False, with_conv=False)(input_pyramid)
        h = Combine(self.progressive_combine, dtype)(input_pyramid, h)
      elif self.progressive_input == 'residual':
        input_pyramid = resample(up=False, with_conv=True, out_ch=h.shape[-1])(input_pyramid)
        h = input_pyramid = layers.skip_sum(input_pyramid, h, self.skip_rescale)
      hs.append(h)

    h = block()(hs[-1], temb, train)
    h = attention()(h, **kv)
    h = block()(h, temb, train)

    # Decoder: one more block per resolution, each eating one encoder skip.
    pyramid = None
    for level in reversed(range(levels)):
      for _ in range(self.num_res_blocks + 1):
        h = block(nf * self.ch_mult[level])(jnp.concatenate([h, hs.pop()], axis=-1), temb, train)
      if h.shape[1] in self.attn_resolutions:
        h = attention()(h, **kv)
      if self.progressive == 'output_skip':
        image = head(h, out_ch, layers.ddpm_init(self.init_scale))
        pyramid = image if pyramid is None else resample(up=True, with_conv=False)(pyramid) + image
      elif self.progressive == 'residual':
        if pyramid is None:  # lowest resolution: start the stream
          pyramid = head(h, h.shape[-1], layers.ddpm_init())
        else:
          pyramid = resample(up=True, with_conv=True, out_ch=h.shape[-1])(pyramid)
          h = pyramid = layers.skip_sum(pyramid, h, self.skip_rescale)
      if level > 0:
        h = block(up=True)(h, temb, train) if biggan else resample(up=True, with_conv=self.resamp_with_conv)(h)

    if self.progressive == 'output_skip':
      h = pyramid
    else:
      h = head(h, out_ch, layers.ddpm_init(self.init_scale))
    h = layers.depth_to_space(h.astype(jnp.float32), self.space_to_depth)
    if self.scale_by_sigma:
      h = h / time_cond.reshape(-1, 1, 1, 1)
    return h


class DDPM(NCSNpp):
  """Ho et al. 2020's U-Net (score_sde's `ddpm`): DDPM residual blocks, plain resampling, no skip
  rescaling, sinusoidal time embedding. The same code as NCSNpp with these defaults."""
  num_res_blocks: int = 2
  resblock_type: str = 'ddpm'
  fir: bool = False
  skip_rescale: bool = False
  progressive_input: str = 'none'
  embedding_type: str = 'positional'
  scale_by_sigma: bool = False

"""Images as points of a semantic space: a convolutional encoder, a decoder, and the VAE.

The encoder maps (B, H, W, C) images in [-1, 1] to a small (B, H/f, W/f, z) latent; the decoder maps
back. f = space_to_depth * 2**(len(ch_mult) - 1): a first free space-to-depth step keeps every
learned convolution at half resolution or below (full-resolution convolutions are the costliest case on CPU).

With space_to_depth=1, norm_groups=32 and quant_conv=True the same modules take the layout of the LDM /
Stable Diffusion `AutoencoderKL` (configs/models/sd_vae.py), whose weights `lgm.convert` maps onto them.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from lgm.models import layers

Dtype = Any


class _ConvStack(nn.Module):
  """The shape of an encoder or decoder: widths ch * ch_mult per resolution level. Its layers keep flax's
  default initialisers (`layers.lecun_init`), with the residual branches' closing layers at zero."""
  out_channels: int
  ch: int = 32
  ch_mult: Sequence[int] = (1, 2)
  num_res_blocks: int = 1
  space_to_depth: int = 2
  mid_attention: bool = False
  dropout: float = 0.0
  norm_groups: int | None = None  # None: min(C / 4, 32) groups (`layers.group_norm`)
  dtype: Dtype = jnp.float32

  def _conv(self, h: jnp.ndarray, features: int) -> jnp.ndarray:
    return layers.conv3x3(features, layers.lecun_init(), self.dtype)(h)

  def _head(self, h: jnp.ndarray, features: int) -> jnp.ndarray:
    return layers.norm_act_conv(h, features, layers.lecun_init(), self.dtype, self.norm_groups)

  def _res_block(self, h: jnp.ndarray, train: bool, features: int | None = None) -> jnp.ndarray:
    block = layers.ResBlock(features, dropout=self.dropout, kernel_init=layers.lecun_init,
                            norm_groups=self.norm_groups, dtype=self.dtype)
    return block(h, None, train)

  def _resample(self, h: jnp.ndarray, up: bool) -> jnp.ndarray:
    return layers.Resample(up, with_conv=True, kernel_init=layers.lecun_init, dtype=self.dtype)(h)

  def _mid(self, h: jnp.ndarray, train: bool) -> jnp.ndarray:
    """The lowest-resolution stage shared by encoder and decoder: res, [attention], res."""
    h = self._res_block(h, train)
    if self.mid_attention:
      h = layers.AttnBlock(kernel_init=layers.lecun_init, norm_groups=self.norm_groups, dtype=self.dtype)(h)
    return self._res_block(h, train)


class Encoder(_ConvStack):
  """ResNet encoder: [space-to-depth] -> conv -> (res blocks, downsample)* -> mid -> out conv."""

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    h = layers.space_to_depth(x.astype(self.dtype), self.space_to_depth)
    h = self._conv(h, self.ch * self.ch_mult[0])
    for level, mult in enumerate(self.ch_mult):
      for _ in range(self.num_res_blocks):
        h = self._res_block(h, train, self.ch * mult)
      if level < len(self.ch_mult) - 1:
        h = self._resample(h, up=False)
    h = self._mid(h, train)
    return self._head(h, self.out_channels).astype(jnp.float32)


class Decoder(_ConvStack):
  """Mirror of `Encoder`: conv -> mid -> (res blocks, upsample)* -> out conv -> [depth-to-space]."""

  @nn.compact
  def __call__(self, z: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    h = self._conv(z.astype(self.dtype), self.ch * self.ch_mult[-1])
    h = self._mid(h, train)
    for level, mult in reversed(list(enumerate(self.ch_mult))):
      for _ in range(self.num_res_blocks + 1):
        h = self._res_block(h, train, self.ch * mult)
      if level > 0:
        h = self._resample(h, up=True)
    h = self._head(h, self.out_channels * self.space_to_depth**2)
    return layers.depth_to_space(h, self.space_to_depth).astype(jnp.float32)


class Autoencoder(nn.Module):
  """Deterministic autoencoder. `log_scale` is the decoder's learned observation noise (see lgm.losses)."""
  image_channels: int = 3
  latent_channels: int = 4
  ch: int = 32
  ch_mult: Sequence[int] = (1, 2)
  num_res_blocks: int = 1
  space_to_depth: int = 2
  mid_attention: bool = False
  dropout: float = 0.0
  norm_groups: int | None = None  # None: min(C / 4, 32) groups; Stable Diffusion's: 32
  quant_conv: bool = False  # 1x1 convs after the encoder and before the decoder (Stable Diffusion's layout)
  init_log_scale: float = -2.0  # decoder noise starts at 0.14 (of the [-1, 1] range): reconstruction leads early
  dtype: Dtype = jnp.float32

  #: How many encoder output channels each latent channel needs (2 for a Gaussian's mean and log-variance).
  moments_per_channel = 1

  def setup(self):
    shared = dict(ch=self.ch, ch_mult=tuple(self.ch_mult), num_res_blocks=self.num_res_blocks,
                  space_to_depth=self.space_to_depth, mid_attention=self.mid_attention,
                  dropout=self.dropout, norm_groups=self.norm_groups, dtype=self.dtype)
    moments = self.latent_channels * self.moments_per_channel
    self.encoder = Encoder(moments, **shared)
    self.decoder = Decoder(self.image_channels, **shared)
    if self.quant_conv:
      self.quant = nn.Conv(moments, (1, 1), dtype=self.dtype, name='quant_conv')
      self.post_quant = nn.Conv(self.latent_channels, (1, 1), dtype=self.dtype, name='post_quant_conv')
    self.log_scale = self.param('log_scale', nn.initializers.constant(self.init_log_scale), ())

  @property
  def downsampling_factor(self) -> int:
    return self.space_to_depth * 2 ** (len(self.ch_mult) - 1)

  def encode(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    """Images -> latents (for the VAE: the posterior mean and log-variance, concatenated on channels)."""
    h = self.encoder(x, train)
    return self.quant(h).astype(jnp.float32) if self.quant_conv else h

  def decode(self, z: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    """Latents -> the decoder's mean image, in [-1, 1] model space (not clipped)."""
    return self.decoder(self.post_quant(z) if self.quant_conv else z, train)

  def __call__(self, x: jnp.ndarray, train: bool = False) -> dict[str, jnp.ndarray]:
    """What the loss needs: the reconstruction and the observation log-scale."""
    return dict(recon=self.decode(self.encode(x, train), train), log_scale=self.log_scale)


class VAE(Autoencoder):
  """Autoencoder whose encoder outputs a diagonal Gaussian posterior q(z|x), trained with a KL to N(0, I).

  Calling it draws z ~ q(z|x) with the flax rng stream 'latent'.
  """
  moments_per_channel = 2

  def posterior(self, x: jnp.ndarray, train: bool = False) -> tuple[jnp.ndarray, jnp.ndarray]:
    """q(z|x) as (mean, log-variance); the log-variance is clipped to [-30, 20] for stability."""
    mean, logvar = jnp.split(self.encode(x, train), 2, axis=-1)
    return mean, jnp.clip(logvar, -30.0, 20.0)

  def __call__(self, x: jnp.ndarray, train: bool = False) -> dict[str, jnp.ndarray]:
    mean, logvar = self.posterior(x, train)
    z = reparameterize(self.make_rng('latent'), mean, logvar)
    return dict(recon=self.decode(z, train), log_scale=self.log_scale, mean=mean, logvar=logvar)


def reparameterize(rng: jax.Array, mean: jnp.ndarray, logvar: jnp.ndarray) -> jnp.ndarray:
  """z = mean + std * eps: a posterior sample through which gradients flow."""
  return mean + jnp.exp(0.5 * logvar) * jax.random.normal(rng, mean.shape, mean.dtype)

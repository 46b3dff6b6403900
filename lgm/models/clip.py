"""CLIP-style dual encoder: an image tower (a small ViT) and the text tower, meeting in one space.

Both towers end in L2-normalised embeddings of `embed_dim`; a learnable temperature (stored as the log
of the logit scale, CLIP's init log(1/0.07), the scale clamped at 100) and, for the SigLIP sigmoid loss,
a learnable bias. The losses themselves live in `lgm.losses`. The image tower reads whatever array it
is given: 32x32 pixels, or an autoencoder's 8x8x4 latent (patch_size 1 or 2), since it only patchifies.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lgm.models.text import TextTransformer
from lgm.models.transformer import Transformer

Dtype = Any
MAX_LOGIT_SCALE = 100.0


class VisionTransformer(nn.Module):
  """Patches -> tokens (+ class token) -> pre-LN transformer -> pooled, projected embedding."""
  patch_size: int = 4
  width: int = 256
  layers: int = 6
  heads: int = 4
  embed_dim: int = 256
  pool: str = 'cls'  # 'cls' (OpenAI CLIP) or 'mean' over the patch tokens
  mlp_ratio: float = 4.0
  activation: str = 'quick_gelu'
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array) -> dict[str, jax.Array]:
    if self.pool not in ('cls', 'mean'):
      raise ValueError(f"unknown image pooling {self.pool!r}; valid: ['cls', 'mean']")
    batch, height, width, _ = images.shape
    p = self.patch_size
    if height % p or width % p:
      raise ValueError(f'image size {height}x{width} is not divisible by patch_size={p}; change one of them.')
    x = nn.Conv(self.width, (p, p), strides=(p, p), use_bias=False, dtype=self.dtype, name='conv1')(images)
    x = x.reshape(batch, -1, self.width)
    if self.pool == 'cls':
      cls = self.param('class_embedding', nn.initializers.normal(self.width**-0.5), (self.width,))
      x = jnp.concatenate([jnp.broadcast_to(cls.astype(x.dtype), (batch, 1, self.width)), x], axis=1)
    positions = self.param('positional_embedding', nn.initializers.normal(self.width**-0.5),
                           x.shape[1:])
    x = nn.LayerNorm(dtype=self.dtype, name='ln_pre')(x + positions.astype(x.dtype))
    x = Transformer(self.layers, self.heads, self.mlp_ratio, self.activation, self.dtype, name='transformer')(x)
    pooled = x[:, 0] if self.pool == 'cls' else x.mean(axis=1)
    pooled = nn.LayerNorm(dtype=self.dtype, name='ln_post')(pooled)
    projection = self.param('proj', nn.initializers.normal(self.width**-0.5), (self.width, self.embed_dim))
    return {'embedding': pooled.astype(jnp.float32) @ projection, 'tokens': x}


def l2_normalize(x: jax.Array, eps: float = 1e-6) -> jax.Array:
  return x / jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True) + eps)


class CLIP(nn.Module):
  """`encode_image`, `encode_text` (normalised embeddings) and `__call__` -> both plus scale and bias."""
  vocab_size: int
  context_length: int = 77
  embed_dim: int = 256
  text_width: int = 256
  text_layers: int = 4
  text_heads: int = 4
  image_width: int = 256
  image_layers: int = 4
  image_heads: int = 4
  patch_size: int = 4
  image_pool: str = 'cls'
  mlp_ratio: float = 4.0
  activation: str = 'quick_gelu'
  logit_scale_init: float = math.log(1 / 0.07)
  logit_bias_init: float | None = None  # a float adds SigLIP's learnable bias (its init: -10)
  dtype: Dtype = jnp.float32

  def setup(self):
    self.text = TextTransformer(self.vocab_size, self.context_length, self.text_width, self.text_layers,
                                self.text_heads, self.embed_dim, self.mlp_ratio, self.activation, self.dtype)
    self.visual = VisionTransformer(self.patch_size, self.image_width, self.image_layers, self.image_heads,
                                    self.embed_dim, self.image_pool, self.mlp_ratio, self.activation, self.dtype)
    self.logit_scale = self.param('logit_scale', nn.initializers.constant(self.logit_scale_init), ())
    if self.logit_bias_init is not None:
      self.logit_bias = self.param('logit_bias', nn.initializers.constant(self.logit_bias_init), ())

  def encode_text(self, tokens: jax.Array) -> dict[str, jax.Array]:
    """The text tower's outputs, with 'embedding' L2-normalised."""
    out = self.text(tokens)
    return {**out, 'embedding': l2_normalize(out['embedding'])}

  def encode_image(self, images: jax.Array) -> dict[str, jax.Array]:
    out = self.visual(images)
    return {**out, 'embedding': l2_normalize(out['embedding'])}

  def scale_and_bias(self) -> tuple[jax.Array, jax.Array]:
    """exp(logit_scale) clamped at 100, and the logit bias (0 without one)."""
    scale = jnp.minimum(jnp.exp(self.logit_scale), MAX_LOGIT_SCALE)
    bias = self.logit_bias if self.logit_bias_init is not None else jnp.zeros(())
    return scale, bias

  def __call__(self, images: jax.Array, tokens: jax.Array) -> dict[str, jax.Array]:
    scale, bias = self.scale_and_bias()
    return {'image': self.encode_image(images)['embedding'], 'text': self.encode_text(tokens)['embedding'],
            'scale': scale, 'bias': bias}

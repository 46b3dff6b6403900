"""The pre-LayerNorm transformer shared by the text tower and the image tower (CLIP's layout).

Parameter names follow OpenAI CLIP's `transformer.resblocks.N.{ln_1, attn, ln_2, mlp.c_fc, mlp.c_proj}`
so that a converter from its checkpoints is a renaming plus reshapes (docs/checkpoints.md).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lgm.models import layers

Dtype = Any


def quick_gelu(x: jax.Array) -> jax.Array:
  """OpenAI CLIP's activation: x * sigmoid(1.702 x)."""
  return x * jax.nn.sigmoid(1.702 * x)


# 'gelu' is the tanh approximation (flax's default); 'gelu_exact' the erf form (PyTorch's nn.GELU()).
ACTIVATIONS = {'gelu': nn.gelu, 'gelu_exact': functools.partial(nn.gelu, approximate=False),
               'quick_gelu': quick_gelu}


def get_activation(name: str):
  if name not in ACTIVATIONS:
    raise ValueError(f'unknown activation {name!r}; valid: {sorted(ACTIVATIONS)}')
  return ACTIVATIONS[name]


class Mlp(nn.Module):
  width: int
  hidden: int
  activation: str = 'quick_gelu'
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    dense = functools.partial(layers.dense, dtype=self.dtype)
    x = dense(self.hidden, name='c_fc')(x)
    return dense(self.width, name='c_proj')(get_activation(self.activation)(x))


class ResidualAttentionBlock(nn.Module):
  """x + attn(ln_1(x)), then + mlp(ln_2(x)); `mask` (batch, 1, q, k) is True where attention may look."""
  heads: int
  mlp_ratio: float = 4.0
  activation: str = 'quick_gelu'
  layer_norm_eps: float = 1e-6  # flax's default; OpenAI CLIP's is 1e-5
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    width = x.shape[-1]
    h = nn.LayerNorm(self.layer_norm_eps, dtype=self.dtype, name='ln_1')(x)
    x = x + nn.MultiHeadDotProductAttention(num_heads=self.heads, dtype=self.dtype, name='attn')(h, h, mask=mask)
    h = nn.LayerNorm(self.layer_norm_eps, dtype=self.dtype, name='ln_2')(x)
    return x + Mlp(width, int(width * self.mlp_ratio), self.activation, self.dtype, name='mlp')(h)


class Transformer(nn.Module):
  layers: int
  heads: int
  mlp_ratio: float = 4.0
  activation: str = 'quick_gelu'
  dtype: Dtype = jnp.float32
  layer_norm_eps: float = 1e-6

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    if x.shape[-1] % self.heads:
      raise ValueError(f'width {x.shape[-1]} is not divisible by {self.heads} heads; change one of them.')
    for i in range(self.layers):
      x = ResidualAttentionBlock(self.heads, self.mlp_ratio, self.activation, self.layer_norm_eps, self.dtype,
                                 name=f'resblocks_{i}')(x, mask)
    return x

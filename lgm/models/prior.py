"""The unCLIP prior's denoiser (Ramesh et al. 2022): a transformer over one sequence that predicts the clean
image embedding from a noisy one.

The sequence is [the text tower's token features (projected), the text embedding, the time, the noisy image
embedding, a learned query]; the output at the query position, through a final LayerNorm and a projection,
is the predicted clean embedding (DALL-E 2's prior predicts x0, not the noise). Padding tokens and, for the
null condition of classifier-free guidance, all text tokens are masked out of the attention (the text
embedding is then the zero vector). Same calling convention as `lgm.models.score_unet`:

  model.apply({'params': p}, x (B, D), time_cond (B,), train=False, vector=(B, Dt), context=(B, L, W),
              context_mask=(B, L)) -> (B, D)
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lgm.models.score_unet import sinusoidal_embedding
from lgm.models.transformer import Transformer

Dtype = Any
_OWN_TOKENS = 4  # text embedding, time, noisy embedding, query


class PriorTransformer(nn.Module):
  width: int = 256
  layers: int = 4
  heads: int = 4
  mlp_ratio: float = 4.0
  activation: str = 'gelu'
  vector_dim: int = 0  # the text embedding's size (given by the task)
  context_dim: int = 0  # the text tower's token width (given by the task)
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, time_cond: jax.Array, train: bool = False, vector: jax.Array | None = None,
               context: jax.Array | None = None, context_mask: jax.Array | None = None) -> jax.Array:
    del train  # no dropout
    if vector is None or context is None or context_mask is None:
      raise ValueError('the prior reads the text: give vector, context and context_mask (null: mask all False).')
    batch, dim = x.shape
    dense = lambda name: nn.Dense(self.width, dtype=self.dtype, name=name)
    time = dense('time_out')(nn.swish(dense('time_in')(sinusoidal_embedding(time_cond, self.width))))
    query = self.param('query', nn.initializers.normal(0.02), (self.width,))
    own = jnp.stack([dense('text_embedding')(vector), time, dense('noisy_embedding')(x),
                     jnp.broadcast_to(query, (batch, self.width)).astype(self.dtype)], axis=1)
    h = jnp.concatenate([dense('text_tokens')(context.astype(self.dtype)), own.astype(self.dtype)], axis=1)
    positions = self.param('positional_embedding', nn.initializers.normal(0.01), h.shape[1:])
    keys = jnp.concatenate([context_mask, jnp.ones((batch, _OWN_TOKENS), bool)], axis=1)
    h = Transformer(self.layers, self.heads, self.mlp_ratio, self.activation, self.dtype, name='transformer')(
        h + positions.astype(self.dtype), keys[:, None, None, :])
    out = nn.LayerNorm(dtype=self.dtype, name='ln_final')(h[:, -1])
    return nn.Dense(dim, dtype=self.dtype, name='proj')(out).astype(jnp.float32)

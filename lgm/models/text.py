"""The CLIP text tower: tokens -> per-token features and one pooled, projected embedding.

Token + learned position embeddings, a causal pre-LN transformer, a final LayerNorm, the feature at
the end-of-text token, a linear projection without bias (Radford et al. 2021). Because attention is
causal and the pooled token is the end-of-text token, nothing after it (padding) changes the output:
a prompt embeds the same whatever the padding length or the batch it is in.

`tokens` (per-token features after ln_final) and `mask` (True on real tokens, start to end) are what a
text-conditioned score network cross-attends to; `pooled` is the end-of-text feature before projection.

The token ids default to lgm's layout (`lgm.tokenizer`); a converted OpenAI CLIP text tower
(`lgm.convert.from_openai_clip_text`) sets `end_id=49407`, `pad_id=None` (its padding is not one id)
and `layer_norm_eps=1e-5`.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lgm import tokenizer as tokenizer_lib
from lgm.models.transformer import Transformer

Dtype = Any


class TextTransformer(nn.Module):
  vocab_size: int
  context_length: int = 77
  width: int = 512
  layers: int = 12
  heads: int = 8
  embed_dim: int = 512
  mlp_ratio: float = 4.0
  activation: str = 'quick_gelu'
  dtype: Dtype = jnp.float32
  layer_norm_eps: float = 1e-6
  end_id: int = tokenizer_lib.END_ID  # pooling reads the first token with this id
  pad_id: int | None = tokenizer_lib.PAD_ID  # None: every token up to the end token is real

  @nn.compact
  def __call__(self, tokens: jax.Array) -> dict[str, jax.Array]:
    """int (batch, length <= context_length) -> {'embedding', 'pooled', 'tokens', 'mask'}."""
    length = tokens.shape[-1]
    if length > self.context_length:
      raise ValueError(f'{length} tokens exceed the text tower context length {self.context_length}; '
                       'tokenize with the same context length.')
    x = nn.Embed(self.vocab_size, self.width, embedding_init=nn.initializers.normal(0.02),
                 name='token_embedding')(tokens)
    positions = self.param('positional_embedding', nn.initializers.normal(0.01),
                           (self.context_length, self.width))
    x = (x + positions[:length]).astype(self.dtype)
    x = Transformer(self.layers, self.heads, self.mlp_ratio, self.activation, self.dtype, self.layer_norm_eps,
                    name='transformer')(x, nn.make_causal_mask(tokens))
    x = nn.LayerNorm(self.layer_norm_eps, dtype=self.dtype, name='ln_final')(x)
    end = jnp.argmax(tokens == self.end_id, axis=-1)
    pooled = jnp.take_along_axis(x, end[:, None, None], axis=1)[:, 0].astype(jnp.float32)
    projection = self.param('text_projection', nn.initializers.normal(self.width**-0.5),
                            (self.width, self.embed_dim))
    if self.pad_id is None:
      mask = jnp.arange(length)[None, :] <= end[:, None]
    else:
      mask = tokens != self.pad_id
    return {'embedding': pooled @ projection, 'pooled': pooled, 'tokens': x, 'mask': mask}

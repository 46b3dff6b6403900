"""The unCLIP decoder (Ramesh et al. 2022): latent diffusion conditioned on a CLIP *image* embedding.

The data are the scaled latents of the trained VAE (`lgm.tasks.conditional.LatentScoreTask`); the condition is
the unit-norm image embedding of the trained CLIP stage, computed from the training image itself (no caption
is read: the decoder trains on any image collection). As in unCLIP, the embedding reaches the score network
two ways: projected into `config.embedding.num_tokens` extra context tokens that every attention block
cross-attends to, and added to the time embedding (the network's `vector` hook). It is dropped
`config.embedding.p_uncond` of the time (no tokens, zero vector) for classifier-free guidance.

Decoding the embedding of an existing image gives its variations; decoding one sampled by the prior
(`lgm.tasks.prior`) gives an image from text.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from lgm import xla
from lgm.models.clip import CLIP
from lgm.tasks.base import Trained
from lgm.tasks.conditional import Conditioning, LatentScoreTask

PyTree = Any


class EmbeddingDecoderTask(LatentScoreTask):
  """Image embedding -> image; `sample_images` draws guided samples."""

  @classmethod
  def needs(cls, config: ml_collections.ConfigDict) -> tuple[str, ...]:
    cache = ('training_images',) if config.latent.get('cache', False) else ()
    return ('vae', 'clip', 'latent_scale', *cache)

  def __init__(self, config: ml_collections.ConfigDict, vae: Trained, clip: Trained, latent_scale: float,
               training_images: Callable[[], np.ndarray] | None = None):
    self.config = config
    self.clip = clip
    settings = config.embedding
    clip_model: CLIP = clip.task.model
    super().__init__(config, vae, latent_scale, training_images, settings.p_uncond,
                     context_dim=settings.token_width, vector_dim=clip_model.embed_dim)
    self.embed_dim = clip_model.embed_dim
    self.num_tokens, self.token_width = int(settings.num_tokens), int(settings.token_width)
    self.projection = nn.Dense(self.num_tokens * self.token_width)

  def image_embeddings(self, images: jax.Array) -> jax.Array:
    """The CLIP stage's unit-norm image embeddings (constants: the tower is frozen)."""
    return jax.lax.stop_gradient(self.clip.task.encode_images(self.clip.params, images))

  def embedding_conditioning(self, params: PyTree, embeddings: jax.Array) -> Conditioning:
    """Embeddings (batch, embed_dim) -> {'context' (num_tokens projected tokens), 'context_mask', 'vector'}."""
    tokens = self.projection.apply({'params': params['tokens']}, embeddings)
    return {'context': tokens.reshape(len(embeddings), self.num_tokens, self.token_width),
            'context_mask': jnp.ones((len(embeddings), self.num_tokens), bool), 'vector': embeddings}

  # --- what the trainer calls ---------------------------------------------------------------------------
  def init(self, rng: jax.Array) -> PyTree:
    params = {'tokens': self.projection.init(rng, jnp.zeros((1, self.embed_dim)))['params']}
    params['score'] = self.init_network(rng, self.embedding_conditioning(params, jnp.zeros((1, self.embed_dim))))
    return params

  def batch_conditioning(self, params: PyTree, batch: dict) -> Conditioning:
    return self.embedding_conditioning(params, self.image_embeddings(batch['image']))

  # --- generation -------------------------------------------------------------------------------------------
  @functools.partial(xla.jit, static_argnums=0, static_argnames=('options',))
  def sample_images(self, params: PyTree, noise: jax.Array, embeddings: jax.Array, guidance: jax.Array | None,
                    rng: jax.Array, options=()):
    """Images in [-1, 1] (and nfe) from prior `noise` (batch, *data_shape) decoding unit-norm `embeddings`
    (batch, embed_dim), guided against the null condition (`guidance` None: the conditional model alone)."""
    conditioning = self.embedding_conditioning(params, embeddings)
    unconditional = self.keep_only(conditioning, jnp.zeros((len(embeddings),), bool))
    x, nfe = self.guided_sample(params, conditioning, unconditional, noise, guidance, rng, options)
    return jnp.clip(self.to_images(x), -1.0, 1.0), nfe

  def sample(self, params: PyTree, rng: jax.Array, num: int, **options: Any) -> tuple[jax.Array, int]:
    del params, rng, num, options
    raise ValueError('a decoder samples from image embeddings: use lgm.pipeline.TextToImage (route="prior", '
                     'variations).')

  def images(self, params: PyTree, batch: dict, rng: jax.Array) -> dict[str, jax.Array]:
    """The first `sampling.num_samples` images of the batch beside their decoded embeddings (variations)."""
    num = min(self.num_samples, batch['image'].shape[0])
    noise = self.sde.prior_sampling(rng, (num, *self.data_shape))
    decoded, _ = self.sample_images(params, noise, self.image_embeddings(batch['image'][:num]),
                                    jnp.float32(self.guidance), rng)
    pairs = jnp.stack([batch['image'][:num], decoded], axis=1).reshape(-1, *self.image_shape)
    return {'variations': pairs}

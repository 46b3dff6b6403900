"""The unCLIP prior (Ramesh et al. 2022): from a caption to the CLIP *image* embedding of an image it describes.

A diffusion model over the unit-norm image embedding of the trained CLIP stage (`lgm.models.prior`'s
transformer predicts the clean embedding, `prediction='data'`, trained with the data-space loss
`loss.name='x0'`), conditioned on the caption's text embedding and per-token features from the same stage's
text tower, with captions dropped `config.text.p_uncond` of the time for classifier-free guidance. The data
are the embeddings times sqrt(embed_dim), so that each coordinate has about unit variance like the SDE's
prior; samples are projected back onto the unit sphere. The embeddings it samples are decoded into images by
`lgm.tasks.embedding_decoder`; `lgm.pipeline.TextToImage(route='prior')` joins the two.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from lgm import xla
from lgm.models.clip import CLIP, l2_normalize
from lgm.tasks.base import Trained
from lgm.tasks.conditional import ClipText, GuidedScoreTask

PyTree = Any


class PriorTask(ClipText, GuidedScoreTask):
  """Text -> image embedding; `sample_embeddings` draws guided samples."""

  @classmethod
  def needs(cls, config: ml_collections.ConfigDict) -> tuple[str, ...]:
    return ('clip',)

  def __init__(self, config: ml_collections.ConfigDict, clip: Trained):
    self.config = config
    self.clip = clip
    clip_model: CLIP = clip.task.model
    super().__init__(config, config.text.p_uncond, vector_dim=clip_model.embed_dim,
                     context_dim=clip_model.text_width)
    self.tokenizer = clip.task.tokenizer
    self.data_shape = (clip_model.embed_dim,)
    self.embedding_scale = math.sqrt(clip_model.embed_dim)

  # --- between images and the diffusion's data ----------------------------------------------------------
  def image_embeddings(self, images: jax.Array) -> jax.Array:
    """The CLIP stage's unit-norm image embeddings of images in [-1, 1] (constants: the tower is frozen)."""
    return jax.lax.stop_gradient(self.clip.task.encode_images(self.clip.params, images))

  def to_data(self, images: jax.Array) -> jax.Array:
    return self.embedding_scale * self.image_embeddings(images)

  def to_embeddings(self, x: jax.Array) -> jax.Array:
    return l2_normalize(x)

  # --- what the trainer calls ---------------------------------------------------------------------------
  def init(self, rng: jax.Array) -> PyTree:
    return {'score': self.init_network(rng, self.text_conditioning({}, jnp.asarray(self.tokenize(''))))}

  def evaluate(self, params: PyTree, batch: dict, rng: jax.Array) -> dict[str, jax.Array]:
    """The loss on held-out pairs; the cosine between the embedding sampled from each caption (config's
    sampler and guidance) and its image's embedding, beside the same cosine for the caption's text embedding
    (the baseline a prior must beat: CLIP's two modalities lie apart)."""
    loss_rng, sample_rng = jax.random.split(rng)
    target = self.image_embeddings(batch['image'])
    tokens = batch['tokens']
    noise = self.sde.prior_sampling(sample_rng, (tokens.shape[0], *self.data_shape))
    use_text = jnp.stack([jnp.ones(tokens.shape[:1], bool), jnp.zeros(tokens.shape[:1], bool)], axis=1)
    sampled, _ = self.sample_embeddings(params, noise, tokens, tokens, use_text, jnp.float32(self.guidance),
                                        sample_rng)
    text = self.text_conditioning(params, tokens)['vector']
    return {'loss': self._conditioned_loss(params, batch, loss_rng, train=False),
            'cosine_sampled': jnp.sum(sampled * target, axis=-1).mean(),
            'cosine_text': jnp.sum(text * target, axis=-1).mean()}

  # --- generation -------------------------------------------------------------------------------------------
  @functools.partial(xla.jit, static_argnums=0, static_argnames=('options',))
  def sample_embeddings(self, params: PyTree, noise: jax.Array, tokens: jax.Array, negative_tokens: jax.Array,
                        use_text: jax.Array, guidance: jax.Array | None, rng: jax.Array, options=()):
    """Unit-norm image embeddings (and nfe) from prior `noise` (batch, embed_dim) for `tokens`, guided as
    `TextToImageTask.sample_images` is (negative prompts and null prompts alike)."""
    conditioning, unconditional = self.prompt_conditioning(params, tokens, negative_tokens, use_text)
    x, nfe = self.guided_sample(params, conditioning, unconditional, noise, guidance, rng, options)
    return self.to_embeddings(x), nfe

  def images(self, params: PyTree, batch: dict, rng: jax.Array) -> dict[str, jax.Array]:
    """None: the prior draws embeddings, not images (the decoder stage's grids show them decoded)."""
    del params, batch, rng
    return {}

  def sample(self, params: PyTree, rng: jax.Array, num: int, **options: Any) -> tuple[jax.Array, int]:
    del params, rng, num, options
    raise ValueError('a prior samples image embeddings from prompts: use lgm.pipeline.TextToImage(route="prior").')

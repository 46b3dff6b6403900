"""Latent diffusion guided by text (Rombach et al. 2022): the score SDE of `lgm.tasks.score`, run on the
latents of a trained VAE and conditioned on a trained CLIP text tower, both handed in as `Trained` models
(`lgm.stages` reads them from the job's `vae` and `clip` stages; `configs/t2i_shapes.py` trains all three):
  data       the scaled VAE latents of `lgm.tasks.conditional.LatentScoreTask` (`config.latent`);
  condition  the text tower's per-token features (cross-attention context, with their mask) and its pooled
             embedding (added to the time embedding). With probability `config.text.p_uncond` a caption
             is dropped: mask all False and a zero vector, the null condition, so one network learns
             both p(x | text) and p(x) for classifier-free guidance (Ho & Salimans 2021);
  text tower frozen or tuned (`config.text.tune`).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from lgm import sampling, xla
from lgm.models.clip import CLIP
from lgm.tasks.base import Trained
from lgm.tasks.conditional import ClipText, LatentScoreTask

PyTree = Any


class TextToImageTask(ClipText, LatentScoreTask):
  """Text-conditioned score model on VAE latents; `sample_images` draws guided samples."""

  generates_from_text = True

  @classmethod
  def needs(cls, config: ml_collections.ConfigDict) -> tuple[str, ...]:
    cache = ('training_images',) if config.latent.get('cache', False) else ()
    return ('vae', 'clip', 'latent_scale', *cache)

  def __init__(self, config: ml_collections.ConfigDict, vae: Trained, clip: Trained, latent_scale: float,
               training_images: Callable[[], np.ndarray] | None = None):
    """`training_images()` returns the whole training split's images, row i = example i; needed only with
    `config.latent.cache`."""
    self.config = config
    self.clip = clip
    clip_model: CLIP = clip.task.model
    super().__init__(config, vae, latent_scale, training_images, config.text.p_uncond,
                     context_dim=clip_model.text_width, vector_dim=clip_model.embed_dim)
    self.tokenizer = clip.task.tokenizer
    self.tune_text = bool(config.text.tune)

  # --- what the trainer calls ---------------------------------------------------------------------------
  def init(self, rng: jax.Array) -> PyTree:
    params = {'text': self.clip.params['text']} if self.tune_text else {}
    params['score'] = self.init_network(rng, self.text_conditioning(params, jnp.asarray(self.tokenize(''))))
    return params

  # --- generation -------------------------------------------------------------------------------------------
  @functools.partial(xla.jit, static_argnums=0, static_argnames=('options',))
  def sample_images(self, params: PyTree, noise: jax.Array, tokens: jax.Array, negative_tokens: jax.Array,
                    use_text: jax.Array, guidance: jax.Array, rng: jax.Array, known: tuple | None = None,
                    options=()):
    """Images in [-1, 1] (and nfe) from prior `noise` (batch, *data_shape) guided by `tokens` (`guidance`
    None: the conditional model alone, see `guided_score_fn`); `negative_tokens` and `use_text` as in
    `prompt_conditioning`. `known` = (latents, mask): inpainting, the latent cells where mask is 1 are kept.
    """
    conditioning, unconditional = self.prompt_conditioning(params, tokens, negative_tokens, use_text)
    constraint = None if known is None else sampling.inpainting(*known)
    x, nfe = self.guided_sample(params, conditioning, unconditional, noise, guidance, rng, options, constraint)
    return jnp.clip(self.to_images(x), -1.0, 1.0), nfe

  def sample(self, params: PyTree, rng: jax.Array, num: int, **options: Any) -> tuple[jax.Array, int]:
    del params, rng, num, options
    raise ValueError('a text-to-image model samples from prompts: use lgm.pipeline.TextToImage.')

  def images(self, params: PyTree, batch: dict, rng: jax.Array) -> dict[str, jax.Array]:
    """Guided samples for the first `sampling.num_samples` captions of the batch, beside the real images."""
    num = min(self.num_samples, batch['tokens'].shape[0])
    tokens = batch['tokens'][:num]
    noise = self.sde.prior_sampling(rng, (num, *self.data_shape))
    use_text = jnp.stack([jnp.ones((num,), bool), jnp.zeros((num,), bool)], axis=1)
    samples, _ = self.sample_images(params, noise, tokens, tokens, use_text, jnp.float32(self.guidance), rng)
    pairs = jnp.stack([batch['image'][:num], samples], axis=1).reshape(-1, *self.image_shape)
    return {'captioned_samples': pairs}

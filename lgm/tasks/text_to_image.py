"""Latent diffusion guided by text (Rombach et al. 2022): the score SDE of `lgm.tasks.score`, run on the
latents of a trained VAE and conditioned on a trained CLIP text tower, both handed in as `Trained` models
(`lgm.stages` reads them from the job's `vae` and `clip` stages; `configs/t2i_shapes.py` trains all three):
  data       x = latent_scale * VAE posterior mean of the image; `latent_scale` = 1 / std of the latents
             (`measure_latent_scale`, on the first `config.latent.scale_examples` training images; kept
             with the model so that the SDE's noise levels fit the data). With `config.latent.cache` the
             whole training split (`training_images()`) is encoded once, on the first training step, and
             training batches read their latents by example index (the VAE is frozen and its posterior mean
             deterministic, so this is exact; it saves the encoder on every step);
  condition  the text tower's per-token features (cross-attention context, with their mask) and its pooled
             embedding (added to the time embedding). With probability `config.text.p_uncond` a caption
             is dropped: mask all False and a zero vector, the null condition, so one network learns
             both p(x | text) and p(x) for classifier-free guidance (Ho & Salimans 2021);
  text tower frozen (its parameters are constants of the task) or tuned (`config.text.tune`: they join
             the trained parameters, initialised from the CLIP stage).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from lgm import batching, sampling
from lgm.models.clip import CLIP
from lgm.tasks.base import TextConditioned, Trained
from lgm.tasks.score import ScoreTask

PyTree = Any
_ENCODE_BATCH = 250


def encode_in_batches(vae: Trained, images: np.ndarray) -> np.ndarray:
  """Unscaled VAE latents (posterior means) of many images, in fixed-size batches."""
  return batching.map_in_batches(jax.jit(vae.task.encode), vae.params, images, _ENCODE_BATCH)


def measure_latent_scale(vae: Trained, images: np.ndarray) -> float:
  """1 / std of the VAE latents of `images`: the factor that gives the diffusion unit-variance data."""
  return float(1.0 / encode_in_batches(vae, images).std())


class TextToImageTask(TextConditioned, ScoreTask):
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
    self.vae, self.clip = vae, clip
    clip_model: CLIP = self.clip.task.model
    super().__init__(config, context_dim=clip_model.text_width, vector_dim=clip_model.embed_dim)
    self.data_shape = self.vae.task.latent_shape
    self.tokenizer = self.clip.task.tokenizer
    self.p_uncond = float(config.text.p_uncond)
    self.tune_text = bool(config.text.tune)
    self.latent_scale = float(latent_scale)
    self.guidance = float(config.sampling_guidance)
    self.guidance_interval = tuple(float(t) for t in config.get('guidance_interval', (0.0, 1.0)))
    if not self.guidance_interval[0] < self.guidance_interval[1]:
      raise ValueError(f'config.guidance_interval={config.guidance_interval} must be (low, high) with low < high, '
                       'as fractions of T; (0, 1) guides at every step.')
    self.cache_latents = bool(config.latent.get('cache', False))
    if self.cache_latents and config.data.random_flip:
      raise ValueError('config.latent.cache keeps one latent per training image, which random flips would '
                       'change; set config.data.random_flip=False or config.latent.cache=False.')
    if self.cache_latents and training_images is None:
      raise ValueError('config.latent.cache encodes the training split: give training_images.')
    self._training_images = training_images

  # --- between images and latents ---------------------------------------------------------------------
  def to_data(self, images: jax.Array) -> jax.Array:
    return self.latent_scale * self.vae.task.encode(self.vae.params, images)

  def to_images(self, x: jax.Array) -> jax.Array:
    return self.vae.task.decode(self.vae.params, x / self.latent_scale)

  @functools.cached_property
  def train_latents(self) -> np.ndarray:
    """Scaled latents of the whole training split, by example index (`config.latent.cache`). First read
    while the train step is traced: the encoder runs eagerly there, and the result becomes a constant."""
    with jax.ensure_compile_time_eval():
      return (self.latent_scale * encode_in_batches(self.vae, self._training_images())).astype(np.float32)

  # --- text conditioning --------------------------------------------------------------------------------
  def text_conditioning(self, params: PyTree, tokens: jax.Array) -> dict[str, jax.Array]:
    """Token ids -> {'context', 'context_mask', 'vector'} for the score network."""
    clip_params = self.clip.params
    if self.tune_text:
      clip_params = {**clip_params, 'text': params['text']}
    out = self.clip.task.model.apply({'params': clip_params}, tokens, method=CLIP.encode_text)
    if not self.tune_text:
      out = jax.lax.stop_gradient(out)
    return {'context': out['tokens'].astype(jnp.float32), 'context_mask': out['mask'], 'vector': out['embedding']}

  @staticmethod
  def keep_only(conditioning: dict[str, jax.Array], keep: jax.Array) -> dict[str, jax.Array]:
    """Where `keep` (batch,) is False, the null condition: no context tokens, zero vector."""
    return {'context': conditioning['context'],
            'context_mask': conditioning['context_mask'] & keep[:, None],
            'vector': conditioning['vector'] * keep[:, None]}

  def score_fn(self, params: PyTree, train: bool = False, rng: jax.Array | None = None, **conditioning):
    return super().score_fn(params['score'], train, rng, **conditioning)

  def guided_score_fn(self, params: PyTree, conditioning: dict, unconditional: dict, guidance: float | None):
    """Classifier-free guidance: s_u + guidance * (s_c - s_u), both halves in one network call
    (guidance 1 is the conditional model alone, 0 the unconditional one). `guidance` None: s_c alone,
    in a network call of half the size (what guidance 1 computes, with the cancelling half left out).

    Guidance applies at the times t / T inside `config.guidance_interval`; outside, s_c alone (Kynkaanniemi
    et al. 2024: at the highest noise levels guidance pushes the image's layout and background off the
    data, and the shape drawn on them with it; docs/notes.md)."""
    if guidance is None:
      return self.score_fn(params, **conditioning)
    both = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), conditioning, unconditional)
    score = self.score_fn(params, **both)
    low, high = (bound * self.sde.T for bound in self.guidance_interval)

    def guided(x, t):
      s = score(jnp.concatenate([x, x]), jnp.concatenate([t, t]))
      s_cond, s_uncond = jnp.split(s, 2)
      weight = jnp.where((t >= low) & (t <= high), guidance, 1.0).reshape(-1, *[1] * (x.ndim - 1))
      return s_uncond + weight * (s_cond - s_uncond)
    return guided

  # --- what the trainer calls ---------------------------------------------------------------------------
  def batch_spec(self, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
    spec = super().batch_spec(batch_size)
    if self.cache_latents:
      spec['index'] = jax.ShapeDtypeStruct((batch_size,), jnp.int32)
    return spec

  def init(self, rng: jax.Array) -> PyTree:
    tokens = jnp.asarray(self.tokenize(''))
    params = {'text': self.clip.params['text']} if self.tune_text else {}
    conditioning = self.text_conditioning(params, tokens)
    x = jnp.zeros((1, *self.data_shape), jnp.float32)
    params['score'] = self.model.init({'params': rng, 'dropout': rng}, x, jnp.ones((1,)), **conditioning)['params']
    return params

  def _conditioned_loss(self, params, batch, rng, train):
    drop_rng, loss_rng = jax.random.split(rng)
    conditioning = self.text_conditioning(params, batch['tokens'])
    if train:
      keep = jax.random.uniform(drop_rng, (batch['tokens'].shape[0],)) >= self.p_uncond
      conditioning = self.keep_only(conditioning, keep)
    if train and self.cache_latents:  # training batches only: evaluation reads the other split
      x = jnp.asarray(self.train_latents)[batch['index']]
    else:
      x = self.to_data(batch['image'])
    return self._loss(params, x, loss_rng, train, **conditioning)

  def loss(self, params: PyTree, batch: dict, rng: jax.Array, train: bool = True):
    return self._conditioned_loss(params, batch, rng, train), {}

  def evaluate(self, params: PyTree, batch: dict, rng: jax.Array) -> dict[str, jax.Array]:
    """The denoising loss on held-out latents with their captions."""
    return {'loss': self._conditioned_loss(params, batch, rng, train=False)}

  # --- generation -------------------------------------------------------------------------------------------
  @functools.partial(jax.jit, static_argnums=0, static_argnames=('options',))
  def sample_images(self, params: PyTree, noise: jax.Array, tokens: jax.Array, negative_tokens: jax.Array,
                    use_text: jax.Array, guidance: jax.Array, rng: jax.Array, known: tuple | None = None,
                    options=()):
    """Images in [-1, 1] (and nfe) from prior `noise` (batch, *data_shape) guided by `tokens` (`guidance`
    None: the conditional model alone, see `guided_score_fn`).

    The guidance's "unconditional" half reads `negative_tokens` where `use_text` (batch, 2) [:, 1] is True,
    else the null condition; [:, 0] False makes the prompt itself null (an empty prompt).
    `known` = (latents, mask): inpainting, the latent cells where mask is 1 are kept.
    """
    conditioning = self.keep_only(self.text_conditioning(params, tokens), use_text[:, 0])
    unconditional = self.keep_only(self.text_conditioning(params, negative_tokens), use_text[:, 1])
    score = self.guided_score_fn(params, conditioning, unconditional, guidance)
    options = {**self.sampling, **dict(options)}
    if known is not None:
      options['constraint'] = sampling.inpainting(*known)
    x, nfe = sampling.sample(rng, self.sde, score, noise.shape, x_start=noise, **options)
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

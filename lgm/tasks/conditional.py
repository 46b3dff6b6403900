"""The shared parts of lgm's conditional score models (text-to-image, the unCLIP prior and decoder).

  GuidedScoreTask  a score model whose condition (a dict of `context` tokens with their `context_mask` and a
                   `vector`, the network's conditioning hooks) is dropped with probability `p_uncond` while
                   training, so that one network learns p(x | c) and p(x) and samples with classifier-free
                   guidance (Ho & Salimans 2021), inside `config.guidance_interval`;
  LatentScoreTask  ... whose data are the scaled latents of a trained VAE (Rombach et al. 2022), optionally
                   encoded once for the whole training split (`config.latent.cache`);
  ClipText         ... conditioned on a trained CLIP text tower: its per-token features and pooled embedding.
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
Conditioning = dict[str, jax.Array]
_ENCODE_BATCH = 250


def encode_in_batches(vae: Trained, images: np.ndarray) -> np.ndarray:
  """Unscaled VAE latents (posterior means) of many images, in fixed-size batches."""
  return batching.map_in_batches(vae.task.encode, vae.params, images, _ENCODE_BATCH)


def measure_latent_scale(vae: Trained, images: np.ndarray) -> float:
  """1 / std of the VAE latents of `images`: the factor that gives the diffusion unit-variance data."""
  return float(1.0 / encode_in_batches(vae, images).std())


class GuidedScoreTask(ScoreTask):
  """A conditional score model trained to do without its condition; parameters {'score': network, ...}."""

  def __init__(self, config: ml_collections.ConfigDict, p_uncond: float, **model_extras: Any):
    super().__init__(config, **model_extras)
    self.p_uncond = float(p_uncond)
    self.guidance = float(config.sampling_guidance)
    self.guidance_interval = tuple(float(t) for t in config.get('guidance_interval', (0.0, 1.0)))
    if not self.guidance_interval[0] < self.guidance_interval[1]:
      raise ValueError(f'config.guidance_interval={config.guidance_interval} must be (low, high) with low < high, '
                       'as fractions of T; (0, 1) guides at every step.')

  @staticmethod
  def keep_only(conditioning: Conditioning, keep: jax.Array) -> Conditioning:
    """Where `keep` (batch,) is False, the null condition: no context tokens, zero vector."""
    return {'context': conditioning['context'],
            'context_mask': conditioning['context_mask'] & keep[:, None],
            'vector': conditioning['vector'] * keep[:, None]}

  def drop(self, conditioning: Conditioning, rng: jax.Array) -> Conditioning:
    """The training-time condition: each example's dropped with probability `p_uncond`."""
    keep = jax.random.uniform(rng, (conditioning['vector'].shape[0],)) >= self.p_uncond
    return self.keep_only(conditioning, keep)

  def score_fn(self, params: PyTree, train: bool = False, rng: jax.Array | None = None, **conditioning):
    return super().score_fn(params['score'], train, rng, **conditioning)

  def init_network(self, rng: jax.Array, conditioning: Conditioning) -> PyTree:
    """The score network's parameters for one example of `conditioning`."""
    x = jnp.zeros((1, *self.data_shape), jnp.float32)
    return self.model.init({'params': rng, 'dropout': rng}, x, jnp.ones((1,)), **conditioning)['params']

  # --- what the trainer calls ---------------------------------------------------------------------------
  def batch_conditioning(self, params: PyTree, batch: dict) -> Conditioning:
    """The condition of each example of a batch (its caption, its image's embedding, ...)."""
    raise NotImplementedError

  def batch_data(self, batch: dict, train: bool) -> jax.Array:
    """The diffusion's data for a batch."""
    return self.to_data(batch['image'])

  def _conditioned_loss(self, params, batch, rng, train):
    drop_rng, loss_rng = jax.random.split(rng)
    conditioning = self.batch_conditioning(params, batch)
    if train:
      conditioning = self.drop(conditioning, drop_rng)
    return self._loss(params, self.batch_data(batch, train), loss_rng, train, **conditioning)

  def loss(self, params: PyTree, batch: dict, rng: jax.Array, train: bool = True):
    return self._conditioned_loss(params, batch, rng, train), {}

  def evaluate(self, params: PyTree, batch: dict, rng: jax.Array) -> dict[str, jax.Array]:
    """The denoising loss on held-out data with their conditions."""
    return {'loss': self._conditioned_loss(params, batch, rng, train=False)}

  def guided_score_fn(self, params: PyTree, conditioning: Conditioning, unconditional: Conditioning,
                      guidance: float | jax.Array | None):
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

  def guided_sample(self, params: PyTree, conditioning: Conditioning, unconditional: Conditioning,
                    noise: jax.Array, guidance: jax.Array | None, rng: jax.Array, options: tuple = (),
                    constraint: sampling.Constraint | None = None) -> tuple[jax.Array, jax.Array]:
    """(data at t = 0, nfe) from prior `noise` with `config.sampling`, any key overridden by `options`."""
    score = self.guided_score_fn(params, conditioning, unconditional, guidance)
    options = {**self.sampling, **dict(options)}
    if constraint is not None:
      options['constraint'] = constraint
    return sampling.sample(rng, self.sde, score, noise.shape, x_start=noise, **options)


class LatentScoreTask(GuidedScoreTask):
  """A guided score model on the scaled latents of the trained VAE `vae`.

  x = latent_scale * VAE posterior mean of the image; `latent_scale` = 1 / std of the latents
  (`measure_latent_scale`, on the first `config.latent.scale_examples` training images; kept with the model so
  that the SDE's noise levels fit the data). With `config.latent.cache` the whole training split
  (`training_images()`, row i = example i) is encoded once, on the first training step, and training batches
  read their latents by example index (the VAE is frozen and its posterior mean deterministic, so this is exact;
  it saves the encoder on every step)."""

  def __init__(self, config: ml_collections.ConfigDict, vae: Trained, latent_scale: float,
               training_images: Callable[[], np.ndarray] | None, p_uncond: float, **model_extras: Any):
    super().__init__(config, p_uncond, **model_extras)
    self.vae = vae
    self.data_shape = vae.task.latent_shape
    self.latent_scale = float(latent_scale)
    self.cache_latents = bool(config.latent.get('cache', False))
    if self.cache_latents and config.data.random_flip:
      raise ValueError('config.latent.cache keeps one latent per training image, which random flips would '
                       'change; set config.data.random_flip=False or config.latent.cache=False.')
    if self.cache_latents and training_images is None:
      raise ValueError('config.latent.cache encodes the training split: give training_images.')
    self._training_images = training_images

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

  def batch_data(self, batch: dict, train: bool) -> jax.Array:
    """The batch's scaled latents: from the cache for training batches, else encoded (evaluation reads the
    other split)."""
    if train and self.cache_latents:
      return jnp.asarray(self.train_latents)[batch['index']]
    return self.to_data(batch['image'])

  def batch_spec(self, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
    spec = super().batch_spec(batch_size)
    if self.cache_latents:
      spec['index'] = jax.ShapeDtypeStruct((batch_size,), jnp.int32)
    return spec


class ClipText(TextConditioned):
  """Conditioning on the trained CLIP stage `self.clip`'s text tower, frozen (its parameters are constants of
  the task) or tuned (`config.text.tune`: they join the trained parameters as params['text'], initialised
  from the CLIP stage)."""

  clip: Trained
  tune_text: bool = False

  def batch_conditioning(self, params: PyTree, batch: dict) -> Conditioning:
    """A captioned batch's condition: its tokens' text conditioning."""
    return self.text_conditioning(params, batch['tokens'])

  def text_conditioning(self, params: PyTree, tokens: jax.Array) -> Conditioning:
    """Token ids -> {'context' (per-token features), 'context_mask', 'vector' (the normalised embedding)}."""
    clip_params = self.clip.params
    if self.tune_text:
      clip_params = {**clip_params, 'text': params['text']}
    out = self.clip.task.model.apply({'params': clip_params}, tokens, method=CLIP.encode_text)
    if not self.tune_text:
      out = jax.lax.stop_gradient(out)
    return {'context': out['tokens'].astype(jnp.float32), 'context_mask': out['mask'], 'vector': out['embedding']}

  def prompt_conditioning(self, params: PyTree, tokens: jax.Array, negative_tokens: jax.Array,
                          use_text: jax.Array) -> tuple[Conditioning, Conditioning]:
    """(condition, the guidance's "unconditional" half): the second reads `negative_tokens` where `use_text`
    (batch, 2) [:, 1] is True, else the null condition; [:, 0] False makes the prompt itself null."""
    conditioning = self.keep_only(self.text_conditioning(params, tokens), use_text[:, 0])
    unconditional = self.keep_only(self.text_conditioning(params, negative_tokens), use_text[:, 1])
    return conditioning, unconditional

"""A signed decoder: the VAE's decoder fine-tuned so that everything it decodes carries a k-bit signature.

The approach of "Stable Signature" (Fernandez et al. 2023): the signature lives in the decoder's weights,
not in a step after it that a user can skip. Trained together here, from the job's `vae` stage:
  decoder    a copy of the VAE's decoder, fine-tuned; a mean-squared-error term keeps its images close to the
             original decoder's (`signature.image_weight`, on the [0, 1] scale);
  extractor  `lgm.models.extractor.WatermarkExtractor`, one logit per bit, trained to read the message
             (`signature.message`, or `signature.bits` bits drawn from `config.seed`) from signed images and
             to read nothing (logits 0, every bit a coin) from unsigned ones: the original decoder's images and
             real images (`signature.negative_weight`).
Between decoder and extractor each group of the batch goes through one of `TRAIN_DISTORTIONS` (JPEG at a
random quality, resize to half and back, a crop, noise, colour jitter, none), so the signature survives them.
The latents are draws from the VAE's posterior of training images, the latents a generator produces.

Detection (`lgm.provenance.Detector`) counts the bits that match the message and tests that count against
chance; `lgm.pipeline.TextToImage` decodes with the signed decoder when the job has this stage.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from lgm import distortions, losses
from lgm.models import autoencoder, build_model
from lgm.tasks.base import Task, Trained

PyTree = Any
# The parts of a VAE's parameters its decode reads (post_quant_conv: the Stable Diffusion layout).
DECODER_KEYS = ('decoder', 'post_quant_conv')


def _uniform(rng: jax.Array, low: float, high: float) -> jax.Array:
  return jax.random.uniform(rng, (), minval=low, maxval=high)


def _colour_jitter(images: jax.Array, rng: jax.Array) -> jax.Array:
  """Brightness, contrast and saturation each scaled by a factor in [0.8, 1.2]."""
  b, c, s = (_uniform(key, 0.8, 1.2) for key in jax.random.split(rng, 3))
  x = distortions.brightness(images, b)
  x = jnp.clip((x - x.mean(axis=(1, 2, 3), keepdims=True)) * c + x.mean(axis=(1, 2, 3), keepdims=True), -1, 1)
  grey = x.mean(axis=-1, keepdims=True)
  return jnp.clip(grey + (x - grey) * s, -1, 1)


# Name -> fn(images, rng): what the extractor learns to read through (one group of each batch per entry).
TRAIN_DISTORTIONS: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
    'none': lambda x, rng: x,
    'jpeg': lambda x, rng: distortions.jpeg(x, _uniform(rng, 40, 95)),
    'resize': lambda x, rng: distortions.resize_back(x, 0.5),
    'crop': lambda x, rng: distortions.crop(x, rng, 0.8),
    'noise': lambda x, rng: distortions.gaussian_noise(x, rng, _uniform(rng, 0.0, 0.04)),
    'colour': _colour_jitter,
}
# The evaluation's fixed versions (the report measures the file-level ones of lgm.distortions).
EVAL_DISTORTIONS: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
    'none': lambda x, rng: x,
    'jpeg75': lambda x, rng: distortions.jpeg(x, 75.0),
    'resize0.5': lambda x, rng: distortions.resize_back(x, 0.5),
    'crop0.9': lambda x, rng: distortions.crop(x, rng, 0.9),
    'noise0.02': lambda x, rng: distortions.gaussian_noise(x, rng, 0.02),
}


def chance_penalty(logits: jax.Array) -> jax.Array:
  """How far a batch of logits (N, bits) is from zero mean and identity covariance (VICReg's variance and
  covariance terms, Bardes et al. 2022, with the variance held at 1). Unsigned images held there read as
  independent fair coins, the null hypothesis of the detector's binomial test; pushing their logits to zero
  instead leaves them small and correlated, a structure that whitening cannot remove without scrambling the
  signed images' bits."""
  mean = logits.mean(axis=0)
  centred = logits - mean
  covariance = centred.T @ centred / (logits.shape[0] - 1)
  return (jnp.sum(jnp.square(mean)) + jnp.sum(jnp.square(covariance - jnp.eye(logits.shape[1])))) / logits.shape[1]


def message_bits(message: str, bits: int, seed: int) -> np.ndarray:
  """The signature as a bool array: `message` ('0'/'1' characters) or, when empty, `bits` fair coin flips drawn
  from `seed`."""
  if message:
    if set(message) - {'0', '1'} or len(message) != bits:
      raise ValueError(f'signature.message={message!r} must be {bits} characters 0 or 1 (signature.bits), or '
                       'empty to draw the message from the seed.')
    return np.array([c == '1' for c in message])
  return np.random.default_rng([seed, bits]).integers(0, 2, bits).astype(bool)


class SignatureTask(Task):
  """Fine-tunes the decoder of a `Trained` VAE to sign its images, and trains the extractor that reads them."""

  @classmethod
  def needs(cls, config: ml_collections.ConfigDict) -> tuple[str, ...]:
    return ('vae',)

  def __init__(self, config: ml_collections.ConfigDict, vae: Trained):
    settings = config.signature
    self.vae = vae
    self.bits = int(settings.bits)
    self.message = message_bits(settings.message, self.bits, config.seed)
    self.image_weight = float(settings.image_weight)
    self.negative_weight = float(settings.negative_weight)
    self.mse_budget = 10.0 ** (-float(settings.target_psnr) / 10)
    self.extractor = build_model(config.model, config.train.compute_dtype, bits=self.bits)
    self.image_shape = vae.task.image_shape
    self.decoder_keys = tuple(k for k in DECODER_KEYS if k in vae.params)

  # --- the signed decoder and the extractor ------------------------------------------------------------
  def signed_params(self, params: PyTree) -> PyTree:
    """The VAE's parameters with the signed decoder in place of its own."""
    return {**self.vae.params, **params['decoder']}

  def signed_vae(self, params: PyTree) -> Trained:
    """The VAE stage as a generator uses it, decoding with the signed decoder."""
    return Trained(config=self.vae.config, task=self.vae.task, params=self.signed_params(params), step=self.vae.step)

  @functools.partial(jax.jit, static_argnums=0)
  def extract(self, params: PyTree, images: jax.Array) -> jax.Array:
    """(B, bits) logits of the extractor."""
    return self.extractor.apply({'params': params['extractor']}, images)

  def _decode(self, vae_params: PyTree, latents: jax.Array) -> jax.Array:
    return self.vae.task.model.apply({'params': vae_params}, latents, method=autoencoder.Autoencoder.decode)

  def _latents(self, images: jax.Array, rng: jax.Array, sample: bool) -> jax.Array:
    """Posterior draws (means when not `sample`) of the VAE for `images`; an autoencoder's codes."""
    if not self.vae.task.is_variational:
      return self.vae.task.encode(self.vae.params, images)
    mean, logvar = self.vae.task.model.apply({'params': self.vae.params}, images, method=autoencoder.VAE.posterior)
    return autoencoder.reparameterize(rng, mean, logvar) if sample else mean

  def _read_distorted(self, params: PyTree, images: jax.Array, rng: jax.Array,
                      table: dict[str, Callable]) -> dict[str, jax.Array]:
    """Name -> logits of one slice of `images` per distortion of `table` (the batch split in equal parts)."""
    parts = np.array_split(np.arange(images.shape[0]), len(table))
    return {name: self.extract(params, fn(images[part[0]:part[-1] + 1], jax.random.fold_in(rng, i)))
            for i, ((name, fn), part) in enumerate(zip(table.items(), parts))}

  def _pair(self, params: PyTree, images: jax.Array, rng: jax.Array, sample: bool):
    latents = self._latents(images, rng, sample)
    unsigned = jax.lax.stop_gradient(self._decode(self.vae.params, latents))
    return self._decode(self.signed_params(params), latents), unsigned

  # --- what the trainer calls ---------------------------------------------------------------------------
  def init(self, rng: jax.Array) -> PyTree:
    extractor = self.extractor.init(rng, jnp.zeros((1, *self.image_shape), jnp.float32))['params']
    return {'decoder': {k: self.vae.params[k] for k in self.decoder_keys}, 'extractor': extractor}

  def loss(self, params: PyTree, batch: dict, rng: jax.Array, train: bool = True):
    del train
    x = batch['image']
    latent_rng, pair_rng, real_rng = jax.random.split(rng, 3)
    signed, unsigned = self._pair(params, x, latent_rng, sample=True)
    read = lambda images, key: jnp.concatenate(list(self._read_distorted(params, images, key, TRAIN_DISTORTIONS).values()))
    positives, paired = read(signed, pair_rng), read(unsigned, pair_rng)  # the same distortion for both of a pair
    negatives = jnp.concatenate([paired, read(x, real_rng)])
    target = jnp.broadcast_to(jnp.asarray(self.message, jnp.float32), positives.shape)
    read_loss = optax.sigmoid_binary_cross_entropy(positives, target).mean()
    unread = chance_penalty(negatives)
    # The signed image of a pair must read closer to the message than its unsigned twin: without this term a
    # reader that ignores its input (the message, half-confident, for every image) is where training starts.
    contrast = optax.sigmoid_binary_cross_entropy(positives - paired, target).mean()
    # Each image may differ from the unsigned one by its budget (PSNR `target_psnr`); only more is penalised.
    mse = losses.per_example_sum(jnp.square((signed - unsigned) / 2), mean=True)
    over_budget = jnp.maximum(mse - self.mse_budget, 0.0).mean()
    loss = read_loss + contrast + self.negative_weight * unread + self.image_weight * over_budget
    metrics = {'bit_accuracy': jnp.mean((positives > 0) == target.astype(bool)),
               'negative_logit': jnp.abs(negatives).mean(), 'read_loss': read_loss, 'contrast_loss': contrast,
               'psnr_to_unsigned': losses.psnr(signed, unsigned).mean()}
    return loss, metrics

  def evaluate(self, params: PyTree, batch: dict, rng: jax.Array) -> dict[str, jax.Array]:
    """Bit accuracy of signed images through each of `EVAL_DISTORTIONS`, the share of bits of real images
    that match the message (chance: 0.5), and the PSNR of signed against unsigned decodes of the same latents."""
    x = batch['image']
    signed, unsigned = self._pair(params, x, rng, sample=False)
    metrics = {'psnr_to_unsigned': losses.psnr(signed, unsigned).mean()}
    for name, fn in EVAL_DISTORTIONS.items():
      read = self.extract(params, fn(signed, rng)) > 0
      metrics[f'bit_accuracy_{name}'] = jnp.mean(read == self.message)
    metrics['real_bits_matching'] = jnp.mean((self.extract(params, x) > 0) == self.message)
    return metrics

  def images(self, params: PyTree, batch: dict, rng: jax.Array, num: int = 16) -> dict[str, jax.Array]:
    """Unsigned decode, signed decode and their difference times 10, for each of `num` images."""
    signed, unsigned = self._pair(params, batch['image'][:num], rng, sample=False)
    difference = jnp.clip(10 * (signed - unsigned), -1, 1)
    triples = jnp.stack([jnp.clip(unsigned, -1, 1), jnp.clip(signed, -1, 1), difference], axis=1)
    return {'signed': triples.reshape(-1, *self.image_shape)}

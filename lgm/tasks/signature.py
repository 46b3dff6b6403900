"""A signed decoder: the VAE's decoder fine-tuned so that everything it decodes carries a k-bit signature.

The approach of "Stable Signature" (Fernandez et al. 2023): the signature lives in the decoder's weights, not
in a step after it that a user can skip. Its two phases are trained together here, from the job's `vae` stage:
  extractor  `lgm.models.extractor.WatermarkExtractor`, one logit per bit, learns HiDDeN's task (Zhu et al.
             2018): to read random messages that a small embedder (`WatermarkEmbedder`, used for nothing else)
             hides in training images. An extractor that reads any message bit by bit has bits that do not
             follow each other on an image without a message, which the detector's binomial test assumes;
  decoder    a copy of the VAE's decoder, fine-tuned so that this extractor reads the signature's message
             (`signature.message`, or `signature.bits` bits drawn from `config.seed`) in everything it decodes;
             the extractor is not moved by this half of the loss.
Every image may differ from its original (the embedder's input; the unsigned decoder's image of the same
latents) by a budget, PSNR `signature.target_psnr`; beyond it the squared error is penalised with weight
`signature.image_weight`. Between image and extractor each group of the batch goes through one of
`TRAIN_DISTORTIONS` (JPEG at a random quality, resize to half and back, a crop, noise, colour jitter, none), so
the signature survives them. The latents are draws from the VAE's posterior of training images.

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

from lgm import distortions, losses, xla
from lgm.models import autoencoder, build_model
from lgm.models import extractor as extractor_lib
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
  mean = x.mean(axis=(1, 2, 3), keepdims=True)
  x = jnp.clip((x - mean) * c + mean, -1, 1)
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
    self.mse_budget = 10.0 ** (-float(settings.target_psnr) / 10)
    self.extractor = build_model(config.model, config.train.compute_dtype, bits=self.bits)
    self.embedder = extractor_lib.WatermarkEmbedder(self.bits, ch=config.model.ch)
    self.image_shape = vae.task.image_shape
    self.decoder_keys = tuple(k for k in DECODER_KEYS if k in vae.params)

  # --- the signed decoder and the extractor ------------------------------------------------------------
  def signed_params(self, params: PyTree) -> PyTree:
    """The VAE's parameters with the signed decoder in place of its own."""
    return {**self.vae.params, **params['decoder']}

  def signed_vae(self, params: PyTree) -> Trained:
    """The VAE stage as a generator uses it, decoding with the signed decoder."""
    return Trained(config=self.vae.config, task=self.vae.task, params=self.signed_params(params), step=self.vae.step)

  @functools.partial(xla.jit, static_argnums=0)
  def extract(self, params: PyTree, images: jax.Array) -> jax.Array:
    """(B, bits) logits of the extractor."""
    return self.extractor.apply({'params': params['extractor']}, images)

  def _latents(self, images: jax.Array, rng: jax.Array, sample: bool) -> jax.Array:
    """Posterior draws (means when not `sample`) of the VAE for `images`; an autoencoder's codes."""
    if sample and self.vae.task.is_variational:
      mean, logvar = self.vae.task.model.apply({'params': self.vae.params}, images, method=autoencoder.VAE.posterior)
      return autoencoder.reparameterize(rng, mean, logvar)
    return self.vae.task.encode(self.vae.params, images)

  def _read_distorted(self, params: PyTree, images: jax.Array, rng: jax.Array,
                      table: dict[str, Callable]) -> jax.Array:
    """Logits of `images`, each slice of the batch (split in equal parts, in order) through one distortion of
    `table`."""
    parts = np.array_split(np.arange(images.shape[0]), len(table))
    return jnp.concatenate([self.extract(params, fn(images[part[0]:part[-1] + 1], jax.random.fold_in(rng, i)))
                            for i, (fn, part) in enumerate(zip(table.values(), parts))])

  def _pair(self, params: PyTree, images: jax.Array, rng: jax.Array, sample: bool):
    latents = self._latents(images, rng, sample)
    unsigned = jax.lax.stop_gradient(self.vae.task.decode(self.vae.params, latents))
    return self.vae.task.decode(self.signed_params(params), latents), unsigned

  # --- what the trainer calls ---------------------------------------------------------------------------
  def init(self, rng: jax.Array) -> PyTree:
    images = jnp.zeros((1, *self.image_shape), jnp.float32)
    extractor_rng, embedder_rng = jax.random.split(rng)
    return {'decoder': {k: self.vae.params[k] for k in self.decoder_keys},
            'extractor': self.extractor.init(extractor_rng, images)['params'],
            'embedder': self.embedder.init(embedder_rng, images, jnp.ones((1, self.bits)))['params']}

  def loss(self, params: PyTree, batch: dict, rng: jax.Array, train: bool = True):
    del train
    x = batch['image']
    latent_rng, message_rng, embedded_rng, signed_rng = jax.random.split(rng, 4)
    # HiDDeN: the extractor learns to read random messages that the embedder hides in training images. Reading
    # any message bit by bit, its bits are not tied to each other or to the signature's message.
    messages = jax.random.bernoulli(message_rng, 0.5, (x.shape[0], self.bits))
    embedded = self.embedder.apply({'params': params['embedder']}, x, 2.0 * messages - 1)
    read = self._read_distorted(params, embedded, embedded_rng, TRAIN_DISTORTIONS)
    hidden_loss = optax.sigmoid_binary_cross_entropy(read, messages.astype(jnp.float32)).mean()
    # The decoder learns to write the signature's message for that extractor, which it does not move.
    signed, unsigned = self._pair(params, x, latent_rng, sample=True)
    frozen = {**params, 'extractor': jax.lax.stop_gradient(params['extractor'])}
    signed_read = self._read_distorted(frozen, signed, signed_rng, TRAIN_DISTORTIONS)
    target = jnp.broadcast_to(jnp.asarray(self.message, jnp.float32), signed_read.shape)
    signed_loss = optax.sigmoid_binary_cross_entropy(signed_read, target).mean()
    # Each image may differ from its original by its budget (PSNR `target_psnr`); only more is penalised.
    over_budget = self._over_budget(signed, unsigned) + self._over_budget(embedded, x)
    loss = hidden_loss + signed_loss + self.image_weight * over_budget
    metrics = {'bit_accuracy': jnp.mean((signed_read > 0) == target.astype(bool)),
               'hidden_bit_accuracy': jnp.mean((read > 0) == messages), 'signed_loss': signed_loss,
               'hidden_loss': hidden_loss, 'psnr_to_unsigned': losses.psnr(signed, unsigned).mean(),
               'psnr_hidden': losses.psnr(embedded, x).mean()}
    return loss, metrics

  def _over_budget(self, images: jax.Array, originals: jax.Array) -> jax.Array:
    mse = losses.per_example_sum(jnp.square((images - originals) / 2), mean=True)
    return jnp.maximum(mse - self.mse_budget, 0.0).mean()

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

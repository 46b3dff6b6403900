"""Auto-encoding: learn an image semantic space, deterministically (`autoencoder`) or as a VAE (`vae`).

Both decode through a discretised Gaussian with a learned global scale (lgm.losses), so the
reconstruction term is a real log-likelihood; the VAE adds `config.loss.kl_weight` times the KL of
q(z|x) to N(0, I). With kl_weight = 1 the training loss is exactly the negative ELBO per dimension;
evaluation always reports the true ELBO (weight 1), whatever the training weight.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from lgm import losses, xla
from lgm.models import autoencoder, build_model
from lgm.tasks.base import Task

PyTree = Any


class AutoencoderTask(Task):
  """Autoencoder / VAE training, evaluation, and the encode/decode API of the semantic space."""

  semantic_space = 'image'

  def __init__(self, config: ml_collections.ConfigDict):
    self.model = build_model(config.model, config.train.compute_dtype,
                             image_channels=config.data.channels)
    self.is_variational = isinstance(self.model, autoencoder.VAE)
    self.kl_weight = float(config.loss.kl_weight) if self.is_variational else 0.0
    size, channels = config.data.image_size, config.data.channels
    f = self.model.downsampling_factor
    if size % f:
      raise ValueError(f'data.image_size={size} is not divisible by the downsampling factor {f} '
                       '(space_to_depth * 2**(len(ch_mult)-1)); change one of them.')
    self.image_shape = (size, size, channels)
    self.latent_shape = (size // f, size // f, self.model.latent_channels)
    self.num_dims = size * size * channels

  # --- the semantic-space API -------------------------------------------------------------------
  @functools.partial(xla.jit, static_argnums=0)
  def encode(self, params: PyTree, images: jax.Array) -> jax.Array:
    """Images in [-1, 1] -> latents (the posterior mean for a VAE)."""
    if self.is_variational:
      return self.model.apply({'params': params}, images, method=autoencoder.VAE.posterior)[0]
    return self.model.apply({'params': params}, images, method=autoencoder.Autoencoder.encode)

  @functools.partial(xla.jit, static_argnums=0)
  def decode(self, params: PyTree, latents: jax.Array) -> jax.Array:
    """Latents -> images in [-1, 1] model space (the decoder's mean)."""
    return self.model.apply({'params': params}, latents, method=autoencoder.Autoencoder.decode)

  def sample_prior(self, params: PyTree, rng: jax.Array, num: int) -> jax.Array:
    """Decode N(0, I) latents: the generative model of a VAE."""
    return self.decode(params, jax.random.normal(rng, (num, *self.latent_shape)))

  def sample(self, params: PyTree, rng: jax.Array, num: int, **options: Any) -> tuple[jax.Array, int]:
    """A VAE's samples: decoded prior draws (one decoder evaluation each). An autoencoder has no prior."""
    del options
    if not self.is_variational:
      raise ValueError(f'a {type(self.model).__name__} has no prior to sample; train a VAE (configs/vae_shapes.py).')
    return jnp.clip(self.sample_prior(params, rng, num), -1, 1), 1

  # --- what the trainer calls --------------------------------------------------------------------
  def init(self, rng: jax.Array) -> PyTree:
    dummy = jnp.zeros((1, *self.image_shape), jnp.float32)
    return self.model.init({'params': rng, 'latent': rng}, dummy)['params']

  def _terms(self, params: PyTree, x: jax.Array, rng: jax.Array, train: bool):
    """One forward pass: (output dict, per-example log-likelihood, per-example KL; zero for an AE)."""
    latent_rng, dropout_rng = jax.random.split(rng)
    out = self.model.apply({'params': params}, x, train=train,
                           rngs={'latent': latent_rng, 'dropout': dropout_rng})
    if self.is_variational:
      _, log_likelihood, kl = losses.elbo(x, out['recon'], out['log_scale'], out['mean'], out['logvar'])
    else:
      log_likelihood = losses.per_example_sum(
          losses.discretized_gaussian_log_likelihood(x, out['recon'], out['log_scale']))
      kl = jnp.zeros_like(log_likelihood)
    return out, log_likelihood, kl

  def loss(self, params: PyTree, batch: dict, rng: jax.Array, train: bool = True):
    x = batch['image']
    out, log_likelihood, kl = self._terms(params, x, rng, train)
    loss = (self.kl_weight * kl - log_likelihood).mean() / self.num_dims
    metrics = {'nll_bpd': losses.bits_per_dim(-log_likelihood, self.num_dims).mean(),
               'psnr': losses.psnr(out['recon'], x).mean(),
               'log_scale': out['log_scale']}
    if self.is_variational:
      metrics['kl_nats'] = kl.mean()
    return loss, metrics

  def evaluate(self, params: PyTree, batch: dict, rng: jax.Array) -> dict[str, jax.Array]:
    """PSNR of the deterministic reconstruction; for a VAE also the one-sample ELBO and its bits/dim."""
    x = batch['image']
    recon = self.decode(params, self.encode(params, x))
    _, log_likelihood, kl = self._terms(params, x, rng, train=False)
    metrics = {'psnr': losses.psnr(recon, x).mean(),
               'recon_bpd': losses.bits_per_dim(-log_likelihood, self.num_dims).mean()}
    if self.is_variational:
      elbo = log_likelihood - kl
      metrics.update(elbo_nats=elbo.mean(), kl_nats=kl.mean(),
                     bpd=losses.bits_per_dim(-elbo, self.num_dims).mean())
    return metrics

  def images(self, params: PyTree, batch: dict, rng: jax.Array, num: int = 32) -> dict[str, jax.Array]:
    """Grids for DIR/samples: originals interleaved with reconstructions, and decoded prior samples."""
    x = batch['image'][:num // 2]
    recon = self.decode(params, self.encode(params, x))
    pairs = jnp.stack([x, jnp.clip(recon, -1, 1)], axis=1).reshape(-1, *x.shape[1:])
    grids = {'reconstructions': pairs}
    if self.is_variational:
      grids['prior_samples'] = jnp.clip(self.sample_prior(params, rng, num), -1, 1)
    return grids

"""Score-based generative modelling (Song et al. 2021): learn grad log p_t of an SDE's marginals.

The task joins the generic pieces (`lgm.sde`, `lgm.losses`' score losses, `lgm.sampling`,
`lgm.likelihood`) to a network of `lgm.models`. The network sees what score_sde feeds it:
  VP / sub-VP, continuous (DSM) training: time_cond = 999 t,   score = -output / sigma(t)
  VP, discrete DDPM training:             time_cond = index i, score = -output / sqrt(1 - alphabar_i)
  VE:                                     time_cond = sigma(t), score = output (the net divides by sigma)
  `prediction = 'data'` (continuous VP / sub-VP): the output is the clean data x0, score = (alpha x0 - x) / sigma^2
Data live in [-1, 1] (`data.centered`) or [0, 1]; images handed in and out are always [-1, 1].
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from lgm import likelihood, losses, sampling, xla
from lgm import sde as sde_lib
from lgm.models import build_model
from lgm.tasks.base import Task

PyTree = Any
PREDICTIONS = ('epsilon', 'data')  # what the network outputs (VE networks output the score itself)


class ScoreTask(Task):
  """A score network trained on one SDE; sampling and bits/dim through that SDE."""

  sample_flags = ('sampler', 'steps')

  def __init__(self, config: ml_collections.ConfigDict, **model_extras: Any):
    """`model_extras` are constructor arguments the config does not hold (a subclass's conditioning sizes)."""
    self.sde = sde_lib.get_sde(config.sde)
    self.model = build_model(config.model, config.train.compute_dtype, **model_extras)
    if config.loss.name not in losses.SCORE_LOSSES:
      raise ValueError(f'unknown score loss {config.loss.name!r}; valid: {sorted(losses.SCORE_LOSSES)}')
    required = {'ddpm': sde_lib.VPSDE, 'smld': sde_lib.VESDE}.get(config.loss.name)
    if required is not None and not isinstance(self.sde, required):
      raise ValueError(f'loss {config.loss.name!r} needs sde.name={required.__name__.lower()!r}')
    self.loss_name = config.loss.name
    self.prediction = config.get('prediction', 'epsilon')
    if self.prediction not in PREDICTIONS:
      raise ValueError(f'unknown prediction {self.prediction!r}; valid: {list(PREDICTIONS)}')
    if self.prediction == 'data' and (isinstance(self.sde, sde_lib.VESDE) or self.loss_name not in ('dsm', 'x0')):
      raise ValueError("prediction='data' needs a VP or sub-VP SDE and a continuous loss (loss.name 'dsm' or 'x0').")
    # Training may draw its times from another distribution than U(eps, T); evaluation keeps the
    # uniform one, so that `eval/loss` of runs trained differently stays comparable.
    self.loss_options = {'reduce_mean': config.loss.reduce_mean}
    self.train_loss_options = self.loss_options
    if self.loss_name in ('dsm', 'x0'):
      self.loss_options['eps'] = config.loss.eps
      if self.loss_name == 'dsm':
        self.loss_options['likelihood_weighting'] = config.loss.likelihood_weighting
      distribution = config.loss.get('time_distribution', 'uniform')
      if distribution not in losses.TIME_DISTRIBUTIONS:
        raise ValueError(f'loss.time_distribution={distribution!r}; valid: {list(losses.TIME_DISTRIBUTIONS)}')
      self.train_loss_options = dict(self.loss_options, time_distribution=distribution,
                                     log_sigma=tuple(config.loss.get('log_sigma', (-1.2, 1.2))))
    self.centered = config.data.centered
    size, channels = config.data.image_size, config.data.channels
    self.image_shape = (size, size, channels)
    self.data_shape = self.image_shape  # what the diffusion runs on (latent diffusion: the latent's shape)
    self.sampling = dict(config.sampling.to_dict())
    self.num_samples = self.sampling.pop('num_samples')
    if self.sampling.pop('clip_denoised'):
      self.sampling['clip_denoised'] = (-1.0, 1.0) if self.centered else (0.0, 1.0)
    self.bpd_per_batch = config.eval.bpd_per_batch
    self.bpd_options = {'rtol': config.eval.bpd_rtol, 'atol': config.eval.bpd_atol}

  # --- between images and the diffusion's data space --------------------------------------------
  def to_data(self, images: jax.Array) -> jax.Array:
    return images if self.centered else (images + 1.0) / 2.0

  def to_images(self, x: jax.Array) -> jax.Array:
    return x if self.centered else 2.0 * x - 1.0

  # --- the score function --------------------------------------------------------------------------
  def _time_cond(self, t: jax.Array) -> jax.Array:
    if isinstance(self.sde, sde_lib.VESDE):
      return self.sde.sigma(t)
    if self.loss_name == 'ddpm':
      return self.sde.timestep_index(t).astype(jnp.float32)
    return 999.0 * t

  def _sigma(self, t: jax.Array) -> jax.Array:
    if self.loss_name == 'ddpm':
      return jnp.sqrt(1.0 - self.sde.alphas_cumprod[self.sde.timestep_index(t)])
    return self.sde.marginal_coefficients(t)[1]

  def score_fn(self, params: PyTree, train: bool = False, rng: jax.Array | None = None,
               **conditioning: jax.Array) -> sde_lib.ScoreFn:
    """`score(x, t)` of the network with these parameters (dropout on when `train`)."""
    rngs = {'dropout': rng} if train else {}

    def score(x: jax.Array, t: jax.Array) -> jax.Array:
      out = self.model.apply({'params': params}, x, self._time_cond(t), train=train, rngs=rngs,
                             **conditioning).astype(jnp.float32)
      if isinstance(self.sde, sde_lib.VESDE):
        return out
      if self.prediction == 'data':
        alpha, sigma = self.sde.marginal_coefficients(t)
        return (sde_lib.broadcast_to(alpha, x) * out - x) / sde_lib.broadcast_to(sigma ** 2, x)
      return -out / sde_lib.broadcast_to(self._sigma(t), out)
    return score

  # --- what the trainer calls ------------------------------------------------------------------------
  def init(self, rng: jax.Array) -> PyTree:
    x = jnp.zeros((1, *self.data_shape), jnp.float32)
    return self.model.init({'params': rng, 'dropout': rng}, x, jnp.ones((1,)))['params']

  def _loss(self, params, x, rng, train, **conditioning):
    noise_rng, dropout_rng = jax.random.split(rng)
    score = self.score_fn(params, train, dropout_rng, **conditioning)
    options = self.train_loss_options if train else self.loss_options
    return losses.SCORE_LOSSES[self.loss_name](noise_rng, self.sde, score, x, **options).mean()

  def loss(self, params: PyTree, batch: dict, rng: jax.Array, train: bool = True):
    loss = self._loss(params, self.to_data(batch['image']), rng, train)
    return loss, {}

  def bits_per_dim(self, params: PyTree, images: jax.Array, rng: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(bits/dim per image, nfe) of 8-bit `images` in [-1, 1], uniformly dequantised (Song et al.)."""
    deq_rng, probe_rng = jax.random.split(rng)
    x = likelihood.dequantize(deq_rng, images, centered=self.centered)
    bpd, _, nfe = likelihood.bits_per_dim(probe_rng, self.sde, self.score_fn(params), x,
                                          data_width=2.0 if self.centered else 1.0, **self.bpd_options)
    return bpd, nfe

  def evaluate(self, params: PyTree, batch: dict, rng: jax.Array) -> dict[str, jax.Array]:
    """The training objective on held-out data and, on the first `eval.bpd_per_batch` images of the
    batch, bits/dim through the probability-flow ODE."""
    loss_rng, bpd_rng = jax.random.split(rng)
    x = batch['image']
    metrics = {'loss': self._loss(params, self.to_data(x), loss_rng, train=False)}
    if self.bpd_per_batch:
      bpd, nfe = self.bits_per_dim(params, x[:self.bpd_per_batch], bpd_rng)
      metrics.update(bpd=bpd.mean(), bpd_nfe=nfe.astype(jnp.float32))
    return metrics

  @functools.partial(xla.jit, static_argnums=(0, 3), static_argnames=('options',))
  def _sample(self, params, rng, num, options=()):
    x, nfe = sampling.sample(rng, self.sde, self.score_fn(params), (num, *self.data_shape),
                             **{**self.sampling, **dict(options)})
    return jnp.clip(self.to_images(x), -1.0, 1.0), nfe

  def sample(self, params: PyTree, rng: jax.Array, num: int, **options: Any) -> tuple[jax.Array, int]:
    """(num images in [-1, 1], nfe) with `config.sampling`, any key of `lgm.sampling.sample` overridden by
    `options`."""
    images, nfe = self._sample(params, rng, num, options=tuple(sorted(options.items())))
    return images, int(nfe)

  def images(self, params: PyTree, batch: dict, rng: jax.Array) -> dict[str, jax.Array]:
    """A grid of `sampling.num_samples` samples drawn with `config.sampling`."""
    del batch
    x, _ = sampling.sample(rng, self.sde, self.score_fn(params), (self.num_samples, *self.data_shape),
                           **self.sampling)
    return {'samples': jnp.clip(self.to_images(x), -1.0, 1.0)}

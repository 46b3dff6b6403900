"""Losses and likelihood terms, as plain functions of arrays.

Images live in [-1, 1] model space, quantised to 256 levels. The decoder's likelihood is a
*discretised* Gaussian over those 256 bins, so log-likelihoods are of the discrete data themselves:
an ELBO in nats converts to bits/dim with no dequantisation offset, and is never above 0.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.special import log_ndtr

NUM_BINS = 256
_HALF_BIN = 1.0 / (NUM_BINS - 1)  # data levels are k * 2/255 - 1, so each bin is 2/255 wide


def per_example_sum(x: jax.Array, mean: bool = False) -> jax.Array:
  """Sum over all but the leading (batch) axis; the mean with `mean` (score_sde's `reduce_mean`)."""
  x = x.reshape(x.shape[0], -1)
  return x.mean(-1) if mean else x.sum(-1)


def kl_to_standard_normal(mean: jnp.ndarray, logvar: jnp.ndarray) -> jnp.ndarray:
  """KL(N(mean, exp(logvar)) || N(0, I)) in nats, summed over all but the leading (batch) axis."""
  return per_example_sum(0.5 * (jnp.square(mean) + jnp.exp(logvar) - 1.0 - logvar))


def _log_normal_mass(lo: jnp.ndarray, hi: jnp.ndarray) -> jnp.ndarray:
  """log(Phi(hi) - Phi(lo)) for lo < hi, accurate in both tails.

  Both ends are reflected into the lower tail (Phi(hi) - Phi(lo) = Phi(-lo) - Phi(-hi)) where that
  side is the smaller one, then log Phi(b) + log(1 - exp(log Phi(a) - log Phi(b))) through expm1,
  which keeps its digits when the two ends are close.
  """
  flip = lo > 0
  a = jnp.where(flip, -hi, lo)
  b = jnp.where(flip, -lo, hi)
  log_b, log_a = log_ndtr(b), log_ndtr(a)
  return log_b + jnp.log(-jnp.expm1(jnp.minimum(log_a - log_b, -1e-30)))


def quantize(x: jnp.ndarray) -> jnp.ndarray:
  """Snap [-1, 1] values to the nearest of the 256 data levels."""
  return jnp.round((jnp.clip(x, -1.0, 1.0) + 1.0) * 127.5) / 127.5 - 1.0


def discretized_gaussian_log_likelihood(x: jnp.ndarray, mean: jnp.ndarray,
                                        log_scale: jnp.ndarray) -> jnp.ndarray:
  """Elementwise log P(x) of 8-bit data x in [-1, 1] under N(mean, exp(log_scale)^2) binned to 256 levels.

  The edge bins take the tails (-inf, -1 + half bin] and [1 - half bin, inf), so the 256
  probabilities sum to one exactly; x is snapped to the data levels first.
  """
  x = quantize(x)
  inv_scale = jnp.exp(-log_scale)
  # +-1e4 standard deviations stand in for +-inf: log Phi is finite there, so gradients stay finite.
  lo = jnp.where(x <= -1.0 + 1e-6, -1e4, (x - _HALF_BIN - mean) * inv_scale)
  hi = jnp.where(x >= 1.0 - 1e-6, 1e4, (x + _HALF_BIN - mean) * inv_scale)
  return _log_normal_mass(lo, hi)


def bits_per_dim(nll_nats: jnp.ndarray, num_dims: int) -> jnp.ndarray:
  """Per-example negative log-likelihood of discrete data (nats) -> bits per dimension."""
  return nll_nats / (num_dims * jnp.log(2.0))


def elbo(x: jnp.ndarray, recon_mean: jnp.ndarray, log_scale: jnp.ndarray, mean: jnp.ndarray,
         logvar: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
  """One-sample ELBO of a VAE with a discretised Gaussian decoder, per example, in nats.

  `recon_mean` is the decoder's output for a z drawn from q(z|x) = N(mean, exp(logvar)); the KL to
  the N(0, I) prior is exact. Returns (elbo, log_likelihood, kl), each of shape (batch,).
  """
  log_likelihood = per_example_sum(discretized_gaussian_log_likelihood(x, recon_mean, log_scale))
  kl = kl_to_standard_normal(mean, logvar)
  return log_likelihood - kl, log_likelihood, kl


def psnr(x: jax.Array, y: jax.Array) -> jax.Array:
  """Per-image PSNR in dB between [-1, 1] images, measured on the [0, 1] scale after clipping."""
  x01 = (jnp.clip(x, -1, 1) + 1) / 2
  y01 = (jnp.clip(y, -1, 1) + 1) / 2
  mse = per_example_sum(jnp.square(x01 - y01), mean=True)
  return -10.0 * jnp.log10(jnp.maximum(mse, 1e-10))


# --- score matching (Song et al. 2021, section 3.3 and appendix) -----------------------------------

TIME_DISTRIBUTIONS = ('uniform', 'lognormal')


def training_times(rng: jax.Array, sde, batch: int, *, eps: float = 1e-5, distribution: str = 'uniform',
                   log_sigma: tuple[float, float] = (-1.2, 1.2)) -> jax.Array:
  """Diffusion times at which the score is trained, one per example.

  'uniform': t ~ U(eps, T), Song et al.'s choice. 'lognormal': the noise-to-signal ratio sigma/alpha is
  log-normal with (mean, std) = `log_sigma`, as EDM (Karras et al. 2022) draws its noise levels: a small
  budget is spent where the image's content is decided instead of on the near-pure-noise times that
  take half of U(eps, T) under the VP SDE. Times are clipped to [eps, T].
  """
  if distribution == 'uniform':
    return jax.random.uniform(rng, (batch,), minval=eps, maxval=sde.T)
  if distribution == 'lognormal':
    mean, std = log_sigma
    log_ratio = mean + std * jax.random.normal(rng, (batch,))
    return sde.t_from_log_snr(-log_ratio, eps)
  raise ValueError(f'unknown time distribution {distribution!r}; valid: {list(TIME_DISTRIBUTIONS)}')


def dsm_loss(rng: jax.Array, sde, score_fn, x: jax.Array, *, eps: float = 1e-5,
             likelihood_weighting: bool = False, reduce_mean: bool = False,
             time_distribution: str = 'uniform', log_sigma: tuple[float, float] = (-1.2, 1.2)) -> jax.Array:
  """Continuous denoising score matching, per example, at times drawn by `training_times`.

  Default weighting lambda(t) = sigma(t)^2 gives ||sigma s + z||^2. With likelihood weighting,
  lambda(t) = g(t)^2 and the expected loss bounds the negative log-likelihood (Song et al. 2021b).
  """
  t_rng, z_rng = jax.random.split(rng)
  t = training_times(t_rng, sde, x.shape[0], eps=eps, distribution=time_distribution, log_sigma=log_sigma)
  z = jax.random.normal(z_rng, x.shape)
  mean, std = sde.marginal_prob(x, t)
  std_b = std.reshape((-1,) + (1,) * (x.ndim - 1))
  score = score_fn(mean + std_b * z, t)
  if not likelihood_weighting:
    return per_example_sum(jnp.square(score * std_b + z), reduce_mean)
  g2 = sde.sde(jnp.zeros_like(x), t)[1] ** 2
  return per_example_sum(jnp.square(score + z / std_b), reduce_mean) * g2


def x0_loss(rng: jax.Array, sde, score_fn, x: jax.Array, *, eps: float = 1e-5, reduce_mean: bool = False,
            time_distribution: str = 'uniform', log_sigma: tuple[float, float] = (-1.2, 1.2)) -> jax.Array:
  """Data-prediction loss ||x0_hat - x||^2, x0_hat = (x_t + sigma^2 s) / alpha (Tweedie), per example.

  The same minimiser as `dsm_loss` with the weighting lambda(t) = sigma^4 / alpha^2 in score terms: every
  noise level counts alike in data space, as in DALL-E 2's prior (Ramesh et al. 2022), which predicts the
  clean embedding. Times as in `dsm_loss`.
  """
  t_rng, z_rng = jax.random.split(rng)
  t = training_times(t_rng, sde, x.shape[0], eps=eps, distribution=time_distribution, log_sigma=log_sigma)
  z = jax.random.normal(z_rng, x.shape)
  alpha, sigma = (c.reshape((-1,) + (1,) * (x.ndim - 1)) for c in sde.marginal_coefficients(t))
  x_t = alpha * x + sigma * z
  x0_hat = (x_t + sigma ** 2 * score_fn(x_t, t)) / alpha
  return per_example_sum(jnp.square(x0_hat - x), reduce_mean)


def _grid_times(rng: jax.Array, sde, batch: int) -> tuple[jax.Array, jax.Array]:
  """A random index of the N-point grid per example, and its time t_i = i T / (N - 1)."""
  i = jax.random.randint(rng, (batch,), 0, sde.N)
  return i, i.astype(jnp.float32) * sde.T / (sde.N - 1)


def ddpm_loss(rng: jax.Array, sde, score_fn, x: jax.Array, *, reduce_mean: bool = True) -> jax.Array:
  """Ho et al.'s epsilon-prediction loss on the discrete VP chain: ||eps_hat - z||^2, eps_hat = -sigma_i s."""
  t_rng, z_rng = jax.random.split(rng)
  i, t = _grid_times(t_rng, sde, x.shape[0])
  z = jax.random.normal(z_rng, x.shape)
  alpha_bar = sde.alphas_cumprod[i].reshape((-1,) + (1,) * (x.ndim - 1))
  sigma = jnp.sqrt(1.0 - alpha_bar)
  eps_hat = -sigma * score_fn(jnp.sqrt(alpha_bar) * x + sigma * z, t)
  return per_example_sum(jnp.square(eps_hat - z), reduce_mean)


def smld_loss(rng: jax.Array, sde, score_fn, x: jax.Array, *, reduce_mean: bool = False) -> jax.Array:
  """Song & Ermon's noise-conditional score matching on the discrete VE levels, weighted by sigma_i^2."""
  t_rng, z_rng = jax.random.split(rng)
  i, t = _grid_times(t_rng, sde, x.shape[0])
  sigma = sde.discrete_sigmas[i].reshape((-1,) + (1,) * (x.ndim - 1))
  z = jax.random.normal(z_rng, x.shape)
  score = score_fn(x + sigma * z, t)
  return per_example_sum(jnp.square(score * sigma + z), reduce_mean)


SCORE_LOSSES = {'dsm': dsm_loss, 'x0': x0_loss, 'ddpm': ddpm_loss, 'smld': smld_loss}


# --- contrastive losses of a dual encoder (lgm.models.clip) ----------------------------------------
# Both take L2-normalised (batch, dim) embeddings of the *global* batch: under jit with sharded inputs,
# the (batch, batch) logits are formed across devices, so every example is a negative for every
# other whatever the mesh.

def clip_loss(image: jax.Array, text: jax.Array, scale: jax.Array, bias: jax.Array = 0.0) -> jax.Array:
  """Symmetric InfoNCE (Radford et al. 2021): mean of the image->text and text->image cross-entropies."""
  logits = scale * image @ text.T + bias
  diagonal = jnp.diagonal(logits)
  image_to_text = jax.nn.logsumexp(logits, axis=1) - diagonal
  text_to_image = jax.nn.logsumexp(logits, axis=0) - diagonal
  return 0.5 * (image_to_text.mean() + text_to_image.mean())


def siglip_loss(image: jax.Array, text: jax.Array, scale: jax.Array, bias: jax.Array) -> jax.Array:
  """Sigmoid loss (Zhai et al. 2023): every (image, text) pair is a binary match / no-match
  decision; summed over the pairs, averaged over the images."""
  logits = scale * image @ text.T + bias
  signs = 2.0 * jnp.eye(logits.shape[0], dtype=logits.dtype) - 1.0
  return -jax.nn.log_sigmoid(signs * logits).sum(axis=1).mean()


CONTRASTIVE_LOSSES = {'clip': clip_loss, 'siglip': siglip_loss}

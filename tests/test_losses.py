"""Likelihood and KL terms against closed forms, Monte-Carlo estimates and direct numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from lgm import losses

LEVELS = np.arange(256) / 127.5 - 1.0


def normal_mass(lo, hi, mean, scale):
  """P(lo < X < hi) for X ~ N(mean, scale^2), from the tail on each interval's own side (scipy, float64)."""
  upper = lo > mean
  return np.where(upper, stats.norm.sf(lo, mean, scale) - stats.norm.sf(hi, mean, scale),
                  stats.norm.cdf(hi, mean, scale) - stats.norm.cdf(lo, mean, scale))


def test_kl_matches_closed_form_and_monte_carlo():
  rng = np.random.default_rng(0)
  mean = rng.normal(size=(3, 2, 2, 4)).astype(np.float32)
  logvar = rng.normal(scale=0.5, size=(3, 2, 2, 4)).astype(np.float32)
  kl = np.asarray(losses.kl_to_standard_normal(jnp.asarray(mean), jnp.asarray(logvar)))
  # Closed form, written independently: sum of log(1/sigma) + (sigma^2 + mu^2)/2 - 1/2.
  sigma = np.exp(0.5 * logvar)
  closed = (-np.log(sigma) + 0.5 * (sigma**2 + mean**2) - 0.5).reshape(3, -1).sum(-1)
  np.testing.assert_allclose(kl, closed, rtol=1e-5)
  # Monte Carlo: E_q[log q(z) - log p(z)].
  z = mean + sigma * rng.normal(size=(200_000, *mean.shape))
  log_q = stats.norm.logpdf(z, mean, sigma).reshape(200_000, 3, -1).sum(-1)
  log_p = stats.norm.logpdf(z).reshape(200_000, 3, -1).sum(-1)
  np.testing.assert_allclose(kl, (log_q - log_p).mean(0), rtol=0.02)


@pytest.mark.parametrize('mean,log_scale', [(0.3, -1.0), (0.99, -4.0), (-1.2, -6.0), (0.0, 2.0), (0.5, -8.0)])
def test_discretized_gaussian_is_a_distribution_over_the_256_levels(mean, log_scale):
  log_p = losses.discretized_gaussian_log_likelihood(jnp.asarray(LEVELS), jnp.full(256, mean), jnp.float32(log_scale))
  assert np.all(np.asarray(log_p) <= 0)
  np.testing.assert_allclose(float(jnp.exp(log_p).sum()), 1.0, atol=1e-5)


def test_discretized_gaussian_matches_scipy_bin_masses():
  mean, scale = 0.1, 0.07
  log_p = np.asarray(losses.discretized_gaussian_log_likelihood(jnp.asarray(LEVELS), jnp.full(256, mean),
                                                                  jnp.float32(np.log(scale))))
  edges = np.concatenate([[-np.inf], (LEVELS[:-1] + LEVELS[1:]) / 2, [np.inf]])
  mass = normal_mass(edges[:-1], edges[1:], mean, scale)
  keep = mass > 1e-30
  assert keep.sum() > 150
  np.testing.assert_allclose(log_p[keep], np.log(mass[keep]), rtol=2e-4, atol=1e-4)


def test_gradients_stay_finite_far_in_the_tails():
  grad = jax.grad(lambda m: losses.discretized_gaussian_log_likelihood(jnp.asarray(LEVELS), m, jnp.float32(-5.0)).sum())
  assert np.all(np.isfinite(np.asarray(grad(jnp.zeros(256)))))


def test_elbo_of_a_decoder_that_ignores_z_equals_the_exact_log_likelihood():
  """If p(x|z) does not depend on z, the exact posterior is the prior: with q = N(0, I) the KL is 0
  and the ELBO is exactly log p(x), computable bin by bin."""
  rng = np.random.default_rng(1)
  x = LEVELS[rng.integers(0, 256, size=(2, 4, 4, 3))]
  decoder_mean = rng.uniform(-1, 1, size=x.shape)
  scale = 0.2
  elbo, log_likelihood, kl = losses.elbo(jnp.asarray(x), jnp.asarray(decoder_mean), jnp.float32(np.log(scale)),
                                         jnp.zeros((2, 2, 2, 4)), jnp.zeros((2, 2, 2, 4)))
  hi = np.where(x >= 1, np.inf, x + 1 / 255)
  lo = np.where(x <= -1, -np.inf, x - 1 / 255)
  exact = np.log(normal_mass(lo, hi, decoder_mean, scale))
  np.testing.assert_allclose(np.asarray(kl), 0.0, atol=1e-7)
  np.testing.assert_allclose(np.asarray(elbo), exact.reshape(2, -1).sum(-1), rtol=1e-4)
  np.testing.assert_allclose(np.asarray(elbo), np.asarray(log_likelihood))


def test_bits_per_dim_and_psnr_against_numpy():
  np.testing.assert_allclose(float(losses.bits_per_dim(jnp.float32(3072 * np.log(2) * 3.5), 3072)), 3.5, rtol=1e-6)
  rng = np.random.default_rng(2)
  x = rng.uniform(-1, 1, size=(2, 8, 8, 3)).astype(np.float32)
  y = np.clip(x + rng.normal(scale=0.05, size=x.shape), -1, 1).astype(np.float32)
  mse = (((x + 1) / 2 - (y + 1) / 2) ** 2).reshape(2, -1).mean(-1)
  np.testing.assert_allclose(np.asarray(losses.psnr(jnp.asarray(y), jnp.asarray(x))), 10 * np.log10(1 / mse), rtol=1e-4)

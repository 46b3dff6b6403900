"""The unCLIP road (prior + embedding decoder), on tasks built in memory: the data-prediction loss and the prior's
sampler against a Gaussian with a closed-form posterior, the decoder's guidance at 1 and 0 against its
conditional and unconditional networks, embedding interpolation on the unit sphere. The job end to end (it
reuses the main job's stages) is in test_text_to_image.py, beside the job it reuses."""


import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lgm import losses, semantic
from lgm import sde as sde_lib
import test_tasks


def test_embedding_interpolation_stays_on_the_unit_sphere():
  rng = np.random.default_rng(0)
  a, b = (v / np.linalg.norm(v) for v in rng.normal(size=(2, 64)))
  path = semantic.interpolate(a, b, 9, method='slerp')
  np.testing.assert_allclose(np.linalg.norm(path, axis=1), 1.0, atol=1e-6)
  np.testing.assert_array_equal(path[0], a)
  np.testing.assert_array_equal(path[-1], b)
  angles = np.arccos(np.clip(np.sum(path[1:] * path[:-1], axis=1), -1, 1))
  np.testing.assert_allclose(angles, np.arccos(a @ b) / 8, rtol=1e-5)  # constant speed along the great circle
  half = semantic.slerp(a, b, [0.5])[0]
  np.testing.assert_allclose(half, (a + b) / np.linalg.norm(a + b), atol=1e-12)


class ExactGaussianDenoiser(nn.Module):
  """E[x0 | x_t] when x0 ~ N(scale * vector, std^2 I) under a VP SDE (the null condition, vector 0: N(0, std^2 I)):
  mean + alpha std^2 / (alpha^2 std^2 + sigma^2) (x_t - alpha mean). Reads time_cond = 999 t, as the prior does."""
  sde: sde_lib.VPSDE
  scale: float
  std: float

  def __call__(self, x, time_cond, train=False, vector=None, context=None, context_mask=None):
    alpha, sigma = (c[:, None] for c in self.sde.marginal_coefficients(time_cond / 999.0))
    mean = self.scale * vector
    return mean + alpha * self.std ** 2 / (alpha ** 2 * self.std ** 2 + sigma ** 2) * (x - alpha * mean)


@pytest.fixture(scope='module')
def gaussian_prior():
  """A prior task (on an untrained CLIP) with its network replaced by the exact denoiser of a Gaussian."""
  task, _ = test_tasks._prior()
  task.model = ExactGaussianDenoiser(task.sde, scale=2.0, std=0.5)
  dim = task.data_shape[0]
  direction = np.zeros(dim, np.float32)
  direction[0] = 1.0
  return task, dim, direction


def test_the_x0_loss_of_the_exact_denoiser_is_the_posterior_variance(gaussian_prior):
  task, dim, direction = gaussian_prior
  n = 20000
  vector = jnp.broadcast_to(direction, (n, dim))
  x0 = 2.0 * vector + 0.5 * jax.random.normal(jax.random.PRNGKey(1), (n, dim))
  conditioning = {'vector': vector, 'context': jnp.zeros((n, 1, 8)), 'context_mask': jnp.ones((n, 1), bool)}
  rng = jax.random.PRNGKey(2)
  per_example = losses.x0_loss(jax.random.fold_in(rng, 0), task.sde, task.score_fn({'score': {}}, **conditioning), x0,
                               eps=task.loss_options['eps'], reduce_mean=True)
  t = losses.training_times(jax.random.split(jax.random.fold_in(rng, 0))[0], task.sde, n, eps=task.loss_options['eps'])
  alpha, sigma = task.sde.marginal_coefficients(t)
  posterior_variance = 0.25 * sigma ** 2 / (alpha ** 2 * 0.25 + sigma ** 2)  # per coordinate, given t
  # Given t, each example's loss (a mean over dim coordinates) is posterior_variance * chi^2_dim / dim.
  standard_error = float(jnp.sqrt(jnp.mean(2 * posterior_variance ** 2 / dim) / n))
  assert float(per_example.mean()) == pytest.approx(float(posterior_variance.mean()), abs=5 * standard_error)


@pytest.mark.parametrize('guidance', [None, 1.0, 2.5])
def test_the_prior_sampler_draws_the_gaussian_and_guidance_moves_its_mean(gaussian_prior, guidance):
  """Equal-variance Gaussians: s_u + w (s_c - s_u) is exactly the score of N(w * 2 * direction, 0.25 I) at every t,
  so guided samples must have that mean and spread (`None` = the conditional model alone, as guidance 1)."""
  task, dim, direction = gaussian_prior
  n = 2048
  vector = jnp.broadcast_to(direction, (n, dim))
  conditioning = {'vector': vector, 'context': jnp.zeros((n, 1, 8)), 'context_mask': jnp.ones((n, 1), bool)}
  unconditional = task.keep_only(conditioning, jnp.zeros((n,), bool))
  noise = task.sde.prior_sampling(jax.random.PRNGKey(3), (n, dim))
  sample = jax.jit(lambda noise: task.guided_sample({'score': {}}, conditioning, unconditional, noise,
                                                    None if guidance is None else jnp.float32(guidance),
                                                    jax.random.PRNGKey(4))[0])
  x = np.asarray(sample(noise))
  w = 1.0 if guidance is None else guidance
  mean = x.mean(axis=0)
  assert mean[0] == pytest.approx(2.0 * w, abs=4 * 0.5 / np.sqrt(n) + 0.01)
  np.testing.assert_allclose(mean[1:], 0.0, atol=4 * 0.5 / np.sqrt(n) + 0.01)
  # The sampler is a deterministic map, linear for a Gaussian: each coordinate's spread is 0.5 x its noise's.
  np.testing.assert_allclose(x.std(axis=0) / np.asarray(noise).std(axis=0), 0.5, rtol=0.015)


def test_decoder_guidance_one_is_the_conditional_model_and_zero_the_unconditional_one():
  task, _ = test_tasks._embedding_decoder()
  params = jax.jit(task.init)(jax.random.PRNGKey(0))
  # Random weights everywhere (the initial output layers are zero, which would hide the condition).
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
  params = jax.tree.unflatten(tree, [p + 0.1 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])
  rng = np.random.default_rng(0)
  embeddings = rng.normal(size=(4, task.embed_dim)).astype(np.float32)
  embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
  conditioning = task.embedding_conditioning(params, jnp.asarray(embeddings))
  unconditional = task.keep_only(conditioning, jnp.zeros((4,), bool))
  x = jnp.asarray(rng.normal(size=(4, *task.data_shape)), jnp.float32)
  t = jnp.asarray([0.1, 0.4, 0.6, 0.9])

  @jax.jit  # one program for the four network evaluations (op by op they take half a minute)
  def scores(params, conditioning, unconditional, x, t):
    return (task.guided_score_fn(params, conditioning, unconditional, jnp.float32(1.0))(x, t),
            task.guided_score_fn(params, conditioning, unconditional, jnp.float32(0.0))(x, t),
            task.score_fn(params, **conditioning)(x, t), task.score_fn(params, **unconditional)(x, t))

  guided, unguided, conditional, unconditional_score = scores(params, conditioning, unconditional, x, t)
  np.testing.assert_allclose(guided, conditional, rtol=1e-5, atol=1e-5)
  # Guidance 0 is the unconditional network inside the guidance interval ((0, 0.7) T), the conditional one above.
  assert task.guidance_interval == (0.0, 0.7)
  expected = np.where((np.asarray(t) <= 0.7)[:, None, None, None], unconditional_score, conditional)
  np.testing.assert_allclose(unguided, expected, rtol=1e-5, atol=1e-5)
  assert not np.allclose(conditional[:3], unguided[:3], atol=1e-4)  # the condition reaches the network

"""The unCLIP road (prior + embedding decoder): the data-prediction loss and the prior's sampler against a
Gaussian with a closed-form posterior, classifier-free guidance at 1 against the conditional model, embedding
interpolation on the unit sphere, and a tiny job that reuses a finished main job's stages end to end."""

import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import PIL.Image
import pytest

from configs import t2i_unclip_shapes
from lgm import jobs, losses, semantic
from lgm import sde as sde_lib
from lgm.pipeline import TextToImage
from test_text_to_image import ROOT, shrink


def tiny_unclip_config(reuse=''):
  config = shrink(t2i_unclip_shapes.get_config(reuse))
  config.report.prompts = config.report.prompts[:4]
  config.report.negative_images_per_value = 0
  for name in ('prior', 'decoder'):
    c = config[name]
    c.train.num_steps = c.train.checkpoint_every = c.eval.every = 20
    c.train.log_every = 10
    c.eval.num_examples = 16
    c.eval.batch_size = 8
  config.prior.model.width = 32
  config.prior.model.layers = 1
  config.decoder.model.nf = 16
  config.decoder.embedding.token_width = 16
  config.decoder.latent.scale_examples = 200
  config.decoder.latent.cache = False
  config.decoder.sampling.num_samples = 4
  config.report.diversity_prompts = 2
  config.report.variations = 32
  return config


@pytest.fixture(scope='module')
def unclip_job(tmp_path_factory):
  from test_text_to_image import tiny_job_config
  main = str(tmp_path_factory.mktemp('main'))
  jobs.run_job(tiny_job_config(), main)
  workdir = str(tmp_path_factory.mktemp('unclip'))
  return main, workdir, jobs.run_job(tiny_unclip_config(main), workdir)


def test_the_job_reuses_the_main_jobs_stages_and_reports_both_roads(unclip_job):
  main, workdir, metrics = unclip_job
  for stage in ('vae', 'clip', 'classifier', 'score'):
    assert os.path.realpath(os.path.join(workdir, stage)) == os.path.realpath(os.path.join(main, stage))
  for stage in ('prior', 'decoder'):
    assert os.path.isdir(os.path.join(workdir, stage, 'checkpoints'))
  for tag in ('g1', 'g3', 'prior_g1', 'prior_g3', 'text_embedding_g3', 'nearest_image_g3'):
    for key in ('fidelity_all', 'clip_score', 'fid_clip', 'diversity', 'images_per_sec'):
      assert f'{key}_{tag}' in metrics
  assert metrics['nfe_prior_stage_prior_g3'] == 20 and metrics['nfe_decoder_stage_prior_g3'] == 20
  assert metrics['nfe_prior_g3'] == 40
  assert metrics['variations'] == 32 and 0 <= metrics['variations_keep_all'] <= 1
  report = open(os.path.join(workdir, 'report.md')).read()
  for row in ('| guided, guidance 3 |', '| prior, guidance 3 |', '| baseline: text embedding, guidance 1 |',
              '| baseline: nearest training image, guidance 3 |', 'samples/variations.png',
              'samples/interpolation.png'):
    assert row in report
  for figure in ('prompts.png', 'variations.png', 'interpolation.png'):
    assert os.path.exists(os.path.join(workdir, 'samples', figure))


def test_a_reused_stage_must_be_finished(tmp_path, unclip_job):
  main = unclip_job[0]
  config = tiny_unclip_config(main)
  config.score.train.num_steps = 40  # the main job's score stage stopped at 20
  with pytest.raises(ValueError, match='is not a finished score stage'):
    jobs.run_job(config, str(tmp_path / 'other'))
  assert not os.path.exists(tmp_path / 'other')


def test_prior_road_pipeline(unclip_job):
  pipe = TextToImage.from_workdir(unclip_job[1], batch_size=4)
  prompts = ['a large red circle in the top left', 'a small blue square in the bottom right']
  images, nfe = pipe(prompts, route='prior', seeds=[3, 4])
  assert images.shape == (2, 32, 32, 3) and nfe == 40
  alone, _ = pipe(prompts[1:], route='prior', seeds=[4])  # an image depends on its prompt and seed alone
  np.testing.assert_allclose(alone[0], images[1], atol=1e-5)
  guided, _ = pipe(prompts, seeds=[3, 4])
  assert not np.allclose(guided, images)  # the default road of a job with both is the guided one
  embeddings, _ = pipe.sample_embeddings(prompts, seeds=[3, 4])
  np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
  source = images[0]
  assert pipe.variations(source, 3, seed=0).shape == (3, 32, 32, 3)
  assert pipe.interpolate(images[0], images[1], 4).shape == (4, 32, 32, 3)
  assert pipe.text_diff(source, 'red', 'blue', amounts=(0, 0.5)).shape == (2, 32, 32, 3)
  with pytest.raises(ValueError, match='amounts must lie in'):
    pipe.text_diff(source, 'red', 'blue', amounts=(1.5,))
  with pytest.raises(ValueError, match='unknown route'):
    pipe(prompts, route='pixels')


def test_sample_cli_takes_the_prior_road_and_draws_variations(unclip_job, tmp_path):
  workdir = unclip_job[1]
  image = tmp_path / 'mine.png'
  PIL.Image.fromarray(np.full((48, 40, 3), 200, np.uint8)).save(image)  # another size: resized to 32x32
  for flags, printed in ((['--route=prior', '--prompt=a red circle'], '2 samples, 40 score evaluations each'),
                         ([f'--init_image={image}'], f'2 variations of {image}')):
    out = str(tmp_path / 'x.png')
    result = subprocess.run([sys.executable, '-m', 'experiments.sample', f'--workdir={workdir}', f'--out={out}',
                             '--num=2', *flags], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert printed in result.stdout
    assert os.path.exists(out)
  result = subprocess.run([sys.executable, '-m', 'experiments.sample', f'--workdir={workdir}', f'--out={out}',
                           f'--init_image={image}', '--prompt=x'], cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert result.returncode == 2 and 'leave out --prompt' in result.stderr


def test_embedding_interpolation_stays_on_the_unit_sphere():
  rng = np.random.default_rng(0)
  a, b = (v / np.linalg.norm(v) for v in rng.normal(size=(2, 64)))
  path = semantic.interpolate(a, b, 9, method='slerp')
  np.testing.assert_allclose(np.linalg.norm(path, axis=1), 1.0, atol=1e-6)
  np.testing.assert_array_equal(path[0], a.astype(np.float32))
  np.testing.assert_array_equal(path[-1], b.astype(np.float32))
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
def gaussian_prior(unclip_job):
  """The tiny job's prior task with its network replaced by the exact denoiser of a Gaussian."""
  from lgm import stages
  task = stages.load_trained(os.path.join(unclip_job[1], 'prior')).task
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
  assert x.std(axis=0).mean() == pytest.approx(0.5, rel=0.02)


def test_decoder_guidance_one_is_the_conditional_model(unclip_job):
  from lgm import stages
  decoder = stages.load_trained(os.path.join(unclip_job[1], 'decoder'))
  task, params = decoder.task, decoder.params
  rng = np.random.default_rng(0)
  embeddings = rng.normal(size=(4, task.embed_dim)).astype(np.float32)
  embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
  conditioning = task.embedding_conditioning(params, jnp.asarray(embeddings))
  unconditional = task.keep_only(conditioning, jnp.zeros((4,), bool))
  x = jnp.asarray(rng.normal(size=(4, *task.data_shape)), jnp.float32)
  t = jnp.asarray([0.1, 0.4, 0.6, 0.9])
  guided = task.guided_score_fn(params, conditioning, unconditional, jnp.float32(1.0))(x, t)
  conditional = task.score_fn(params, **conditioning)(x, t)
  np.testing.assert_allclose(guided, conditional, rtol=1e-5, atol=1e-5)
  unguided = task.guided_score_fn(params, conditioning, unconditional, jnp.float32(0.0))(x, t)
  np.testing.assert_allclose(unguided, task.score_fn(params, **unconditional)(x, t), rtol=1e-5, atol=1e-5)
  assert not np.allclose(conditional, unguided, atol=1e-4)  # the condition reaches the network

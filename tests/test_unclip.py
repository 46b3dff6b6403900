"""The unCLIP road (prior + embedding decoder): the data-prediction loss and the prior's sampler against a
Gaussian with a closed-form posterior, classifier-free guidance at 1 against the conditional model, embedding
interpolation on the unit sphere, and a tiny job that reuses a finished main job's stages end to end."""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import t2i_unclip_shapes
from lgm import jobs, losses, sampling, semantic
from lgm import sde as sde_lib
from lgm.pipeline import TextToImage
from test_text_to_image import shrink


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

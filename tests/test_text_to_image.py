"""Text-to-image: the job end to end on a tiny scale, classifier-free guidance against its definition,
per-image seeds, the pipeline's bad inputs, and the Fréchet distance against the standard formula; the unCLIP
job (prior and decoder) reusing that job's stages, its report, pipeline and CLI (its unit tests: test_unclip.py)."""

import json
import os
import re
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import PIL.Image
import pytest
import safetensors.numpy
import scipy.linalg
import scipy.stats

from conftest import tree_digest
from configs import t2i_shapes, t2i_unclip_shapes
from lgm import convert, distortions, evaluation, export, exported, jobs, provenance, stages
from lgm import images as image_lib
from lgm.data import loader as loader_lib
from lgm.data import shapes, sources
from lgm.reports import text_to_image as t2i_report
from lgm.pipeline import TextToImage
from lgm.train import metrics as metrics_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def twenty_steps(stage, eval_examples: int) -> None:
  """A stage config trained 20 steps (checkpointed and evaluated at the end, on `eval_examples` in batches of 8)."""
  stage.train.num_steps = stage.train.checkpoint_every = stage.eval.every = 20
  stage.train.log_every = 10
  stage.eval.num_examples = eval_examples
  stage.eval.batch_size = 8


def shrink(config):
  """A t2i job config at seconds scale: 20 steps per stage, narrow networks, 16 report images (the same
  programs for every dataset of 32x32 RGB images, so that the compilation cache serves them all)."""
  for stage in config.stage_order:
    twenty_steps(config[stage], eval_examples=200)
  config.vae.model.ch = 8
  config.clip.model.text_layers = config.clip.model.image_layers = 1
  config.clip.model.text_width = config.clip.model.image_width = config.clip.model.embed_dim = 32
  if 'classifier' in config.stage_order:
    config.classifier.model.ch = 8
  config.score.model.nf = 16
  config.score.model.num_res_blocks = 1
  config.score.latent.scale_examples = 200
  config.score.latent.cache = False  # test_cached_latents_train_exactly_as_the_encoder covers the cache
  config.score.sampling.num_samples = 4
  config.report.num_images = 16
  if 'signature' in config.stage_order:
    config.signature.model.ch = 8
    config.signature.train.batch_size = 24  # 4 images per training distortion, 3 per simulated device
    config.signature.calibration_images = 2000  # whitening 16 bits wants thousands (test_unsigned_images_...)
    config.report.signature_real_images = 64
  return config


def without_signature(config):
  """The job without its signature stage (the main job's test covers it; here it would only add minutes)."""
  config.stage_order = tuple(name for name in config.stage_order if name != 'signature')
  if 'reuse_stages' in config:
    config.reuse_stages = tuple(name for name in config.reuse_stages if name != 'signature')
  return config


def tiny_job_config():
  """configs/t2i_shapes.py at seconds scale."""
  config = shrink(t2i_shapes.get_config())
  config.report.prompts = config.report.prompts[:8]  # batches of 8, as the negative prompts and their figure
  config.report.negative_images_per_value = 8
  return config


@pytest.fixture(scope='module')
def job(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('t2i'))
  metrics = jobs.run_job(tiny_job_config(), workdir)
  return workdir, metrics


@pytest.fixture(scope='module')
def pipe(job):
  return TextToImage.from_workdir(job[0], batch_size=4)


def test_job_trains_every_stage_then_reports(job):
  workdir, metrics = job
  for stage in ('vae', 'clip', 'classifier', 'score', 'signature'):
    assert os.path.isdir(os.path.join(workdir, stage, 'checkpoints'))
  for g in ('g1', 'g3'):
    for key in ('fidelity_all', 'fidelity_colour', 'fidelity_shape', 'fidelity_size', 'fidelity_position',
                'clip_score', 'fid_clip', 'nfe'):
      assert f'{key}_{g}' in metrics
  assert metrics['nfe_g3'] == 20 and metrics['num_images'] == 16
  report = open(os.path.join(workdir, 'report.md')).read()
  assert '| guidance 3 | ' in report and '| guidance 1 | ' in report and 'samples/prompts.png' in report
  assert '| held-out images (reference) | ' in report and '| their VAE reconstructions (ceiling) | ' in report
  assert metrics['fid_clip_real'] == pytest.approx(0.0, abs=1e-4)  # the references' own statistics
  for tag in ('real', 'vae', 'g1', 'g3'):
    for name, values in (('colour', shapes.ATTRIBUTES['colour']), ('size', shapes.ATTRIBUTES['size'])):
      counts = np.array([[metrics[f'confusion_{name}={a}>{r}_{tag}'] for r in values] for a in values])
      assert counts.sum() == 16 and np.trace(counts) / 16 == pytest.approx(metrics[f'fidelity_{name}_{tag}'])
  assert '| size | small | medium | large |' in report and '| all |' not in report
  assert '| attribute | negative prompt | without | with | change | standard error |' in report
  assert re.search(r'\| colour \| red \| \d\.\d{3} \| \d\.\d{3} \| [+-]\d\.\d{3} \| \d\.\d{3} \|', report)
  with PIL.Image.open(os.path.join(workdir, 'samples', 'prompts.png')) as image:
    assert min(image.size) >= 64
  with PIL.Image.open(os.path.join(workdir, 'samples', 'negative_prompts.png')) as image:  # 8 seeds x 5 rows
    assert image.size[1] / image.size[0] == pytest.approx(5 / 8, rel=0.02)
  assert '"red", "circle", "small", "top left" (one row each)' in report
  assert metrics_lib.read_metrics(workdir)[-1]['eval/fidelity_all_g3'] == metrics['fidelity_all_g3']
  for name, count in (('colour', 8), ('shape', 5), ('size', 3), ('position', 5)):
    # Every sample shows exactly one value, so the plain shares average to 1 / count.
    assert metrics[f'negative_{name}_without'] == pytest.approx(1 / count)
    assert 0.0 <= metrics[f'negative_{name}_with'] <= 1.0
  assert '| colour | 0.125 |' in report
  assert os.path.exists(os.path.join(workdir, 'score', 'latent_scale.json'))
  before = tree_digest(workdir)  # the finished job run again: nothing trained, evaluated or rewritten
  assert jobs.run_job(tiny_job_config(), workdir)['eval/fidelity_all_g3'] == metrics['fidelity_all_g3']
  assert tree_digest(workdir) == before


def test_the_job_decodes_with_its_signed_decoder_and_reports_the_signature(job, pipe, tmp_path):
  """Every road decodes with the signature stage's decoder (the VAE's encoder unchanged); the report measures
  the signature under each distortion and the rows decoded without it; an export ships the signed decoder and
  not the detector."""
  workdir, metrics = job
  signature = stages.load_trained(os.path.join(workdir, 'signature'))
  signed = signature.task.signed_params(signature.params)
  jax.tree.map(np.testing.assert_array_equal, pipe.task.vae.params, signed)
  vae = stages.load_trained(os.path.join(workdir, 'vae'))
  jax.tree.map(np.testing.assert_array_equal, signed['encoder'], vae.params['encoder'])
  assert not np.array_equal(signed['decoder']['Conv_0']['kernel'], vae.params['decoder']['Conv_0']['kernel'])
  assert pipe.model_id != TextToImage.from_workdir(workdir, signed=False).model_id
  report = open(os.path.join(workdir, 'report.md')).read()
  assert '| guidance 3, unsigned decoder | ' in report and 'Signature: every image is decoded by the signed' in report
  for name, description in distortions.DESCRIPTIONS.items():
    assert f'| {description} | ' in report
    for key in ('bit_accuracy', 'detected', 'false_positives', 'false_positives_bound'):
      assert 0.0 <= metrics[f'signature_{key}_{name}'] <= 1.0
  assert np.isfinite(metrics['signature_psnr']) and metrics['signature_real_images'] == 64
  assert 0.0 <= metrics['fidelity_all_g3_unsigned'] <= 1.0
  out = str(tmp_path / 'model')
  export.export(workdir, out)
  assert not os.path.exists(os.path.join(out, 'signature'))
  shipped = stages.load_trained(os.path.join(out, 'vae')).params
  jax.tree.map(np.testing.assert_array_equal, shipped, signed)


def test_unsigned_images_are_called_signed_at_the_nominal_rate(job):
  """The detector's whitening (fitted on 2,000 training images and their VAE decodes) makes the bits of 2,000
  held-out real images fair independent coins: at each threshold, the share called signed is the binomial
  tail's within its 99.9% interval."""
  detector = provenance.load_detector(job[0])
  config = stages.load_trained(os.path.join(job[0], 'signature')).config
  real = loader_lib.load_arrays(config, 'test', 2000)[0]['image']
  matches = detector.matches(distortions.to_8_bit(real))
  for threshold in (10, 11, 12, 13):
    rate = provenance.p_value(threshold, detector.bits)
    low, high = scipy.stats.binom.interval(0.999, len(real), rate)
    assert low <= np.sum(matches >= threshold) <= high, (threshold, rate, np.sum(matches >= threshold))


def test_verify_reads_image_files_and_refuses_a_tiny_one(job, pipe, tmp_path):
  """The CLI prints, per file (PNG, JPEG, a crop), the matching bits, the p-value and the verdict."""
  workdir = job[0]
  images, _ = pipe(['a large red circle in the top left', 'a small blue square'], seeds=[0, 1])
  detector = provenance.load_detector(workdir)
  paths = [str(tmp_path / name) for name in ('a.png', 'b.jpg', 'crop.png', 'grid.png')]
  pixels = image_lib.to_uint8(images)
  PIL.Image.fromarray(pixels[0]).save(paths[0])
  PIL.Image.fromarray(pixels[1]).save(paths[1], quality=75)
  PIL.Image.fromarray(pixels[0][2:31, 1:30]).save(paths[2])
  image_lib.save_grid(paths[3], images[:1], upscale=2)  # as experiments.sample writes one image: 66x66
  result = subprocess.run([sys.executable, '-m', 'experiments.verify', f'--model={workdir}', *paths],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-2000:]
  lines = [line.split('\t') for line in result.stdout.splitlines() if not line.startswith('#')]
  assert [line[0] for line in lines] == paths
  expected = detector.matches(distortions.to_8_bit(images[:1]))[0]
  assert lines[0][1] == f'{expected}/16 bits'
  resized = detector.matches(image_lib.read_image(paths[3], (32, 32, 3))[None])[0]  # read back at the model's size
  assert lines[3][1] == f'{resized}/16 bits'
  for path, bits, p, verdict in lines:
    matches = int(bits.split('/')[0])
    assert p == f'p={provenance.p_value(matches, 16):.3g}'
    assert verdict == ('signed' if provenance.p_value(matches, 16) <= 1e-3 else 'not signed')
  PIL.Image.fromarray(pixels[0][:8, :8]).save(tmp_path / 'tiny.png')
  result = subprocess.run([sys.executable, '-m', 'experiments.verify', f'--model={workdir}', str(tmp_path / 'tiny.png')],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert result.returncode == 2 and result.stderr.strip().endswith('the detector reads images of at least 16x16.')


def test_the_job_on_a_captioned_folder_from_one_config(tmp_path):
  """configs/t2i_folder.py:PATH on a generated folder of captioned renders: no classifier, caption retrieval."""
  from configs import t2i_folder
  from lgm.data import shapes
  root = tmp_path / 'photos'
  root.mkdir()
  lines = []
  for i, example in enumerate(shapes.make_examples(7, 'train', range(240))):
    PIL.Image.fromarray(example['image']).save(root / f'{i:03d}.png')
    lines.append(json.dumps({'file_name': f'{i:03d}.png', 'text': example['caption']}))
  (root / 'metadata.jsonl').write_text('\n'.join(lines) + '\n')
  workdir = str(tmp_path / 'job')
  config = without_signature(shrink(t2i_folder.get_config(str(root))))
  config.clip.tokenizer.update(t2i_shapes.get_config().clip.tokenizer)  # the shapes job's text tower programs
  config.report.guidances = (3.0,)
  metrics = jobs.run_job(config, workdir)
  for stage in ('vae', 'clip', 'score'):
    with open(os.path.join(workdir, stage, 'config.json')) as f:
      assert json.load(f)['data']['dataset'] == f'folder:{root}'
  assert not os.path.exists(os.path.join(workdir, 'classifier'))
  held_out = len(sources.get_source(f'folder:{root}', 'test'))
  assert 0.0 <= metrics['caption_retrieval_g3'] <= 1.0 and metrics['num_images'] == held_out
  assert not any(k.startswith('fidelity') for k in metrics)
  report = open(os.path.join(workdir, 'report.md')).read()
  assert 'caption retrieval' in report and 'the first 8 held-out captions' in report


def test_bad_job_data_is_refused_before_any_stage_trains(tmp_path):
  from configs import t2i_digits, t2i_folder
  root = tmp_path / 'uncaptioned'
  root.mkdir()
  for i in range(400):
    PIL.Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / f'{i}.png')
  cases = [(shrink(t2i_folder.get_config(str(root))), 'has no captions for the clip stage'),
           (t2i_folder.get_config(str(tmp_path / 'nowhere')), 'no such directory'),
           (t2i_digits.get_config(), 'data.image_size=15 is not divisible by the downsampling factor 2')]
  cases[2][0].data.image_size = 15
  mixed = t2i_digits.get_config()
  del mixed['data']
  for stage in mixed.stage_order:
    mixed[stage].data.update({'dataset': 'digits', 'image_size': 32, 'channels': 1})
  mixed.vae.data.image_size = 16
  cases.append((mixed, 'the stages disagree on data.image_size (vae: 16, clip: 32, classifier: 32, score: 32, signature: 32)'))
  for config, message in cases:
    with pytest.raises(ValueError, match=re.escape(message)) as error:
      jobs.run_job(config, str(tmp_path / 'job'))
    assert '\n' not in str(error.value)
    assert not (tmp_path / 'job').exists()


def test_a_stage_that_stops_early_ends_the_job_without_a_report(tmp_path, monkeypatch):
  """A stage stopped by SIGTERM returns with its checkpoint short of num_steps: the next stages and the
  evaluation must not run on a half-trained model (here the stand-in trainer saves nothing at all)."""
  trained = []
  monkeypatch.setattr(jobs.trainer, 'train_and_evaluate', lambda config, workdir: trained.append(workdir))
  assert jobs.run_job(tiny_job_config(), str(tmp_path)) == {}
  assert trained == [str(tmp_path / 'vae')] and not (tmp_path / 'report.md').exists()


def test_negative_prompt_effect_counts_the_named_value_on_the_same_seeds():
  """A stand-in pipeline draws value seed % 3, and never the value its negative prompt names."""
  words = ('red', 'green', 'blue')

  class Reader:
    attributes, value_names = ['colour'], {'colour': words}

    def predict(self, params, images):
      return {'colour': images[:, 0, 0, 0].astype(jnp.int32)}

  def pipe(prompts, negative_prompt, guidance, seeds):
    assert prompts == [''] * len(seeds) and guidance == 2.0
    drawn = np.array(seeds) % 3
    if negative_prompt is not None:
      named = words.index(negative_prompt)
      drawn = np.where(drawn == named, (named + 1) % 3, drawn)
    return drawn.reshape(-1, 1, 1, 1).astype(np.float32), 20

  metrics = t2i_report.negative_prompt_effect(pipe, types.SimpleNamespace(task=Reader(), params=None), 6, 2.0)
  assert metrics['negative_colour_without'] == pytest.approx(1 / 3)
  assert metrics['negative_colour_with'] == 0.0
  assert metrics['negative_colour=green_without'] == pytest.approx(1 / 3)


def test_guidance_applies_only_inside_the_guidance_interval(pipe):
  task, params = pipe.task, pipe.params
  assert task.guidance_interval == (0.0, 0.7)  # configs/t2i_shapes.py
  cond = task.text_conditioning(params, jnp.asarray(task.tokenize(['a red circle'] * 4)))
  null = task.keep_only(cond, jnp.zeros((4,), bool))
  x = jax.random.normal(jax.random.PRNGKey(1), (4, *task.data_shape))
  t = jnp.array([0.05, 0.7, 0.71, 0.95]) * task.sde.T
  s_cond, s_uncond = task.score_fn(params, **cond)(x, t), task.score_fn(params, **null)(x, t)
  guided = task.guided_score_fn(params, cond, null, 3.0)(x, t)
  np.testing.assert_allclose(guided[:2], (s_uncond + 3.0 * (s_cond - s_uncond))[:2], rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(guided[2:], s_cond[2:], rtol=1e-4, atol=1e-4)  # above 0.7 T: the prompt alone
  config = tiny_job_config().score
  config.guidance_interval = (0.7, 0.2)
  with pytest.raises(ValueError, match=r'guidance_interval=\(0.7, 0.2\) must be \(low, high\) with low < high'):
    type(task)(config, task.vae, task.clip, task.latent_scale)


def test_guidance_is_uncond_plus_scale_times_the_difference(pipe):
  task, params = pipe.task, pipe.params
  cond = task.text_conditioning(params, jnp.asarray(task.tokenize(['a red circle', 'a big blue square'])))
  null = task.keep_only(cond, jnp.zeros((2,), bool))
  x = jax.random.normal(jax.random.PRNGKey(0), (2, *task.data_shape))
  t = jnp.array([0.3, 0.7])
  s_cond, s_uncond = task.score_fn(params, **cond)(x, t), task.score_fn(params, **null)(x, t)
  assert float(jnp.abs(s_cond - s_uncond).max()) > 1e-4  # the text changes the score
  for g in (0.0, 1.0, 3.0):
    guided = task.guided_score_fn(params, cond, null, g)(x, t)
    np.testing.assert_allclose(guided, s_uncond + g * (s_cond - s_uncond), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(task.guided_score_fn(params, cond, null, None)(x, t), s_cond, rtol=1e-5, atol=1e-5)
  noise = jnp.asarray(pipe._noise(task, [0, 0]))  # the pipeline's draws for seed 0
  with_half, _ = task.sample_images(params, noise, *(jnp.asarray(task.tokenize(['a red circle'] * 2)),) * 2,
                                    jnp.array([[True, False]] * 2), jnp.float32(1.0), jax.random.PRNGKey(0))
  alone, _ = pipe(['a red circle'] * 2, guidance=1.0, seeds=[0, 0])  # the pipeline's guidance 1: s_c alone
  np.testing.assert_allclose(alone, with_half, atol=2e-4)


def test_an_image_depends_on_its_seed_not_its_batch(pipe):
  both, nfe = pipe(['a small red circle in the top left', 'a large blue square in the center'], seeds=[5, 6])
  alone, _ = pipe(['a large blue square in the center'], seeds=[6])
  np.testing.assert_allclose(both[1], alone[0], atol=1e-4)
  again, _ = pipe(['a large blue square in the center'], seeds=[7])
  assert np.abs(again[0] - alone[0]).max() > 1e-3
  assert nfe == 20 and both.shape == (2, 32, 32, 3)


def test_empty_prompt_is_unconditional_and_odd_prompts_work(pipe):
  plain, _ = pipe([''], seeds=[1], guidance=1.0)
  strong, _ = pipe([''], seeds=[1], guidance=5.0)  # null vs null: guidance has nothing to amplify
  np.testing.assert_allclose(plain, strong, atol=1e-5)
  images, _ = pipe(['un cercle rouge 🔴 à gauche', 'a red circle'], negative_prompt='blue', seeds=[1, 2])
  assert np.isfinite(images).all()
  with pytest.warns(UserWarning, match='truncated'):
    pipe(['a very long prompt ' * 30], seeds=[0])


@pytest.mark.parametrize('kwargs,message', [
    ({'guidance': -1.0}, 'guidance must be >= 0'),
    ({'steps': 0}, 'steps must be >= 1'),
    ({'seeds': [1, 2]}, '2 seeds for 1 prompts'),
    ({'seeds': [-1]}, r'seeds must be integers in \[0, 2\*\*32\)'),
])
def test_pipeline_bad_inputs(pipe, kwargs, message):
  with pytest.raises(ValueError, match=message):
    pipe(['a red circle'], **kwargs)


def test_img2img_stays_near_the_input_at_low_strength(pipe, job):
  from lgm.data.loader import load_arrays
  images = load_arrays(pipe.task.config, 'test', 4)[0]['image']
  recon = np.asarray(pipe.task.to_images(pipe.task.to_data(jnp.asarray(images))))
  near, _ = pipe.img2img(images, 'a red circle', strength=0.05, seeds=range(4))
  far, _ = pipe.img2img(images, 'a red circle', strength=1.0, seeds=range(4))
  assert np.abs(near - recon).mean() < 0.5 * np.abs(far - recon).mean()
  mask = np.zeros((32, 32))
  mask[:16] = 1
  filled, _ = pipe.inpaint(images, mask, 'a red circle', seeds=range(4))
  assert filled.shape == images.shape and np.isfinite(filled).all()
  with pytest.raises(ValueError, match='strength must be in'):
    pipe.img2img(images, 'a red circle', strength=0.0)


def test_missing_stages_are_named(job, tmp_path):
  with pytest.raises(FileNotFoundError, match='score stage'):
    TextToImage.from_workdir(str(tmp_path))
  config = tiny_job_config().score
  with pytest.raises(FileNotFoundError, match='the vae stage has no trained model'):
    stages.build_task(config, str(tmp_path / 'score'))


def test_sample_cli_draws_prompts(job, tmp_path):
  out = str(tmp_path / 'x.png')
  result = subprocess.run([sys.executable, '-m', 'experiments.sample', f'--workdir={job[0]}', f'--out={out}',
                           '--prompt=a large red circle in the top left', '--negative_prompt=blue', '--num=2'],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-2000:]
  assert '2 samples, 20 score evaluations each' in result.stdout
  with PIL.Image.open(out) as image:
    assert min(image.size) >= 64
  result = subprocess.run([sys.executable, '-m', 'experiments.sample', f'--workdir={job[0]}', f'--out={out}',
                           '--prompt=x', '--guidance=-2'], cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert result.returncode == 2 and result.stderr.strip().startswith('error: guidance must be >= 0')


def test_frechet_distance_matches_the_standard_formula():
  rng = np.random.default_rng(0)
  a, b = rng.standard_normal((500, 6)), rng.standard_normal((400, 6)) @ rng.standard_normal((6, 6)) + 0.3
  (mu1, c1), (mu2, c2) = evaluation.gaussian_statistics(a), evaluation.gaussian_statistics(b)
  standard = np.sum((mu1 - mu2) ** 2) + np.trace(c1 + c2 - 2 * scipy.linalg.sqrtm(c1 @ c2).real)
  np.testing.assert_allclose(evaluation.frechet_distance(mu1, c1, mu2, c2), standard, rtol=1e-6)
  assert abs(evaluation.frechet_distance(mu1, c1, mu1, c1)) < 1e-6


def test_confusion_counts_and_their_table():
  read = {'size': np.array([0, 1, 1, 2, 2, 0])}
  asked = {'size': np.array([0, 1, 2, 2, 2, 1])}
  counts = t2i_report.confusion_counts(read, asked, {'size': ('small', 'medium', 'large')})
  direct = np.zeros((3, 3))
  for a, r in zip(asked['size'], read['size']):
    direct[a, r] += 1
  names = ('small', 'medium', 'large')
  assert {k: v for k, v in counts.items() if v} == {
      f'confusion_size={names[a]}>{names[r]}': direct[a, r] for a in range(3) for r in range(3) if direct[a, r]}
  table = t2i_report.confusion_table({f'{k}_g3': v for k, v in counts.items()}, 'size', 'g3')
  assert table == ['| size | small | medium | large |', '|---|---|---|---|', '| small | 1 | 0 | 0 |',
                   '| medium | 1 | 1 | 0 |', '| large | 0 | 1 | 2 |']


def test_fidelity_and_clip_score():
  asked = {'colour': np.array([0, 1, 2, 3]), 'shape': np.array([0, 0, 1, 1])}
  read = {'colour': np.array([0, 1, 2, 0]), 'shape': np.array([0, 1, 1, 1])}
  got = evaluation.fidelity(read, asked)
  assert got == {'fidelity_colour': 0.75, 'fidelity_shape': 0.75, 'fidelity_all': 0.5}
  v = np.array([[1.0, 0.0], [0.0, 2.0]])
  assert evaluation.clip_score(v, np.array([[2.0, 0.0], [0.0, -1.0]])) == 50.0


def test_caption_retrieval_counts_images_whose_nearest_distinct_caption_is_their_own():
  captions = ['a three', 'a seven', 'a three', 'a one']
  texts = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [-1.0, -1.0]])  # duplicates embed alike
  images = np.array([[2.0, 0.1],     # nearest 'a three': right
                     [0.1, 3.0],     # nearest 'a seven': right
                     [0.0, 1.0],     # nearest 'a seven', asked 'a three': wrong
                     [1.0, 0.2]])    # nearest 'a three', asked 'a one': wrong
  assert evaluation.caption_retrieval(images, texts, captions) == 0.5


def test_clip_can_read_vae_latents_instead_of_pixels(job):
  """The image tower on the job's 8x8x4 VAE latents: trains, evaluates, and embeds pixels through the VAE."""
  from lgm.train import trainer
  config = tiny_job_config().clip
  config.image_input = 'latent'
  config.model.patch_size = 2
  workdir = os.path.join(job[0], 'clip_latent')
  final = trainer.train_and_evaluate(config, workdir)
  assert 'eval/zeroshot_colour' in final
  trained = stages.load_trained(workdir)
  assert trained.task.vae is not None
  embeddings = trained.task.encode_images(trained.params, jnp.zeros((2, 32, 32, 3)))
  np.testing.assert_allclose(np.linalg.norm(embeddings, axis=-1), 1.0, rtol=1e-4)


def test_cached_latents_train_exactly_as_the_encoder(job):
  """config.latent.cache: training batches read their latents by example index instead of encoding their
  images; the loss (same parameters, batch and noise) is the same. The cached split is the first 256 training
  images (the whole split would be 20,000 to encode)."""
  from lgm.data import loader as loader_lib
  from lgm.tasks.text_to_image import TextToImageTask
  config = tiny_job_config().score
  workdir = os.path.join(job[0], 'score')
  encoding = stages.build_task(config, workdir)  # its trained VAE and CLIP stages and latent scale
  images = loader_lib.load_arrays(config, 'train', 256)[0]['image']
  config.latent.cache = True
  task = TextToImageTask(config, encoding.vae, encoding.clip, encoding.latent_scale, training_images=lambda: images)
  batch = task.prepare_batch(loader_lib.make_loader(config, 'train', train=True).read_batch(5))
  batch['index'] = batch['index'] % len(images)  # rows of the cached images, with their images
  batch['image'] = images[batch['index']]
  batch = loader_lib.device_fields(batch)
  params, rng = task.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1)
  cached = jax.jit(task.loss)(params, batch, rng)[0]  # the cache is first read under this trace
  task.cache_latents = False
  encoded = jax.jit(task.loss)(params, batch, rng)[0]
  np.testing.assert_allclose(task.train_latents[batch['index']], task.to_data(batch['image']), atol=1e-5)
  np.testing.assert_allclose(cached, encoded, rtol=1e-5)
  config.data.random_flip = True
  with pytest.raises(ValueError, match='random_flip=False'):
    stages.build_task(config, workdir)


# --- the unCLIP road, on the tiny job above --------------------------------------------------------------

def tiny_unclip_config(reuse=''):
  config = without_signature(shrink(t2i_unclip_shapes.get_config(reuse)))
  config.report.prompts = config.report.prompts[:8]  # batches of 8, as the variations figure
  config.report.negative_images_per_value = 0
  for name in ('prior', 'decoder'):
    twenty_steps(config[name], eval_examples=16)
  config.prior.model.width = 32
  config.prior.model.layers = 1
  config.decoder.model.nf = 16
  config.decoder.embedding.token_width = 16
  config.decoder.latent.scale_examples = 200
  config.decoder.latent.cache = False
  config.decoder.sampling.num_samples = 4
  config.report.guidances = (3.0,)  # guidance 1 is covered by the main job's report
  config.report.diversity_prompts = 1  # 16 samples: the batch of the 16 report images
  config.report.variations = 16
  return config


@pytest.fixture(scope='module')
def unclip_job(job, tmp_path_factory):
  """configs/t2i_unclip_shapes.py at seconds scale, reusing the tiny main job's four stages."""
  workdir = str(tmp_path_factory.mktemp('unclip'))
  return job[0], workdir, jobs.run_job(tiny_unclip_config(job[0]), workdir)


def test_the_job_reuses_the_main_jobs_stages_and_reports_both_roads(unclip_job):
  main, workdir, metrics = unclip_job
  for stage in ('vae', 'clip', 'classifier', 'score'):
    assert os.path.realpath(os.path.join(workdir, stage)) == os.path.realpath(os.path.join(main, stage))
  for stage in ('prior', 'decoder'):
    assert os.path.isdir(os.path.join(workdir, stage, 'checkpoints'))
  for tag in ('g3', 'prior_g3', 'text_embedding_g3', 'nearest_image_g3'):
    for key in ('fidelity_all', 'clip_score', 'fid_clip', 'diversity', 'images_per_sec'):
      assert f'{key}_{tag}' in metrics
  assert metrics['nfe_prior_stage_prior_g3'] == 20 and metrics['nfe_decoder_stage_prior_g3'] == 20
  assert metrics['nfe_prior_g3'] == 40
  assert metrics['variations'] == 16 and 0 <= metrics['variations_keep_all'] <= 1
  report = open(os.path.join(workdir, 'report.md')).read()
  for row in ('| guided, guidance 3 |', '| prior, guidance 3 |', '| baseline: text embedding, guidance 3 |',
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
  assert provenance.read_metadata(out)['init_image'] == 'mine.png'
  result = subprocess.run([sys.executable, '-m', 'experiments.sample', f'--workdir={workdir}', f'--out={out}',
                           f'--init_image={image}', '--prompt=x'], cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert result.returncode == 2 and 'leave out --prompt' in result.stderr


# --- export ---------------------------------------------------------------------------------------------

def test_export_then_load_generates_the_same_images_bit_for_bit(unclip_job, tmp_path):
  workdir, out = unclip_job[1], str(tmp_path / 'model')
  manifest = export.export(workdir, out)
  assert sorted(manifest['stages']) == ['clip', 'decoder', 'prior', 'score', 'vae']  # not the classifier
  assert not [name for _, dirs, _ in os.walk(out) for name in dirs if 'checkpoint' in name]  # no orbax state
  original = TextToImage.from_workdir(workdir, batch_size=4)
  loaded = TextToImage.from_pretrained(out, batch_size=4)
  for a, b in ((original.params, loaded.params), (original.prior.params, loaded.prior.params),
               (original.decoder.params, loaded.decoder.params), (original.clip.params, loaded.clip.params)):
    jax.tree.map(np.testing.assert_array_equal, a, b)  # same tree, bitwise
  prompts = ['a large red circle in the top left', 'a small blue square in the bottom right']
  for route in ('guided', 'prior'):
    np.testing.assert_array_equal(loaded(prompts, route=route, seeds=[5, 6])[0],
                                  original(prompts, route=route, seeds=[5, 6])[0])
  with open(os.path.join(out, 'README.md')) as f:
    card = f.read()
  assert '| score | text_to_image |' in card and 'TextToImage.from_pretrained' in card
  with pytest.raises(FileExistsError, match='not empty'):
    export.export(workdir, out)
  result = subprocess.run([sys.executable, '-m', 'experiments.sample', f'--model={out}', f'--out={tmp_path}/x.png',
                           '--num=2', '--route=prior', '--prompt=a red circle'],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-2000:]
  assert '2 samples, 40 score evaluations each' in result.stdout
  recipe = provenance.read_metadata(f'{tmp_path}/x.png')  # the same model id from the export and the run
  assert recipe['model'] == loaded.model_id == original.model_id
  assert {k: recipe[k] for k in ('prompt', 'negative_prompt', 'route', 'seeds', 'score_evaluations')} == {
      'prompt': 'a red circle', 'negative_prompt': '', 'route': 'prior', 'seeds': [0, 1], 'score_evaluations': 40}
  assert recipe['generator'].startswith('lgm ') and recipe['sampler'] and recipe['steps'] and recipe['guidance']


def test_a_newer_export_format_is_refused(unclip_job, tmp_path):
  out = str(tmp_path / 'model')
  export.export(unclip_job[0], out)  # the main job: score, vae, clip
  with open(os.path.join(out, exported.MANIFEST)) as f:
    manifest = json.load(f)
  with open(os.path.join(out, exported.MANIFEST), 'w') as f:
    json.dump({**manifest, 'version': exported.VERSION + 1}, f)
  with pytest.raises(ValueError, match=f'format version {exported.VERSION + 1}; this lgm reads versions up to'):
    TextToImage.from_pretrained(out)
  vae = os.path.join(out, 'vae', exported.PARAMS_FILE)  # a stage file alone is checked too
  safetensors.numpy.save_file(safetensors.numpy.load_file(vae), vae,
                              metadata={'format': exported.FORMAT, 'version': str(exported.VERSION + 1)})
  with pytest.raises(ValueError, match='vae/params.safetensors is an lgm model of format version'):
    stages.load_trained(os.path.join(out, 'vae'))


def test_a_job_trains_on_a_frozen_converted_autoencoder(job, tmp_path):
  """Stable Diffusion's autoencoder layout at f = 8 (random weights, narrow), converted by the CLI and taken
  frozen by the job: only the score stage trains, on 4x4x4 latents; the text tower and judge are reused."""
  import torch
  from diffusers import AutoencoderKL
  torch.manual_seed(0)
  reference = AutoencoderKL(block_out_channels=(32,) * 4, layers_per_block=1, latent_channels=4,
                            down_block_types=('DownEncoderBlock2D',) * 4, up_block_types=('UpDecoderBlock2D',) * 4)
  checkpoint, converted = str(tmp_path / 'vae.safetensors'), str(tmp_path / 'sd_vae')
  safetensors.numpy.save_file({k: v.numpy() for k, v in reference.state_dict().items()}, checkpoint)
  result = subprocess.run([sys.executable, '-m', 'experiments.convert', f'--checkpoint={checkpoint}',
                           f'--out={converted}', '--image_size=32'], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
  assert result.returncode == 0, result.stderr[-2000:]
  assert 'vae, f = 8, 4 latent channels' in result.stdout

  config = without_signature(tiny_job_config())
  config.pretrained = {'vae': converted}
  config.reuse, config.reuse_stages = job[0], ('clip', 'classifier')
  config.report.guidances, config.report.negative_images_per_value = (3.0,), 0  # the main job's test covers them
  workdir = str(tmp_path / 'job')
  metrics = jobs.run_job(config, workdir)
  assert os.path.realpath(os.path.join(workdir, 'vae')) == os.path.realpath(converted)
  assert sorted(os.listdir(converted)) == ['config.json', 'params.safetensors']  # the job wrote nothing there
  score = stages.load_trained(os.path.join(workdir, 'score'))
  assert score.task.data_shape == (4, 4, 4) and score.step == 20
  expected = convert.from_diffusers_autoencoder_kl(reference.state_dict()).params
  jax.tree.map(np.testing.assert_array_equal, score.task.vae.params, expected)  # frozen: the converted weights
  assert 0 <= metrics['fidelity_all_g3'] <= 1 and os.path.exists(os.path.join(workdir, 'report.md'))
  assert jobs.run_job(config, workdir)['eval/fidelity_all_g3'] == metrics['fidelity_all_g3']  # finished
  config.pretrained = {'vae': str(tmp_path)}
  with pytest.raises(ValueError, match=r'pretrained.vae=\S+ is not a model stage'):
    jobs.run_job(config, str(tmp_path / 'other'))

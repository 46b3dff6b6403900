"""Every task is built from in-memory parts (no work directory, no dataset read) and takes a train step;
the layering that makes that possible is checked on the source: tasks and models never reach disks."""

import ast
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import t2i_shapes
from conftest import make_tiny_config
from lgm import tasks
from lgm import tokenizer as tokenizer_lib
from lgm.tasks import Trained
from lgm.train import mesh as mesh_lib
from lgm.train import state as state_lib
from test_clip import tiny_clip_config
from test_score_task import tiny_score_config

ROOT = pathlib.Path(__file__).resolve().parent.parent
BATCH = 8
CAPTIONS = ['a small red circle', 'a large blue square', '', 'a cross'] * (BATCH // 4)
ATTRIBUTES = {'colour': ('red', 'blue', 'green'), 'shape': ('circle', 'square')}


def _tokenizer(config):
  return tokenizer_lib.ByteTokenizer(config.tokenizer.context_length)


def _initialised(task, config) -> Trained:
  return Trained(config=config, task=task, params=jax.jit(task.init)(jax.random.PRNGKey(1)), step=0)


def _autoencoding():
  config = make_tiny_config()
  return tasks.TASKS['autoencoding'](config), config


def _score():
  config = tiny_score_config()
  return tasks.TASKS['score'](config), config


def _clip():
  config = tiny_clip_config()
  return tasks.TASKS['clip'](config, tokenizer=_tokenizer(config)), config


def _attributes():
  config = make_tiny_config()
  config.task = 'attributes'
  config.model = t2i_shapes.classifier_config().model
  config.model.ch = 8
  return tasks.TASKS['attributes'](config, attributes=ATTRIBUTES), config


def _text_to_image():
  """A latent text-to-image task on an untrained 8x8 VAE and CLIP, as a job's stages would hand them in."""
  vae_task, vae_config = _autoencoding()
  clip_config = tiny_clip_config()
  clip_task = tasks.TASKS['clip'](clip_config, tokenizer=_tokenizer(clip_config))
  config = t2i_shapes.score_config()
  config.data.dataset, config.data.image_size, config.data.channels = 'digits', 8, 1
  config.model.nf, config.model.num_res_blocks, config.model.attn_resolutions = 8, 1, (2,)
  config.model.space_to_depth = 1
  images = np.random.default_rng(0).uniform(-1, 1, (20, 8, 8, 1)).astype(np.float32)
  task = tasks.TASKS['text_to_image'](
      config, vae=_initialised(vae_task, vae_config), clip=_initialised(clip_task, clip_config),
      latent_scale=1.5, training_images=lambda: images)
  return task, config


def _prior():
  """The unCLIP prior on an untrained CLIP."""
  from configs import t2i_unclip_shapes
  clip_config = tiny_clip_config()
  clip_task = tasks.TASKS['clip'](clip_config, tokenizer=_tokenizer(clip_config))
  config = t2i_unclip_shapes.prior_config()
  config.data.dataset, config.data.image_size, config.data.channels = 'digits', 8, 1
  config.model.width, config.model.layers = 16, 1
  return tasks.TASKS['prior'](config, clip=_initialised(clip_task, clip_config)), config


def _embedding_decoder():
  """The unCLIP decoder on an untrained 8x8 VAE and CLIP."""
  from configs import t2i_unclip_shapes
  vae_task, vae_config = _autoencoding()
  clip_config = tiny_clip_config()
  clip_task = tasks.TASKS['clip'](clip_config, tokenizer=_tokenizer(clip_config))
  config = t2i_unclip_shapes.decoder_config()
  config.data.dataset, config.data.image_size, config.data.channels = 'digits', 8, 1
  config.model.nf, config.model.num_res_blocks, config.model.attn_resolutions = 8, 1, (2,)
  config.embedding.token_width = 8
  images = np.random.default_rng(0).uniform(-1, 1, (20, 8, 8, 1)).astype(np.float32)
  task = tasks.TASKS['embedding_decoder'](
      config, vae=_initialised(vae_task, vae_config), clip=_initialised(clip_task, clip_config),
      latent_scale=1.5, training_images=lambda: images)
  return task, config


def _signature():
  """The signature stage on an untrained 8x8 VAE (every training distortion gets one or two images)."""
  from configs import signature_shapes
  vae_task, vae_config = _autoencoding()
  config = signature_shapes.get_config()
  config.data.dataset, config.data.image_size, config.data.channels = 'digits', 8, 1
  config.model.ch = 8
  return tasks.TASKS['signature'](config, vae=_initialised(vae_task, vae_config)), config


BUILDERS = {'autoencoding': _autoencoding, 'score': _score, 'clip': _clip, 'attributes': _attributes,
            'text_to_image': _text_to_image, 'prior': _prior, 'embedding_decoder': _embedding_decoder,
            'signature': _signature}


def test_every_registered_task_is_built_here():
  assert sorted(BUILDERS) == sorted(tasks.TASKS)


def _batch(task) -> dict[str, np.ndarray]:
  """A host batch with the fields of the task's batch spec (captions for text tasks), run through
  the task's own `prepare_batch`."""
  rng = np.random.default_rng(0)
  spec = task.batch_spec(BATCH)
  batch = {'image': rng.uniform(-1, 1, spec['image'].shape).astype(np.float32),
           'caption': np.array(CAPTIONS, dtype=object),
           'index': np.arange(BATCH, dtype=np.int32)}
  batch.update({name: rng.integers(0, len(values), BATCH).astype(np.int32) for name, values in ATTRIBUTES.items()})
  batch = task.prepare_batch(batch)
  assert set(spec) <= set(batch)
  for name, s in spec.items():
    assert batch[name].shape == s.shape and batch[name].dtype == s.dtype, name
  return {name: batch[name] for name in spec}


@pytest.mark.parametrize('name', sorted(BUILDERS))
def test_task_from_in_memory_parts_trains(name, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  task, config = BUILDERS[name]()
  assert config.task == name and isinstance(task, tasks.Task)
  mesh = mesh_lib.make_mesh({'data': -1}, jax.devices()[:1])
  tx, schedule = state_lib.make_optimizer(config)
  state, shardings = state_lib.create_train_state(task.init, tx, config.seed, mesh)
  before = jax.tree.map(np.array, state.params)  # copies: the step donates the state's buffers
  step = state_lib.make_train_step(task.loss, tx, schedule, config.train.ema_decay, mesh, shardings)
  batch = jax.tree.map(jnp.asarray, _batch(task))
  for _ in range(2):  # the warmup's first learning rate is 0
    state, metrics = step(state, batch)
  assert int(state.step) == 2 and np.isfinite(float(metrics['loss']))
  moved = jax.tree.leaves(jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - b).max()), state.params, before))
  assert max(moved) > 0  # the step updated the parameters
  assert os.listdir(tmp_path) == []  # nothing written


def _imports(path: pathlib.Path) -> set[str]:
  names = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      names.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module:
      names.add(node.module)
  return names


@pytest.mark.parametrize('package', ['tasks', 'models'])
def test_tasks_and_models_never_import_the_trainer_the_assembly_layer_or_files(package):
  forbidden = {'os', 'os.path', 'orbax', 'orbax.checkpoint', 'lgm.stages', 'lgm.jobs', 'lgm.pipeline', 'lgm.files'}
  prefixes = ('lgm.train', 'lgm.reports', 'lgm.data')
  for path in sorted((ROOT / 'lgm' / package).glob('*.py')):
    bad = [name for name in _imports(path) if name in forbidden or name.startswith(prefixes)]
    assert not bad, f'{path.name} imports {bad}'
    calls = [n for n in ast.walk(ast.parse(path.read_text()))
             if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == 'open']
    assert not calls, f'{path.name} opens files'


def test_a_task_with_a_trained_dependency_is_refused_without_a_work_directory():
  from lgm import stages
  config = t2i_shapes.score_config()
  with pytest.raises(ValueError, match='work directory'):
    stages.build_task(config)

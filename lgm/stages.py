"""Assembling trained stages: the one layer that reads runs from work directories and builds tasks.

Tasks know nothing of disks: each declares, with `needs(config)`, the names of the parts its constructor
takes beyond the config, and this module provides them:

  attributes       the dataset's attribute names and values, or its labels as 'label' (a classifier's outputs)
  tokenizer        DIR/tokenizer.json; on the first run built from `config.tokenizer` (BPE learned from the
                   training captions) and written there, so that the ids never change under a trained model
  vae, clip        the trained stages at `config.stages.vae` / `config.stages.clip`, relative to DIR
  latent_scale     DIR/latent_scale.json; on the first run measured on the VAE's latents of the training split
  training_images  the training split's images, loaded when first asked for (`config.latent.cache`)

The trainer, the CLIs, the pipeline and the jobs build every task here; a test builds one in memory by
calling its class with parts of its own.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping

import jax
import ml_collections
import numpy as np
from absl import logging

from lgm import exported, files
from lgm import tokenizer as tokenizer_lib
from lgm.data import loader as loader_lib
from lgm.data import sources
from lgm.tasks import Task, Trained, task_class
from lgm.tasks.conditional import measure_latent_scale
from lgm.train import checkpoints as checkpoints_lib
from lgm.train import state as state_lib
from lgm.train import workdir as workdir_lib

TOKENIZER_FILE = 'tokenizer.json'
LATENT_SCALE_FILE = 'latent_scale.json'
TOKENIZERS = ('bpe', 'byte')


def build_task(config: ml_collections.ConfigDict, workdir: str | None = None,
               given: Mapping[str, Any] | None = None) -> Task:
  """The task of `config.task`, with the parts it needs read from (or first created in) `workdir`; parts in
  `given` are used as they are (a signed VAE in place of the stage's own).

  Without a work directory nothing is written, and a task that needs a trained stage is refused."""
  cls = task_class(config.task)
  parts: dict[str, Any] = {}
  for name in cls.needs(config):
    if name in (given or {}):
      parts[name] = given[name]
      continue
    if name not in _PROVIDERS:
      raise ValueError(f'{cls.__name__} needs {name!r}, which lgm.stages cannot provide; valid: {sorted(_PROVIDERS)}')
    parts[name] = _PROVIDERS[name](config, workdir, parts)
  return cls(config, **parts)


def load_trained(workdir: str, use_ema: bool | None = None, mesh: jax.sharding.Mesh | None = None,
                 given: Mapping[str, Any] | None = None) -> Trained:
  """The task of DIR/config.json with the parameters of its latest readable checkpoint.

  EMA parameters when `use_ema` (default: the run's `config.eval.use_ema`). Laid out on `mesh` as in
  training when given, else on the first device. A stage of an exported model (`lgm.export`) loads its
  params.safetensors instead, the parameters it was exported with (replicated on `mesh`). `given`: parts of
  the task used as they are (`build_task`)."""
  config = workdir_lib.read_config(workdir)
  task = build_task(config, workdir, given)
  if exported.is_exported(workdir):
    params, step = exported.load_params(workdir, jax.eval_shape(task.init, jax.random.PRNGKey(0)))
    params = jax.device_put(params, jax.devices()[0] if mesh is None else
                            jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
    return Trained(config=config, task=task, params=params, step=step)
  tx, _ = state_lib.make_optimizer(config)
  abstract = jax.eval_shape(state_lib.state_initializer(task.init, tx), jax.random.PRNGKey(0))
  if mesh is None:
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    shardings = jax.tree.map(lambda _: device, abstract)
  else:
    shardings = state_lib.state_shardings(mesh, abstract)
  checkpoints = checkpoints_lib.Checkpoints(workdir)
  try:
    restored = checkpoints.restore(checkpoints_lib.abstract_like(abstract, shardings))
  finally:
    checkpoints.close()
  if restored is None:
    raise FileNotFoundError(f'no checkpoint in {checkpoints.directory}; train first '
                            f'(python -m experiments.train --config=... --workdir={workdir}).')
  state, _, step = restored
  use_ema = config.eval.use_ema if use_ema is None else use_ema
  return Trained(config=config, task=task, params=state.ema_params if use_ema else state.params, step=step)


def check_data(config: ml_collections.ConfigDict,
               built_on: Mapping[str, ml_collections.ConfigDict] | None = None) -> None:
  """One-line errors, before anything trains, for data that does not fit a stage: a dataset that cannot be
  opened, a text model without captions, a classifier without classes, an image size its model does not
  divide. `built_on` gives the configs of the stages this one reads ('vae', 'clip': a job's), so that a model
  on latents is checked at the latent size; without them such a stage gets only the first checks."""
  cls = task_class(config.task)
  needs = cls.needs(config)
  source = _source(config, config.data.train_split)
  if 'tokenizer' in needs and not source.info.has_captions:
    raise ValueError(f'{config.data.dataset} has no captions for the {config.task} stage; give the images captions '
                     '(a metadata.jsonl with "file_name" and "text", or NAME.txt next to NAME.png).')
  for split, train, batch_size in ((config.data.train_split, True, config.train.batch_size),
                                   (config.data.eval_split, False, config.eval.batch_size)):
    loader_lib.make_loader(config, split, train=train, batch_size=batch_size,  # raises when a split is too small
                           max_examples=None if train else config.eval.num_examples)
  if not {'vae', 'clip'} & set(needs) <= set(built_on or {}):
    return
  try:
    _check_shapes(config, built_on or {})
  except ValueError:
    raise
  except Exception as e:  # reshapes and convolutions of a size the model does not divide
    on = ' on the latents of its VAE' if 'vae' in needs else ''
    raise ValueError(f'data.image_size={config.data.image_size} does not fit the {config.task} model{on} '
                     f'({str(e).splitlines()[0][:200]}); use a size its downsampling divides.') from None


def _shape_stand_in(config: ml_collections.ConfigDict, built_on: Mapping[str, ml_collections.ConfigDict],
                    stage_params: Mapping[str, Any] | None = None) -> Task:
  """The task of `config` with stand-ins for the parts that do not change its shapes: the stages it reads
  untrained (`stage_params`: their parameters, abstract under `jax.eval_shape`), a byte tokenizer, a latent
  scale of 1."""
  parts: dict[str, Any] = {}
  for name in task_class(config.task).needs(config):
    if name in ('vae', 'clip'):
      parts[name] = Trained(config=built_on[name], task=_shape_stand_in(built_on[name], {}),
                            params=stage_params[name], step=0)
    elif name == 'tokenizer':
      parts[name] = tokenizer_lib.ByteTokenizer(config.tokenizer.context_length)
    elif name == 'latent_scale':
      parts[name] = 1.0
    else:
      parts[name] = _PROVIDERS[name](config, None, parts)
  return task_class(config.task)(config, **parts)


def _check_shapes(config: ml_collections.ConfigDict, built_on: Mapping[str, ml_collections.ConfigDict]) -> None:
  """Builds the parameters of `config`'s task abstractly (no arrays), at the shapes its data gives it."""
  key = jax.random.PRNGKey(0)
  needed = {'vae', 'clip'} & set(task_class(config.task).needs(config))
  stage_params = {name: jax.eval_shape(_shape_stand_in(built_on[name], {}).init, key) for name in needed}
  jax.eval_shape(lambda key, params: _shape_stand_in(config, built_on, params).init(key), key, stage_params)


def stage_dir(workdir: str, relative: str) -> str:
  return files.normjoin(workdir, relative)


def load_stage(workdir: str | None, relative: str, name: str, given: Mapping[str, Any] | None = None) -> Trained:
  """The trained stage `name` at `relative` to `workdir` (`given`: as in `build_task`), or a one-line error
  naming it."""
  if workdir is None:
    raise ValueError(f'this model reads its trained {name} stage next to its work directory; give one.')
  path = stage_dir(workdir, relative)
  try:
    return load_trained(path, given=given)
  except FileNotFoundError:
    raise FileNotFoundError(f'the {name} stage has no trained model in {path}; train it first (the t2i job '
                            f'trains its stages in order: python -m experiments.train --config=configs/t2i_shapes.py '
                            f'--workdir={os.path.dirname(path)}).') from None


# --- the parts a task may need ------------------------------------------------------------------------
def _source(config: ml_collections.ConfigDict, split: str) -> sources.Source:
  return sources.get_source(config.data.dataset, split, config.data.get('data_dir'))


def _attributes(config, workdir, parts) -> dict[str, tuple[str, ...]]:
  """The dataset's attributes (shapes: colour, shape, size, position), else its labels as the one attribute
  'label' (digits, parent folders, tfds labels), else none."""
  del workdir, parts
  info = _source(config, config.data.eval_split).info
  if info.attributes:
    return dict(info.attributes)
  return {'label': info.label_names} if len(info.label_names) > 1 else {}


def make_tokenizer(config: ml_collections.ConfigDict) -> tokenizer_lib.Tokenizer:
  """A new tokenizer as `config.tokenizer` describes it ('bpe': merges learned from training captions)."""
  settings = config.tokenizer
  if settings.name not in TOKENIZERS:
    raise ValueError(f'unknown tokenizer {settings.name!r}; valid: {list(TOKENIZERS)}')
  if settings.name == 'byte':
    return tokenizer_lib.ByteTokenizer(settings.context_length)
  source = _source(config, config.data.train_split)
  if not source.info.has_captions:
    raise ValueError(f'{config.data.dataset} has no captions to train a text model on; use a captioned '
                     'dataset (shapes, digits, a folder with metadata.jsonl or .txt sidecars).')
  captions = source.captions(settings.num_captions)
  tokenizer = tokenizer_lib.train_bpe(captions, settings.num_merges, settings.context_length)
  logging.info('Learned %d BPE merges from %d captions.', tokenizer.vocab_size - tokenizer_lib.NUM_BASE_TOKENS,
               len(captions))
  return tokenizer


def _tokenizer(config, workdir, parts) -> tokenizer_lib.Tokenizer:
  del parts
  path = os.path.join(workdir, TOKENIZER_FILE) if workdir else None
  if path and files.exists(path):
    return tokenizer_lib.load(path)
  tokenizer = make_tokenizer(config)
  if path and jax.process_index() == 0:
    files.makedirs(workdir)
    tokenizer.save(path)
  return tokenizer


def _vae(config, workdir, parts) -> Trained:
  del parts
  return load_stage(workdir, config.stages.vae, 'vae')


def _clip(config, workdir, parts) -> Trained:
  del parts
  return load_stage(workdir, config.stages.clip, 'clip')


def _latent_scale(config, workdir, parts) -> float:
  path = os.path.join(workdir, LATENT_SCALE_FILE) if workdir else None
  if path and files.exists(path):
    return float(files.read_json(path)['latent_scale'])
  images = loader_lib.load_arrays(config, config.data.train_split, config.latent.scale_examples)[0]['image']
  scale = measure_latent_scale(parts['vae'], images)
  if path and jax.process_index() == 0:
    files.makedirs(workdir)
    files.write_json(path, {'latent_scale': scale, 'num_images': len(images)})
  return scale


def _training_images(config, workdir, parts) -> Callable[[], np.ndarray]:
  del workdir, parts
  return lambda: loader_lib.load_arrays(config, config.data.train_split)[0]['image']


_PROVIDERS: dict[str, Callable[[ml_collections.ConfigDict, str | None, dict], Any]] = {
    'attributes': _attributes,
    'tokenizer': _tokenizer,
    'vae': _vae,
    'clip': _clip,
    'latent_scale': _latent_scale,
    'training_images': _training_images,
}

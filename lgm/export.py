"""A trained model as a self-contained directory: what inference reads, and nothing of training's state.

    python -m experiments.export --workdir=runs/t2i_shapes --out=models/t2i_shapes
    pipe = lgm.pipeline.TextToImage.from_pretrained('models/t2i_shapes')

Layout (format version `VERSION`):

    lgm_model.json            format, version, the stages and which one is the model (`roots`), lgm's version
    README.md                 the model card: data, stages, training steps, the report's figures, how to load
    <stage>/params.safetensors  the parameters the run evaluates with (EMA unless the run says otherwise),
                              float32, one tensor per leaf, named by its path in the flax tree joined by '/'
                              ('encoder/ResBlock_0/Conv_0/kernel'); header metadata: format, version, step
    <stage>/config.json       the stage's resolved config: how to rebuild its network and sampler
                              (`config.stages` point at the sibling stages it reads)
    <stage>/tokenizer.json    the CLIP stage's tokenizer; <stage>/latent_scale.json: a latent model's scale

A stage directory loads like a work directory (`lgm.stages.load_trained` sees params.safetensors and reads it
instead of orbax checkpoints): no optimizer state, no data, no orbax. Only the stages inference reads are
written: a job's score / prior / decoder stages and the VAE and CLIP stages they use (not its classifier).
A job with a `signature` stage exports its VAE with the signed decoder in place of the original one (the
manifest says `signed`), and not the signature stage: the model carries the signature, its owner keeps the
detector (`experiments.verify --model=JOB_DIR`).
"""

from __future__ import annotations

import importlib.metadata
import os
from typing import Any

import jax
import ml_collections
import safetensors.numpy

from lgm import files, inspection, jobs, pipeline, stages
from lgm.exported import FORMAT, MANIFEST, PARAMS_FILE, VERSION, flatten_params
from lgm.tasks import Trained, task_class
from lgm.train import workdir as workdir_lib

GENERATING_STAGES = ('score', 'prior', 'decoder')  # a job's stages that generate; the rest are read by them


def check_new(directory: str) -> None:
  """Refuse a directory that holds anything: an exported model never mixes with older files."""
  if files.listdir(directory):
    raise FileExistsError(f'{directory} exists and is not empty; write the model to a new directory.')


def write_stage(directory: str, config: ml_collections.ConfigDict, params: Any, step: int) -> None:
  """One stage in the exported format: DIR/config.json and DIR/params.safetensors (`lgm.stages.load_trained`
  reads it back). Also what `experiments.convert` writes for weights converted from elsewhere (step 0)."""
  files.makedirs(directory)
  files.write_text(workdir_lib.config_path(directory), config.to_json(indent=2, sort_keys=True))
  data = safetensors.numpy.save(flatten_params(jax.device_get(params)),
                                metadata={'format': FORMAT, 'version': str(VERSION), 'step': str(step)})
  with files.replacing(os.path.join(directory, PARAMS_FILE), 'wb') as f:
    f.write(data)


def _stage_dependencies(config: ml_collections.ConfigDict, stage_dir: str) -> dict[str, str]:
  """key in config.stages -> the directory of each stage that this stage's task reads."""
  needs = task_class(config.task).needs(config)
  return {key: stages.stage_dir(stage_dir, rel) for key, rel in config.get('stages', {}).items() if key in needs}


def _collect(roots: dict[str, str]) -> dict[str, str]:
  """name -> source directory of every stage the roots read, transitively; a dependency is named by its
  directory's name (a job's stage names)."""
  found: dict[str, str] = {}
  pending = list(roots.items())
  while pending:
    name, path = pending.pop()
    path = files.real(path)
    if name in found:
      if found[name] != path:
        raise ValueError(f'two different stages are both named {name!r} ({found[name]}, {path}); '
                         'rename one of the directories before exporting.')
      continue
    found[name] = path
    config = workdir_lib.read_config(path)
    pending.extend((os.path.basename(dep), dep) for dep in _stage_dependencies(config, path).values())
  return found


def _roots(workdir: str) -> dict[str, str]:
  config = workdir_lib.read_config(workdir)
  if jobs.is_job(config):
    roots = {name: os.path.join(workdir, name) for name in GENERATING_STAGES
             if files.exists(workdir_lib.config_path(os.path.join(workdir, name)))}
    if not roots:
      raise ValueError(f'{workdir} is a job without a generating stage ({", ".join(GENERATING_STAGES)}) to export.')
    return roots
  return {'score' if config.task == 'text_to_image' else 'model': workdir}


def _model_card(workdir: str, manifest: dict[str, Any], trained: dict[str, Trained]) -> str:
  name = os.path.basename(os.path.normpath(workdir))
  lines = [f'# {name}', '', f'An lgm model exported from the work directory `{name}` (lgm {manifest["lgm_version"]}, '
           f'format version {VERSION}).', '', '## Stages', '',
           '| stage | task | model | parameters | training steps | dataset | image size |', '|---|---|---|---|---|---|---|']
  for stage, t in trained.items():
    count = inspection.parameter_count(t.params)
    data = t.config.data
    lines.append(f'| {stage} | {t.config.task} | {t.config.model.name} | {count:,} | {t.step:,} | '
                 f'{data.dataset} | {data.get("image_size", "–")} |')
  report = os.path.join(workdir, 'report.md')
  if files.exists(report):
    text = files.read_text(report).split('\n')
    first_table_end = next((i for i, line in enumerate(text) if i > 2 and not line.startswith('|')
                            and text[i - 1].startswith('|')), len(text))
    lines += ['', '## Evaluation (from the job\'s report)', ''] + text[2:first_table_end]
  if set(trained) & {'score', 'prior'}:
    code = ['from lgm.pipeline import TextToImage', '', f"pipe = TextToImage.from_pretrained('{name}')",
            "images, nfe = pipe(['a prompt'], seeds=[0])"]
    cli = f'or `python -m experiments.sample --model={name} --prompt="..." --out=samples.png`. '
  else:
    code = ['from lgm import stages', '', f"trained = stages.load_trained('{name}/model')  # config, task, params"]
    cli = f'or `python -m experiments.sample --model={name} --out=samples.png`. '
  lines += ['', '## Load', '', '```python', *code, '```', '',
            cli + f"Each stage's parameters are `<stage>/{PARAMS_FILE}` (tensors named by their path in the flax "
            "tree); `<stage>/config.json` says how to build its network.", '']
  return '\n'.join(lines)


def export(workdir: str, out: str) -> dict[str, Any]:
  """Write the model of `workdir` (a job or a single run) to `out` (new or empty); returns the manifest."""
  check_new(out)
  roots = _roots(workdir)
  sources = _collect(roots)
  trained = {name: stages.load_trained(path) for name, path in sources.items()}
  signature_dir = os.path.join(workdir, pipeline.SIGNATURE_STAGE)
  signed = files.exists(workdir_lib.config_path(signature_dir))
  if signed:
    signed_vae = pipeline.signed_vae(workdir)  # refuses a signature of a VAE the job does not decode with
    vae_dir = pipeline.vae_dir(signature_dir)
    trained[next(name for name, path in sources.items() if path == vae_dir)] = signed_vae
  manifest = {'format': FORMAT, 'version': VERSION, 'lgm_version': importlib.metadata.version('lgm'),
              'roots': sorted(roots), 'signed': signed, 'stages': {}}
  files.makedirs(out)
  for name, path in sources.items():
    t = trained[name]
    target = os.path.join(out, name)
    config = ml_collections.ConfigDict(t.config.to_dict())
    for key, dep in _stage_dependencies(t.config, path).items():
      config.stages[key] = os.path.join('..', os.path.basename(files.real(dep)))
    write_stage(target, config, t.params, t.step)
    for carried in (stages.TOKENIZER_FILE, stages.LATENT_SCALE_FILE):
      if files.exists(os.path.join(path, carried)):
        files.write_text(os.path.join(target, carried), files.read_text(os.path.join(path, carried)))
    manifest['stages'][name] = {'task': t.config.task, 'step': t.step}
  files.write_text(os.path.join(out, 'README.md'), _model_card(workdir, manifest, trained))
  files.write_json(os.path.join(out, MANIFEST), manifest)
  return manifest

"""Sample a trained model into one PNG grid.

python -m experiments.sample --workdir=runs/vae_shapes --out=samples.png [--num=64] [--seed=0]
python -m experiments.sample --workdir=runs/sde_vp_shapes --out=samples.png [--sampler=edm_heun --steps=12]
python -m experiments.sample --workdir=runs/t2i_shapes --prompt="a large red circle in the top left" --out=x.png \
    [--negative_prompt=...] [--guidance=3] [--sampler=dpm_solver --steps=19] [--num=16] [--seed=0]
python -m experiments.sample --workdir=runs/t2i_unclip --route=prior --prompt="a small blue square" --out=p.png
python -m experiments.sample --workdir=runs/t2i_unclip --init_image=photo.png --num=8 --out=variations.png
python -m experiments.sample --model=models/t2i_shapes --prompt="a small blue square" --out=x.png  # exported

A VAE samples by decoding N(0, I) latents. A score model reverses its SDE with `config.sampling`,
`--sampler` (a method of lgm.sampling) and `--steps` overriding it. A text-to-image job (or its score
stage) draws --num images of --prompt, image i from seed --seed + i (no --prompt: unconditional);
`--route=prior` takes the unCLIP road of a job that has one (prior, then embedding decoder), and
`--init_image` draws variations of an image (resized to the model's size) through its decoder.
Each model takes only the flags that apply to it (`Task.sample_flags`) and refuses the others.
`--model` reads an exported model (`python -m experiments.export`) instead of a work directory.
"""

import os

from absl import flags

from experiments import common

_WORKDIR = flags.DEFINE_string('workdir', None, 'Work directory of a trained run or job.')
_MODEL = flags.DEFINE_string('model', None, 'Directory of an exported model (instead of --workdir).')
_OUT = flags.DEFINE_string('out', None, 'Output PNG path.')
_NUM = flags.DEFINE_integer('num', 64, 'Number of images.')
_SEED = flags.DEFINE_integer('seed', 0, 'Random seed.')
_PROMPT = flags.DEFINE_string('prompt', None, 'Text prompt (text-conditioned models).')
_NEGATIVE = flags.DEFINE_string('negative_prompt', None, 'Negative prompt (text-conditioned models).')
_SAMPLER = flags.DEFINE_string('sampler', None, 'Sampler name (diffusion models).')
_STEPS = flags.DEFINE_integer('steps', None, 'Sampler steps (diffusion models).')
_GUIDANCE = flags.DEFINE_float('guidance', None, 'Guidance scale (diffusion models).')
_ROUTE = flags.DEFINE_enum('route', None, ['guided', 'prior'], 'Text-to-image road (jobs with a prior and decoder).')
_INIT_IMAGE = flags.DEFINE_string('init_image', None, 'Image whose variations to draw (jobs with a decoder).')
flags.mark_flags_as_required(['out'])


# CLI flag -> the option of `Task.sample` it sets (lgm.sampling's names).
SAMPLE_OPTIONS = {'sampler': 'method', 'steps': 'num_steps'}


def main(argv):
  del argv
  import jax
  import numpy as np

  from lgm import exported, images, jobs, provenance, stages
  from lgm.export import GENERATING_STAGES
  from lgm.pipeline import TextToImage
  from lgm.train import workdir as workdir_lib

  if (_WORKDIR.value is None) == (_MODEL.value is None):
    raise ValueError('give one of --workdir (a training run or job) and --model (an exported model).')
  source = _WORKDIR.value or _MODEL.value
  if _NUM.value < 1:
    raise ValueError(f'--num must be at least 1, got {_NUM.value}.')
  if _INIT_IMAGE.value and (_PROMPT.value or _NEGATIVE.value):  # before any model is loaded
    raise ValueError('--init_image draws variations of the image alone; leave out --prompt and --negative_prompt.')
  flags_given = {name: flag.value for name, flag in (
      ('prompt', _PROMPT), ('negative_prompt', _NEGATIVE), ('guidance', _GUIDANCE), ('sampler', _SAMPLER),
      ('steps', _STEPS)) if flag.value is not None}
  if _MODEL.value is not None and set(exported.read_manifest(_MODEL.value)['roots']) & set(GENERATING_STAGES):
    pipe, trained = TextToImage.from_pretrained(_MODEL.value), None
  elif _WORKDIR.value is not None and jobs.is_job(workdir_lib.read_config(_WORKDIR.value)):
    pipe, trained = TextToImage.from_workdir(_WORKDIR.value), None  # a job generates through its pipeline
  else:  # one model: a single run, or the one stage of an exported single run
    trained = stages.load_trained(_WORKDIR.value or os.path.join(_MODEL.value, 'model'))
    pipe = TextToImage(trained.task, trained.params, trained.step) if trained.task.generates_from_text else None
  seeds = range(_SEED.value, _SEED.value + _NUM.value)  # image i of the grid: seed + i
  if pipe is None and (_ROUTE.value or _INIT_IMAGE.value):
    raise ValueError(f'--route and --init_image need a text-to-image job; {source} holds a '
                     f'{trained.config.task} model.')
  if pipe is not None and _INIT_IMAGE.value:
    samples = pipe.variations(images.read_image(_INIT_IMAGE.value, pipe.image_shape), _NUM.value, seed=_SEED.value,
                              guidance=_GUIDANCE.value, sampler=_SAMPLER.value, steps=_STEPS.value)
    recipe = pipe.recipe('', None, _GUIDANCE.value, seeds, _SAMPLER.value, _STEPS.value, 'prior')
    recipe['init_image'] = os.path.basename(_INIT_IMAGE.value)
    print(f'{_NUM.value} variations of {_INIT_IMAGE.value}')
    print(images.save_grid(_OUT.value, samples, upscale=2, text=provenance.png_text(recipe)))
    return
  if pipe is not None:
    samples, nfe = pipe([_PROMPT.value or ''] * _NUM.value, negative_prompt=_NEGATIVE.value,
                        guidance=_GUIDANCE.value, seed=_SEED.value, sampler=_SAMPLER.value, steps=_STEPS.value,
                        route=_ROUTE.value)
    recipe = pipe.recipe(_PROMPT.value or '', _NEGATIVE.value, _GUIDANCE.value, seeds, _SAMPLER.value, _STEPS.value,
                         _ROUTE.value, nfe)
    print(f'{_NUM.value} samples, {nfe} score evaluations each')
    print(images.save_grid(_OUT.value, samples, upscale=2, text=provenance.png_text(recipe)))
    return
  task = trained.task
  unsupported = [name for name in flags_given if name not in task.sample_flags]
  if unsupported:
    takes = f'only --{", --".join(task.sample_flags)}' if task.sample_flags else 'none of them'
    raise ValueError(f'the {trained.config.model.name} model of {source} takes no '
                     f'--{", --".join(unsupported)} ({takes}).')
  options = {SAMPLE_OPTIONS[name]: value for name, value in flags_given.items()}
  samples, nfe = task.sample(trained.params, jax.random.PRNGKey(_SEED.value), _NUM.value, **options)
  recipe = provenance.recipe(provenance.model_id(trained.params), seed=_SEED.value, num=_NUM.value,
                             sampler=options.get('method', task.sampling.get('method')),
                             steps=options.get('num_steps', task.sampling.get('num_steps')), network_evaluations=nfe)
  print(f'{_NUM.value} samples, {nfe} network evaluations each')
  print(images.save_grid(_OUT.value, np.asarray(samples), upscale=2, text=provenance.png_text(recipe)))


def cli() -> None:
  """The `lgm-sample` command."""
  common.run(main)


if __name__ == '__main__':
  cli()

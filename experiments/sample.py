"""Sample a trained model into one PNG grid.

python -m experiments.sample --workdir=runs/vae_shapes --out=samples.png [--num=64] [--seed=0]
python -m experiments.sample --workdir=runs/sde_vp_shapes --out=samples.png [--sampler=edm_heun --steps=12]
python -m experiments.sample --workdir=runs/t2i_shapes --prompt="a large red circle in the top left" --out=x.png \
    [--negative_prompt=...] [--guidance=3] [--sampler=dpm_solver --steps=19] [--num=16] [--seed=0]

A VAE samples by decoding N(0, I) latents. A score model reverses its SDE with `config.sampling`,
`--sampler` (a method of lgm.sampling) and `--steps` overriding it. A text-to-image job (or its score
stage) draws --num images of --prompt, image i from seed --seed + i (no --prompt: unconditional).
Text prompts and guidance belong to text-conditioned models (the flags are the contract of DESIGN.md);
a model that has none refuses them.
"""

from absl import flags

from experiments import common

_WORKDIR = flags.DEFINE_string('workdir', None, 'Work directory of a trained run.')
_OUT = flags.DEFINE_string('out', None, 'Output PNG path.')
_NUM = flags.DEFINE_integer('num', 64, 'Number of images.')
_SEED = flags.DEFINE_integer('seed', 0, 'Random seed.')
_PROMPT = flags.DEFINE_string('prompt', None, 'Text prompt (text-conditioned models).')
_NEGATIVE = flags.DEFINE_string('negative_prompt', None, 'Negative prompt (text-conditioned models).')
_SAMPLER = flags.DEFINE_string('sampler', None, 'Sampler name (diffusion models).')
_STEPS = flags.DEFINE_integer('steps', None, 'Sampler steps (diffusion models).')
_GUIDANCE = flags.DEFINE_float('guidance', None, 'Guidance scale (diffusion models).')
flags.mark_flags_as_required(['workdir', 'out'])


def main(argv):
  del argv
  import jax
  import numpy as np

  from lgm import images
  from lgm.train import workdir as workdir_lib

  if _NUM.value < 1:
    raise ValueError(f'--num must be at least 1, got {_NUM.value}.')
  config = workdir_lib.read_config(_WORKDIR.value)
  if 'stage_order' in config or config.get('task') == 'text_to_image':
    from lgm.pipeline import TextToImage
    pipe = TextToImage.from_workdir(_WORKDIR.value)
    samples, nfe = pipe([_PROMPT.value or ''] * _NUM.value, negative_prompt=_NEGATIVE.value,
                        guidance=_GUIDANCE.value, seed=_SEED.value, sampler=_SAMPLER.value, steps=_STEPS.value)
    print(f'{_NUM.value} samples, {nfe} guided score evaluations each')
    print(images.save_grid(_OUT.value, samples, upscale=2))
    return
  trained = workdir_lib.load_trained(_WORKDIR.value)
  task = trained.task
  diffusion = trained.config.task == 'score'
  flags_given = [(name, flag) for name, flag in (('prompt', _PROMPT), ('negative_prompt', _NEGATIVE),
                                                  ('guidance', _GUIDANCE), ('sampler', _SAMPLER), ('steps', _STEPS))
                 if flag.value is not None]
  unsupported = [name for name, _ in flags_given if not (diffusion and name in ('sampler', 'steps'))]
  if unsupported:
    kind = 'text-conditioned' if diffusion else 'diffusion'
    raise ValueError(f'the {trained.config.model.name} model of {_WORKDIR.value} takes no '
                     f'--{", --".join(unsupported)}: those are for {kind} models.')
  if diffusion:
    options = {key: flag.value for key, flag in (('method', _SAMPLER), ('num_steps', _STEPS)) if flag.value is not None}
    samples, nfe = task.sample(trained.params, jax.random.PRNGKey(_SEED.value), _NUM.value, **options)
    print(f'{_NUM.value} samples, {int(nfe)} score evaluations each')
    print(images.save_grid(_OUT.value, np.asarray(samples), upscale=2))
    return
  if not getattr(task, 'is_variational', False):
    raise ValueError(f'{_WORKDIR.value} holds a {trained.config.model.name}, which has no prior to sample; '
                     'train a VAE (configs/vae_shapes.py).')
  samples = np.clip(np.asarray(task.sample_prior(trained.params, jax.random.PRNGKey(_SEED.value), _NUM.value)), -1, 1)
  print(images.save_grid(_OUT.value, samples, upscale=2))


if __name__ == '__main__':
  common.run(main)

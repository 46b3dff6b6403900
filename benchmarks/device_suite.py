"""The current models' speeds on whatever accelerator is present, as JSON lines (one run, about 10 minutes on an H100, most of it compiling).

python -m benchmarks.device_suite [--t2i_workdir=runs/t2i_shapes] [--cifar] [--out=FILE.jsonl]

Train steps (synthetic batches) of the shipped models at their own batch and a larger one: the VAE, the
CLIP towers, the pixel score model and the latent text-to-image score model (the stages of the t2i job in
`--t2i_workdir`: its VAE and CLIP stages must be trained, its score stage need not be); the latent score
model also at 16 steps per call (`train.steps_per_call`, the remedy for launch-bound steps). Sampling: the pixel
score model with DPM-Solver++ at 25 steps; the whole text-to-image pipeline at its default sampler and
guidance, batch 16 and 256. `--cifar` adds DDPM++ cont. (CIFAR-10 size, 61.8M parameters) at the paper's
batch 128 in float32 and bfloat16 (about 2 minutes of compiling each).
"""

import json
import os

import jax
from absl import app, flags

from benchmarks import sampling_speed, t2i_sampling, train_step
from configs import sde_vp_shapes, vae_shapes
from configs.score_sde import cifar10_ddpmpp_continuous
from lgm.train import workdir as workdir_lib

_T2I = flags.DEFINE_string('t2i_workdir', 'runs/t2i_shapes', 'A t2i job directory with trained vae and clip stages.')
_CIFAR = flags.DEFINE_bool('cifar', False, 'Also the CIFAR-10-size DDPM++ (slow to compile).')
_OUT = flags.DEFINE_string('out', None, 'Also append the results to this file.')


def train_step_runs(job, cifar: bool) -> list[tuple]:
  """(name, config, batch, compute dtype, stage, steps per call) of each train-step measurement."""
  runs = [('vae_shapes', vae_shapes.get_config(), 256, 'float32', None, 1),
          ('t2i_shapes.clip', job.clip, 128, 'float32', 'clip', 1),
          ('t2i_shapes.clip', job.clip, 1024, 'float32', 'clip', 1),
          ('sde_vp_shapes', sde_vp_shapes.get_config(), 256, 'float32', None, 1),
          ('t2i_shapes.score', job.score, 64, 'float32', 'score', 1),
          ('t2i_shapes.score', job.score, 64, 'float32', 'score', 16),  # launch-bound: 16 steps a call
          ('t2i_shapes.score', job.score, 256, 'float32', 'score', 1)]
  if cifar:
    runs += [('cifar10_ddpmpp_continuous', cifar10_ddpmpp_continuous.get_config(), 128, dtype, None, 1)
             for dtype in ('float32', 'bfloat16')]
  return runs


def main(argv):
  del argv
  peaks = {dtype: train_step.matmul_peak_flops(n=8192, dtype=dtype) for dtype in ('float32', 'bfloat16')}
  job = workdir_lib.read_config(_T2I.value)
  results = []

  def record(result):
    results.append(result)
    print(json.dumps(result), flush=True)

  for name, config, batch, dtype, stage, per_call in train_step_runs(job, _CIFAR.value):
    config = config.copy_and_resolve_references()
    config.train.batch_size, config.train.compute_dtype, config.train.steps_per_call = batch, dtype, per_call
    workdir = None if stage is None else os.path.join(_T2I.value, stage)
    record({'benchmark': 'train_step', 'config': name,
            **train_step.measure(config, steps=20, peak=peaks[dtype], workdir=workdir)})
  record({'benchmark': 'sampling', 'config': 'sde_vp_shapes',
          **sampling_speed.measure(sde_vp_shapes.get_config(), 256, method='dpm_solver', steps=25)})
  pipe, trained = t2i_sampling.load(_T2I.value)
  for batch in (16, 256):
    record({'benchmark': 't2i_sampling', 'config': 't2i_shapes', 'trained': trained,
            **t2i_sampling.measure(pipe, batch)})
  if _OUT.value:
    with open(_OUT.value, 'a') as f:
      f.writelines(json.dumps(r) + '\n' for r in results)
  print(f'devices: {jax.devices()}')


if __name__ == '__main__':
  app.run(main)

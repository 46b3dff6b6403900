"""The current models' speeds on whatever accelerator is present, as JSON lines (one run, ~5 minutes on an H100).

python -m benchmarks.device_suite [--out=FILE.jsonl]

Train steps: the shipped VAE and pixel score model at batch 256, DDPM++ cont. (CIFAR-10 size, 61.8M
parameters) at the paper's batch 128 in float32 and bfloat16. Sampling: DPM-Solver++ at 25 steps.
"""

import json

import jax
from absl import app, flags

from benchmarks import sampling_speed, train_step
from configs import sde_vp_shapes, vae_shapes
from configs.score_sde import cifar10_ddpmpp_continuous

_OUT = flags.DEFINE_string('out', None, 'Also append the results to this file.')


def main(argv):
  del argv
  peak = train_step.matmul_peak_flops(n=8192)
  runs = []
  for name, make, batch, dtype in (('vae_shapes', vae_shapes.get_config, 256, 'float32'),
                                   ('sde_vp_shapes', sde_vp_shapes.get_config, 256, 'float32'),
                                   ('cifar10_ddpmpp_continuous', cifar10_ddpmpp_continuous.get_config, 128, 'float32'),
                                   ('cifar10_ddpmpp_continuous', cifar10_ddpmpp_continuous.get_config, 128, 'bfloat16')):
    config = make()
    config.train.batch_size, config.train.compute_dtype = batch, dtype
    runs.append({'benchmark': 'train_step', 'config': name, **train_step.measure(config, steps=20, peak=peak)})
    print(json.dumps(runs[-1]), flush=True)
  for name, make, num in (('sde_vp_shapes', sde_vp_shapes.get_config, 256),
                          ('cifar10_ddpmpp_continuous', cifar10_ddpmpp_continuous.get_config, 64)):
    runs.append({'benchmark': 'sampling', 'config': name,
                 **sampling_speed.measure(make(), num, method='dpm_solver', steps=25)})
    print(json.dumps(runs[-1]), flush=True)
  if _OUT.value:
    with open(_OUT.value, 'a') as f:
      f.writelines(json.dumps(r) + '\n' for r in runs)
  print(f'devices: {jax.devices()}')


if __name__ == '__main__':
  app.run(main)

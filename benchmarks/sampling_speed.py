"""Sampling throughput of a score config: images/s at a sampler and step count (random weights: speed only).

python -m benchmarks.sampling_speed --config=configs/sde_vp_shapes.py [--num=16] [--method=dpm_solver --steps=25]

Reports nfe, seconds per batch (best of `--repeats`, after one compiling call) and images/s.
"""

import json
import time

import jax
from absl import app, flags
from ml_collections import config_flags

from lgm import stages

def measure(config, num: int, method: str | None = None, steps: int | None = None, repeats: int = 3) -> dict:
  task = stages.build_task(config)
  params = jax.jit(task.init)(jax.random.PRNGKey(0))
  options = {k: v for k, v in (('method', method), ('num_steps', steps)) if v is not None}
  start = time.perf_counter()
  images, nfe = task.sample(params, jax.random.PRNGKey(1), num, **options)
  jax.block_until_ready(images)
  compile_seconds = time.perf_counter() - start
  best = float('inf')
  for i in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(task.sample(params, jax.random.PRNGKey(2 + i), num, **options)[0])
    best = min(best, time.perf_counter() - start)
  return {'model': config.model.name, 'device': jax.devices()[0].device_kind,
          'method': options.get('method', task.sampling['method']),
          'num_steps': options.get('num_steps', task.sampling['num_steps']), 'nfe': int(nfe), 'batch': num,
          'seconds_per_batch': best, 'images_per_sec': num / best, 'compile_and_first_s': compile_seconds}


def main(argv):
  del argv
  f = flags.FLAGS
  print(json.dumps(measure(f.config, f.num, f.method, f.steps, f.repeats), indent=2))


if __name__ == '__main__':  # flags here, so that other benchmarks can import `measure`
  config_flags.DEFINE_config_file('config', 'configs/sde_vp_shapes.py', 'Experiment config (task score).')
  flags.DEFINE_integer('num', 16, 'Images per batch.')
  flags.DEFINE_string('method', None, 'Sampler (default: config.sampling.method).')
  flags.DEFINE_integer('steps', None, 'Sampler steps (default: config.sampling.num_steps).')
  flags.DEFINE_integer('repeats', 3, 'Timed batches.')
  app.run(main)

"""Text-to-image sampling throughput: images/s of the whole pipeline (tokenizer, text tower, guided sampler,
VAE decoder) for a batch of prompts, at the job's default sampler unless told otherwise.

python -m benchmarks.t2i_sampling --workdir=runs/t2i_shapes [--batch=16] [--guidance=3] [--sampler=... --steps=...]

A job directory whose score stage is not trained yet (VAE and CLIP only) is measured with freshly
initialised score weights: the timing does not depend on the weights. Reports the seconds per batch (best
of `--repeats` after one compiling call), images/s and score evaluations per image (each a guided pair).
"""

from __future__ import annotations

import json
import os
import time

import jax
from absl import app, flags

from lgm import stages
from lgm.pipeline import SCORE_STAGE, TextToImage
from lgm.train import workdir as workdir_lib

PROMPTS = ('a large red circle in the top left', 'a small blue square in the bottom right',
           'a medium green triangle in the center', 'a large yellow diamond in the top right')


def load(workdir: str) -> tuple[TextToImage, bool]:
  """(pipeline, trained): the job's trained model, else its score network freshly initialised."""
  try:
    return TextToImage.from_workdir(workdir), True
  except FileNotFoundError:
    config = workdir_lib.read_config(workdir)[SCORE_STAGE]
    task = stages.build_task(config, os.path.join(workdir, SCORE_STAGE))
    return TextToImage(task, jax.jit(task.init)(jax.random.PRNGKey(0))), False


def measure(pipe: TextToImage, batch: int, guidance: float | None = None, sampler: str | None = None,
            steps: int | None = None, repeats: int = 3) -> dict:
  pipe.batch_size = batch
  prompts = [PROMPTS[i % len(PROMPTS)] for i in range(batch)]
  run = lambda seed: pipe(prompts, guidance=guidance, seed=seed, sampler=sampler, steps=steps)
  start = time.perf_counter()
  _, nfe = run(0)
  compile_seconds = time.perf_counter() - start
  best = float('inf')
  for i in range(repeats):
    start = time.perf_counter()
    run((i + 1) * batch)  # returns numpy images: the time includes the transfer back to the host
    best = min(best, time.perf_counter() - start)
  sampling = pipe.task.sampling
  return {'device': jax.devices()[0].device_kind, 'batch': batch,
          'guidance': pipe.task.guidance if guidance is None else guidance,
          'method': sampler or sampling['method'], 'num_steps': steps or sampling['num_steps'], 'nfe': nfe,
          'seconds_per_batch': best, 'images_per_sec': batch / best, 'compile_and_first_s': compile_seconds}


def main(argv):
  del argv
  f = flags.FLAGS
  pipe, trained = load(f.workdir)
  for batch in f.batch:
    result = measure(pipe, batch, f.guidance, f.sampler, f.steps, f.repeats)
    print(json.dumps({'benchmark': 't2i_sampling', 'trained': trained, **result}), flush=True)


if __name__ == '__main__':  # flags here, so that other benchmarks can import `measure`
  flags.DEFINE_string('workdir', 'runs/t2i_shapes', 'A t2i job directory (configs/t2i_shapes.py).')
  flags.DEFINE_multi_integer('batch', [16], 'Prompts per batch (repeat the flag for several).')
  flags.DEFINE_float('guidance', None, 'Guidance scale (default: the model config\'s).')
  flags.DEFINE_string('sampler', None, 'Sampler (default: the model config\'s).')
  flags.DEFINE_integer('steps', None, 'Sampler steps (default: the model config\'s).')
  flags.DEFINE_integer('repeats', 3, 'Timed batches.')
  app.run(main)

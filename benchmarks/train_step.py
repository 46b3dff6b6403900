"""Train-step throughput of a config, and its achieved FLOP/s as a fraction of this machine's matmul peak.

python -m benchmarks.train_step --config=configs/vae_shapes.py [--steps=30] [--workdir=DIR]
python -m benchmarks.train_step --config=configs/vae_digits.py --config.train.steps_per_call=8   # 8 steps a call

The peak is measured here, not quoted: the best 2048x2048 matmul rate through jax.jit in the run's
`train.compute_dtype` (float32 or bfloat16). The
train step's FLOPs are XLA's count of the step before backend optimisation (forward, backward, optimizer,
EMA; `lgm.inspection.program_flops`), the same on every backend.
Synthetic batches (of the task's own batch spec: uniform images, zero integer fields): this measures
compute, not the data pipeline. Tasks that read files of their run (a CLIP tokenizer, the stages of a
text-to-image model) take the run's `--workdir`.
"""

import dataclasses
import json
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from lgm import inspection, stages
from lgm.train import mesh as mesh_lib
from lgm.train import state as state_lib

def step_flops(config, workdir: str | None = None) -> tuple[float, int]:
  """(FLOPs of one train step of `config` (`lgm.inspection.program_flops`), its parameter count), traced on
  abstract values: no parameters are made and nothing is compiled, so any model is counted on any machine."""
  mesh = mesh_lib.make_mesh(config.mesh)
  task = stages.build_task(config, workdir)
  tx, schedule = state_lib.make_optimizer(config)
  abstract = jax.eval_shape(state_lib.state_initializer(task.init, tx), jax.random.PRNGKey(config.seed))
  shardings = state_lib.state_shardings(mesh, abstract)
  step = state_lib.make_train_step(task.loss, tx, schedule, config.train.ema_decay, mesh, shardings)
  flops = inspection.program_flops(lambda s, b: step(s, b), abstract, task.batch_spec(config.train.batch_size))
  return flops, inspection.parameter_count(abstract.params)


def best_seconds(fn, repeats: int) -> float:
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return min(times)


def matmul_peak_flops(n: int = 2048, repeats: int = 10, dtype: str = 'float32') -> float:
  """The best rate of an n x n matmul in `dtype` through jax.jit: the machine's own yardstick for that dtype."""
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.dtype(dtype))
  matmul = jax.jit(lambda x: x @ x)
  jax.block_until_ready(matmul(a))
  return 2 * n**3 / best_seconds(lambda: matmul(a), repeats)


def synthetic_batch(task, batch_size: int) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(0)
  return {k: (rng.uniform(-1, 1, s.shape).astype(s.dtype) if jnp.issubdtype(s.dtype, jnp.floating)
              else np.zeros(s.shape, s.dtype)) for k, s in task.batch_spec(batch_size).items()}


@dataclasses.dataclass
class Prepared:
  """A config's compiled train step on a synthetic batch: `advance()` runs one call (`per_call` steps)."""
  advance: Callable[[], None]
  task: Any  # the config's task (`lgm.stages.build_task`)
  per_call: int
  step_flops: float  # one step's, `lgm.inspection.program_flops`
  params: int
  mesh: jax.sharding.Mesh
  compile_seconds: float


def prepare(config, workdir: str | None = None) -> Prepared:
  """Build, compile and warm up (3 calls) the train step of `config`; `train.steps_per_call` = k makes each
  call k steps on a stack of k copies of the batch."""
  mesh = mesh_lib.make_mesh(config.mesh)
  task = stages.build_task(config, workdir)
  tx, schedule = state_lib.make_optimizer(config)
  state, shardings = state_lib.create_train_state(task.init, tx, config.seed, mesh)
  per_call = config.train.get('steps_per_call', 1)
  step = state_lib.make_train_step(task.loss, tx, schedule, config.train.ema_decay, mesh, shardings, per_call)
  batch = synthetic_batch(task, config.train.batch_size)
  if per_call > 1:
    batch = {k: np.stack([v] * per_call) for k, v in batch.items()}
  batch = jax.device_put(batch, mesh_lib.batch_sharding(mesh, stacked=per_call > 1))
  start = time.perf_counter()
  flops = inspection.program_flops(lambda s, b: step(s, b), state, batch) / per_call  # `step`'s program
  params = inspection.parameter_count(state.params)
  current = [state]  # the step donates its state: each call continues from the last one's

  def advance():
    current[0], metrics = step(current[0], batch)
    jax.block_until_ready(metrics)

  for _ in range(3):
    advance()
  return Prepared(advance, task, per_call, flops, params, mesh, time.perf_counter() - start)


def measure(config, steps: int = 30, peak: float | None = None, workdir: str | None = None) -> dict:
  """Timings of `steps` train steps of `config` on synthetic data (after 3 warm-up calls); with
  `train.steps_per_call` = k, `steps` rounded up to calls of k steps (times and FLOPs are per step)."""
  prepared = prepare(config, workdir)
  calls = -(-steps // prepared.per_call)
  start = time.perf_counter()
  for _ in range(calls):
    prepared.advance()
  seconds = (time.perf_counter() - start) / (calls * prepared.per_call)
  peak = peak or matmul_peak_flops(dtype=config.train.compute_dtype)
  batch_size = config.train.batch_size
  return {
      'model': config.model.name, 'devices': f'{prepared.mesh.size} x {jax.devices()[0].device_kind}',
      'compute_dtype': config.train.compute_dtype, 'batch_size': batch_size, 'steps_per_call': prepared.per_call,
      'step_ms': 1e3 * seconds, 'images_per_sec': batch_size / seconds,
      'compile_and_warmup_s': prepared.compile_seconds,
      'step_gflop': prepared.step_flops / 1e9, 'achieved_gflops': prepared.step_flops / seconds / 1e9,
      'matmul_peak_gflops': peak / 1e9, 'matmul_peak_dtype': config.train.compute_dtype,
      'fraction_of_peak': prepared.step_flops / seconds / peak,
      'params': prepared.params,
  }


def main(argv):
  del argv
  print(json.dumps(measure(flags.FLAGS.config, flags.FLAGS.steps, workdir=flags.FLAGS.workdir), indent=2))


if __name__ == '__main__':  # flags here, so that other benchmarks can import `measure`
  config_flags.DEFINE_config_file('config', 'configs/vae_shapes.py', 'Experiment config.')
  flags.DEFINE_integer('steps', 30, 'Timed steps (after 3 warm-up steps).')
  flags.DEFINE_string('workdir', None, 'The run directory, for tasks that read files there (clip, text_to_image).')
  app.run(main)

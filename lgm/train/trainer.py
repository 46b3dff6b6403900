"""The one trainer: any task of `lgm.tasks`, any mesh, one or many processes.

`train_and_evaluate(config, workdir)` trains, evaluates every `config.eval.every` steps, writes
sample grids, checkpoints every `config.train.checkpoint_every` steps (and on SIGTERM), and resumes
from the latest readable checkpoint of `workdir` with the same data order and random numbers.
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Any, Callable, Iterator, Sequence

import jax
import ml_collections
import numpy as np
import tqdm
from absl import logging
from jax.experimental import multihost_utils

from lgm import config_checks, stages, xla
from lgm import images as image_lib
from lgm.data import loader as loader_lib
from lgm.tasks import Task
from lgm.train import checkpoints as checkpoints_lib
from lgm.train import lock as lock_lib
from lgm.train import mesh as mesh_lib
from lgm.train import metrics as metrics_lib
from lgm.train import state as state_lib
from lgm.train import workdir as workdir_lib

EVAL_SEED_SALT = 0xE7A1


class NonFiniteLossError(FloatingPointError):
  pass


def check_batch_size(batch_size: int, num_devices: int, what: str = 'train.batch_size') -> None:
  if batch_size % num_devices:
    raise ValueError(f'config.{what}={batch_size} is not divisible by the {num_devices} devices; '
                     f'use a multiple of {num_devices}.')


def global_batches(loader: loader_lib.Loader, mesh, start_step: int = 0, num_steps: int | None = None,
                   prepare: Callable[[dict], dict] | None = None,
                   steps_per_call: int = 1) -> Iterator[dict[str, jax.Array]]:
  """Process-local numpy batches -> (host-side `prepare`) -> global arrays sharded over the batch axis; with
  `steps_per_call` = k > 1, k consecutive batches stacked on a new leading axis (`num_steps` a multiple of k)."""
  sharding = mesh_lib.batch_sharding(mesh, stacked=steps_per_call > 1)
  group = []
  for batch in loader.batches(start_step, num_steps):
    group.append(loader_lib.device_fields(prepare(batch) if prepare is not None else batch))
    if len(group) < steps_per_call:
      continue
    fields = group[0] if steps_per_call == 1 else {k: np.stack([g[k] for g in group]) for k in group[0]}
    group = []
    yield {k: jax.make_array_from_process_local_data(sharding, v) for k, v in fields.items()}


def evaluate(task: Task, params: Any, eval_loader: loader_lib.Loader, mesh, seed: int,
             eval_step=None) -> dict[str, float]:
  """One ordered pass of the eval split (a fixed noise key per batch): the mean of the task's scalar
  metrics, plus `task.summarize` of its per-example outputs concatenated over the whole pass."""
  eval_step = eval_step or xla.jit(task.evaluate)
  base = jax.random.fold_in(jax.random.PRNGKey(seed), EVAL_SEED_SALT)
  totals: dict[str, float] = {}
  per_example: dict[str, list[np.ndarray]] = {}
  num = 0
  for i, batch in enumerate(global_batches(eval_loader, mesh, prepare=task.prepare_batch)):
    for name, value in eval_step(params, batch, jax.random.fold_in(base, i)).items():
      if value.ndim:
        per_example.setdefault(name, []).append(multihost_utils.process_allgather(value, tiled=True))
      else:
        totals[name] = totals.get(name, 0.0) + float(value)
    num += 1
  metrics = {name: total / num for name, total in totals.items()}
  if per_example:
    metrics.update(task.summarize(params, {k: np.concatenate(v) for k, v in per_example.items()}))
  return {f'eval/{name}': value for name, value in metrics.items()}


def write_sample_grids(images_fn: Any, params: Any, batch: dict, workdir: str, step: int, seed: int) -> list[str]:
  """`images_fn`'s grids for this step (a jitted task.images), as DIR/samples/<name>_<step>.png."""
  grids = images_fn(params, batch, jax.random.fold_in(jax.random.PRNGKey(seed), step))
  if not grids:
    return []
  grids = multihost_utils.process_allgather(grids, tiled=True)
  if jax.process_index() != 0:
    return []
  return [image_lib.save_grid(f'{workdir}/samples/{name}_{step:06d}.png', np.asarray(images), upscale=2)
          for name, images in grids.items()]


class _Stopper:
  """Turns SIGTERM into a request to checkpoint and stop at the end of the current step."""

  def __init__(self):
    self.requested = False
    self._previous = None
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    logging.warning('SIGTERM: saving a checkpoint at the end of this step, then stopping.')
    self.requested = True

  def restore(self):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       devices: Sequence[jax.Device] | None = None) -> dict[str, float]:
  """Train `config.task` into `workdir` (resuming if it holds a checkpoint); returns the final metrics.

  `devices` restricts the mesh to some of the devices (default: all of them, on every process). Every
  config value is checked before anything is written; the work directory is locked while the run writes
  there; a finished run is left exactly as it is (`experiments.evaluate` re-evaluates one).
  """
  config_checks.check_run(config)
  workdir_lib.check_path(workdir)
  mesh = mesh_lib.make_mesh(config.mesh, devices)
  check_batch_size(config.train.batch_size, mesh.size)
  check_batch_size(config.eval.batch_size, mesh.size, 'eval.batch_size')
  with lock_lib.hold(workdir):
    workdir_lib.check_resumable(workdir, config)
    checkpoints = checkpoints_lib.Checkpoints(workdir, config.train.keep_checkpoints, writer=True)
    try:
      latest = checkpoints.latest_step()
      if latest is not None and latest >= config.train.num_steps and checkpoints.verify(latest) is None:
        logging.info('%s finished at step %d: nothing to do (experiments.evaluate re-evaluates it).', workdir, latest)
        return metrics_lib.last_evaluation(workdir)
      return _train(config, workdir, mesh, checkpoints)
    finally:
      checkpoints.close()


def _train(config: ml_collections.ConfigDict, workdir: str, mesh: jax.sharding.Mesh,
           checkpoints: checkpoints_lib.Checkpoints) -> dict[str, float]:
  task = stages.build_task(config, workdir)
  proc, nproc = jax.process_index(), jax.process_count()
  train_loader = loader_lib.make_loader(config, config.data.train_split, train=True,
                                        process_index=proc, process_count=nproc)
  eval_loader = loader_lib.make_loader(config, config.data.eval_split, train=False, process_index=proc,
                                       process_count=nproc, batch_size=config.eval.batch_size,
                                       max_examples=config.eval.num_examples)
  tx, schedule = state_lib.make_optimizer(config)
  state, shardings = state_lib.create_train_state(task.init, tx, config.seed, mesh)
  start_step = 0
  restored = checkpoints.restore(checkpoints_lib.abstract_like(state, shardings))
  if restored is not None:
    state, meta, saved = restored
    start_step = int(meta['data']['next_step'])
    logging.info('Resumed from the checkpoint of step %d in %s.', saved, workdir)
  if proc == 0:
    workdir_lib.write_config(workdir, config)
  per_call = config.train.get('steps_per_call', 1)
  if start_step % per_call:
    raise ValueError(f'{workdir} resumes at step {start_step}, which train.steps_per_call={per_call} does not '
                     f'divide; resume with a steps_per_call that divides {start_step}, then change it.')
  train_step = mesh_lib.compile_then_synchronize(state_lib.make_train_step(
      task.loss, tx, schedule, config.train.ema_decay, mesh, shardings, per_call), 'train_step')
  eval_step = mesh_lib.compile_then_synchronize(xla.jit(task.evaluate), 'eval_step')
  images_fn = mesh_lib.compile_then_synchronize(xla.jit(task.images), 'images')
  writer = metrics_lib.MetricsWriter(workdir, resume_step=start_step)
  num_steps = config.train.num_steps
  eval_params = (lambda s: s.ema_params) if config.eval.use_ema else (lambda s: s.params)

  def save(step: int, health: float) -> None:
    """Checkpoint `step` unless `health` (loss + gradient norm of the last steps) is not finite."""
    if not np.isfinite(health):
      raise NonFiniteLossError(
          f'loss or gradient norm is {health} at step {step}: stopped without saving; the last good checkpoint '
          f'(step {checkpoints.latest_step()}) is intact in {checkpoints.directory}. '
          'Lower optim.learning_rate or use train.compute_dtype=float32.')
    checkpoints.save(step, state, {'step': step, 'data': {'next_step': step}})

  stopper = _Stopper()
  bar = tqdm.tqdm(total=num_steps, initial=start_step, disable=proc != 0, unit='step', dynamic_ncols=True,
                  mininterval=2.0)
  pending: list[dict] = []
  last_eval: dict[str, float] = {}
  train_seconds, window_start, timed_steps = 0.0, time.perf_counter(), 0
  step = start_step
  try:
    for batch in global_batches(train_loader, mesh, start_step, num_steps - start_step,
                                task.prepare_batch, per_call):
      state, metrics = train_step(state, batch)
      pending.append(metrics)  # scalars, or one row per step of the call
      step += per_call
      bar.update(per_call)
      if step == start_step + per_call:  # the first call compiled the program: time from its end
        jax.block_until_ready(metrics)
        window_start, train_seconds, timed_steps = time.perf_counter(), 0.0, 0
      else:
        timed_steps += per_call
      stop_now = stopper.requested  # read once: a signal arriving later waits for the next step
      save_now = step % config.train.checkpoint_every == 0 or step == num_steps or stop_now
      log_now = step % config.train.log_every == 0 or save_now  # a resumed run never re-logs saved steps
      eval_now = step % config.eval.every == 0 or step == num_steps
      if not (log_now or eval_now or save_now):
        continue
      means = {k: float(np.mean(np.concatenate([np.atleast_1d(m[k]) for m in pending]))) for k in pending[0]}
      train_seconds += time.perf_counter() - window_start
      if not (np.isfinite(means['loss']) and np.isfinite(means['grad_norm'])):
        save(step, means['loss'] + means['grad_norm'])  # raises: never checkpoint a diverged state
      if log_now:
        logged = {f'train/{k}': v for k, v in means.items()}
        if timed_steps:
          logged['train/images_per_sec'] = timed_steps * config.train.batch_size / train_seconds
          bar.set_postfix(loss=f'{means["loss"]:.4g}', img_s=f'{logged["train/images_per_sec"]:.1f}')
        writer.write(step, logged)
        pending, train_seconds, timed_steps = [], 0.0, 0
      if eval_now:
        last_eval = evaluate(task, eval_params(state), eval_loader, mesh, config.seed, eval_step)
        writer.write(step, last_eval)
        if proc == 0:
          bar.write(f'step {step}: ' + ', '.join(f'{k}={v:.4g}' for k, v in last_eval.items()))
        last_batch = batch if per_call == 1 else jax.tree.map(lambda x: x[-1], batch)
        write_sample_grids(images_fn, eval_params(state), last_batch, workdir, step, config.seed)
      if save_now:
        save(step, means['loss'] + means['grad_norm'])
      window_start = time.perf_counter()
      if stop_now:
        logging.warning('Stopped by SIGTERM after the checkpoint of step %d.', step)
        break
  finally:
    bar.close()
    checkpoints.wait_until_finished()
    writer.close()
    stopper.restore()
  return last_eval

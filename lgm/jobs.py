"""Jobs: an ordered list of stages trained in one work directory, then the report the job names.

A job config has `stage_order`, one full training config per stage (`config.vae`, `config.clip`, ...)
and `report` (its `name` selects the evaluation from `lgm.reports`, the rest are that report's settings).
Stage `name` trains in DIR/name with the one trainer, so each stage resumes on its own and a finished
stage is left as it is; stages find the trained stages they build on through `lgm.stages`.

`config.reuse` (optional) names another finished job: its stages listed in `config.reuse_stages` are used as
they are (DIR/name becomes a link to them; they must have been trained with the same stage configs) and only
the other stages train here.
"""

from __future__ import annotations

import copy
import os
import time

import jax
import ml_collections
from absl import logging

from lgm import config_checks, reports, stages
from lgm.train import checkpoints, trainer
from lgm.train import lock as lock_lib
from lgm.train import metrics as metrics_lib
from lgm.train import workdir as workdir_lib


def is_job(config: ml_collections.ConfigDict) -> bool:
  """A job config, as opposed to the config of a single training run."""
  return 'stage_order' in config


def run_job(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Train every stage in order (resuming each), then evaluate and write the report.

  Every stage's config is checked, values and work directory alike, before anything is written. A finished
  job (every stage trained, DIR/report.md written) is left exactly as it is and its last report metrics are
  returned; `evaluate` re-evaluates it. A stage stopped by SIGTERM (checkpointed, unfinished) ends the job
  there, with no report: {} is returned."""
  config_checks.check_job(config)
  config = with_job_data(config)
  workdir_lib.check_path(workdir)
  report = reports.get_report(config.report.name)
  reused = reused_stages(config, workdir)
  with lock_lib.hold(workdir):
    for name in config.stage_order:
      workdir_lib.check_resumable(reused.get(name, os.path.join(workdir, name)), config[name])
    if _finished(config, workdir):
      logging.info('%s finished: nothing to do (experiments.evaluate re-evaluates it).', workdir)
      return metrics_lib.last_evaluation(workdir)
    check_data(config)
    if jax.process_index() == 0:
      workdir_lib.write_config(workdir, config)
      _link(reused, workdir)
    seconds = {}
    for name in config.stage_order:
      if name in reused:
        logging.info('Stage %s: reused from %s', name, reused[name])
        continue
      start = time.perf_counter()
      logging.info('Stage %s -> %s', name, os.path.join(workdir, name))
      trainer.train_and_evaluate(config[name], os.path.join(workdir, name))
      seconds[name] = time.perf_counter() - start
      if checkpoints.saved_step(os.path.join(workdir, name)) < config[name].train.num_steps:  # stopped by SIGTERM
        logging.warning('Stage %s stopped before its last step; run the same command to resume the job.', name)
        return {}
    start = time.perf_counter()
    metrics = report.evaluate(workdir, config.report)
    seconds['evaluation'] = time.perf_counter() - start
    if jax.process_index() == 0:
      report.write(workdir, config, metrics, seconds)
    return metrics


def reused_stages(config: ml_collections.ConfigDict, workdir: str) -> dict[str, str]:
  """Stage name -> the finished stage directory of `config.reuse` it is taken from ({} without `reuse`).

  One-line errors for a directory that is not a finished job's stage, and for a DIR/name that is already
  something else (a stage trained here, or a link to another job)."""
  source = config.get('reuse', '')
  if not source:
    return {}
  source = os.path.abspath(source)
  unknown = [name for name in config.reuse_stages if name not in config.stage_order]
  if unknown:
    raise ValueError(f'reuse_stages names {unknown}, which are not stages of this job ({list(config.stage_order)}).')
  reused = {}
  for name in config.reuse_stages:
    path = os.path.join(source, name)
    step = checkpoints.saved_step(path)
    if step < config[name].train.num_steps:
      raise ValueError(f'{path} is not a finished {name} stage (step {step} of {config[name].train.num_steps}); '
                       f'finish the job in {source} first, or leave out --config.reuse.')
    here = os.path.join(workdir, name)
    if os.path.lexists(here) and os.path.realpath(here) != os.path.realpath(path):
      raise ValueError(f'{here} already holds another {name} stage; use a new --workdir to reuse {path}.')
    reused[name] = path
  return reused


def _link(reused: dict[str, str], workdir: str) -> None:
  for name, path in reused.items():
    here = os.path.join(workdir, name)
    if not os.path.lexists(here):
      os.symlink(path, here, target_is_directory=True)


def with_job_data(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A copy of the job config whose `data` section (if it has one) is set in every stage: one
  `--config.data.dataset=folder:PATH` (or image_size, channels, data_dir) reaches the whole job."""
  if 'data' not in config:
    return config
  config = copy.deepcopy(config)
  with config.unlocked():
    for name in config.stage_order:
      for key, value in config.data.items():
        config[name].data[key] = value
  return config


def check_data(config: ml_collections.ConfigDict) -> None:
  """Every stage's data, before any stage trains: the stages agree on the images, and each fits its task."""
  for key in ('dataset', 'image_size', 'channels'):
    values = {name: config[name].data[key] for name in config.stage_order}
    if len(set(values.values())) > 1:
      raise ValueError(f'the stages disagree on data.{key} ({", ".join(f"{n}: {v}" for n, v in values.items())}); '
                       f'set it once for the whole job with --config.data.{key}=...')
  for name in config.stage_order:
    stages.check_data(config[name])


def evaluate(workdir: str, num: int | None = None) -> dict[str, float]:
  """The job's report metrics for its trained stages (appended to DIR/metrics.jsonl), without rewriting
  DIR/report.md."""
  config = workdir_lib.read_config(workdir)
  with lock_lib.hold(workdir):
    return reports.get_report(config.report.name).evaluate(workdir, config.report, num)


def _finished(config: ml_collections.ConfigDict, workdir: str) -> bool:
  """Every stage trained to its last step and the report written (report.md is written last)."""
  if not os.path.exists(os.path.join(workdir, reports.REPORT_FILE)):
    return False
  return all(checkpoints.saved_step(os.path.join(workdir, name)) >= config[name].train.num_steps
             for name in config.stage_order)

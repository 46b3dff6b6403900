"""Jobs: an ordered list of stages trained in one work directory, then the report the job names.

A job config has `stage_order`, one full training config per stage (`config.vae`, `config.clip`, ...)
and `report` (its `name` selects the evaluation from `lgm.reports`, the rest are that report's settings).
Stage `name` trains in DIR/name with the one trainer, so each stage resumes on its own and a finished
stage is left as it is; stages find the trained stages they build on through `lgm.stages`.

`config.reuse` (optional) names another finished job: its stages listed in `config.reuse_stages` are used as
they are (DIR/name becomes a link to them; they must have been trained with the same stage configs) and only
the other stages train here. `config.pretrained` (optional) maps a stage name to a model stage made
elsewhere: converted weights (`experiments.convert`, e.g. Stable Diffusion's VAE) or a stage of an exported
model; DIR/name links to it, it stays frozen, and its own config.json replaces the job's config of it.
"""

from __future__ import annotations

import copy
import os
import time

import jax
import ml_collections
from absl import logging

from lgm import config_checks, exported, files, reports, stages
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
  pretrained = pretrained_stages(config, workdir)
  config = with_pretrained(config, pretrained)
  reused = {**reused_stages(config, workdir), **pretrained}
  with lock_lib.hold(workdir):
    for name in config.stage_order:
      if name not in pretrained:
        workdir_lib.check_resumable(reused.get(name, os.path.join(workdir, name)), config[name])
    if _finished(config, workdir):
      logging.info('%s finished: nothing to do (experiments.evaluate re-evaluates it).', workdir)
      return metrics_lib.last_evaluation(workdir)
    check_data(config, skip=tuple(pretrained))
    if jax.process_index() == 0:
      workdir_lib.write_config(workdir, config)
      _link(reused, workdir)
    seconds = {}
    for name in config.stage_order:
      if name in reused:
        logging.info('Stage %s: %s %s', name, 'pretrained, from' if name in pretrained else 'reused from',
                     reused[name])
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
  source = files.absolute(source)
  _check_stage_names(config, 'reuse_stages', config.reuse_stages)
  reused = {}
  for name in config.reuse_stages:
    path = os.path.join(source, name)
    step = checkpoints.saved_step(path)
    if step < config[name].train.num_steps:
      raise ValueError(f'{path} is not a finished {name} stage (step {step} of {config[name].train.num_steps}); '
                       f'finish the job in {source} first, or leave out --config.reuse.')
    _check_link(workdir, name, path)
    reused[name] = path
  return reused


def pretrained_stages(config: ml_collections.ConfigDict, workdir: str) -> dict[str, str]:
  """Stage name -> the model stage directory that `config.pretrained` gives it ({} without); one-line errors
  for a directory that is not a converted or exported stage."""
  given = {name: path for name, path in config.get('pretrained', {}).items() if path}
  _check_stage_names(config, 'pretrained', given)
  out = {}
  for name, path in given.items():
    path = files.absolute(path)
    if not exported.is_exported(path):
      raise ValueError(f'pretrained.{name}={path} is not a model stage (no {exported.PARAMS_FILE}); convert '
                       'weights with python -m experiments.convert, or give a stage of an exported model.')
    _check_link(workdir, name, path)
    out[name] = path
  return out


def with_pretrained(config: ml_collections.ConfigDict, pretrained: dict[str, str]) -> ml_collections.ConfigDict:
  """A copy of the job config whose pretrained stages carry their own config.json (what the stage is)."""
  if not pretrained:
    return config
  config = copy.deepcopy(config)
  with config.unlocked():
    for name, path in pretrained.items():
      config[name] = workdir_lib.read_config(path)
  return config


def _check_stage_names(config: ml_collections.ConfigDict, key: str, names) -> None:
  unknown = [name for name in names if name not in config.stage_order]
  if unknown:
    raise ValueError(f'{key} names {unknown}, which are not stages of this job ({list(config.stage_order)}).')


def _check_link(workdir: str, name: str, path: str) -> None:
  here = os.path.join(workdir, name)
  if files.is_url(workdir):
    raise ValueError(f'{here} would be a link to {path}, and an object store has no links; copy the stage there '
                     '(gsutil -m cp -r), or use reuse/pretrained with a work directory on a file system.')
  if os.path.lexists(here) and os.path.realpath(here) != os.path.realpath(path):
    raise ValueError(f'{here} already holds another {name} stage; use a new --workdir to take {path}.')


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


def check_data(config: ml_collections.ConfigDict, skip: tuple[str, ...] = ()) -> None:
  """Every stage's data, before any stage trains: the stages agree on the images, and each fits its task
  (stages in `skip`, pretrained ones, train on nothing here)."""
  trained = [name for name in config.stage_order if name not in skip]
  for key in ('dataset', 'image_size', 'channels'):
    values = {name: config[name].data[key] for name in trained}
    if len(set(values.values())) > 1:
      raise ValueError(f'the stages disagree on data.{key} ({", ".join(f"{n}: {v}" for n, v in values.items())}); '
                       f'set it once for the whole job with --config.data.{key}=...')
  for name in trained:
    built_on = {key: config[os.path.basename(relative)] for key, relative in config[name].get('stages', {}).items()
                if os.path.basename(relative) in config.stage_order}
    stages.check_data(config[name], built_on)


def evaluate(workdir: str, num: int | None = None) -> dict[str, float]:
  """The job's report metrics for its trained stages (appended to DIR/metrics.jsonl), without rewriting
  DIR/report.md."""
  config = workdir_lib.read_config(workdir)
  with lock_lib.hold(workdir):
    return reports.get_report(config.report.name).evaluate(workdir, config.report, num)


def _finished(config: ml_collections.ConfigDict, workdir: str) -> bool:
  """Every stage trained to its last step and the report written (report.md is written last)."""
  if not files.exists(os.path.join(workdir, reports.REPORT_FILE)):
    return False
  return all(exported.is_exported(os.path.join(workdir, name)) or
             checkpoints.saved_step(os.path.join(workdir, name)) >= config[name].train.num_steps
             for name in config.stage_order)

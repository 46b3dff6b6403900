"""Jobs: an ordered list of stages trained in one work directory, then the report the job names.

A job config has `stage_order`, one full training config per stage (`config.vae`, `config.clip`, ...)
and `report` (its `name` selects the evaluation from `lgm.reports`, the rest are that report's settings).
Stage `name` trains in DIR/name with the one trainer, so each stage resumes on its own and a finished
stage is left as it is; stages find the trained stages they build on through `lgm.stages`.
"""

from __future__ import annotations

import os
import time

import jax
import ml_collections
from absl import logging

from lgm import config_checks, reports
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
  report = reports.get_report(config.report.name)
  with lock_lib.hold(workdir):
    for name in config.stage_order:
      workdir_lib.check_resumable(os.path.join(workdir, name), config[name])
    if _finished(config, workdir):
      logging.info('%s finished: nothing to do (experiments.evaluate re-evaluates it).', workdir)
      return metrics_lib.last_evaluation(workdir)
    if jax.process_index() == 0:
      workdir_lib.write_config(workdir, config)
    seconds = {}
    for name in config.stage_order:
      start = time.perf_counter()
      logging.info('Stage %s -> %s', name, os.path.join(workdir, name))
      trainer.train_and_evaluate(config[name], os.path.join(workdir, name))
      seconds[name] = time.perf_counter() - start
      if _saved_step(os.path.join(workdir, name)) < config[name].train.num_steps:  # stopped by SIGTERM
        logging.warning('Stage %s stopped before its last step; run the same command to resume the job.', name)
        return {}
    start = time.perf_counter()
    metrics = report.evaluate(workdir, config.report)
    seconds['evaluation'] = time.perf_counter() - start
    if jax.process_index() == 0:
      report.write(workdir, config, metrics, seconds)
    return metrics


def evaluate(workdir: str, num: int | None = None) -> dict[str, float]:
  """The job's report metrics for its trained stages (appended to DIR/metrics.jsonl), without rewriting
  DIR/report.md."""
  config = workdir_lib.read_config(workdir)
  with lock_lib.hold(workdir):
    return reports.get_report(config.report.name).evaluate(workdir, config.report, num)


def _saved_step(stage_dir: str) -> int:
  directory = checkpoints.checkpoint_dir(stage_dir)
  return max((int(d) for d in os.listdir(directory) if d.isdigit()), default=0) if os.path.isdir(directory) else 0


def _finished(config: ml_collections.ConfigDict, workdir: str) -> bool:
  """Every stage trained to its last step and the report written (report.md is written last)."""
  if not os.path.exists(os.path.join(workdir, reports.REPORT_FILE)):
    return False
  return all(_saved_step(os.path.join(workdir, name)) >= config[name].train.num_steps for name in config.stage_order)

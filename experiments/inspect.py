"""Parameter table of an experiment's model, its total and its FLOPs per example.

python -m experiments.inspect --config=configs/vae_shapes.py
python -m experiments.inspect --config=configs/t2i_shapes.py --stage=clip      # one stage of a job
python -m experiments.inspect --config=configs/t2i_shapes.py --stage=score --workdir=runs/t2i_shapes
(the score stage of a text-to-image job reads its trained vae and clip stages: give the job's --workdir)
"""

import os

from absl import flags
from ml_collections import config_flags

from experiments import common

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file.', lock_config=True)
_STAGE = flags.DEFINE_string('stage', None, 'For a multi-stage job config: which stage to inspect.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'A job work directory, for a stage that reads trained stages.')
flags.mark_flags_as_required(['config'])


def main(argv):
  del argv
  from lgm import inspection, jobs
  config, workdir = _CONFIG.value, _WORKDIR.value
  if jobs.is_job(config):
    if _STAGE.value not in config.stage_order:
      raise ValueError(f'this config is a multi-stage job: choose --stage from {list(config.stage_order)}')
    config = config[_STAGE.value]
    workdir = workdir and os.path.join(workdir, _STAGE.value)
  print(inspection.report(config, workdir))


def cli() -> None:
  """The `lgm-inspect` command."""
  common.run(main)


if __name__ == '__main__':
  cli()

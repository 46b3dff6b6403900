"""Train any lgm experiment from its config; resumes from the latest checkpoint in --workdir.

python -m experiments.train --config=configs/vae_shapes.py --workdir=runs/vae_shapes [--config.KEY=VALUE ...]
python -m experiments.train --config=configs/t2i_shapes.py --workdir=runs/t2i_shapes   # a multi-stage job
"""

from absl import flags
from ml_collections import config_flags

from experiments import common

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file (configs/NAME.py[:ARG]).',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Work directory: config.json, metrics.jsonl, checkpoints/, samples/.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  del argv
  common.initialize_distributed()
  from lgm import jobs  # after jax.distributed is up
  from lgm.train import trainer
  if jobs.is_job(_CONFIG.value):
    metrics = jobs.run_job(_CONFIG.value, _WORKDIR.value)
    if metrics:
      print(f'report: {_WORKDIR.value}/report.md; ' + ', '.join(f'{k}={v:.4g}' for k, v in metrics.items()))
  else:
    trainer.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


def cli() -> None:
  """The `lgm-train` command."""
  common.run(main)


if __name__ == '__main__':
  cli()

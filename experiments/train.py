"""Train any lgm experiment from its config; resumes from the latest checkpoint in --workdir.

python -m experiments.train --config=configs/vae_shapes.py --workdir=runs/vae_shapes [--config.KEY=VALUE ...]
"""

from absl import app, flags
from ml_collections import config_flags

from experiments import common

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file (configs/NAME.py[:ARG]).',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Work directory: config.json, metrics.jsonl, checkpoints/, samples/.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  del argv
  common.initialize_distributed()
  from lgm.train import trainer  # after jax.distributed is up
  trainer.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == '__main__':
  common.run(main)

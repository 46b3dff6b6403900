"""Parameter table of an experiment's model, its total and its FLOPs per example.

python -m experiments.inspect --config=configs/vae_shapes.py
"""

from absl import flags
from ml_collections import config_flags

from experiments import common

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file.', lock_config=True)
flags.mark_flags_as_required(['config'])


def main(argv):
  del argv
  from lgm import inspection
  print(inspection.report(_CONFIG.value))


if __name__ == '__main__':
  common.run(main)

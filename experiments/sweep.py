"""Train every point of a config's sweep (its `get_sweep`), each in WORKDIR/<name>; finished points are skipped.

python -m experiments.sweep --config=configs/vae_digits.py --workdir=runs/sweep [--config.KEY=VALUE ...]
python -m experiments.sweep --config=configs/vae_digits.py --workdir=runs/sweep --print_commands   # launch.sh lines
python -m experiments.compare runs/sweep/*                                                         # then compare

--config.KEY=VALUE applies to every point. --print_commands trains nothing: it prints one launch.sh command
per point (--launch="tpu NAME ZONE" for a pod), to run them elsewhere or side by side.
"""

from absl import flags
from ml_collections import config_flags

from experiments import common

config_flags.DEFINE_config_file('config', None, 'Experiment config file with a get_sweep (configs/NAME.py[:ARG]).',
                                lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Sweep directory: sweep.json and one work directory per point.')
_PRINT_COMMANDS = flags.DEFINE_bool('print_commands', False, 'Print one launch.sh command per point; train nothing.')
_LAUNCH = flags.DEFINE_string('launch', 'local', 'The launch.sh mode of the printed commands, with its arguments '
                              '("local", "procs 2", "tpu NAME ZONE").')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  del argv
  common.initialize_distributed()
  from lgm import sweeps  # after jax.distributed is up
  spec = config_flags.get_config_filename(flags.FLAGS['config'])
  overrides = config_flags.get_override_values(flags.FLAGS['config'])
  points = sweeps.load_points(spec)
  if _PRINT_COMMANDS.value:
    print('\n'.join(sweeps.launch_commands(spec, points, _WORKDIR.value, overrides, _LAUNCH.value)))
    return
  for name, metrics in sweeps.run_sweep(spec, points, _WORKDIR.value, overrides).items():
    print(f'{name}: ' + ', '.join(f'{k}={v:.4g}' for k, v in metrics.items()))


def cli() -> None:
  """The `lgm-sweep` command."""
  common.run(main)


if __name__ == '__main__':
  cli()

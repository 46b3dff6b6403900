"""What every entry point shares: multi-process start-up and one-line errors."""

from __future__ import annotations

import os
import runpy
import sys
from typing import Callable, Sequence

import logging as pylogging

from absl import app, logging

# Errors that mean "the input is wrong": printed as one line, no traceback.
USER_ERRORS = (ValueError, FileNotFoundError, KeyError, FloatingPointError)


def initialize_distributed() -> None:
  """Join a multi-process run when launch.sh asked for one; a single process needs nothing.

  `launch.sh procs N` sets LGM_COORDINATOR / LGM_NUM_PROCESSES / LGM_PROCESS_ID (CPU collectives
  over loopback with gloo); `launch.sh tpu` sets LGM_DISTRIBUTED=auto (TPU pods describe themselves).
  """
  import jax
  if os.environ.get('LGM_NUM_PROCESSES'):
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(coordinator_address=os.environ['LGM_COORDINATOR'],
                               num_processes=int(os.environ['LGM_NUM_PROCESSES']),
                               process_id=int(os.environ['LGM_PROCESS_ID']))
  elif os.environ.get('LGM_DISTRIBUTED') == 'auto':
    jax.distributed.initialize()


def _config_from_argv(argv: Sequence[str]):
  """The config named by --config=PATH[:ARG] in argv, or None."""
  for i, arg in enumerate(argv):
    if arg == '--config' and i + 1 < len(argv):
      arg = '--config=' + argv[i + 1]
    if arg.startswith('--config='):
      path, _, config_arg = arg[len('--config='):].partition(':')
      if not os.path.exists(path):
        raise FileNotFoundError(f'config file {path} not found; configs live in configs/NAME.py.')
      get_config = runpy.run_path(path)['get_config']
      return get_config(config_arg) if config_arg else get_config()  # as config_flags calls it
  return None


def check_config_overrides(argv: Sequence[str]) -> None:
  """Reject --config.KEY=VALUE for a KEY the config does not have, naming the valid keys there."""
  config = _config_from_argv(argv)
  if config is None:
    return
  for arg in argv:
    if not arg.startswith('--config.'):
      continue
    key = arg[len('--config.'):].split('=', 1)[0]
    node, path = config, []
    for part in key.split('.'):
      if not hasattr(node, 'keys') or part not in node:
        where = '.'.join(path) or 'the top level'
        valid = sorted(node.keys()) if hasattr(node, 'keys') else []
        raise KeyError(f'unknown config key {key!r}; valid keys at {where}: {", ".join(valid)}')
      node, path = node[part], path + [part]


class _QuietLibraries(pylogging.Filter):
  """Drops the INFO chatter of orbax, grain and tfds (every checkpoint logs ~30 lines); warnings pass."""

  def filter(self, record: pylogging.LogRecord) -> bool:
    chatty = any(f'/{name}/' in record.pathname for name in ('orbax', 'grain', 'tensorflow_datasets'))
    return record.levelno >= pylogging.WARNING or not chatty


def run(main: Callable) -> None:
  """absl's app.run, with input errors reported as a single line and exit status 2."""
  logging.get_absl_handler().addFilter(_QuietLibraries())
  try:
    check_config_overrides(sys.argv[1:])
  except USER_ERRORS as e:
    _fail(e)

  def guarded(argv):
    try:
      return main(argv)
    except USER_ERRORS as e:
      _fail(e)

  app.run(guarded)


def _fail(error: Exception) -> None:
  message = error.args[0] if isinstance(error, KeyError) and error.args else error
  print(f'error: {message}', file=sys.stderr)
  sys.exit(2)

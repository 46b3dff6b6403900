"""What every entry point shares: multi-process start-up and one-line errors."""

from __future__ import annotations

import errno
import os
import sys
import traceback
from typing import Callable, Sequence

import logging as pylogging

from absl import app, flags, logging

from lgm import overrides

_VERBOSE = flags.DEFINE_bool('verbose', False, 'On an input or resource error, print the full traceback too.')

# Errors that mean "the input is wrong" or "the machine is short of something": printed as one line.
USER_ERRORS = (ValueError, FileNotFoundError, KeyError, FloatingPointError)
RESOURCE_ERRNOS = {errno.ENOSPC: 'free some space', errno.EDQUOT: 'free some space or raise the quota',
                   errno.EACCES: 'fix the permissions', errno.EPERM: 'fix the permissions',
                   errno.EROFS: 'use a writable --workdir', errno.ENOMEM: 'use a smaller batch'}


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
      return overrides.call(arg[len('--config='):])
  return None


def check_config_overrides(argv: Sequence[str]) -> None:
  """Reject --config.KEY=VALUE for a KEY the config does not have, naming the valid keys there."""
  config = _config_from_argv(argv)
  if config is None:
    return
  for arg in argv:
    if not arg.startswith('--config.'):
      continue
    overrides.lookup(config, arg[len('--config.'):].split('=', 1)[0])


class _QuietLibraries(pylogging.Filter):
  """Drops the INFO chatter of orbax, grain and tfds (every checkpoint logs ~30 lines), and, unless --verbose,
  the errors they log with a traceback on their way to raising it (the error reaches `run`, which prints
  it in one line). Their other warnings and errors pass."""

  def filter(self, record: pylogging.LogRecord) -> bool:
    chatty = any(f'/{name}/' in record.pathname for name in ('orbax', 'grain', 'tensorflow_datasets'))
    if chatty and record.exc_info and not (flags.FLAGS.is_parsed() and _VERBOSE.value):
      return False
    return record.levelno >= pylogging.WARNING or not chatty


def run(main: Callable) -> None:
  """absl's app.run, with input and resource errors reported as a single line and exit status 2."""
  logging.get_absl_handler().addFilter(_QuietLibraries())
  try:
    check_config_overrides(sys.argv[1:])
  except USER_ERRORS as e:
    _fail(one_line_message(e))

  def guarded(argv):
    try:
      return main(argv)
    except Exception as e:  # noqa: BLE001 - anything not known to be the user's to fix is re-raised
      message = one_line_message(e)
      if message is None:
        raise
      if _VERBOSE.value:
        traceback.print_exc()
      _fail(message)

  app.run(guarded)


def one_line_message(error: BaseException) -> str | None:
  """What the user should read for an input or resource error (None: a bug, show the traceback)."""
  from lgm.train.checkpoints import CheckpointError
  from lgm.train.lock import WorkdirBusyError
  cause = _resource_error(error)
  if cause is not None:
    path = cause.filename or (flags.FLAGS['workdir'].value if 'workdir' in flags.FLAGS else None)
    where = f' ({path})' if path else ''
    return (f'{os.strerror(cause.errno)}{where}; {RESOURCE_ERRNOS[cause.errno]} and run the same command again '
            '(what was saved is kept; --verbose shows the traceback).')
  if isinstance(error, KeyError) and error.args:
    return str(error.args[0])
  if isinstance(error, USER_ERRORS + (CheckpointError, WorkdirBusyError)):
    return str(error)
  return None


def _resource_error(error: BaseException | None) -> OSError | None:
  """The OSError of a full disk, a quota or a permission behind `error` (libraries wrap them), if any."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno in RESOURCE_ERRNOS:
      return error
    error = error.__cause__ or error.__context__
  return None


def _fail(message: str) -> None:
  print(f'error: {message}', file=sys.stderr)
  sys.exit(2)

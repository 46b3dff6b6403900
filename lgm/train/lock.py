"""One writer per work directory: DIR/lock, held while a trainer, a job or an evaluator writes there.

The lock is an `flock` on DIR/lock, so the kernel releases it when its holder dies, however it dies; the
file also names the holder (host, pid, command), for the error a second writer gets. A lock file left by
a dead process is taken over with a warning. On a multi-process run process 0 holds the lock for all.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import sys
import time
from typing import Iterator

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

LOCK_FILE = 'lock'
_held: dict[str, int] = {}  # real path -> depth, so that a process may re-enter its own lock


class WorkdirBusyError(RuntimeError):
  """Another live process writes to this work directory."""


@contextlib.contextmanager
def hold(workdir: str, enabled: bool | None = None) -> Iterator[None]:
  """Hold DIR's lock for the block (creating DIR); a one-line WorkdirBusyError if another process holds it.

  By default process 0 takes it and tells the other processes whether it could, so that all of them stop
  together; `enabled` overrides whether this process takes it (and then nothing is shared)."""
  key = os.path.realpath(workdir)
  if key in _held:  # re-entered by its holder: a job holds its directory while its stages hold theirs
    _held[key] += 1
    try:
      yield
    finally:
      _held[key] -= 1
    return
  shared = enabled is None and jax.process_count() > 1
  enabled = jax.process_index() == 0 if enabled is None else enabled
  _held[key] = 1
  try:
    if enabled:
      with _locked(workdir, shared):
        yield
    else:
      if shared and not _agree(True):
        raise WorkdirBusyError(f'{workdir} is in use by another run (process 0 could not take its lock).')
      yield
  finally:
    del _held[key]


@contextlib.contextmanager
def _locked(workdir: str, shared: bool) -> Iterator[None]:
  created = not os.path.exists(workdir)
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, LOCK_FILE)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      if shared:
        _agree(False)
      raise WorkdirBusyError(f'{workdir} is in use by {_describe(_read_holder(fd))}; wait for it to finish or stop '
                             'it, or use another --workdir.') from None
    if shared:
      _agree(True)
    previous = _read_holder(fd)
    if previous:
      logging.warning('%s: taking over the lock left by %s, which is no longer running.', workdir,
                      _describe(previous))
    _write_holder(fd)
    try:
      yield
    except BaseException:
      if created and _holds_nothing_but_the_lock(workdir):  # failed before writing anything: leave nothing
        shutil.rmtree(workdir, ignore_errors=True)
      raise
    finally:
      if os.path.exists(path):
        os.ftruncate(fd, 0)  # released cleanly: nothing to take over next time
  finally:
    os.close(fd)  # closing releases the flock


def _agree(locked: bool) -> bool:
  """Process 0's `locked`, on every process."""
  return bool(multihost_utils.broadcast_one_to_all(np.int32(locked)))


def _holds_nothing_but_the_lock(workdir: str) -> bool:
  """No file under DIR but the lock (empty folders, such as checkpoints/, may have been created)."""
  names = [os.path.join(root, name) for root, _, names in os.walk(workdir) for name in names]
  return names == [os.path.join(workdir, LOCK_FILE)]


def _read_holder(fd: int) -> dict:
  os.lseek(fd, 0, os.SEEK_SET)
  text = os.read(fd, 65536)
  try:
    return json.loads(text) if text.strip() else {}
  except ValueError:
    return {'pid': '?', 'host': '?'}


def _write_holder(fd: int) -> None:
  record = {'host': socket.gethostname(), 'pid': os.getpid(), 'since': time.strftime('%Y-%m-%d %H:%M:%S'),
            'command': ' '.join(sys.argv)[:500]}
  os.ftruncate(fd, 0)
  os.pwrite(fd, (json.dumps(record) + '\n').encode(), 0)


def _describe(record: dict) -> str:
  if not record:
    return 'another process'
  command = f" ({record['command']})" if record.get('command') else ''
  since = f" since {record['since']}" if record.get('since') else ''
  return f"pid {record.get('pid', '?')} on {record.get('host', '?')}{since}{command}"

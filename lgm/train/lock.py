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
from absl import logging

LOCK_FILE = 'lock'
_held: dict[str, int] = {}  # real path -> depth, so that a process may re-enter its own lock


class WorkdirBusyError(RuntimeError):
  """Another live process writes to this work directory."""


@contextlib.contextmanager
def hold(workdir: str, enabled: bool | None = None) -> Iterator[None]:
  """Hold DIR's lock for the block (creating DIR); a one-line WorkdirBusyError if another process holds it."""
  enabled = jax.process_index() == 0 if enabled is None else enabled
  if not enabled:
    yield
    return
  created = not os.path.exists(workdir)
  os.makedirs(workdir, exist_ok=True)
  key = os.path.realpath(workdir)
  if key in _held:
    _held[key] += 1
    try:
      yield
    finally:
      _held[key] -= 1
    return
  path = os.path.join(workdir, LOCK_FILE)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      raise WorkdirBusyError(f'{workdir} is in use by {_describe(_read_holder(fd))}; wait for it to finish or stop '
                             'it, or use another --workdir.') from None
    previous = _read_holder(fd)
    if previous:
      logging.warning('%s: taking over the lock left by %s, which is no longer running.', workdir,
                      _describe(previous))
    _write_holder(fd)
    _held[key] = 1
    try:
      yield
    except BaseException:
      if created and _holds_nothing_but_the_lock(workdir):  # failed before writing anything: leave nothing
        shutil.rmtree(workdir, ignore_errors=True)
      raise
    finally:
      del _held[key]
      if os.path.exists(path):
        os.ftruncate(fd, 0)  # released cleanly: nothing to take over next time
  finally:
    os.close(fd)  # closing releases the flock


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

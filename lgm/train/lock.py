"""One writer per work directory: DIR/lock, held while a trainer, a job or an evaluator writes there.

On a file system the lock is an `flock` on DIR/lock, so the kernel releases it when its holder dies,
however it dies; the file also names the holder (host, pid, command), for the error a second writer gets.
A lock file left by a dead process is taken over with a warning. On a multi-process run process 0 holds
the lock for all.

An object store (a gs:// work directory) has no locks: there DIR/lock is a lease. Its holder rewrites the
record (with the time, `beat`) every HEARTBEAT_SECONDS; a record silent for STALE_SECONDS, or left by a
process of this host that no longer exists, is taken over; a clean exit empties it. Two runs started within
a second of each other can both pass the check: the lease guards against the common mistake (a second run
into a live run's directory), not against a race.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import sys
import threading
import time
import uuid
from typing import Iterator

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from lgm import files

LOCK_FILE = 'lock'
HEARTBEAT_SECONDS = 60.0
STALE_SECONDS = 300.0
_held: dict[str, int] = {}  # real path -> depth, so that a process may re-enter its own lock


class WorkdirBusyError(RuntimeError):
  """Another live process writes to this work directory."""


@contextlib.contextmanager
def hold(workdir: str, enabled: bool | None = None) -> Iterator[None]:
  """Hold DIR's lock for the block (creating DIR); a one-line WorkdirBusyError if another process holds it.

  By default process 0 takes it and tells the other processes whether it could, so that all of them stop
  together; `enabled` overrides whether this process takes it (and then nothing is shared)."""
  key = files.real(workdir)
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
      with (_leased if files.is_url(workdir) else _locked)(workdir, shared):
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


@contextlib.contextmanager
def _leased(workdir: str, shared: bool) -> Iterator[None]:
  """The lease of an object-store work directory (see the module docstring)."""
  path = os.path.join(workdir, LOCK_FILE)
  created = not files.listdir(workdir)  # (a bucket has no empty directories)
  previous = _read_lease(path)
  age = time.time() - previous.get('beat', 0.0)
  if previous and age < STALE_SECONDS and not _dead_here(previous):
    if shared:
      _agree(False)
    raise WorkdirBusyError(f'{workdir} is in use by {_describe(previous)} (last heard of {age:.0f} s ago); wait for '
                           f'it to finish or stop it, or use another --workdir (a lease silent for {STALE_SECONDS:.0f} s '
                           'is taken over).')
  if previous:
    logging.warning('%s: taking over the lock left by %s, which is no longer running.', workdir, _describe(previous))
  record = {**_holder(), 'token': uuid.uuid4().hex}
  files.makedirs(workdir)
  _write_lease(path, record)
  if _read_lease(path).get('token') != record['token']:  # another run wrote its lease at the same moment
    if shared:
      _agree(False)
    raise WorkdirBusyError(f'{workdir} is being taken by another run started at the same moment; use another '
                           '--workdir, or run one of them later.')
  if shared:
    _agree(True)
  stop = threading.Event()
  beat = threading.Thread(target=_keep_alive, args=(path, record, stop), daemon=True, name='lgm-lease')
  beat.start()
  wrote_nothing = False
  try:
    yield
  except BaseException:
    wrote_nothing = created and _holds_nothing_but_the_lock(workdir)
    raise
  finally:
    stop.set()
    beat.join()
    if wrote_nothing:  # failed before writing anything: leave nothing
      files.rmtree(workdir)
    else:
      files.write_text(path, '')  # released cleanly: nothing to take over next time


def _keep_alive(path: str, record: dict, stop: threading.Event) -> None:
  while not stop.wait(HEARTBEAT_SECONDS):
    try:
      _write_lease(path, record)
    except Exception as e:  # a failed beat must not kill the run; the next one may succeed
      logging.warning('could not renew the lease %s: %s', path, e)


def _write_lease(path: str, record: dict) -> None:
  files.write_json(path, {**record, 'beat': time.time()})


def _read_lease(path: str) -> dict:
  if not files.exists(path):
    return {}
  text = files.read_text(path)
  try:
    return json.loads(text) if text.strip() else {}
  except ValueError:
    return {'pid': '?', 'host': '?'}


def _dead_here(record: dict) -> bool:
  """The record's process ran on this host and exists no more."""
  if record.get('host') != socket.gethostname() or not isinstance(record.get('pid'), int):
    return False
  try:
    os.kill(record['pid'], 0)
  except ProcessLookupError:
    return True
  except PermissionError:  # alive, another user's
    pass
  return False


def _agree(locked: bool) -> bool:
  """Process 0's `locked`, on every process."""
  return bool(multihost_utils.broadcast_one_to_all(np.int32(locked)))


def _holds_nothing_but_the_lock(workdir: str) -> bool:
  """No file under DIR but the lock (empty folders, such as checkpoints/, may have been created)."""
  return list(files.file_names(workdir)) == [LOCK_FILE]


def _read_holder(fd: int) -> dict:
  os.lseek(fd, 0, os.SEEK_SET)
  text = os.read(fd, 65536)
  try:
    return json.loads(text) if text.strip() else {}
  except ValueError:
    return {'pid': '?', 'host': '?'}


def _holder() -> dict:
  return {'host': socket.gethostname(), 'pid': os.getpid(), 'since': time.strftime('%Y-%m-%d %H:%M:%S'),
          'command': ' '.join(sys.argv)[:500]}


def _write_holder(fd: int) -> None:
  os.ftruncate(fd, 0)
  os.pwrite(fd, (json.dumps(_holder()) + '\n').encode(), 0)


def _describe(record: dict) -> str:
  if not record:
    return 'another process'
  command = f" ({record['command']})" if record.get('command') else ''
  since = f" since {record['since']}" if record.get('since') else ''
  return f"pid {record.get('pid', '?')} on {record.get('host', '?')}{since}{command}"

"""Every read and write of a work directory, on a local disk or an object store (gs://, s3://) alike.

Paths stay strings (configs, messages and `os.path.join` handle both); the I/O goes through etils.epath,
which maps a URL to its fsspec file system (gcsfs for gs://) and a plain path to the local one.

Small files are written whole or not at all: process 0 writes them while other processes may read them,
and a full disk, a kill or a signal may stop a write half-way. On a local disk a temporary file next to
the target is renamed into place (the rename is atomic) and removed when the write fails; an object store
has no atomic rename but publishes an object whole when its upload ends, so the bytes are built in memory
and uploaded in one write.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import posixpath
from typing import IO, Any, Iterator

from etils import epath


def is_url(path: str) -> bool:
  """A path on an object store (gs://bucket/..., s3://...), as opposed to a local or mounted file system."""
  return '://' in str(path)


def absolute(path: str) -> str:
  """The path made absolute (a URL is absolute already)."""
  return str(path) if is_url(path) else os.path.abspath(path)


def real(path: str) -> str:
  """The path with links resolved, to tell two names of one directory apart (a URL names itself)."""
  return str(path) if is_url(path) else os.path.realpath(path)


def normjoin(base: str, relative: str) -> str:
  """`relative` (which may climb with '..') joined to `base`, normalised; a URL keeps its scheme."""
  if is_url(base):
    scheme, rest = str(base).split('://', 1)
    return f'{scheme}://{posixpath.normpath(posixpath.join(rest, relative))}'
  return os.path.normpath(os.path.join(base, relative))


def check_work_directory(path: str) -> None:
  """A one-line error for a URL that cannot hold a work directory: orbax's checkpoints reach Google Cloud
  Storage (gs://) and local or mounted file systems, and gs:// needs gcsfs installed."""
  if not is_url(path):
    return
  if not str(path).startswith('gs://'):
    raise ValueError(f'{path}: a work directory is a gs:// bucket or a path on a file system every process sees '
                     '(an S3 bucket can be mounted, e.g. with mountpoint-s3).')
  import fsspec  # a dependency of etils.epath's URL support
  try:
    fsspec.get_filesystem_class('gcs')
  except (ImportError, ValueError) as e:
    raise ValueError(f"{path}: gs:// work directories need gcsfs ({str(e).splitlines()[0]}); pip install 'lgm[cloud]'."
                     ) from None


def exists(path: str) -> bool:
  return epath.Path(path).exists()


def isdir(path: str) -> bool:
  return epath.Path(path).is_dir()


def listdir(path: str) -> list[str]:
  """The names in a directory ([] when it does not exist)."""
  directory = epath.Path(path)
  return sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []


def makedirs(path: str) -> None:
  epath.Path(path).mkdir(parents=True, exist_ok=True)


def rmtree(path: str) -> None:
  """Removes a directory and everything under it, as far as it can (cleaning up: errors are ignored, a
  missing directory included)."""
  with contextlib.suppress(OSError):
    epath.Path(path).rmtree()


def rename(source: str, target: str) -> None:
  epath.Path(source).rename(target)


def size(path: str) -> int:
  """A file's size in bytes."""
  return epath.Path(path).stat().length


def open_file(path: str, mode: str = 'r') -> IO:
  return epath.Path(path).open(mode)


def read_text(path: str) -> str:
  return epath.Path(path).read_text()


def read_json(path: str) -> Any:
  return json.loads(read_text(path))


def file_names(root: str) -> Iterator[str]:
  """The relative path of every file under `root`, depth first in name order (no file systems' walk quirks:
  fsspec's local walk yields local paths even for a URL root)."""
  for name in listdir(root):
    path = os.path.join(root, name)
    if isdir(path):
      yield from (os.path.join(name, inner) for inner in file_names(path))
    else:
      yield name


@contextlib.contextmanager
def replacing(path: str, mode: str = 'w') -> Iterator[IO]:
  """An open file whose content replaces `path` when the block ends without an error (see the module)."""
  if is_url(path):
    buffer = io.BytesIO() if 'b' in mode else io.StringIO()
    yield buffer
    if 'b' in mode:
      epath.Path(path).write_bytes(buffer.getvalue())
    else:
      epath.Path(path).write_text(buffer.getvalue())
    return
  temporary = f'{path}.tmp{os.getpid()}'
  try:
    with open(temporary, mode) as f:
      yield f
    os.replace(temporary, path)
  except BaseException:
    remove_quietly(temporary)
    raise


def write_text(path: str, text: str) -> None:
  with replacing(path) as f:
    f.write(text)


def write_json(path: str, value: Any, **dumps_options: Any) -> None:
  write_text(path, json.dumps(value, **dumps_options))


def append_text(path: str, text: str) -> None:
  """Appends to a text file (an object store cannot append: the object is rewritten whole)."""
  if is_url(path):
    write_text(path, (read_text(path) if exists(path) else '') + text)
  else:
    with open(path, 'a') as f:
      f.write(text)


def remove_quietly(path: str) -> None:
  try:
    epath.Path(path).unlink()
  except OSError:
    pass

"""Small files of a work directory, written whole or not at all.

Process 0 writes them and the other processes of a multi-process run may read them at the same moment,
and a full disk, a kill or a signal may stop a write half-way: so each file is written to a temporary
file next to it and renamed into place (the rename is atomic), and the temporary file is removed when
the write fails.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import IO, Any, Iterator


@contextlib.contextmanager
def replacing(path: str, mode: str = 'w') -> Iterator[IO]:
  """An open temporary file that replaces `path` when the block ends without an error."""
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


def remove_quietly(path: str) -> None:
  try:
    os.remove(path)
  except OSError:
    pass

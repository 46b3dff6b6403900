"""Small files of a work directory that several processes share.

Process 0 writes them and the other processes of a multi-process run may read them at the same moment,
so a reader must never see one half-written: each is written to a temporary file and renamed into place.
"""

from __future__ import annotations

import json
import os
from typing import Any


def write_text(path: str, text: str) -> None:
  """`text` into `path`, whole or not at all (the rename is atomic)."""
  temporary = f'{path}.tmp{os.getpid()}'
  with open(temporary, 'w') as f:
    f.write(text)
  os.replace(temporary, path)


def write_json(path: str, value: Any, **dumps_options: Any) -> None:
  write_text(path, json.dumps(value, **dumps_options))

"""The index of a `folder:PATH` dataset, built once and reused while the folder is unchanged.

The index lists every image file (relative path, file size, modification time, width and height, whether
it decodes) and every caption. Building it decodes each image once, in a thread pool, so that a training
run never meets a corrupt file; it is written to `$LGM_DATA_DIR/folder_index/<hash of PATH>.json` (default
`~/.cache/lgm`), so a read-only folder works. Opening the folder again only lists it and stats its files:
when nothing changed the index is read back as is; otherwise only new or changed images are decoded, and
the captions (metadata.jsonl files, NAME.txt sidecars) are read again.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
from typing import Callable

from lgm import files

INDEX_VERSION = 1
IMAGE_EXTENSIONS = frozenset(
    {'.png', '.jpg', '.jpeg', '.webp', '.bmp', '.gif', '.tif', '.tiff', '.ppm', '.pgm'})
METADATA_FILE = 'metadata.jsonl'


def index_path(root: str) -> str:
  cache = os.environ.get('LGM_DATA_DIR') or os.path.expanduser('~/.cache/lgm')
  return os.path.join(cache, 'folder_index', hashlib.sha256(root.encode()).hexdigest()[:24] + '.json')


def listing(root: str) -> dict[str, list[int]]:
  """Relative path -> [size, mtime_ns] of every image, caption sidecar and metadata.jsonl under `root`
  (hidden files and folders skipped), in a stable order."""
  out = {}
  for folder, subfolders, names in os.walk(root):
    subfolders[:] = sorted(d for d in subfolders if not d.startswith('.'))
    for name in sorted(names):
      extension = os.path.splitext(name)[1].lower()
      if name.startswith('.') or not (extension in IMAGE_EXTENSIONS or extension == '.txt' or name == METADATA_FILE):
        continue
      stat = os.stat(os.path.join(folder, name))
      out[os.path.relpath(os.path.join(folder, name), root).replace(os.sep, '/')] = [stat.st_size, stat.st_mtime_ns]
  return out


def load_or_build(root: str, probe: Callable[[str], tuple[int, int] | None],
                  read_captions: Callable[[str, list[str]], tuple[list[str], list[str]]]) -> dict:
  """The index of `root`: {'images': [[relative path, size, mtime_ns, width, height] or with width None when
  the file does not decode], 'captions': [one per image], 'warnings': [...]}.

  `probe(path)` decodes one image and returns its (width, height), or None; `read_captions(root, paths)`
  returns the caption of each image and the warnings met reading them."""
  files_now = listing(root)
  path = index_path(root)
  old = _read(path, root)
  if old is not None and old['listing'] == files_now:
    return old
  known = {entry[0]: entry for entry in old['images']} if old is not None else {}
  images = [name for name in files_now if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS]
  to_probe = [name for name in images if known.get(name, [None] * 3)[1:3] != files_now[name]]
  workers = min(32, (os.cpu_count() or 1) + 4)
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:  # PIL decodes outside the GIL
    probed = dict(zip(to_probe, pool.map(lambda name: probe(os.path.join(root, name)), to_probe)))
  entries = []
  for name in images:
    if name in probed:
      size = probed[name] or (None, None)
      entries.append([name, *files_now[name], *size])
    else:
      entries.append(known[name])
  captions, warnings = read_captions(root, [os.path.join(root, name) for name in images])
  index = {'version': INDEX_VERSION, 'root': root, 'listing': files_now, 'images': entries,
           'captions': captions, 'warnings': warnings}
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    files.write_json(path, index)
  except OSError:  # a read-only cache only costs the next run the same work
    pass
  return index


def _read(path: str, root: str) -> dict | None:
  try:
    with open(path) as f:
      index = json.load(f)
  except (OSError, ValueError):
    return None
  if index.get('version') != INDEX_VERSION or index.get('root') != root:
    return None
  return index

"""`folder:PATH`: the user's own images, found recursively.

- Images: files with an extension in IMAGE_EXTENSIONS (any case); hidden files and folders
  (name starting with '.') are ignored. Every file is decoded once, when the folder is first
  indexed (`lgm.data.folder_index`: the index is cached and reused while the folder is unchanged);
  unreadable ones are skipped and counted in the log, so a run never meets them later.
- Caption: from a `metadata.jsonl` (Hugging Face imagefolder convention: lines
  `{"file_name": ..., "text": ...}`, file_name relative to the folder holding that
  metadata.jsonl; any folder of the tree may have one), else a sidecar `NAME.txt` next to
  `NAME.ext`, else ''.
- Label: the name of the image's parent folder; `label_names` are the sorted distinct names,
  and images directly in PATH get the class '' (so a flat folder is one class, '').
- Split: an image is in `test` when a salted hash of its relative path falls under
  TEST_FRACTION, so adding files never moves the others; if none falls there, the image with
  the smallest hash is held out (a folder of a single image serves it as both splits).
- Records: the image at native size as uint8 HxWx3 RGB (EXIF orientation applied; palette and
  greyscale converted; transparency composited on white; 16-bit greyscale scaled to 8 bits).
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import PIL.Image
import PIL.ImageOps
from absl import logging

from lgm.data import folder_index
from lgm.data.folder_index import METADATA_FILE
from lgm.data.sources import SourceInfo
from lgm.data.transforms import composite_on_white

TEST_FRACTION = 0.05
_SPLIT_SALT = 'lgm-folder-split'
SPLITS = ('train', 'test')


def load_rgb(path: str) -> np.ndarray:
  """Decodes an image file to uint8 HxWx3 RGB (see the module docstring for the conversions)."""
  with PIL.Image.open(path) as image:
    image = PIL.ImageOps.exif_transpose(image)
    if image.mode in ('I', 'I;16', 'I;16B', 'I;16L'):  # 16-bit greyscale
      grey = np.round(np.asarray(image, np.float32) / 257).clip(0, 255).astype(np.uint8)
      return np.repeat(grey[..., None], 3, axis=-1)
    if image.has_transparency_data:
      return composite_on_white(np.asarray(image.convert('RGBA')))
    return np.asarray(image.convert('RGB'))


def _probe(path: str) -> tuple[int, int] | None:
  """(width, height) of an image file that decodes whole, else None."""
  try:
    with PIL.Image.open(path) as image:
      image.load()
      return image.size
  except Exception:  # PIL raises many types (OSError, SyntaxError, ValueError, bomb errors).
    return None


def _read_captions(root: str, paths: list[str]) -> tuple[list[str], list[str]]:
  """The caption of each image (metadata.jsonl, else its sidecar, else ''), and what was skipped reading them."""
  metadata, warnings = _metadata_captions(root)
  return [metadata[p] if p in metadata else _sidecar_caption(p) for p in paths], warnings


def _metadata_captions(root: str) -> tuple[dict[str, str], list[str]]:
  """Absolute image path -> caption, from every metadata.jsonl under root, and warnings.

  A line that is not UTF-8 JSON with "file_name" and "text" is skipped, and so is a line naming a file
  that is not in the folder: each with a warning naming the file and its first such lines."""
  captions, warnings = {}, []
  for folder, subfolders, files in os.walk(root):
    subfolders[:] = [d for d in subfolders if not d.startswith('.')]
    if METADATA_FILE not in files:
      continue
    path = os.path.join(folder, METADATA_FILE)
    bad, missing = [], []
    with open(path, 'rb') as f:
      for number, raw in enumerate(f, 1):
        if not raw.strip():
          continue
        try:
          entry = json.loads(raw.decode('utf-8'))
          image = os.path.normpath(os.path.join(folder, entry['file_name']))
          text = str(entry['text'])
        except (ValueError, KeyError, TypeError):  # UnicodeDecodeError is a ValueError
          bad.append(number)
          continue
        if not image.startswith(root + os.sep) or not os.path.isfile(image):  # nothing outside is read
          missing.append(f'{entry["file_name"]} (line {number})')
          continue
        captions[image] = text
    if bad:
      warnings.append(f'{path}: skipped {len(bad)} line(s) that are not UTF-8 JSON with "file_name" and "text": '
                      f'line {", ".join(map(str, bad[:5]))}{", ..." if len(bad) > 5 else ""}')
    if missing:
      warnings.append(f'{path}: skipped {len(missing)} line(s) naming files that are not in {folder}: '
                      f'{", ".join(missing[:3])}{", ..." if len(missing) > 3 else ""}')
  return captions, warnings


def _sidecar_caption(path: str) -> str:
  sidecar = os.path.splitext(path)[0] + '.txt'
  if not os.path.isfile(sidecar):
    return ''
  with open(sidecar, encoding='utf-8') as f:
    return f.read().strip()


def _split_hash(relative_path: str) -> float:
  digest = hashlib.sha256(f'{_SPLIT_SALT}:{relative_path}'.encode()).digest()
  return int.from_bytes(digest[:8], 'big') / 2**64


def _test_mask(relative_paths: list[str]) -> np.ndarray:
  hashes = np.array([_split_hash(p) for p in relative_paths])
  mask = hashes < TEST_FRACTION
  if not mask.any():
    mask[np.argmin(hashes)] = True
  return mask


class FolderSource:
  """Records {'image', 'label', 'caption'} of the images under `root` (see module docstring)."""

  def __init__(self, root: str, split: str):
    if split not in SPLITS:
      raise ValueError(f'folder:{root} has no split {split!r}; valid splits: {list(SPLITS)}')
    self.root = os.path.abspath(os.path.expanduser(root))
    if not os.path.isdir(self.root):
      raise ValueError(f'folder:{root}: no such directory; set the dataset to folder:PATH '
                       'with PATH a directory of images.')
    index = folder_index.load_or_build(self.root, _probe, _read_captions)
    for warning in index['warnings']:
      logging.warning('%s', warning)
    entries = list(zip(index['images'], index['captions']))
    relative = [entry[0] for entry, _ in entries if entry[3] is not None]
    captions = [caption for entry, caption in entries if entry[3] is not None]
    unreadable = [entry[0] for entry, _ in entries if entry[3] is None]
    skipped = len(unreadable)
    if skipped:
      logging.warning('folder:%s: skipped %d unreadable image file(s), e.g. %s', self.root, skipped, unreadable[:3])
    if not relative:
      raise ValueError(
          f'folder:{root}: no readable images ({", ".join(sorted(folder_index.IMAGE_EXTENSIONS))}) found '
          f'recursively ({skipped} unreadable); add image files or point folder:PATH elsewhere.')

    paths = [os.path.join(self.root, r) for r in relative]
    parents = [os.path.basename(os.path.dirname(r)) for r in relative]
    label_names = tuple(sorted(set(parents)))
    in_test = _test_mask(relative)
    keep = in_test if split == 'test' else ~in_test
    if len(paths) == 1:  # A single image serves both splits.
      keep = np.ones(1, bool)

    label_of = {name: i for i, name in enumerate(label_names)}
    self.paths = [p for p, k in zip(paths, keep) if k]
    self._labels = [label_of[d] for d, k in zip(parents, keep) if k]
    self._captions = [c for c, k in zip(captions, keep) if k]
    logging.info('folder:%s: %d of %d readable images in split %r, %d classes',
                 self.root, len(self.paths), len(paths), split, len(label_names))
    self.info = SourceInfo(
        name=f'folder:{self.root}', num_examples=len(self.paths), label_names=label_names,
        attributes={}, has_captions=any(captions))

  def __len__(self) -> int:
    return len(self.paths)

  def __getitem__(self, index: int) -> dict:
    return {'image': load_rgb(self.paths[index]), 'label': self._labels[index],
            'caption': self._captions[index]}

  def captions(self, limit: int | None = None) -> list[str]:
    return self._captions[:limit]

"""Opening a folder dataset at scale, and learning BPE merges from real-sized caption sets.

python -m benchmarks.folder_index [--num_images=50000] [--num_captions=100000] [--out=benchmarks/results/folder_index_cpu.jsonl]

Generates --num_images small PNGs (16x16, in 100 sub-folders, captions in one metadata.jsonl per sub-folder)
into a temporary folder, then times `folder:PATH` opened three times: the first time (every image decoded
once, the index written), the second (unchanged: the index read back), and after one image was added (only
that one decoded). Then learns 2,000 BPE merges from --num_captions captions of 12 words drawn from 20,000
random words. Each result is printed and appended to --out as one JSON line.
"""

import json
import os
import shutil
import tempfile
import time

import numpy as np
import PIL.Image
from absl import app, flags

from benchmarks import report

from lgm import tokenizer
from lgm.data import sources

_NUM_IMAGES = flags.DEFINE_integer('num_images', 50000, 'PNG files in the generated folder.')
_NUM_CAPTIONS = flags.DEFINE_integer('num_captions', 100000, 'Captions the BPE merges are learned from.')
_OUT = flags.DEFINE_string('out', None, 'Append each result as a JSON line to this file.')




def _make_folder(root: str, num_images: int, rng: np.random.Generator) -> None:
  for start in range(0, num_images, 500):
    folder = os.path.join(root, f'part{start // 500:03d}')
    os.makedirs(folder)
    lines = []
    for i in range(start, min(start + 500, num_images)):
      name = f'{i:06d}.png'
      PIL.Image.fromarray(rng.integers(0, 256, (16, 16, 3), np.uint8)).save(os.path.join(folder, name))
      lines.append(json.dumps({'file_name': name, 'text': f'image number {i} of the benchmark'}))
    with open(os.path.join(folder, 'metadata.jsonl'), 'w') as f:
      f.write('\n'.join(lines) + '\n')


def _open_seconds(root: str) -> float:
  start = time.perf_counter()
  sources.get_source(f'folder:{root}', 'train')
  return time.perf_counter() - start


def main(argv):
  del argv
  rng = np.random.default_rng(0)
  root = tempfile.mkdtemp(prefix='lgm_folder_bench_')
  cache = tempfile.mkdtemp(prefix='lgm_folder_cache_')
  os.environ['LGM_DATA_DIR'] = cache  # a fresh index
  try:
    start = time.perf_counter()
    _make_folder(root, _NUM_IMAGES.value, rng)
    generated = time.perf_counter() - start
    first = _open_seconds(root)
    second = _open_seconds(root)
    PIL.Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(os.path.join(root, 'part000', 'added.png'))
    third = _open_seconds(root)
    report({'benchmark': 'folder_index', 'num_images': _NUM_IMAGES.value, 'generate_s': round(generated, 2),
             'first_open_s': round(first, 2), 'unchanged_open_s': round(second, 2),
             'one_added_open_s': round(third, 2)}, _OUT.value)
  finally:
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(cache, ignore_errors=True)

  letters = np.array(list('abcdefghijklmnopqrstuvwxyz'))
  words = np.array([''.join(rng.choice(letters, rng.integers(2, 9))) for _ in range(20000)])
  captions = [' '.join(row) for row in words[rng.integers(0, len(words), (_NUM_CAPTIONS.value, 12))]]
  start = time.perf_counter()
  bpe = tokenizer.train_bpe(captions, num_merges=2000)
  seconds = time.perf_counter() - start
  report({'benchmark': 'bpe_train', 'num_captions': len(captions), 'num_merges': len(bpe.merges),
           'seconds': round(seconds, 2)}, _OUT.value)


if __name__ == '__main__':
  app.run(main)

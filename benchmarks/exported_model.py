"""An exported model against its work directory: size on disk, load time, and the same images.

python -m benchmarks.exported_model --workdir=runs/t2i_shapes [--num=16] [--out=benchmarks/results/exported_model_cpu.jsonl]

Exports --workdir into a temporary directory (`lgm.export`), then loads the pipeline both ways
(`TextToImage.from_workdir`: orbax checkpoints; `TextToImage.from_pretrained`: safetensors), twice each in
turn (the second time of each is reported: the first load of the process also starts JAX), and draws --num images of the job's report prompts with the same seeds from both. Each result is
printed and appended to --out as one JSON line.
"""

import os
import tempfile
import time

import numpy as np
from absl import app, flags

from benchmarks import report

from lgm import export
from lgm.pipeline import TextToImage
from lgm.train import workdir as workdir_lib

_WORKDIR = flags.DEFINE_string('workdir', 'runs/t2i_shapes', 'A trained text-to-image job.')
_NUM = flags.DEFINE_integer('num', 16, 'Images drawn from each pipeline.')
_OUT = flags.DEFINE_string('out', None, 'Append each result as a JSON line to this file.')




def main(argv):
  del argv
  with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, 'model')
    start = time.perf_counter()
    manifest = export.export(_WORKDIR.value, out)
    seconds = time.perf_counter() - start
    sizes = {name: sum(os.path.getsize(os.path.join(out, name, f)) for f in os.listdir(os.path.join(out, name)))
             for name in manifest['stages']}
    report({'what': 'export', 'workdir': _WORKDIR.value, 'seconds': round(seconds, 2),
             'mib': round(sum(sizes.values()) / 2**20, 2), 'bytes_per_stage': sizes}, _OUT.value)
    for _ in range(2):
      start = time.perf_counter()
      original = TextToImage.from_workdir(_WORKDIR.value)
      from_workdir = time.perf_counter() - start
      start = time.perf_counter()
      loaded = TextToImage.from_pretrained(out)
      from_pretrained = time.perf_counter() - start
    prompts = list(workdir_lib.read_config(_WORKDIR.value).report.prompts)
    prompts = (prompts * _NUM.value)[:_NUM.value]
    seeds = list(range(len(prompts)))
    a, b = original(prompts, seeds=seeds)[0], loaded(prompts, seeds=seeds)[0]
    report({'what': 'load', 'from_workdir_s': round(from_workdir, 2), 'from_pretrained_s': round(from_pretrained, 2),
             'images': len(prompts), 'identical_images': bool(np.array_equal(a, b)),
             'max_abs_difference': float(np.abs(np.asarray(a) - np.asarray(b)).max())}, _OUT.value)


if __name__ == '__main__':
  app.run(main)

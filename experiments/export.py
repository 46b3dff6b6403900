"""Export a trained model to a self-contained directory (safetensors parameters, configs, model card).

python -m experiments.export --workdir=runs/t2i_shapes --out=models/t2i_shapes
python -m experiments.sample --model=models/t2i_shapes --prompt="a small blue square" --out=x.png

A job exports the stages inference reads (score / prior / decoder and the VAE and CLIP stages behind
them); a single run exports itself as `model`. Layout and format: lgm/export.py.
"""

from absl import flags

from experiments import common

_WORKDIR = flags.DEFINE_string('workdir', None, 'Work directory of a trained run or job.')
_OUT = flags.DEFINE_string('out', None, 'New (or empty) directory to write the model to.')
flags.mark_flags_as_required(['workdir', 'out'])


def main(argv):
  del argv
  import os

  from lgm import export, files

  manifest = export.export(_WORKDIR.value, _OUT.value)
  size = sum(files.size(os.path.join(_OUT.value, name)) for name in files.file_names(_OUT.value))
  for name, stage in manifest['stages'].items():
    print(f'{name}: {stage["task"]}, step {stage["step"]}')
  print(f'{_OUT.value}: {size / 2**20:.1f} MiB')


def cli() -> None:
  """The `lgm-export` command."""
  common.run(main)


if __name__ == '__main__':
  cli()

"""Where a text-to-image job's errors come from: the text tower, the noise levels, the decoder.

python -m benchmarks.t2i_diagnosis --workdir=runs/t2i_shapes [--num=128] [--out=FILE]

Two measurements of a trained `shapes` job (its classifier stage reads the images), one JSON line each:
  text       do the text tower's embeddings separate the values of each attribute? Per attribute, the
             share of held-out captions whose pooled embedding is nearest (cosine) to the mean embedding
             of the training captions with the same value; and the share of bare words ('red', 'circle',
             'small', 'top left': the form negative prompts take) nearest to their own value's mean.
  decided    at which noise level is each attribute decided? Held-out images are noised to t = s * T and
             denoised (SDEdit) under their caption with one attribute changed to another value; the share
             read as the new value, per strength s (the lower the s at which it still switches, the later
             the attribute is fixed).
The third diagnosis, the ceiling the decoder sets, is a row of the job's report (the VAE's reconstructions).
"""

from __future__ import annotations


import numpy as np
from absl import app, flags

from benchmarks import report

from lgm import stages
from lgm.data import loader as loader_lib
from lgm.data import shapes
from lgm.pipeline import TextToImage
from lgm.tasks.attributes import read_attributes

_WORKDIR = flags.DEFINE_string('workdir', None, 'A trained t2i_shapes job directory.', required=True)
_NUM = flags.DEFINE_integer('num', 128, 'Held-out images per attribute and strength.')
_STRENGTHS = flags.DEFINE_list('strengths', ['0.2', '0.3', '0.4', '0.5', '0.6', '0.8', '1.0'],
                               'SDEdit strengths s (start at t = s * T).')
_GUIDANCE = flags.DEFINE_float('guidance', 3.0, 'Classifier-free guidance of the denoising.')
_OUT = flags.DEFINE_string('out', None, 'Append each result as a JSON line to this file.')




def _unit(x: np.ndarray) -> np.ndarray:
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def text_separation(clip, train: dict, held_out: dict) -> dict:
  """Nearest-value-mean accuracy of caption embeddings and of bare words, per attribute."""
  train_emb = _unit(clip.task.encode_text(clip.params, [str(c) for c in train['caption']]))
  held_emb = _unit(clip.task.encode_text(clip.params, [str(c) for c in held_out['caption']]))
  out = {}
  for name, values in shapes.ATTRIBUTES.items():
    means = _unit(np.stack([train_emb[train[name] == v].mean(0) for v in range(len(values))]))
    out[f'captions_{name}'] = float(np.mean((held_emb @ means.T).argmax(-1) == held_out[name]))
    words = _unit(clip.task.encode_text(clip.params, list(values)))
    out[f'words_{name}'] = float(np.mean((words @ means.T).argmax(-1) == np.arange(len(values))))
  return out


def decision_curves(pipe, classifier, held_out: dict, num: int, strengths: list[float], guidance: float) -> dict:
  """Per attribute and strength, the share of SDEdit results read as the newly asked value."""
  rng = np.random.default_rng(0)
  out = {}
  for name, values in shapes.ATTRIBUTES.items():
    old = held_out[name][:num]
    new = (old + rng.integers(1, len(values), num)) % len(values)  # another value, uniformly
    prompts = [shapes.caption({**{n: int(held_out[n][i]) for n in shapes.ATTRIBUTES}, name: int(new[i])})
               for i in range(num)]
    for s in strengths:
      images, _ = pipe.img2img(held_out['image'][:num], prompts, strength=s, guidance=guidance, seeds=range(num))
      read = read_attributes(classifier.task, classifier.params, images)[name]
      out[f'{name}_s{s:g}'] = float(np.mean(read == new))
  return out


def main(argv) -> None:
  del argv
  pipe = TextToImage.from_workdir(_WORKDIR.value)
  classifier = stages.load_stage(_WORKDIR.value, 'classifier', 'classifier')
  config = pipe.task.config
  train, _ = loader_lib.load_arrays(config, config.data.train_split, 5000)
  held_out, _ = loader_lib.load_arrays(config, config.data.eval_split, 1000)
  report({'measure': 'text', 'workdir': _WORKDIR.value, **text_separation(pipe.task.clip, train, held_out)}, _OUT.value, stamp=False)
  strengths = [float(s) for s in _STRENGTHS.value]
  report({'measure': 'decided', 'workdir': _WORKDIR.value, 'guidance': _GUIDANCE.value, 'num': _NUM.value,
           **decision_curves(pipe, classifier, held_out, _NUM.value, strengths, _GUIDANCE.value)}, _OUT.value, stamp=False)


if __name__ == '__main__':
  app.run(main)

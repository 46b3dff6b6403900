"""Are an unconditional pixel model's samples recognisable shapes? Ask the t2i job's attribute classifier.

python -m benchmarks.judge_samples --workdir=runs/sde_vp_shapes --judge=runs/t2i_shapes/classifier [--num=512]

An unconditional sample has no caption to check, so the measure is confidence: the share of images whose
colour, shape, size and position the classifier (trained on real renders only) reads with probability
>= `--confidence`, each attribute alone and all four at once, next to the same shares on real test images.
Also the share of each shape among samples and real images as read, and the total variation distance
between the two (0: the model draws every shape as often as the data; blobs read as circles raise it).
Prints one JSON line.
"""

from __future__ import annotations

import json

import jax
import numpy as np
from absl import app, flags

from lgm import batching, stages
from lgm.data import loader as loader_lib


def confident_shares(judge, images: np.ndarray, confidence: float) -> tuple[dict[str, float], dict[str, np.ndarray]]:
  """({attribute or 'all': share of images read with probability >= confidence}, {attribute: argmax})."""
  def probabilities(params, x):
    return {n: jax.nn.softmax(lg, -1) for n, lg in zip(judge.task.attributes, judge.task.logits(params, x))}
  probs = batching.map_in_batches(jax.jit(probabilities), judge.params, images, 256)
  sure = {n: p.max(-1) >= confidence for n, p in probs.items()}
  shares = {n: float(s.mean()) for n, s in sure.items()}
  shares['all'] = float(np.stack(list(sure.values())).all(0).mean())
  return shares, {n: p.argmax(-1) for n, p in probs.items()}


def main(argv):
  del argv
  f = flags.FLAGS
  model = stages.load_trained(f.workdir)
  judge = stages.load_trained(f.judge)
  samples, nfe = [], None
  for i in range(0, f.num, f.batch):
    x, nfe = model.task.sample(model.params, jax.random.PRNGKey(f.seed + i), f.batch)
    samples.append(np.asarray(x))
  samples = np.concatenate(samples)[:f.num]
  real = loader_lib.load_arrays(judge.config, 'test', f.num)[0]['image']
  sample_shares, read = confident_shares(judge, samples, f.confidence)
  real_shares, real_read = confident_shares(judge, real, f.confidence)
  shape_names = judge.task.value_names['shape']
  shapes_read, real_shapes = ({name: float(np.mean(r['shape'] == v)) for v, name in enumerate(shape_names)}
                               for r in (read, real_read))
  shape_tv = 0.5 * sum(abs(shapes_read[n] - real_shapes[n]) for n in shape_names)
  print(json.dumps({'benchmark': 'judge_samples', 'workdir': f.workdir, 'step': model.step, 'num': len(samples),
                    'method': model.task.sampling['method'], 'nfe': int(nfe), 'confidence': f.confidence,
                    'samples_confident': sample_shares, 'real_confident': real_shares,
                    'samples_shape_read': shapes_read, 'real_shape_read': real_shapes,
                    'shape_total_variation': shape_tv}))


if __name__ == '__main__':
  flags.DEFINE_string('workdir', 'runs/sde_vp_shapes', 'A trained pixel score model (configs/sde_vp_shapes.py).')
  flags.DEFINE_string('judge', 'runs/t2i_shapes/classifier', 'The attribute classifier stage of a t2i job.')
  flags.DEFINE_integer('num', 512, 'Samples (and real test images) to judge.')
  flags.DEFINE_integer('batch', 64, 'Samples per sampler call.')
  flags.DEFINE_integer('seed', 0, 'Sampling seed.')
  flags.DEFINE_float('confidence', 0.9, 'Probability at which an attribute counts as read.')
  app.run(main)

"""How the prior road's two guidances trade fidelity for diversity: a grid of prior and decoder guidance.

python -m benchmarks.unclip_guidance --workdir=runs/t2i_unclip [--num=256] [--prior_guidances=1,2,3] \
    [--guidances=1,3] [--out=FILE]

For every (prior guidance, decoder guidance) pair, images are drawn by the prior road from the first `--num`
held-out captions (one seed each) of a `shapes` job with `prior`, `decoder` and `classifier` stages, and one
JSON line is printed: the classifier's fidelity per attribute and all four, the mean cosine between the sampled
embeddings and the held-out images' own embeddings, and the diversity (mean pairwise CLIP-image distance) of
16 samples of each of the first 8 captions. The same seeds serve every pair.
"""

from __future__ import annotations

import numpy as np
from absl import app, flags

from benchmarks import report

from lgm import evaluation, stages
from lgm.data import loader as loader_lib
from lgm.pipeline import TextToImage
from lgm.reports.unclip import DIVERSITY_SAMPLES
from lgm.tasks.attributes import read_attributes

_WORKDIR = flags.DEFINE_string('workdir', None, 'A trained job with prior, decoder and classifier stages.',
                               required=True)
_NUM = flags.DEFINE_integer('num', 256, 'Held-out captions, one image each.')
_PRIOR_GUIDANCES = flags.DEFINE_list('prior_guidances', ['1', '2', '3'], 'Guidances of the prior.')
_GUIDANCES = flags.DEFINE_list('guidances', ['1', '3'], 'Guidances of the decoder.')
_DIVERSITY_PROMPTS = flags.DEFINE_integer('diversity_prompts', 8, 'Captions whose 16 samples give the diversity.')
_OUT = flags.DEFINE_string('out', None, 'Append each result as a JSON line to this file.')


def main(argv):
  del argv
  pipe = TextToImage.from_workdir(_WORKDIR.value)
  classifier = stages.load_stage(_WORKDIR.value, 'classifier', 'classifier')
  config = pipe.decoder.task.config
  held_out, _ = loader_lib.load_arrays(config, config.data.eval_split, _NUM.value)
  prompts = [str(c) for c in held_out['caption']]
  targets = pipe.embed_images(held_out['image'])
  asked = {name: held_out[name] for name in classifier.task.attributes}
  repeated = [p for p in prompts[:_DIVERSITY_PROMPTS.value] for _ in range(DIVERSITY_SAMPLES)]
  for prior_guidance in map(float, _PRIOR_GUIDANCES.value):
    embeddings, prior_nfe = pipe.sample_embeddings(prompts, guidance=prior_guidance, seeds=range(len(prompts)))
    diverse, _ = pipe.sample_embeddings(repeated, guidance=prior_guidance,
                                        seeds=[s for _ in prompts[:_DIVERSITY_PROMPTS.value]
                                               for s in range(DIVERSITY_SAMPLES)])
    for guidance in map(float, _GUIDANCES.value):
      images, nfe = pipe.decode(embeddings, guidance, seeds=range(len(prompts)))
      fidelity = evaluation.fidelity(read_attributes(classifier.task, classifier.params, images), asked)
      diverse_images, _ = pipe.decode(diverse, guidance, seeds=range(len(repeated)))
      record = {'workdir': _WORKDIR.value, 'num': len(prompts), 'prior_guidance': prior_guidance,
                'guidance': guidance, 'nfe_prior': prior_nfe, 'nfe_decoder': nfe, **fidelity,
                'cosine_to_image': float(np.mean(np.sum(embeddings * targets, axis=1))),
                'diversity': evaluation.diversity(
                    pipe.embed_images(diverse_images).reshape(-1, DIVERSITY_SAMPLES, targets.shape[1]))}
      report(record, _OUT.value, stamp=False)


if __name__ == '__main__':
  app.run(main)

"""Text-to-image on scikit-learn's handwritten digits: captions such as "a handwritten digit three".

python -m experiments.train --config=configs/t2i_digits.py --workdir=runs/t2i_digits

The main job's stages at the digits' size (16x16 grey, upsampled from 8x8): the VAE maps them to 8x8x2
latents, the text tower is configs/clip_digits.py's, and the classifier stage is a label reader (the
dataset's ten digit labels) that judges the generated images: `fidelity_label` is the share read as the
prompted digit. Every dataset also gets caption retrieval, CLIP score and FID on CLIP features.
"""

import ml_collections

from configs import clip_digits, t2i_shapes, vae_digits


def get_config(arg: str | None = None):
  del arg
  config = t2i_shapes.get_config()
  config.data = ml_collections.ConfigDict({'dataset': 'digits', 'image_size': 16, 'channels': 1})
  config.vae = vae_digits.get_config()
  config.vae.model.space_to_depth = 1  # 16x16 -> 8x8 latents, the grid the score network of t2i_shapes works on
  config.vae.train.num_steps = 800
  config.vae.train.checkpoint_every = config.vae.eval.every = 400
  config.clip = clip_digits.get_config()
  config.clip.eval.every = config.clip.train.checkpoint_every = 600
  config.classifier.eval.batch_size = 100  # the 300 test digits
  config.classifier.eval.num_examples = 300
  config.score.data.partial_captions = 0.0  # a digit caption names one attribute: nothing to leave out
  # The score stage as measured (docs/results.md): 1,800 steps, guidance at every step.
  config.score.train.num_steps = config.score.eval.every = 1800
  config.score.train.checkpoint_every = 600
  config.score.guidance_interval = (0.0, 1.0)
  config.score.eval.batch_size = 100
  config.score.eval.num_examples = 300
  config.score.latent.scale_examples = 1497  # the whole train split
  config.report.num_images = 300  # the whole test split, one seed each
  config.report.negative_images_per_value = 0  # a digit's name as a negative prompt: not measured here
  config.report.prompts = tuple(f'a handwritten digit {word}' for word in
                                ('zero', 'one', 'two', 'three', 'four', 'five', 'six', 'seven'))
  return config

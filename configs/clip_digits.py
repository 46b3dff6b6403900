"""CLIP on scikit-learn's 8x8 handwritten digits (real data, no download), upsampled to 16x16 grey.

python -m experiments.train --config=configs/clip_digits.py --workdir=runs/clip_digits

Zero-shot accuracy is eval/zeroshot_digit (ten classes from the digits caption templates).
"""

from configs import clip_shapes


def get_config(arg: str | None = None):
  config = clip_shapes.get_config(arg)
  config.data.dataset = 'digits'
  config.data.image_size = 16
  config.data.channels = 1
  config.tokenizer.num_captions = 1497  # the whole train split
  config.tokenizer.context_length = 16
  config.model.embed_dim = 64
  config.model.text_width = config.model.image_width = 64
  config.model.text_layers = config.model.image_layers = 2
  config.train.batch_size = 64
  config.train.num_steps = 600
  config.train.checkpoint_every = 300
  config.eval.every = 300
  config.eval.batch_size = 100
  config.eval.num_examples = 300
  return config

"""CLIP on the embedded `shapes` dataset: captions and 32x32 images in one 128-d space.

python -m experiments.train --config=configs/clip_shapes.py --workdir=runs/clip_shapes

Evaluation (every eval.every steps and by experiments.evaluate) embeds 1,000 held-out pairs: zero-shot
accuracy per attribute from the caption templates (eval/zeroshot_colour, ...) and retrieval recall
(eval/retrieval_t2i_r1, ...). `get_config('siglip')` trains with the sigmoid loss instead.
"""

import math

import ml_collections

from configs import base


def get_config(arg: str | None = None):
  config = base.base_config()
  config.task = 'clip'
  config.tokenizer = tokenizer = ml_collections.ConfigDict()
  tokenizer.name = 'bpe'           # byte-level BPE learned from the training captions, kept in DIR
  tokenizer.num_merges = 256
  tokenizer.num_captions = 5000    # captions the merges are learned from
  tokenizer.context_length = 24    # shapes captions are 6 to 16 BPE tokens (+ start and end)

  # 'latent': the image tower reads the 8x8x4 latents of the VAE at stages.vae (relative to the work
  # directory; set model.patch_size=1 or 2), the space a latent diffusion model generates in.
  config.image_input = 'pixels'
  config.stages = ml_collections.ConfigDict({'vae': '../vae'})

  model = config.model
  model.name = 'clip'
  model.embed_dim = 128
  model.text_width = 128
  model.text_layers = 3
  model.text_heads = 4
  model.image_width = 128
  model.image_layers = 3
  model.image_heads = 4
  model.patch_size = 4
  model.image_pool = 'mean'
  model.activation = 'gelu'
  model.logit_scale_init = math.log(1 / 0.07)
  model.logit_bias_init = None
  config.loss.name = 'clip'
  if arg == 'siglip':
    config.loss.name = 'siglip'
    model.logit_scale_init = math.log(10.0)
    model.logit_bias_init = -10.0

  config.train.batch_size = 128
  config.train.num_steps = 1000
  config.train.log_every = 50
  config.train.checkpoint_every = 500
  config.train.ema_decay = 0.0  # evaluate the trained weights themselves
  config.optim.learning_rate = 1e-3
  config.optim.warmup_steps = 100
  config.optim.weight_decay = 0.05
  config.eval.every = 500
  config.eval.batch_size = 200
  config.eval.num_examples = 1000
  config.eval.use_ema = False
  return config

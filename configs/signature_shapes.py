"""The signature stage: the decoder of a trained VAE fine-tuned to sign every image it decodes (lgm.tasks.signature).

python -m experiments.train --config=configs/signature_shapes.py --workdir=runs/t2i_shapes/signature

It reads the VAE at `stages.vae` (relative to its work directory: the job's `vae` stage next to it); the text-to-image
jobs train it as their `signature` stage. Detection: python -m experiments.verify --model=runs/t2i_shapes IMAGE...
"""

import ml_collections

from configs import base


def get_config(arg: str | None = None):
  del arg
  config = base.base_config()
  config.task = 'signature'
  config.stages = ml_collections.ConfigDict({'vae': '../vae'})
  config.signature = ml_collections.ConfigDict()
  config.signature.bits = 16
  config.signature.message = ''  # '' = 16 coin flips drawn from config.seed; or a string of 0 and 1
  config.signature.target_psnr = 35.5  # dB against the original image: each image's budget of change
  config.signature.image_weight = 1000.0  # on the mean squared error beyond that budget ([0, 1] scale)
  config.signature.calibration_images = 2000  # training images the detector whitens its logits on
  config.model = ml_collections.ConfigDict({'name': 'watermark_extractor', 'ch': 32, 'ch_mult': (1, 2, 4)})
  config.train.batch_size = 48  # 8 images per training distortion
  config.train.num_steps = 700
  config.train.log_every = 50
  config.train.checkpoint_every = 350
  config.train.ema_decay = 0.0  # the decoder moves little and the extractor is read as trained
  config.eval.use_ema = False
  config.eval.every = 700
  config.eval.num_examples = 1000
  config.optim.learning_rate = 1e-3
  config.optim.warmup_steps = 50
  return config

"""VAE on scikit-learn's bundled handwritten digits (8x8 grey, upsampled to 16x16): a one-minute run.

python -m experiments.train --config=configs/vae_digits.py --workdir=runs/vae_digits
"""

from configs import vae_shapes


def get_config(arg: str | None = None):
  config = vae_shapes.get_config(arg)
  config.data.dataset = 'digits'
  config.data.image_size = 16
  config.data.channels = 1
  config.model.latent_channels = 2
  config.train.num_steps = 600
  config.train.checkpoint_every = 200
  config.eval.every = 200
  config.eval.batch_size = 100
  config.eval.num_examples = 300
  return config

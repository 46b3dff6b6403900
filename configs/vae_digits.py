"""VAE on scikit-learn's bundled handwritten digits (8x8 grey, upsampled to 16x16): a one-minute run.

python -m experiments.train --config=configs/vae_digits.py --workdir=runs/vae_digits

Its sweep (`get_sweep`: the network width around the shipped 32 channels, times the shipped learning rate
and three times it), six runs in runs/sweep_vae_digits/<name>, then their table and figures
(docs/results.md, "A 3 × 2 sweep of vae_digits"):

python -m experiments.sweep --config=configs/vae_digits.py --workdir=runs/sweep_vae_digits
python -m experiments.compare runs/sweep_vae_digits/*
"""

from configs import vae_shapes
from lgm import sweeps


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


def get_sweep(arg: str | None = None):
  del arg
  return sweeps.product(sweeps.sweep('model.ch', [16, 32, 48]), sweeps.sweep('optim.learning_rate', [1e-3, 3e-3]))

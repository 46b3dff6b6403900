"""Deterministic autoencoder on `shapes`: the VAE's network without the KL (f = 4, 8x8x4 latents).

python -m experiments.train --config=configs/ae_shapes.py --workdir=runs/ae_shapes
"""

from configs import vae_shapes


def get_config(arg: str | None = None):
  del arg
  return vae_shapes.get_config('ae')

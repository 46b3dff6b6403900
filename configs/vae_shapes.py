"""VAE on the embedded `shapes` dataset: 32x32 images -> 8x8x4 latents (f = 4).

python -m experiments.train --config=configs/vae_shapes.py --workdir=runs/vae_shapes

The default experiment (its measured time and PSNR: docs/results.md). `get_config('ae')` is the deterministic
autoencoder of configs/ae_shapes.py.
"""

from configs import base


def get_config(arg: str | None = None):
  config = base.base_config()
  config.task = 'autoencoding'
  config.model.name = 'autoencoder' if arg == 'ae' else 'vae'
  config.model.latent_channels = 4
  config.model.ch = 32
  config.model.ch_mult = (1, 2)
  config.model.num_res_blocks = 1
  config.model.space_to_depth = 2
  config.model.mid_attention = False
  config.model.dropout = 0.0
  # beta = 4: prior samples look like single objects rather than scattered fragments (docs/results.md),
  # at 30.6 dB instead of 32.9 dB; --config.loss.kl_weight=1 trains on the exact ELBO.
  config.loss.kl_weight = 4.0
  config.train.batch_size = 32
  config.train.num_steps = 1500
  config.train.log_every = 100
  config.train.checkpoint_every = 500
  config.eval.every = 500
  return config

"""What every CIFAR-10 config of Song et al. shares: data, training schedule and optimizer."""

import ml_collections

from configs import sde_base


def cifar10_config(sde: str) -> ml_collections.ConfigDict:
  config = sde_base.sde_config(sde)  # also sets data.centered: [-1, 1] for VP / sub-VP, [0, 1] for VE
  config.seed = 42
  config.data.dataset = 'cifar10'
  config.data.random_flip = True
  config.sampling.method = 'pc'
  config.sampling.num_steps = 1000
  # Winograd 3x3 convolutions on CPU (a third faster there), XLA's convolutions on accelerators.
  config.model.conv_algorithm = 'auto'

  config.train.batch_size = 128
  config.train.num_steps = 1_300_000  # score_sde's n_iters = 1300001 is the loop bound
  config.train.ema_decay = 0.9999
  config.train.checkpoint_every = 50_000
  config.eval.every = 50_000
  # Adam 2e-4, 5k warmup steps, then constant (final_lr_fraction = 1), clipping at norm 1.
  config.optim.learning_rate = 2e-4
  config.optim.warmup_steps = 5000
  config.optim.final_lr_fraction = 1.0
  config.optim.b1 = 0.9
  config.optim.b2 = 0.999
  config.optim.eps = 1e-8
  config.optim.weight_decay = 0.0
  config.optim.grad_clip = 1.0
  return config

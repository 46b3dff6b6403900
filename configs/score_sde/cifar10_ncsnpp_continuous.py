"""NCSN++ cont. (VE) on CIFAR-10: Song et al. 2021, score_sde's configs/ve/cifar10_ncsnpp_continuous.py.

python -m experiments.train --config=configs/score_sde/cifar10_ncsnpp_continuous.py --workdir=runs/cifar10_ncsnpp_continuous

VE SDE on [0, 1] data, continuous denoising score matching, 62.76M parameters: FIR resampling, an
input pyramid, Fourier features of log sigma, output divided by sigma. Paper: FID 2.38, IS 9.83
(Table 3, PC sampler: reverse diffusion + Langevin, snr 0.16).
CIFAR-10 must first be prepared once as a tfds catalog (README, "Data").
"""

from configs import sde_base


def get_config(arg: str | None = None):
  del arg
  config = sde_base.sde_config('vesde')
  config.seed = 42
  config.data.dataset = 'cifar10'
  config.data.random_flip = True
  config.data.centered = False

  config.sde.sigma_min = 0.01
  config.sde.sigma_max = 50.0
  config.sde.num_scales = 1000

  config.loss.name = 'dsm'
  config.loss.reduce_mean = False
  config.loss.likelihood_weighting = False

  config.sampling.method = 'pc'
  config.sampling.num_steps = 1000
  config.sampling.predictor = 'reverse_diffusion'
  config.sampling.corrector = 'langevin'
  config.sampling.snr = 0.16
  config.sampling.n_steps_each = 1

  config.train.batch_size = 128
  config.train.num_steps = 1_300_000  # score_sde's n_iters = 1300001 is the loop bound
  config.train.ema_decay = 0.999
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

  m = config.model
  m.name = 'ncsnpp'
  m.nf = 128
  m.ch_mult = (1, 2, 2, 2)
  m.num_res_blocks = 4
  m.attn_resolutions = (16,)
  m.dropout = 0.1
  m.resblock_type = 'biggan'
  m.resamp_with_conv = True
  m.fir = True
  m.fir_kernel = (1, 3, 3, 1)
  m.skip_rescale = True
  m.progressive = 'none'
  m.progressive_input = 'residual'
  m.progressive_combine = 'sum'
  m.embedding_type = 'fourier'
  m.fourier_scale = 16.0
  m.init_scale = 0.0
  m.scale_by_sigma = True
  m.conditional = True
  m.space_to_depth = 1
  m.num_classes = 0
  m.vector_dim = 0
  m.context_dim = 0
  m.num_heads = 1
  return config

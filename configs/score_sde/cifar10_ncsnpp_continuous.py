"""NCSN++ cont. (VE) on CIFAR-10: Song et al. 2021, score_sde's configs/ve/cifar10_ncsnpp_continuous.py.

python -m experiments.train --config=configs/score_sde/cifar10_ncsnpp_continuous.py --workdir=runs/cifar10_ncsnpp_continuous

VE SDE on [0, 1] data, continuous denoising score matching, 62.76M parameters: FIR resampling, an
input pyramid, Fourier features of log sigma, output divided by sigma. Paper: FID 2.38, IS 9.83
(Table 3, PC sampler: reverse diffusion + Langevin, snr 0.16).
CIFAR-10 must first be prepared once as a tfds catalog (docs/reference.md, "Data").
"""

from configs.score_sde import common


def get_config(arg: str | None = None):
  del arg
  config = common.cifar10_config('vesde')

  config.sde.sigma_min = 0.01
  config.sde.sigma_max = 50.0
  config.sde.num_scales = 1000

  config.loss.name = 'dsm'
  config.loss.reduce_mean = False
  config.loss.likelihood_weighting = False

  config.sampling.predictor = 'reverse_diffusion'
  config.sampling.corrector = 'langevin'
  config.sampling.snr = 0.16
  config.sampling.n_steps_each = 1

  config.train.ema_decay = 0.999

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

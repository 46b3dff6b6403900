"""DDPM++ cont. (VP) on CIFAR-10: Song et al. 2021, score_sde's configs/vp/cifar10_ddpmpp_continuous.py.

python -m experiments.train --config=configs/score_sde/cifar10_ddpmpp_continuous.py --workdir=runs/cifar10_ddpmpp_continuous

VP SDE, continuous denoising score matching, 61.80M parameters. Paper: FID 2.55, IS 9.58 (Table 3,
PC sampler); 3.16 bits/dim and FID 3.93 with the probability-flow ODE (Table 2).
CIFAR-10 must first be prepared once as a tfds catalog (docs/reference.md, "Data").
"""

from configs.score_sde import common


def get_config(arg: str | None = None):
  del arg
  config = common.cifar10_config('vpsde')

  config.sde.beta_min = 0.1
  config.sde.beta_max = 20.0
  config.sde.num_scales = 1000

  config.loss.name = 'dsm'
  config.loss.reduce_mean = True
  config.loss.likelihood_weighting = False

  config.sampling.predictor = 'euler_maruyama'
  config.sampling.corrector = 'none'


  m = config.model
  m.name = 'ncsnpp'
  m.nf = 128
  m.ch_mult = (1, 2, 2, 2)
  m.num_res_blocks = 4
  m.attn_resolutions = (16,)
  m.dropout = 0.1
  m.resblock_type = 'biggan'
  m.resamp_with_conv = True
  m.fir = False
  m.fir_kernel = (1, 3, 3, 1)
  m.skip_rescale = True
  m.progressive = 'none'
  m.progressive_input = 'none'
  m.progressive_combine = 'sum'
  m.embedding_type = 'positional'
  m.fourier_scale = 16.0
  m.init_scale = 0.0
  m.scale_by_sigma = False
  m.conditional = True
  m.space_to_depth = 1
  m.num_classes = 0
  m.vector_dim = 0
  m.context_dim = 0
  m.num_heads = 1
  return config

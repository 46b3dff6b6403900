"""The original DDPM (Ho et al. 2020) on CIFAR-10: score_sde's configs/vp/ddpm/cifar10.py.

python -m experiments.train --config=configs/score_sde/cifar10_ddpm.py --workdir=runs/cifar10_ddpm

Ho et al.'s 35.22M-parameter U-Net trained with the discrete DDPM loss (epsilon prediction at
N = 1000 VP steps) and sampled ancestrally. Ho et al.: FID 3.17, IS 9.46, NLL <= 3.75 bits/dim
(ELBO); Song et al. 2021 (Table 2): 3.28 bits/dim and FID 3.37 with the probability-flow ODE.
CIFAR-10 must first be prepared once as a tfds catalog (docs/reference.md, "Data").
"""

from configs.score_sde import common


def get_config(arg: str | None = None):
  del arg
  config = common.cifar10_config('vpsde')

  config.sde.beta_min = 0.1
  config.sde.beta_max = 20.0
  config.sde.num_scales = 1000

  config.loss.name = 'ddpm'
  config.loss.reduce_mean = True

  config.sampling.predictor = 'ancestral'
  config.sampling.corrector = 'none'


  m = config.model
  m.name = 'ddpm'
  m.nf = 128
  m.ch_mult = (1, 2, 2, 2)
  m.num_res_blocks = 2
  m.attn_resolutions = (16,)
  m.dropout = 0.1
  m.resamp_with_conv = True
  m.scale_by_sigma = False
  m.conditional = True
  m.space_to_depth = 1
  m.num_classes = 0
  m.vector_dim = 0
  m.context_dim = 0
  m.num_heads = 1
  return config

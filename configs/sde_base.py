"""Keys of every score-SDE experiment (task `score`), on top of `configs/base.py`.

Mirrors score_sde's config layout: `sde` (the forward process), `loss` (how the score is learned),
`sampling` (how images are drawn for eval grids and `experiments.sample`), `model` (the score network).
"""

import ml_collections

from configs import base


def sde_config(sde: str = 'vpsde') -> ml_collections.ConfigDict:
  config = base.base_config()
  config.task = 'score'
  # Data range of the diffusion: True = [-1, 1]; False = [0, 1], as Song et al. use for VE SDEs.
  config.data.centered = sde != 'vesde'

  config.sde = s = ml_collections.ConfigDict()
  s.name = sde                    # vpsde | subvpsde | vesde (lgm.sde.SDES)
  s.beta_min = 0.1                # VP / sub-VP
  s.beta_max = 20.0
  s.sigma_min = 0.01              # VE
  s.sigma_max = 50.0
  s.num_scales = 1000             # N: discretisation for DDPM/SMLD losses and samplers

  config.loss.name = 'dsm'        # dsm (continuous) | ddpm | smld (lgm.losses.SCORE_LOSSES)
  config.loss.likelihood_weighting = False
  config.loss.reduce_mean = False  # False = sum over dimensions, as the paper
  config.loss.eps = 1e-5          # t ~ U(eps, T)
  config.loss.time_distribution = 'uniform'  # training times: uniform | lognormal (lgm.losses.TIME_DISTRIBUTIONS)
  config.loss.log_sigma = (-1.2, 1.2)  # lognormal: (mean, std) of log(sigma / alpha), EDM's P_mean, P_std

  config.sampling = sm = ml_collections.ConfigDict()
  sm.method = 'pc'                # pc | ode | ddim | dpm_solver | edm_heun (lgm.sampling.METHODS)
  sm.num_steps = 1000
  sm.predictor = 'reverse_diffusion'
  sm.corrector = 'langevin'
  sm.snr = 0.16
  sm.n_steps_each = 1
  sm.clip_denoised = False        # clip data predictions to the data range (few-step samplers, final step)
  sm.denoise = True             # end with one Tweedie denoising step at eps
  sm.eps = 1e-3                   # the sampler stops at t = eps
  sm.num_samples = 64             # images in each eval grid

  config.eval.bpd_per_batch = 8   # images of each eval batch whose bits/dim go through the probability-flow ODE (0: off)
  config.eval.bpd_rtol = 1e-5
  config.eval.bpd_atol = 1e-5
  return config

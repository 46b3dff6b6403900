"""Pixel-space score SDE on `shapes`, sized for 2 CPU cores: VP SDE, a small DDPM++ network.

python -m experiments.train --config=configs/sde_vp_shapes.py --workdir=runs/sde_vp_shapes

Mirrors configs/score_sde/cifar10_ddpmpp_continuous.py at CPU scale: the same DDPM++ blocks with nf 32,
one residual block per resolution and a space-to-depth first stage (convolutions at 16x16 and below).
Training times are log-normal in sigma/alpha (EDM's choice); samples for the eval grids use
DPM-Solver++(3M) at 20 score evaluations; `eval/bpd` goes through the probability-flow ODE.
configs/sde_subvp_shapes.py and configs/sde_ve_shapes.py change only the SDE.
Measured on a 2-core machine, 2026-12-04 (docs/results.md): 19 min 42 s end to end, eval/bpd 2.45; recognisable shapes.
At 1,800 steps (6 min 22 s) the samples were still coloured blobs.
"""

from configs import sde_base


def get_config(sde: str = 'vpsde'):
  config = sde_base.sde_config(sde)
  config.data.dataset = 'shapes'

  config.loss.reduce_mean = True
  config.loss.time_distribution = 'lognormal'  # train where shapes form, not on near-pure noise
  # (mean, std) of log(sigma/alpha). Uniform VP times put 23% of steps above sigma/alpha = 20, where the
  # sampler starts; EDM's (-1.2, 1.2) leaves sigma/alpha = 20 untrained (3.5 std up), and an epsilon network's
  # errors there are multiplied by sigma/alpha. (-0.5, 1.5) puts sigma/alpha = 20 at 2.3 std.
  config.loss.log_sigma = (-0.5, 1.5)

  s = config.sampling
  s.method = 'dpm_solver'
  s.num_steps = 19  # + the final denoising step = 20 score evaluations
  s.order = 3
  s.sigma_max = 20.0  # start at sigma/alpha = 20: benchmarks/sampler_nfe.py's best at 20 NFE
  s.num_samples = 64
  s.clip_denoised = True

  config.train.batch_size = 32
  config.train.num_steps = 5400
  config.train.log_every = 100
  config.train.checkpoint_every = 1800
  config.train.ema_decay = 0.995
  config.optim.learning_rate = 2e-3
  config.optim.warmup_steps = 100
  config.optim.final_lr_fraction = 0.05
  config.optim.b2 = 0.999
  config.eval.every = 5400
  config.eval.num_examples = 200
  config.eval.batch_size = 200
  config.eval.bpd_per_batch = 4
  config.eval.bpd_rtol = config.eval.bpd_atol = 1e-4

  m = config.model
  m.name = 'ncsnpp'
  m.nf = 32
  m.ch_mult = (1, 2, 2)
  m.num_res_blocks = 1
  m.attn_resolutions = (8,)
  m.dropout = 0.0
  m.resblock_type = 'biggan'
  m.fir = False
  m.skip_rescale = True
  m.progressive = 'none'
  m.progressive_input = 'none'
  m.embedding_type = 'positional'
  m.init_scale = 0.0
  m.scale_by_sigma = False
  m.space_to_depth = 2
  return config

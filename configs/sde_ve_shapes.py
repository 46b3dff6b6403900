"""configs/sde_vp_shapes.py with the VE SDE, set up as the paper's NCSN++ is: data in [0, 1],
Gaussian Fourier features of log sigma, output divided by sigma.

python -m experiments.train --config=configs/sde_ve_shapes.py --workdir=runs/sde_ve_shapes
"""

from configs import sde_vp_shapes


def get_config():
  config = sde_vp_shapes.get_config('vesde')
  config.model.embedding_type = 'fourier'
  config.model.scale_by_sigma = True
  return config

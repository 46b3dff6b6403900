"""configs/sde_vp_shapes.py with the sub-VP SDE (Song et al.'s best likelihoods came from it).

python -m experiments.train --config=configs/sde_subvp_shapes.py --workdir=runs/sde_subvp_shapes
"""

from configs import sde_vp_shapes


def get_config():
  return sde_vp_shapes.get_config('subvpsde')

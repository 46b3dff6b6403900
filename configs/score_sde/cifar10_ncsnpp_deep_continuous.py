"""NCSN++ cont. (deep, VE) on CIFAR-10: score_sde's configs/ve/cifar10_ncsnpp_deep_continuous.py.

python -m experiments.train --config=configs/score_sde/cifar10_ncsnpp_deep_continuous.py --workdir=runs/cifar10_ncsnpp_deep_continuous

NCSN++ cont. (VE) with twice the residual blocks (8 per resolution), 107.59M parameters, trained
for 950k steps. Paper: FID 2.20, IS 9.89 (Table 3), the paper's best CIFAR-10 sample quality.
"""

from configs.score_sde import cifar10_ncsnpp_continuous


def get_config(arg: str | None = None):
  config = cifar10_ncsnpp_continuous.get_config(arg)
  config.model.num_res_blocks = 8
  config.train.num_steps = 950_000
  return config

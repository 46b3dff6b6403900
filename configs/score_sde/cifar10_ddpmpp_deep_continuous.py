"""DDPM++ cont. (deep, VP) on CIFAR-10: score_sde's configs/vp/cifar10_ddpmpp_deep_continuous.py.

python -m experiments.train --config=configs/score_sde/cifar10_ddpmpp_deep_continuous.py --workdir=runs/cifar10_ddpmpp_deep_continuous

DDPM++ cont. (VP) with twice the residual blocks (8 per resolution), 106.63M parameters, trained
for 950k steps. Paper: FID 2.41, IS 9.68 (Table 3); 3.13 bits/dim and FID 3.08 with the
probability-flow ODE (Table 2).
"""

from configs.score_sde import cifar10_ddpmpp_continuous


def get_config(arg: str | None = None):
  config = cifar10_ddpmpp_continuous.get_config(arg)
  config.model.num_res_blocks = 8
  config.train.num_steps = 950_000
  return config

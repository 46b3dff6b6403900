"""How many score evaluations each sampler needs on a 2-D Gaussian mixture, against Euler-Maruyama at 1000 steps.

python -m benchmarks.sampler_nfe [--sdes=vpsde,vesde] [--num=100000] [--seeds=3] [--samplers='dpm_solver (3M),ode']
    [--max_steps=1000]

The mixture's perturbed score is exact (no network), so only the samplers differ. Quality is the sliced
Wasserstein-2 distance (256 random directions) between a sampler's draws and exact draws of the mixture,
averaged over --seeds sampler seeds (one seed of 10k draws is too noisy: seeds alone moved it by 30%).
For each sampler the step count is raised until its distance is at or below Euler-Maruyama's at 1000
steps; the table gives that NFE and the distance at the largest setting with NFE <= 20. The floor is
the distance between independent exact draws: Monte Carlo noise no sampler can go below.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from lgm import sampling
from lgm import sde as sde_lib

_SDES = flags.DEFINE_list('sdes', ['vpsde', 'vesde'], 'SDEs to run.')
_NUM = flags.DEFINE_integer('num', 100000, 'Samples per run.')
_SEEDS = flags.DEFINE_integer('seeds', 3, 'Sampler seeds averaged per setting.')
_ONLY = flags.DEFINE_list('samplers', None, 'Only the samplers whose names start with one of these (default: all).')
_MAX_STEPS = flags.DEFINE_integer('max_steps', 1000, 'Sweep step counts up to this many (a shorter run; '
                                  'a sampler not reaching EM-1000 by then reads "> sweep").')

# Five components of different weights, sizes and orientations, within [-1, 1]^2 like image data.
MEANS = np.array([[-0.6, -0.6], [0.6, -0.5], [0.0, 0.6], [-0.7, 0.5], [0.7, 0.6]], np.float32)
COVS = np.array([[[0.02, 0.01], [0.01, 0.02]], [[0.03, -0.01], [-0.01, 0.01]], [[0.01, 0.0], [0.0, 0.04]],
                 [[0.005, 0.0], [0.0, 0.005]], [[0.02, 0.0], [0.0, 0.02]]], np.float32)
WEIGHTS = np.array([0.3, 0.2, 0.2, 0.15, 0.15], np.float32)

SAMPLERS = {  # name -> (method, options); step counts are swept
    'pc euler_maruyama': ('pc', {'predictor': 'euler_maruyama', 'corrector': 'none'}),
    'pc reverse_diffusion': ('pc', {'predictor': 'reverse_diffusion', 'corrector': 'none'}),
    'pc ancestral': ('pc', {'predictor': 'ancestral', 'corrector': 'none'}),
    'pc reverse_diffusion + langevin': ('pc', {'predictor': 'reverse_diffusion', 'corrector': 'langevin', 'snr': 0.05}),
    'ddim (eta 0)': ('ddim', {}),
    'ddim (eta 1)': ('ddim', {'eta': 1.0}),
    'dpm_solver (2M)': ('dpm_solver', {}),
    'dpm_solver (3M)': ('dpm_solver', {'order': 3}),
    'dpm_solver (3M, sigma_max 20)': ('dpm_solver', {'order': 3, 'sigma_max': 20.0}),
    'edm_heun': ('edm_heun', {}),
    'edm_heun (sigma_max 20)': ('edm_heun', {'sigma_max': 20.0}),
}
STEPS = (2, 3, 4, 5, 6, 8, 10, 12, 15, 19, 25, 35, 50, 75, 100, 150, 250, 400, 700, 1000)
ODE_TOLERANCES = (1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 1e-4, 1e-5)


def mixture_score(sde):
  means, covs, log_w = jnp.asarray(MEANS), jnp.asarray(COVS), jnp.log(jnp.asarray(WEIGHTS))

  def score(x, t):
    alpha, sigma = sde.marginal_coefficients(t)
    cov = alpha[:, None, None, None] ** 2 * covs + sigma[:, None, None, None] ** 2 * jnp.eye(2)
    a, b, d = cov[..., 0, 0], cov[..., 0, 1], cov[..., 1, 1]
    det = a * d - b * b
    diff = x[:, None, :] - alpha[:, None, None] * means
    prec = jnp.stack([d * diff[..., 0] - b * diff[..., 1], a * diff[..., 1] - b * diff[..., 0]], -1) / det[..., None]
    logits = log_w - 0.5 * jnp.sum(diff * prec, -1) - 0.5 * jnp.log(det)
    return -jnp.sum(jax.nn.softmax(logits, -1)[..., None] * prec, axis=1)
  return score


def exact_samples(rng: np.random.Generator, num: int) -> np.ndarray:
  k = rng.choice(len(WEIGHTS), size=num, p=WEIGHTS / WEIGHTS.sum())
  z = rng.standard_normal((num, 2))
  return MEANS[k] + np.einsum('nij,nj->ni', np.linalg.cholesky(COVS)[k], z)


def sliced_wasserstein(x: np.ndarray, y: np.ndarray, directions: int = 256, seed: int = 0) -> float:
  """sqrt of the mean over random unit directions of W2^2 between the 1-D projections."""
  angles = np.random.default_rng(seed).uniform(0, np.pi, directions)
  u = np.stack([np.cos(angles), np.sin(angles)])
  px, py = np.sort(x @ u, axis=0), np.sort(y @ u, axis=0)
  return float(np.sqrt(np.mean((px - py) ** 2)))


def run(sde, method, num, steps, options, seed=0):
  fn = jax.jit(lambda r: sampling.sample(r, sde, mixture_score(sde), (num, 2), method, steps, **options))
  x, nfe = fn(jax.random.PRNGKey(seed))
  return np.asarray(x, np.float64), int(nfe)


def mean_distance(sde, method, num, steps, options, truth, seeds):
  """(mean sliced-W2 to `truth` over sampler seeds 0..seeds-1, nfe)."""
  distances = []
  for seed in range(seeds):
    x, nfe = run(sde, method, num, steps, options, seed)
    distances.append(sliced_wasserstein(x, truth))
  return float(np.mean(distances)), nfe


def main(argv):
  del argv
  num, seeds = _NUM.value, _SEEDS.value
  truth = exact_samples(np.random.default_rng(1), num)
  floor = float(np.mean([sliced_wasserstein(exact_samples(np.random.default_rng(2 + s), num), truth)
                         for s in range(seeds)]))
  rows = []
  for sde_name in _SDES.value:
    sde = sde_lib.SDES[sde_name]()
    target, ref_nfe = mean_distance(sde, 'pc', num, 1000, {'predictor': 'euler_maruyama', 'corrector': 'none'},
                                    truth, seeds)
    print(f'{sde_name}: floor {floor:.4f}, euler_maruyama 1000 steps {target:.4f} ({ref_nfe} NFE)', flush=True)
    steps_swept = [steps for steps in STEPS if steps <= _MAX_STEPS.value]
    sweeps = {name: [(method, steps, options) for steps in steps_swept] for name, (method, options) in SAMPLERS.items()
              if not (name == 'pc ancestral' and sde_name == 'subvpsde')}
    sweeps['ode (Tsit5, adaptive)'] = [('ode', 1, {'rtol': tol, 'atol': tol}) for tol in ODE_TOLERANCES]
    if _ONLY.value:
      sweeps = {name: trials for name, trials in sweeps.items() if any(name.startswith(p) for p in _ONLY.value)}
    for name, trials in sweeps.items():
      best_small, reached = None, None
      for method, steps, options in trials:  # ever finer, until EM-1000's distance is reached
        distance, nfe = mean_distance(sde, method, num, steps, options, truth, seeds)
        if nfe <= 20:
          best_small = (nfe, distance)
        if distance <= target:
          reached = (nfe, distance)
          break
        if nfe > 2000:
          break
      rows.append({'sde': sde_name, 'sampler': name, 'nfe_to_reach_em1000': reached and reached[0],
                   'sw_at_nfe_le_20': best_small and best_small[1], 'nfe_le_20': best_small and best_small[0],
                   'em1000_sw': target, 'floor_sw': floor})
      print(json.dumps(rows[-1]), flush=True)
  print('\n| SDE | sampler | NFE to reach EM-1000 | SW at NFE <= 20 (NFE) |\n|---|---|---|---|')
  for r in rows:
    small = f"{r['sw_at_nfe_le_20']:.4f} ({r['nfe_le_20']})" if r['sw_at_nfe_le_20'] is not None else '-'
    print(f"| {r['sde']} | {r['sampler']} | {r['nfe_to_reach_em1000'] or '> sweep'} | {small} |")


if __name__ == '__main__':
  app.run(main)

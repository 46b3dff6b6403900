"""The score task end to end on a tiny pixel model: train, evaluate bits/dim, sample from the CLI."""

import math
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_score_config(sde: str = 'vpsde'):
  from configs import sde_vp_shapes
  config = sde_vp_shapes.get_config(sde)
  config.data.dataset = 'digits'
  config.data.image_size = 8
  config.data.channels = 1
  m = config.model
  m.nf, m.ch_mult, m.attn_resolutions, m.space_to_depth = 8, (1, 2), (4,), 1
  config.train.batch_size = 16
  config.train.num_steps = 6
  config.train.log_every = 1
  config.train.checkpoint_every = 6
  config.optim.warmup_steps = 2
  config.eval.every = 6
  config.eval.batch_size = 16
  config.eval.num_examples = 16
  config.eval.bpd_per_batch = 1
  config.eval.bpd_rtol = config.eval.bpd_atol = 1e-2  # one coarse ODE solve: this tests the wiring
  config.sampling.num_steps = 3
  config.sampling.num_samples = 4
  return config


@pytest.fixture(scope='module')
def score_workdir(tmp_path_factory):
  from lgm.train import trainer
  workdir = str(tmp_path_factory.mktemp('score'))
  trainer.train_and_evaluate(tiny_score_config(), workdir)
  return workdir


def test_training_reports_bits_per_dim_and_writes_samples(score_workdir):
  from lgm.train import metrics
  rows = metrics.read_metrics(score_workdir)
  final = [r for r in rows if 'eval/bpd' in r]
  assert final and final[-1]['step'] == 6
  bpd = final[-1]['eval/bpd']
  # An untrained-ish model on 8-bit data: positive, finite, and far from a degenerate 0 or 1e9.
  assert math.isfinite(bpd) and 0.5 < bpd < 50, bpd
  assert math.isfinite(final[-1]['eval/loss']) and final[-1]['eval/bpd_nfe'] > 1
  assert all(math.isfinite(r['train/loss']) for r in rows if 'train/loss' in r)
  assert os.path.exists(os.path.join(score_workdir, 'samples', 'samples_000006.png'))


def _run(*args):
  return subprocess.run([sys.executable, '-m', *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_sample_cli_takes_sampler_and_steps_and_refuses_prompts(score_workdir, tmp_path):
  out = str(tmp_path / 'x.png')
  result = _run('experiments.sample', f'--workdir={score_workdir}', f'--out={out}', '--num=4',
                '--sampler=ddim', '--steps=2')
  assert result.returncode == 0, result.stderr[-2000:]
  assert '3 network evaluations each' in result.stdout and os.path.exists(out)
  # The CLI's own check, and a sampler's (the sampler's others: tests/test_sde.py), each as one line.
  for flag, message in (('--prompt=a red circle', 'takes no --prompt (only --sampler, --steps)'),
                        ('--steps=0', 'num_steps must be an integer >= 1')):
    bad = _run('experiments.sample', f'--workdir={score_workdir}', f'--out={tmp_path / "y.png"}', flag)
    assert bad.returncode == 2 and message in bad.stderr, bad.stderr[-2000:]
    assert len(bad.stderr.strip().splitlines()) == 1
  assert not os.path.exists(tmp_path / 'y.png')


def test_loss_and_sde_must_agree():
  from lgm import stages
  config = tiny_score_config('vesde')
  config.loss.name = 'ddpm'
  with pytest.raises(ValueError, match="loss 'ddpm' needs sde.name='vpsde'"):
    stages.build_task(config)
  config.loss.name = 'sliced'
  with pytest.raises(ValueError, match=r"valid: \['ddpm', 'dsm', 'smld', 'x0'\]"):
    stages.build_task(config)


def test_training_times_follow_the_configured_distribution_and_evaluation_stays_uniform():
  """With loss.time_distribution='lognormal', log(sigma/alpha) at the training times is N(mean, std);
  the evaluation loss keeps t ~ U(eps, T) whatever the training distribution."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from lgm import stages

  seen = {}

  class Probe:
    def apply(self, variables, x, time_cond, **kwargs):
      seen['t'] = time_cond / 999.0
      return jnp.zeros_like(x)

  config = tiny_score_config()
  config.loss.time_distribution = 'lognormal'
  config.loss.log_sigma = (-1.2, 1.2)
  task = stages.build_task(config)
  task.model = Probe()
  x = jnp.zeros((20_000, 8, 8, 1))
  task._loss(None, x, jax.random.PRNGKey(0), train=True)
  log_ratio = -np.asarray(task.sde.log_snr(seen['t']))
  assert abs(log_ratio.mean() + 1.2) < 0.04 and abs(log_ratio.std() - 1.2) < 0.04
  task._loss(None, x, jax.random.PRNGKey(0), train=False)
  t = np.asarray(seen['t'])
  assert abs(t.mean() - 0.5) < 0.01 and abs(np.quantile(t, 0.9) - 0.9) < 0.01  # U(1e-5, 1)
  config.loss.time_distribution = 'beta'
  with pytest.raises(ValueError, match=r"loss.time_distribution='beta'; valid: \['uniform', 'lognormal'\]"):
    stages.build_task(config)


def test_score_fn_parameterisations_match_the_paper():
  """VP-continuous: s = -net / sigma(t) with net fed 999 t; VE: s = net fed sigma(t); DDPM: the grid index floor(t (N - 1))."""
  import jax.numpy as jnp
  import numpy as np
  from lgm import stages

  seen = {}

  class Probe:
    def apply(self, variables, x, time_cond, **kwargs):
      seen['time_cond'] = time_cond
      return jnp.ones_like(x)

  x, t = jnp.zeros((2, 8, 8, 1)), jnp.array([0.25, 0.5])
  for sde, loss, expected_cond, expected_score in (
      ('vpsde', 'dsm', lambda task: 999 * t, lambda task: -1 / task.sde.marginal_coefficients(t)[1]),
      ('vesde', 'dsm', lambda task: task.sde.sigma(t), lambda task: jnp.ones(2)),
      ('vpsde', 'ddpm', lambda task: jnp.floor(t * 999), lambda task: -1 / jnp.sqrt(
          1 - task.sde.alphas_cumprod[jnp.floor(t * 999).astype(int)]))):
    config = tiny_score_config(sde)
    config.loss.name = loss
    task = stages.build_task(config)
    task.model = Probe()
    score = task.score_fn(None)(x, t)
    np.testing.assert_allclose(seen['time_cond'], expected_cond(task), rtol=1e-5)
    np.testing.assert_allclose(score[:, 0, 0, 0], expected_score(task), rtol=1e-5)

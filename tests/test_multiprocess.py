"""`./launch.sh procs 2` (2 processes x 4 CPU devices, jax.distributed over loopback) = one 8-device process."""

import os
import subprocess

import numpy as np

from conftest import make_tiny_config, tiny_overrides
from lgm.train import metrics as metrics_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_two_processes_follow_the_single_process_trajectory(trained_workdir, tmp_path):
  workdir = str(tmp_path / 'procs')
  env = {**os.environ, 'LGM_LOCAL_DEVICES': '4', 'XLA_FLAGS': ''}
  result = subprocess.run(['./launch.sh', 'procs', '2', 'configs/vae_digits.py', workdir,
                           *tiny_overrides(make_tiny_config())],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  got = metrics_lib.read_metrics(workdir)
  want = metrics_lib.read_metrics(trained_workdir)
  assert [r['step'] for r in got] == [r['step'] for r in want]
  for key in ('train/loss', 'eval/psnr', 'eval/elbo_nats'):
    a = [r[key] for r in got if key in r]
    b = [r[key] for r in want if key in r]
    assert len(a) == len(b) > 0
    np.testing.assert_allclose(a, b, rtol=1e-4, err_msg=key)

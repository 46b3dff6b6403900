"""`./launch.sh procs 2` (2 processes x 4 CPU devices, jax.distributed over loopback) = one 8-device process."""

import os
import subprocess

import numpy as np

from conftest import COMPILE_FLAGS, make_tiny_config, tiny_overrides
from lgm.train import metrics as metrics_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_two_processes_follow_the_single_process_trajectory(trained_workdir, tmp_path):
  workdir = str(tmp_path / 'procs')
  env = {**os.environ, 'LGM_LOCAL_DEVICES': '4', 'XLA_FLAGS': COMPILE_FLAGS}  # launch.sh sets the device count
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


def test_a_busy_work_directory_stops_every_process_of_a_run(tmp_path):
  """Process 0 cannot take the lock: it tells process 1, and both stop at once instead of process 1
  waiting for process 0 in a collective."""
  from lgm.train import lock as lock_lib
  workdir = str(tmp_path / 'busy')
  env = {**os.environ, 'LGM_LOCAL_DEVICES': '4', 'XLA_FLAGS': COMPILE_FLAGS}  # launch.sh sets the device count
  with lock_lib.hold(workdir, enabled=True):
    result = subprocess.run(['./launch.sh', 'procs', '2', 'configs/vae_digits.py', workdir,
                             *tiny_overrides(make_tiny_config())],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode != 0
  assert f'error: {workdir} is in use by pid {os.getpid()}' in result.stderr
  with open(os.path.join(workdir, 'logs', 'process_1.log')) as f:
    assert f'error: {workdir} is in use by another run (process 0 could not take its lock).' in f.read()
  assert sorted(os.listdir(workdir)) == ['lock', 'logs']  # nothing else written

"""The entry points on a finished tiny run: evaluate, explore, inspect, and their input errors."""

import glob
import os
import pathlib
import shutil
import subprocess
import sys

import jax
import numpy as np
import PIL.Image
import pytest
from absl import flags
from ml_collections import config_flags

from experiments import common
from lgm import provenance, stages
from lgm.train import metrics as metrics_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_module(*args):
  return subprocess.run([sys.executable, '-m', *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_evaluate_reproduces_the_final_training_evaluation(trained_workdir, tmp_path):
  workdir = str(tmp_path / 'copy')
  shutil.copytree(trained_workdir, workdir)
  result = run_module('experiments.evaluate', f'--workdir={workdir}')
  assert result.returncode == 0, result.stderr[-2000:]
  records = metrics_lib.read_metrics(workdir)
  during_training = [r for r in records if 'eval/psnr' in r][-2]
  appended = records[-1]
  assert appended['step'] == during_training['step'] == 40
  for key in ('eval/psnr', 'eval/elbo_nats', 'eval/bpd'):
    np.testing.assert_allclose(appended[key], during_training[key], rtol=1e-5, err_msg=key)
  assert 'eval/psnr=' in result.stdout


def test_explore_writes_the_four_figures(trained_workdir):
  from experiments import explore
  paths = explore.explore(trained_workdir, num=16, max_examples=200)
  assert set(paths) == {'semantic_map', 'interpolation', 'prior_samples', 'neighbours'}
  for path in paths.values():
    assert path.startswith(os.path.join(trained_workdir, 'samples'))
    with PIL.Image.open(path) as image:
      assert min(image.size) > 50


def test_inspect_prints_the_true_parameter_count():
  from configs import vae_shapes
  from lgm import stages
  result = run_module('experiments.inspect', '--config=configs/vae_shapes.py')
  assert result.returncode == 0, result.stderr[-2000:]
  lines = result.stdout.strip().splitlines()
  params = jax.eval_shape(stages.build_task(vae_shapes.get_config()).init, jax.random.PRNGKey(0))
  assert lines[-1] == f'params: {sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))}'
  assert float(lines[-2].split(': ')[1]) > 1e7  # flops_per_example


def test_unknown_config_key_names_the_valid_keys():
  with pytest.raises(KeyError, match="unknown config key 'model.chanels'; valid keys at model: ch, ch_mult"):
    common.check_config_overrides(['--config=configs/vae_shapes.py', '--config.model.chanels=3'])
  common.check_config_overrides(['--config=configs/vae_shapes.py', '--config.model.ch=16'])


SHIPPED_CONFIGS = sorted(os.path.relpath(path, ROOT)
                         for path in glob.glob(os.path.join(ROOT, 'configs', '**', '*.py'), recursive=True)
                         if 'def get_config' in pathlib.Path(path).read_text())


@pytest.mark.parametrize('path', SHIPPED_CONFIGS)
def test_every_shipped_config_loads_as_the_cli_loads_it(path):
  """The override check sees the config that config_flags gives the entry point (a `:ARG`-less
  `--config=PATH` once crashed configs/sde_ve_shapes.py here)."""
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, flag_values=flag_values)
  flag_values(['prog', f'--config={os.path.join(ROOT, path)}'])
  config = common._config_from_argv([f'--config={os.path.join(ROOT, path)}'])
  assert config.to_dict() == flag_values.config.to_dict()


def test_cli_errors_are_one_line_and_write_nothing(tmp_path):
  workdir = tmp_path / 'w'
  result = run_module('experiments.train', '--config=configs/vae_digits.py', f'--workdir={workdir}',
                      '--config.train.batch_size=12', '--config.mesh.data=-1')
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1].startswith('error: config.train.batch_size=12 is not divisible')
  assert not workdir.exists()
  result = run_module('experiments.evaluate', f'--workdir={tmp_path}/nothing')
  assert result.returncode == 2 and 'not an lgm work directory' in result.stderr
  result = run_module('experiments.train', '--config=configs/vae_digits.py', f'--workdir={workdir}',
                      '--config.train.num_steps=0', '--config.model.ch_mult=abc')
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1] == (
      "error: bad config values: model.ch_mult=('abc',) must be a list of positive integers; train.num_steps=0 "
      'must be an integer >= 1; fix them with --config.KEY=VALUE or in the config file.')
  assert not workdir.exists()


def test_sample_writes_a_grid_of_prior_samples_and_refuses_text_flags(trained_workdir, tmp_path):
  out = tmp_path / 'grid.png'
  result = run_module('experiments.sample', f'--workdir={trained_workdir}', f'--out={out}', '--num=9')
  assert result.returncode == 0, result.stderr[-2000:]
  with PIL.Image.open(out) as image:
    assert image.size == (3 * 16 + 4, 3 * 16 + 4)  # 3 x 3 tiles of 8 px upscaled twice, 1 px padding
  recipe = provenance.read_metadata(str(out))
  assert recipe['model'] == provenance.model_id(stages.load_trained(trained_workdir).params)  # EMA: what it sampled
  assert (recipe['seed'], recipe['num']) == (0, 9)
  result = run_module('experiments.sample', f'--workdir={trained_workdir}', f'--out={out}', '--prompt=a red circle')
  assert result.returncode == 2 and 'takes no --prompt' in result.stderr


def test_launch_tpu_dry_run_prints_the_exact_commands():
  import shlex
  args = ['./launch.sh', 'tpu', '--dry-run', 'my-tpu', 'us-central2-b', 'configs/vae_shapes.py', '/mnt/runs/x',
          '--config.data.dataset=folder:/mnt/my photos']
  result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=60)
  assert result.returncode == 0, result.stderr
  tar, scp, ssh = [shlex.split(line) for line in result.stdout.strip().splitlines()]
  assert tar[:3] == ['tar', '-C', ROOT] and scp[:4] == ['gcloud', 'compute', 'tpus', 'tpu-vm']
  assert ssh[4:6] == ['ssh', 'my-tpu'] and '--worker=all' in ssh
  remote = ssh[-1][len('--command='):]
  train = shlex.split(remote.split(' && ')[-1])
  assert train == ['LGM_DISTRIBUTED=auto', 'python', '-m', 'experiments.train', '--config=configs/vae_shapes.py',
                   '--workdir=/mnt/runs/x', '--config.data.dataset=folder:/mnt/my photos']
  assert "pip install -q -e '.[cloud]'" in remote  # gcsfs on every worker, for gs:// work directories
  result = subprocess.run(args[:6] + ['gs://bucket/x'], cwd=ROOT, capture_output=True, text=True, timeout=60)
  assert result.returncode == 0 and '--workdir=gs://bucket/x' in result.stdout.splitlines()[-1]

"""Sweeps: each point in its own work directory with its own config, a rerun that changes no file, a
half-finished point resumed to the figures of an uninterrupted run, bad points refused before anything is
written; compare's table and figures; --print_commands."""

import csv
import glob
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest

from conftest import ROOT, checkpoint_steps, make_tiny_config, set_keys, tree_digest
from lgm import compare, sweeps
from lgm.train import metrics as metrics_lib
from lgm.train import trainer

# Keys that leave the compiled programs alone (the seed and the flips are inputs), and one resolution level:
# one compilation serves all the runs of this file.
POINTS = sweeps.product(sweeps.sweep('seed', [0, 1]), sweeps.sweep('data.random_flip', [False, True]))
NAMES = ['seed=0,random_flip=False', 'seed=0,random_flip=True', 'seed=1,random_flip=False', 'seed=1,random_flip=True']


def base_config():
  return make_tiny_config(**{'model.ch_mult': (1,), 'train.num_steps': 10, 'train.checkpoint_every': 5,
                             'train.log_every': 5, 'eval.every': 10, 'eval.num_examples': 16})


@pytest.fixture(scope='module')
def swept(tmp_path_factory):
  """The 2 x 2 sweep, trained once: (its directory, what run_sweep returned)."""
  workdir = str(tmp_path_factory.mktemp('sweep'))
  return workdir, sweeps.run_sweep(base_config(), POINTS, workdir)


def test_names_say_the_values_and_stay_unique():
  assert sweeps.point_names(POINTS) == NAMES
  assert sweeps.point_names([{'vae.train.num_steps': 5, 'score.train.num_steps': 7, 'data.dataset': 'folder:/a b'}]) \
      == ['vae.train.num_steps=5,score.train.num_steps=7,dataset=folder__a_b']
  assert sweeps.point_names([{}]) == ['base']
  long = sweeps.point_names([{'data.dataset': 'x' * 300}, {'data.dataset': 'x' * 299 + 'y'}])
  assert all(len(name) <= 120 for name in long) and long[0] != long[1]
  with pytest.raises(ValueError, match="get the same directory name 'dataset=a_b'"):
    sweeps.point_names([{'data.dataset': 'a/b'}, {'data.dataset': 'a b'}])
  with pytest.raises(ValueError, match='seed on two axes'):
    sweeps.product(sweeps.sweep('seed', [0]), sweeps.sweep('seed', [1]))


def test_every_point_trains_in_its_own_directory_and_a_rerun_changes_nothing(swept, monkeypatch):
  workdir, results = swept
  assert sorted(os.listdir(workdir)) == sorted(NAMES + ['sweep.json'])
  with open(os.path.join(workdir, 'sweep.json')) as f:
    assert json.load(f) == {'config': None, 'overrides': {},
                            'points': [{'name': n, 'overrides': p} for n, p in zip(NAMES, POINTS)]}
  for name, point in zip(NAMES, POINTS):
    with open(os.path.join(workdir, name, 'config.json')) as f:
      assert json.load(f) == json.loads(set_keys(base_config(), point).to_json())
    assert checkpoint_steps(os.path.join(workdir, name)) == [5, 10]
    assert results[name] == metrics_lib.last_evaluation(os.path.join(workdir, name))
  assert len({results[name]['eval/psnr'] for name in NAMES}) == 4  # four different runs

  before = tree_digest(workdir)

  def no_training(config, workdir):
    raise AssertionError(f'trained {workdir} again')
  monkeypatch.setattr(trainer, 'train_and_evaluate', no_training)
  assert sweeps.run_sweep(base_config(), POINTS, workdir) == results
  assert tree_digest(workdir) == before


def test_a_half_finished_point_resumes_to_the_figures_of_an_uninterrupted_run(swept, tmp_path, caplog):
  """The state a kill between a point's checkpoints of steps 5 and 10 leaves: its last checkpoint gone."""
  workdir = str(tmp_path / 'sweep')
  shutil.copytree(swept[0], workdir)
  half = os.path.join(workdir, NAMES[3])
  shutil.rmtree(os.path.join(half, 'checkpoints', '10'))
  os.remove(os.path.join(half, 'checkpoints', 'digest-10.json'))
  others = {name: tree_digest(os.path.join(workdir, name)) for name in NAMES[:3]}
  caplog.set_level('INFO')
  sweeps.run_sweep(base_config(), POINTS, workdir)
  assert 'Resumed from the checkpoint of step 5' in caplog.text
  assert checkpoint_steps(half) == [5, 10]
  assert {name: tree_digest(os.path.join(workdir, name)) for name in NAMES[:3]} == others

  direct = str(tmp_path / 'direct')
  trainer.train_and_evaluate(set_keys(base_config(), POINTS[3]), direct)
  resumed, uninterrupted = metrics_lib.read_metrics(half), metrics_lib.read_metrics(direct)
  assert [r['step'] for r in resumed] == [r['step'] for r in uninterrupted] == [5, 10, 10]
  for a, b in zip(resumed, uninterrupted):
    assert a.keys() == b.keys()
    for key in a.keys() - {'train/images_per_sec'}:
      np.testing.assert_allclose(a[key], b[key], rtol=1e-6, atol=1e-6, err_msg=key)


@pytest.mark.parametrize('bad, error, message', [
    ({'model.chh': 8}, KeyError, "sweep point chh=8: unknown config key 'model.chh'; valid keys at model: ch, "),
    ({'optim.learning_rate': '3e-3'}, ValueError, "optim.learning_rate='3e-3' has type str; the config's"),
    ({'model.ch': 8.5}, ValueError, r"model.ch=8.5 has type float; the config's model.ch is 8 \(int\)"),
    ({'optim.learning_rate': -1.0}, ValueError, 'optim.learning_rate=-1.0 must be > 0'),
])
def test_a_bad_point_is_refused_in_one_line_before_anything_is_written(bad, error, message, tmp_path):
  workdir = tmp_path / 'sweep'
  with pytest.raises(error, match=message) as raised:
    sweeps.run_sweep(base_config(), POINTS + [bad], str(workdir))  # the bad point last: all are checked first
  assert '\n' not in str(raised.value.args[0])
  assert not workdir.exists()


def test_a_url_that_cannot_hold_work_directories_is_refused_before_anything_is_written(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  with pytest.raises(ValueError, match='s3://bucket/sweep: a work directory is a gs:// bucket or a path'):
    sweeps.run_sweep(base_config(), POINTS, 's3://bucket/sweep')
  assert os.listdir(tmp_path) == []


def test_a_config_without_a_sweep_is_one_line():
  with pytest.raises(ValueError, match=r'^configs/vae_shapes.py defines no get_sweep\(arg=None\).$'):
    sweeps.load_points('configs/vae_shapes.py')


def test_compare_writes_a_row_per_run_and_the_figures(swept, tmp_path):
  runs = str(tmp_path / 'runs')
  shutil.copytree(swept[0], runs)
  table, written = compare.compare(sorted(glob.glob(os.path.join(runs, '*'))))  # sweep.json is skipped
  assert [os.path.basename(p) for p in written] == [  # no final_vs_random_flip.png: a bool is not a number
      'compare.md', 'compare.csv', 'metric_vs_step.png', 'final_vs_seed.png']
  assert all(os.path.dirname(p) == runs for p in written)  # the runs' parent by default
  lines = table.splitlines()
  assert lines[0] == ('| run | data.random_flip | seed | step | eval/bpd | eval/elbo_nats | eval/kl_nats | '
                      'eval/psnr | eval/recon_bpd | train/loss |')
  assert [line.split(' | ')[0][2:] for line in lines[2:]] == [NAMES[0], NAMES[2], NAMES[1], NAMES[3]]
  with open(os.path.join(runs, 'compare.md')) as f:
    assert f.read().startswith(table + '\n')
  with open(os.path.join(runs, 'compare.csv')) as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 4
  for row in rows:
    point = POINTS[NAMES.index(row['run'])]
    assert (row['seed'], row['data.random_flip']) == (str(point['seed']), str(point['data.random_flip']))
    assert row['step'] == '10'
    final = metrics_lib.last_evaluation(os.path.join(runs, row['run']))
    assert float(row['eval/psnr']) == final['eval/psnr']
  for path in written[2:]:
    with PIL.Image.open(path) as image:
      assert min(image.size) > 100


def test_print_commands_prints_a_launch_line_per_point_and_creates_nothing(tmp_path):
  workdir = str(tmp_path / 'sweep')
  result = subprocess.run([sys.executable, '-m', 'experiments.sweep', '--config=configs/vae_digits.py',
                           f'--workdir={workdir}', '--print_commands', '--config.train.num_steps=7'],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.splitlines() == [
      f'./launch.sh local configs/vae_digits.py {workdir}/ch={ch},learning_rate={lr} --config.train.num_steps=7 '
      f'--config.model.ch={ch} --config.optim.learning_rate={lr}' for ch in (16, 32, 48) for lr in (0.001, 0.003)]
  assert os.listdir(tmp_path) == []

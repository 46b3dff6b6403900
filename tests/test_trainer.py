"""The one trainer: same numbers on any mesh, exact resumption, loud failures that keep what was saved."""

import json
import os
import shutil
import signal

import jax
import numpy as np
import pytest

from conftest import checkpoint_steps, make_tiny_config, start_and_wait_for_a_checkpoint, tree_digest
from lgm.train import mesh as mesh_lib
from lgm.train import metrics as metrics_lib
from lgm.train import state as state_lib
from lgm.train import trainer


def losses_by_step(workdir):
  return {r['step']: r['train/loss'] for r in metrics_lib.read_metrics(workdir) if 'train/loss' in r}


def test_eight_devices_with_fsdp_match_one_device(trained_workdir, tmp_path, monkeypatch):
  """8-device data parallel, and 4 x FSDP 2 (every parameter split), against one device: first 20 steps."""
  monkeypatch.setattr(mesh_lib, 'MIN_SHARDED_SIZE', 1)
  quiet = {'train.checkpoint_every': 40, 'eval.every': 40}  # same program, fewer saves
  sharded = str(tmp_path / 'fsdp')
  trainer.train_and_evaluate(make_tiny_config(mesh={'data': 4, 'fsdp': 2}, **quiet), sharded)
  single = str(tmp_path / 'single')
  trainer.train_and_evaluate(make_tiny_config(mesh={'data': 1}, **quiet), single, devices=jax.devices()[:1])
  reference = losses_by_step(single)
  assert sorted(reference) == list(range(1, 41))
  for other in (losses_by_step(trained_workdir), losses_by_step(sharded)):
    a = np.array([reference[step] for step in range(1, 21)])
    b = np.array([other[step] for step in range(1, 21)])
    np.testing.assert_allclose(b, a, rtol=1e-4)
  assert a[-1] < a[0]  # and it learns


def test_param_shardings_split_the_largest_divisible_dimension():
  mesh = mesh_lib.make_mesh({'data': 2, 'fsdp': 4})
  tree = {'kernel': jax.ShapeDtypeStruct((3, 3, 64, 128), np.float32),
          'bias': jax.ShapeDtypeStruct((128,), np.float32),
          'odd': jax.ShapeDtypeStruct((9, 4099), np.float32)}
  specs = jax.tree.map(lambda s: tuple(s.spec), mesh_lib.param_shardings(mesh, tree))
  assert specs['kernel'] == (None, None, None, 'fsdp')
  assert specs['bias'] == ()  # small: replicated
  assert specs['odd'] == ()   # nothing divisible by 4


def test_mesh_shape_resolution_and_errors():
  assert mesh_lib.mesh_shape({'data': -1, 'fsdp': 2}, 8) == {'data': 4, 'fsdp': 2}
  with pytest.raises(ValueError, match='more than one -1'):
    mesh_lib.mesh_shape({'data': -1, 'fsdp': -1}, 8)
  with pytest.raises(ValueError, match='needs 4 devices, but 8'):
    mesh_lib.mesh_shape({'data': 4}, 8)


def test_sigterm_checkpoints_the_current_step_and_exits_cleanly(trained_workdir, tmp_path):
  config = make_tiny_config()
  workdir = str(tmp_path / 'terminated')
  proc = start_and_wait_for_a_checkpoint(workdir, config)
  checkpoints = os.path.join(workdir, 'checkpoints')
  proc.send_signal(signal.SIGTERM)
  assert proc.wait(timeout=120) == 0, proc.stderr.read()[-2000:]
  last_logged = max(r['step'] for r in metrics_lib.read_metrics(workdir))
  saved = max(int(d) for d in os.listdir(checkpoints) if d.isdigit())
  assert saved == last_logged < config.train.num_steps


def test_a_workdir_trained_with_another_config_is_refused_and_left_untouched(trained_workdir):
  before = tree_digest(trained_workdir)
  with pytest.raises(ValueError, match=r'another config \(model.ch: 8 -> 16'):
    trainer.train_and_evaluate(make_tiny_config(**{'model.ch': 16}), trained_workdir)
  assert tree_digest(trained_workdir) == before


def test_only_keys_that_change_what_is_learned_block_a_resume():
  from lgm.train import workdir as workdir_lib
  old = make_tiny_config()
  longer = make_tiny_config(**{'train.num_steps': 80, 'eval.every': 5, 'train.log_every': 3})
  assert workdir_lib.config_differences(old, longer) == []
  other = make_tiny_config(**{'optim.learning_rate': 1e-2, 'data.dataset': 'shapes'})
  assert workdir_lib.config_differences(old, other) == ['data.dataset: digits -> shapes',
                                                        'optim.learning_rate: 0.003 -> 0.01']


def test_batch_size_not_divisible_by_devices_fails_before_writing(tmp_path):
  workdir = tmp_path / 'w'
  with pytest.raises(ValueError, match='not divisible by the 8 devices; use a multiple of 8'):
    trainer.train_and_evaluate(make_tiny_config(**{'train.batch_size': 12}), str(workdir))
  assert not workdir.exists()


def test_missing_dataset_folder_is_a_one_line_error(tmp_path):
  with pytest.raises(ValueError) as error:
    trainer.train_and_evaluate(make_tiny_config(**{'data.dataset': f'folder:{tmp_path}/nowhere'}),
                               str(tmp_path / 'w'))
  assert '\n' not in str(error.value)
  assert not (tmp_path / 'w').exists()


def test_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
  real = state_lib.make_train_step

  def poisoned_after_12(*args, **kwargs):
    step_fn = real(*args, **kwargs)
    calls = []

    def step(state, batch):
      state, metrics = step_fn(state, batch)
      calls.append(1)
      if len(calls) > 12:
        metrics = {**metrics, 'loss': metrics['loss'] * np.nan}
      return state, metrics
    return step

  monkeypatch.setattr(state_lib, 'make_train_step', poisoned_after_12)
  workdir = str(tmp_path / 'nan')
  with pytest.raises(trainer.NonFiniteLossError, match='loss or gradient norm is nan at step 13.*checkpoint \\(step 10\\) is intact'):
    trainer.train_and_evaluate(make_tiny_config(), workdir)
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['10', 'digest-10.json']
  assert max(r['step'] for r in metrics_lib.read_metrics(workdir)) == 12


def test_metrics_and_work_directory_files(trained_workdir):
  records = metrics_lib.read_metrics(trained_workdir)
  assert all('step' in r for r in records)
  evals = [r for r in records if 'eval/psnr' in r]
  assert [r['step'] for r in evals] == [20, 40]
  assert {'eval/elbo_nats', 'eval/bpd', 'eval/kl_nats'} <= set(evals[-1])
  assert evals[-1]['eval/elbo_nats'] < 0 and evals[-1]['eval/bpd'] > 0
  # bits/dim is the ELBO in bits over the 8 x 8 x 1 dimensions.
  np.testing.assert_allclose(evals[-1]['eval/bpd'], -evals[-1]['eval/elbo_nats'] / (64 * np.log(2)), rtol=1e-5)
  with open(os.path.join(trained_workdir, 'config.json')) as f:
    assert json.load(f)['model']['ch'] == 8
  samples = sorted(os.listdir(os.path.join(trained_workdir, 'samples')))
  assert 'reconstructions_000040.png' in samples and 'prior_samples_000040.png' in samples
  assert os.listdir(os.path.join(trained_workdir, 'tb'))


def test_several_steps_per_call_follow_the_single_step_trajectory_and_checkpoint_at_the_same_steps(
    trained_workdir, tmp_path):
  """train.steps_per_call=2 (a lax.scan over 2 batches) against the tiny run's single steps; then resumed
  from its step-20 checkpoint."""
  from lgm import stages
  workdir = str(tmp_path / 'scan')
  trainer.train_and_evaluate(make_tiny_config(**{'train.steps_per_call': 2, 'train.log_every': 2}), workdir)
  assert checkpoint_steps(workdir) == checkpoint_steps(trained_workdir) == [20, 30, 40]
  single, scanned = metrics_lib.read_metrics(trained_workdir), metrics_lib.read_metrics(workdir)
  evals = lambda records: {r['step']: r for r in records if 'eval/psnr' in r}
  for step, record in evals(single).items():
    for key, value in record.items():
      np.testing.assert_allclose(evals(scanned)[step][key], value, rtol=1e-6, err_msg=f'{key} at step {step}')
  per_step = losses_by_step(trained_workdir)
  pairs = losses_by_step(workdir)  # the mean of the two steps of each call
  assert sorted(pairs) == list(range(2, 41, 2))
  for step, loss in pairs.items():
    np.testing.assert_allclose(loss, (per_step[step - 1] + per_step[step]) / 2, rtol=1e-6, err_msg=f'step {step}')

  for step in (30, 40):  # resumed from step 20, as after a kill
    shutil.rmtree(os.path.join(workdir, 'checkpoints', str(step)))
    os.remove(os.path.join(workdir, 'checkpoints', f'digest-{step}.json'))
  trainer.train_and_evaluate(make_tiny_config(**{'train.steps_per_call': 2, 'train.log_every': 2}), workdir)
  assert checkpoint_steps(workdir) == [20, 30, 40]
  resumed, reference = stages.load_trained(workdir), stages.load_trained(trained_workdir)
  for a, b in zip(jax.tree.leaves(resumed.params), jax.tree.leaves(reference.params), strict=True):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


def test_step_counts_that_steps_per_call_does_not_divide_are_one_line(tmp_path):
  config = make_tiny_config(**{'train.steps_per_call': 4})  # log_every 1, checkpoint_every 10, eval.every 20
  with pytest.raises(ValueError, match=r'train.log_every=1 must be a multiple of train.steps_per_call=4; '
                                       r'train.checkpoint_every=10 must be a multiple of train.steps_per_call=4'):
    trainer.train_and_evaluate(config, str(tmp_path / 'w'))
  assert not (tmp_path / 'w').exists()

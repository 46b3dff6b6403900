"""Fault injection: a work directory survives kills, damage, a full disk, a second writer and reruns.

Every test ends by comparing with the uninterrupted tiny run (`trained_workdir`) or with checksums taken
before the fault: nothing saved is lost and nothing half-written is left behind.
"""

import errno
import json
import os
import shutil
import signal
import threading
import time

import ml_collections
import numpy as np
import pytest

from conftest import (checkpoint_steps, make_tiny_config, set_keys, train_cli, tree_digest, wait_for)
from experiments import common
from lgm import config_checks, files, jobs, reports, stages
from lgm.train import checkpoints as checkpoints_lib
from lgm.train import lock as lock_lib
from lgm.train import metrics as metrics_lib
from lgm.train import trainer


def assert_same_run(workdir, reference):
  """Every metric of every step equals the uninterrupted run's (timings aside), each step logged once."""
  records, expected = metrics_lib.read_metrics(workdir), metrics_lib.read_metrics(reference)
  keys = [(r['step'], k) for r in records for k in r if k != 'step']
  assert len(keys) == len(set(keys)), 'a step was logged twice'
  assert [r['step'] for r in records] == [r['step'] for r in expected]
  for got, want in zip(records, expected):
    for key in want:
      if not key.endswith('images_per_sec'):
        np.testing.assert_allclose(got[key], want[key], rtol=1e-6, err_msg=f'{key} at step {want["step"]}')


def copy_of(trained_workdir, tmp_path, name='copy'):
  workdir = str(tmp_path / name)
  shutil.copytree(trained_workdir, workdir)
  return workdir


def largest_data_file(workdir, step):
  files = [os.path.join(root, name) for root, _, names in os.walk(os.path.join(workdir, 'checkpoints', str(step)))
           for name in names]
  return max(files, key=os.path.getsize)


# --- kills, and a second writer -----------------------------------------------------------------------
def test_sigkills_during_a_checkpoint_write_and_at_a_random_step_then_resume_equal_an_uninterrupted_run(
    trained_workdir, tmp_path):
  config = make_tiny_config()  # the config of `trained_workdir`
  workdir = str(tmp_path / 'killed')
  checkpoints = os.path.join(workdir, 'checkpoints')

  # 1. Killed while orbax writes the checkpoint of step 10 (its temporary directory exists).
  proc = train_cli(workdir, config)
  writing = wait_for(lambda: os.path.isdir(checkpoints) and any('.orbax-checkpoint-tmp' in d
                                                                 for d in os.listdir(checkpoints)), proc)
  assert writing, 'the run ended before its first checkpoint write could be caught: ' + proc.stderr.read()[-2000:]
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()

  # 2. Resumed, and while it runs a second trainer is refused at once, naming the first.
  proc = train_cli(workdir, config)
  assert wait_for(lambda: checkpoint_steps(workdir), proc, poll=0.01), proc.stderr.read()[-2000:]
  busy = rf'{workdir} is in use by pid {proc.pid} on .*experiments/train\.py'
  with pytest.raises(lock_lib.WorkdirBusyError, match=busy):
    trainer.train_and_evaluate(config, workdir)

  # 3. Killed again at a random step past the first checkpoint, before the end.
  kill_at = int(np.random.default_rng(0).integers(12, 28))
  logged = lambda: os.path.exists(os.path.join(workdir, 'metrics.jsonl')) and max(
      [r['step'] for r in metrics_lib.read_metrics(workdir)], default=0) >= kill_at
  assert wait_for(logged, proc, poll=0.005), proc.stderr.read()[-2000:]
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()

  # 4. The last run takes over the dead holder's lock, finishes, and keeps keep_checkpoints checkpoints.
  proc = train_cli(workdir, config)
  assert proc.wait(timeout=300) == 0, proc.stderr.read()[-2000:]
  assert 'taking over the lock left by pid' in proc.stderr.read()
  assert_same_run(workdir, trained_workdir)
  assert checkpoint_steps(workdir) == [20, 30, 40]
  assert sorted(d for d in os.listdir(checkpoints) if not d.isdigit()) == [
      'digest-20.json', 'digest-30.json', 'digest-40.json']  # no partial write left


def test_a_lock_left_by_a_dead_process_is_taken_over_and_a_live_one_is_not(tmp_path, caplog):
  workdir = str(tmp_path / 'w')
  os.makedirs(workdir)
  with open(os.path.join(workdir, lock_lib.LOCK_FILE), 'w') as f:
    json.dump({'host': 'elsewhere', 'pid': 4242, 'command': 'python -m experiments.train'}, f)  # no flock: dead
  with lock_lib.hold(workdir):
    with open(os.path.join(workdir, lock_lib.LOCK_FILE)) as f:
      assert json.load(f)['pid'] == os.getpid()
    with lock_lib.hold(workdir):  # the holder may re-enter (a job holds its directory, its stages theirs)
      pass
  assert 'taking over the lock left by pid 4242 on elsewhere' in caplog.text
  assert os.path.getsize(os.path.join(workdir, lock_lib.LOCK_FILE)) == 0  # released cleanly


# --- damaged checkpoints and a torn metrics line --------------------------------------------------------
@pytest.mark.parametrize('damage', ['truncated', 'overwritten', 'deleted'])
def test_a_damaged_latest_checkpoint_is_named_in_one_line_and_the_previous_one_is_read(
    trained_workdir, tmp_path, damage, caplog):
  workdir = copy_of(trained_workdir, tmp_path)
  path = largest_data_file(workdir, 40)
  size = os.path.getsize(path)
  if damage == 'truncated':
    os.truncate(path, size // 2)
  elif damage == 'overwritten':
    with open(path, 'r+b') as f:
      f.seek(size // 2)
      f.write(b'\x00' * 64)  # same size: only the digest can tell
  else:
    os.remove(path)
  before = tree_digest(workdir)
  assert stages.load_trained(workdir).step == 30
  relative = os.path.relpath(path, os.path.join(workdir, 'checkpoints'))
  warning = [r.getMessage() for r in caplog.records if 'cannot be read' in r.getMessage()]
  assert len(warning) == 1 and '\n' not in warning[0]
  assert f'checkpoint of step 40 in {workdir}/checkpoints cannot be read (file {relative} ' in warning[0]
  assert tree_digest(workdir) == before  # a reader moves nothing


def test_training_moves_a_damaged_checkpoint_aside_drops_a_torn_line_and_ends_as_the_uninterrupted_run(
    trained_workdir, tmp_path):
  workdir = copy_of(trained_workdir, tmp_path)
  os.truncate(largest_data_file(workdir, 40), 100)
  os.remove(os.path.join(workdir, 'checkpoints', 'digest-30.json'))  # as if killed before 30 was digested
  with open(os.path.join(workdir, 'metrics.jsonl'), 'a') as f:
    f.write('{"step": 41, "train/lo')  # killed in the middle of a line
  trainer.train_and_evaluate(make_tiny_config(), workdir)  # resumes from 30
  assert_same_run(workdir, trained_workdir)
  names = sorted(os.listdir(os.path.join(workdir, 'checkpoints')))
  assert names == ['20', '30', '40', 'corrupt-40', 'digest-20.json', 'digest-30.json', 'digest-40.json']
  assert not [f for f in os.listdir(workdir) if '.tmp' in f]


def test_an_unverified_damaged_checkpoint_falls_back_with_one_line_not_pages_of_tracebacks(trained_workdir, tmp_path):
  """Without a digest, orbax reads the damaged file: its reader threads' tracebacks must not reach the user."""
  import subprocess
  import sys
  from conftest import ROOT
  workdir = copy_of(trained_workdir, tmp_path)
  path = largest_data_file(workdir, 40)
  with open(path, 'r+b') as f:
    f.write(os.urandom(os.path.getsize(path)))
  os.remove(os.path.join(workdir, 'checkpoints', 'digest-40.json'))
  result = subprocess.run([sys.executable, '-m', 'experiments.evaluate', f'--workdir={workdir}', '--num_samples=16'],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.startswith('step 30: ')
  lines = [line for line in result.stderr.splitlines() if 'libtpu' not in line]
  assert len(lines) <= 3, '\n'.join(lines[:40])
  assert any('checkpoint of step 40' in line and 'cannot be read' in line for line in lines)


def test_an_intact_checkpoint_that_the_code_cannot_restore_is_refused_in_one_line_and_not_moved(
    trained_workdir, tmp_path, monkeypatch):
  """Sound files that another model's code wrote (here: layer norms where the run had group norms) are not
  damage: resuming stops with one line and moves nothing aside."""
  import flax.linen as nn
  from lgm.models import layers
  workdir = copy_of(trained_workdir, tmp_path)
  directory = os.path.join(workdir, 'checkpoints')
  before = tree_digest(directory)
  monkeypatch.setattr(layers, 'group_norm', lambda channels, dtype, groups=None: nn.LayerNorm(dtype=dtype))
  with pytest.raises(checkpoints_lib.CheckpointError) as error:
    trainer.train_and_evaluate(make_tiny_config(**{'train.num_steps': 50}), workdir)
  message = str(error.value)
  assert '\n' not in message and 'checkpoint of step 40' in message and 'is intact' in message, message
  assert 'does not fit the model' in message and 'GroupNorm_0/scale' in message and 'LayerNorm_0/scale' in message
  assert tree_digest(directory) == before  # no checkpoint moved aside, none written


def test_when_no_checkpoint_can_be_read_the_run_stops_and_does_not_start_over(trained_workdir, tmp_path):
  workdir = copy_of(trained_workdir, tmp_path)
  for step in (20, 30, 40):
    os.truncate(largest_data_file(workdir, step), 10)
  metrics_before = metrics_lib.read_metrics(workdir)
  with pytest.raises(checkpoints_lib.CheckpointError) as error:
    trainer.train_and_evaluate(make_tiny_config(), workdir)
  message = str(error.value)
  assert '\n' not in message and 'no checkpoint in' in message and 'step 20: file' in message
  assert checkpoint_steps(workdir) == []  # all three moved aside, none written anew
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['corrupt-20', 'corrupt-30', 'corrupt-40']
  assert metrics_lib.read_metrics(workdir) == metrics_before


def test_a_torn_last_metrics_line_is_dropped_with_a_warning_and_rewritten_atomically(tmp_path, caplog):
  workdir = str(tmp_path)
  with open(tmp_path / 'metrics.jsonl', 'w') as f:
    f.write('{"step": 1, "train/loss": 2.0}\n{"step": 2, "train/loss": 1.5}\n{"step": 3, "train/l')
  assert metrics_lib.read_metrics(workdir) == [{'step': 1, 'train/loss': 2.0}, {'step': 2, 'train/loss': 1.5}]
  assert 'dropped 1 unreadable line(s) (line 3)' in caplog.text
  writer = metrics_lib.MetricsWriter(workdir, resume_step=1, enabled=True)
  writer.write(2, {'train/loss': 1.25})
  writer.close()
  with open(tmp_path / 'metrics.jsonl') as f:
    assert f.read() == '{"step": 1, "train/loss": 2.0}\n{"step": 2, "train/loss": 1.25}\n'
  assert sorted(os.listdir(workdir)) == ['metrics.jsonl', 'tb']


# --- a full disk ------------------------------------------------------------------------------------------
@pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')  # orbax's threads, after the failure
def test_a_full_disk_while_checkpointing_is_one_line_keeps_what_was_saved_and_leaves_no_partial_files(
    trained_workdir, tmp_path, monkeypatch):
  from orbax.checkpoint._src.path import async_path
  real = async_path.write_text

  async def full_at_step_30(path, text, *args, **kwargs):
    if '/30.orbax-checkpoint-tmp' in str(path):
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return await real(path, text, *args, **kwargs)

  real_rmtree, late = files.rmtree, []

  def write_late(path):  # as tensorstore's other writes of the failed save can, after it was reported
    time.sleep(0.1)
    os.makedirs(os.path.join(path, 'state.orbax-checkpoint-tmp', 'd'))

  def rmtree_then_a_late_write(path):
    real_rmtree(path)
    if path.endswith('/30.orbax-checkpoint-tmp') and not late:
      late.append(threading.Thread(target=write_late, args=(path,)))
      late[0].start()

  monkeypatch.setattr(async_path, 'write_text', full_at_step_30)
  monkeypatch.setattr(files, 'rmtree', rmtree_then_a_late_write)
  workdir = str(tmp_path / 'full')
  with pytest.raises(Exception) as error:
    trainer.train_and_evaluate(make_tiny_config(), workdir)
  message = common.one_line_message(error.value)
  assert message.startswith('No space left on device') and '\n' not in message
  assert checkpoint_steps(workdir) == [10, 20]
  late[0].join()
  assert not [d for d in os.listdir(os.path.join(workdir, 'checkpoints')) if 'tmp' in d]
  monkeypatch.setattr(async_path, 'write_text', real)  # space freed: the same command goes on
  trainer.train_and_evaluate(make_tiny_config(), workdir)
  assert_same_run(workdir, trained_workdir)


def test_a_full_disk_while_writing_a_small_file_leaves_neither_it_nor_a_temporary_file(tmp_path, monkeypatch):
  path = str(tmp_path / 'config.json')
  files.write_text(path, 'old')

  class HalfWritten:
    """A file on a disk that fills up after two bytes."""

    def __init__(self, f):
      self.f = f

    def __enter__(self):
      return self

    def __exit__(self, *exc):
      self.f.close()
      return False

    def write(self, text):
      self.f.write(text[:2])
      self.f.flush()
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  monkeypatch.setattr(files, 'open', lambda p, mode='r': HalfWritten(open(p, mode)), raising=False)
  with pytest.raises(OSError):
    files.write_text(path, 'new')
  assert os.listdir(tmp_path) == ['config.json']
  with open(path) as f:
    assert f.read() == 'old'


def test_resource_errors_behind_library_wrappers_are_one_line_and_bugs_are_not_hidden():
  for code, advice in ((errno.EACCES, 'fix the permissions'), (errno.ENOSPC, 'free some space'),
                       (errno.EROFS, 'use a writable --workdir')):
    try:
      try:
        raise OSError(code, os.strerror(code), '/data/run/checkpoints/10')
      except OSError as cause:
        raise RuntimeError('Save Finalize thread (save_finalize) failed.') from cause
    except RuntimeError as wrapped:
      message = common.one_line_message(wrapped)
    assert message == (f'{os.strerror(code)} (/data/run/checkpoints/10); {advice} and run the same command again '
                       '(what was saved is kept; --verbose shows the traceback).')
  assert common.one_line_message(RuntimeError('a bug')) is None  # shown with its traceback
  assert common.one_line_message(OSError(errno.EIO, 'I/O error')) is None


# --- reruns change nothing ------------------------------------------------------------------------------
def test_running_a_finished_run_again_changes_no_file(trained_workdir, tmp_path):
  workdir = copy_of(trained_workdir, tmp_path)
  before = tree_digest(workdir)
  final = trainer.train_and_evaluate(make_tiny_config(**{'eval.every': 5}), workdir)  # eval keys may change
  assert tree_digest(workdir) == before
  assert final == {k: v for k, v in metrics_lib.read_metrics(workdir)[-1].items() if k.startswith('eval/')}


def _job(report_name='written'):
  job = ml_collections.ConfigDict()
  job.stage_order = ('first', 'second')
  job.first = set_keys(make_tiny_config(), {'train.num_steps': 10, 'eval.every': 10})
  job.second = set_keys(make_tiny_config(), {'train.num_steps': 10, 'eval.every': 10, 'seed': 1})
  job.report = ml_collections.ConfigDict({'name': report_name})
  return job


@pytest.fixture
def written_report(monkeypatch):
  """A report that counts its evaluations and writes report.md like a real one."""
  calls = []

  def evaluate(workdir, report, num=None):
    calls.append(workdir)
    return {'score': float(len(calls))}

  def write(workdir, config, metrics, seconds):
    with open(os.path.join(workdir, reports.REPORT_FILE), 'w') as f:
      f.write(f'score {metrics["score"]}, {sum(seconds.values())} s\n')
  monkeypatch.setitem(reports.REPORTS, 'written', reports.Report(evaluate, write))
  return calls


def test_a_finished_job_rerun_changes_no_file_and_a_changed_stage_is_refused_before_anything_is_written(
    tmp_path, written_report):
  workdir = str(tmp_path / 'job')
  job = _job()
  assert jobs.run_job(job, workdir) == {'score': 1.0}
  before = tree_digest(workdir)
  assert jobs.run_job(job, workdir) == {} and written_report == [workdir]  # nothing evaluated again
  assert tree_digest(workdir) == before
  changed = _job()
  changed.second.model.ch = 16
  with pytest.raises(ValueError, match=r'second holds checkpoints of another config \(model.ch: 8 -> 16\)'):
    jobs.run_job(changed, workdir)
  assert tree_digest(workdir) == before


# --- every config value checked before work -------------------------------------------------------------
@pytest.mark.parametrize('key, value, expected', [
    ('train.num_steps', 0, 'train.num_steps=0 must be an integer >= 1'),
    ('train.num_steps', -5, 'train.num_steps=-5 must be an integer >= 1'),
    ('train.checkpoint_every', 0, 'train.checkpoint_every=0 must be an integer >= 1'),
    ('train.log_every', 0, 'train.log_every=0 must be an integer >= 1'),
    ('eval.every', -1, 'eval.every=-1 must be an integer >= 1'),
    ('train.keep_checkpoints', 0, 'train.keep_checkpoints=0 must be an integer >= 1'),
    ('model.ch_mult', ('abc',), "model.ch_mult=('abc',) must be a list of positive integers"),
    ('model.ch_mult', (), 'model.ch_mult=() must be a non-empty list of positive integers'),
    ('train.ema_decay', 1.0, 'train.ema_decay=1.0 must be in [0, 1)'),
    ('optim.learning_rate', 0.0, 'optim.learning_rate=0.0 must be > 0'),
    ('train.compute_dtype', 'float16', "train.compute_dtype='float16' must be one of ['bfloat16', 'float32']"),
    ('mesh.data', 0, 'mesh.data=0 must be a positive integer, or -1 for the remaining devices'),
])
def test_every_bad_config_value_is_one_line_naming_it_and_nothing_is_created(tmp_path, key, value, expected):
  workdir = tmp_path / 'w'
  with pytest.raises(ValueError) as error:
    trainer.train_and_evaluate(set_keys(make_tiny_config(), {key: value}), str(workdir))
  assert expected in str(error.value) and '\n' not in str(error.value)
  assert not workdir.exists()


def test_score_and_job_values_are_checked_too(tmp_path):
  from configs import sde_vp_shapes, t2i_shapes
  config = sde_vp_shapes.get_config()
  config.sampling.method = 'heun'
  config.sampling.num_steps = 0
  with pytest.raises(ValueError, match=r"sampling.method='heun' must be one of \['ddim', .*sampling.num_steps=0"):
    config_checks.check_run(config)
  job = t2i_shapes.get_config()
  job.score.sampling_guidance = -1.0
  job.report.guidances = (1.0, 'three')
  job.score.guidance_interval = (0.0, 1.5)
  job.stage_order = ('vae', 'clip', 'scor')
  with pytest.raises(ValueError, match=r"stage_order names \['scor'\], which are not training configs"):
    jobs.run_job(job, str(tmp_path / 'job'))
  job.stage_order = ('vae', 'clip', 'classifier', 'score')
  with pytest.raises(ValueError, match=r'score.guidance_interval=\(0.0, 1.5\) must be a list of two times in '
                                       r'\[0, 1\] \(fractions of T\); score.sampling_guidance=-1.0 must be in '
                                       r"\[0, 100\]; report.guidances=\(1.0, 'three'\) must be a list of guidances"):
    jobs.run_job(job, str(tmp_path / 'job'))
  assert not (tmp_path / 'job').exists()

"""A work directory on an object store: every file lands in the bucket, none on the local disk, and a run
killed there resumes to the uninterrupted run. The bucket is tests/bucket.py's stand-in for gs://."""

import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from bucket import installed
from conftest import ROOT, make_tiny_config, tiny_overrides, wait_for
from lgm import files, stages
from lgm.train import lock as lock_lib
from lgm.train import metrics as metrics_lib
from lgm.train import trainer
from test_faults import assert_same_run


def bucket_train(workdir: str, root, cwd, config) -> subprocess.Popen:
  """experiments.train of `config` into a gs:// work directory, in a subprocess with the stand-in bucket."""
  cmd = [sys.executable, os.path.join(ROOT, 'tests', 'bucket.py'), f'--config={ROOT}/configs/vae_digits.py',
         f'--workdir={workdir}', *tiny_overrides(config)]
  return subprocess.Popen(cmd, cwd=cwd, env={**os.environ, 'LGM_TEST_BUCKET_ROOT': str(root)},
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_a_run_killed_in_a_bucket_resumes_to_the_uninterrupted_run_and_writes_nothing_locally(trained_workdir,
                                                                                               tmp_path):
  config = make_tiny_config()  # the config of `trained_workdir`
  root, cwd = tmp_path / 'bucket', tmp_path / 'cwd'
  root.mkdir(), cwd.mkdir()
  workdir = 'gs://lgm-test/runs/vae'
  stored = root / 'lgm-test' / 'runs' / 'vae'  # where the stand-in keeps the objects

  # Killed at a random step past the first checkpoint, while it holds the lease.
  proc = bucket_train(workdir, root, cwd, config)
  kill_at = int(np.random.default_rng(1).integers(12, 28))
  logged = lambda: (stored / 'metrics.jsonl').exists() and max(
      [r['step'] for r in metrics_lib.read_metrics(str(stored))], default=0) >= kill_at
  assert wait_for(logged, proc, poll=0.005), proc.stderr.read()[-2000:]
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()

  # Run again: the lease of the dead run is taken over and the run ends as the uninterrupted one.
  proc = bucket_train(workdir, root, cwd, config)
  assert proc.wait(timeout=300) == 0, proc.stderr.read()[-2000:]
  assert 'taking over the lock left by pid' in proc.stderr.read()
  assert os.listdir(cwd) == []  # no local folder named gs:, nothing else either
  with installed(root):
    assert_same_run(workdir, trained_workdir)
    names = set(files.file_names(workdir))
    assert {'config.json', 'metrics.jsonl', 'lock', 'samples/reconstructions_000040.png',
            'checkpoints/digest-40.json', 'checkpoints/40/commit_success.txt'} <= names
    assert any(name.startswith('tb/events.out.tfevents') for name in names)
    assert sorted(name.split('/')[1] for name in names if name.startswith('checkpoints/digest-')) == [
        'digest-20.json', 'digest-30.json', 'digest-40.json']
    assert files.read_text(os.path.join(workdir, 'lock')) == ''  # released cleanly
    resumed, uninterrupted = stages.load_trained(workdir), stages.load_trained(trained_workdir)
  assert resumed.step == uninterrupted.step == 40
  for a, b in zip(jax.tree.leaves(resumed.params), jax.tree.leaves(uninterrupted.params), strict=True):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


def test_a_lease_is_renewed_refuses_a_second_run_while_live_and_is_taken_over_when_silent(tmp_path, monkeypatch,
                                                                                            caplog):
  workdir = 'gs://lgm-test/leased'
  monkeypatch.setattr(lock_lib, 'HEARTBEAT_SECONDS', 0.05)
  with installed(tmp_path / 'bucket'):
    with lock_lib.hold(workdir):
      record = files.read_json(os.path.join(workdir, lock_lib.LOCK_FILE))
      assert record['pid'] == os.getpid()
      time.sleep(0.5)
      assert files.read_json(os.path.join(workdir, lock_lib.LOCK_FILE))['beat'] > record['beat']  # renewed
    files.write_json(os.path.join(workdir, lock_lib.LOCK_FILE), {**record, 'host': 'worker-7', 'pid': 99})
    with pytest.raises(lock_lib.WorkdirBusyError, match=r'gs://lgm-test/leased is in use by pid 99 on worker-7 .*'
                                                        r'last heard of \d+ s ago'):
      trainer.train_and_evaluate(make_tiny_config(), workdir)
    monkeypatch.setattr(lock_lib, 'STALE_SECONDS', 0.0)
    with lock_lib.hold(workdir):
      pass
  assert 'taking over the lock left by pid 99 on worker-7' in caplog.text


@pytest.mark.parametrize('url, message', [
    ('gs://bucket/run', r"gs://bucket/run: gs:// work directories need gcsfs .*; pip install 'lgm\[cloud\]'"),
    ('s3://bucket/run', 's3://bucket/run: a work directory is a gs:// bucket or a path on a file system every')])
def test_a_url_that_cannot_hold_a_work_directory_is_one_line_and_creates_nothing(url, message, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # gcsfs is not installed with the test extra: the stand-in is not installed here
  with pytest.raises(ValueError, match=message):
    trainer.train_and_evaluate(make_tiny_config(), url)
  assert os.listdir(tmp_path) == []


def test_a_text_stage_learns_its_tokenizer_once_and_reads_it_back_from_the_bucket(tmp_path):
  from configs import t2i_shapes
  config = t2i_shapes.get_config().clip
  with installed(tmp_path / 'bucket'):
    learned = stages.build_task(config, 'gs://lgm-test/t2i/clip').tokenizer
    assert list(files.file_names('gs://lgm-test/t2i')) == [f'clip/{stages.TOKENIZER_FILE}']
    read = stages.build_task(config, 'gs://lgm-test/t2i/clip').tokenizer
  assert read.merges == learned.merges and len(read.merges) > 0
  assert read(['a large red circle']).tolist() == learned(['a large red circle']).tolist()

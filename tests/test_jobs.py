"""Jobs are generic: any stages, in the config's order, then the report the config names."""

import contextlib
import os

import ml_collections
import pytest

from bucket import installed
from conftest import make_tiny_config
from lgm import files, jobs, reports


def _job(report_name: str) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.stage_order = ('second', 'first')  # the order of the list, not of the keys
  config.first, config.second = make_tiny_config(), make_tiny_config()
  config.report = ml_collections.ConfigDict({'name': report_name, 'threshold': 0.5})
  return config


@pytest.fixture
def recorded(monkeypatch):
  """A stand-in trainer that 'finishes' each stage, and a report that records how it was called."""
  calls = []
  monkeypatch.setattr(jobs.trainer, 'train_and_evaluate', lambda config, workdir: calls.append(('train', workdir)))
  monkeypatch.setattr(jobs.checkpoints, 'saved_step', lambda stage_dir: 40)  # every stage reached its num_steps

  def evaluate(workdir, report, num=None):
    calls.append(('evaluate', workdir, report.threshold, num))
    return {'score': 1.0}

  def write(workdir, config, metrics, seconds):
    calls.append(('write', sorted(seconds), metrics))
    return os.path.join(workdir, 'report.md')
  monkeypatch.setitem(reports.REPORTS, 'recorder', reports.Report(evaluate, write))
  return calls


@pytest.mark.parametrize('bucket', [False, True], ids=['local', 'bucket'])
def test_a_job_trains_its_stages_in_order_then_runs_its_report(recorded, tmp_path, bucket):
  workdir = 'gs://lgm-test/job' if bucket else str(tmp_path)
  with installed(tmp_path / 'bucket') if bucket else contextlib.nullcontext():
    assert jobs.run_job(_job('recorder'), workdir) == {'score': 1.0}
    assert recorded == [('train', os.path.join(workdir, 'second')), ('train', os.path.join(workdir, 'first')),
                        ('evaluate', workdir, 0.5, None), ('write', ['evaluation', 'first', 'second'], {'score': 1.0})]
    assert files.read_json(os.path.join(workdir, 'config.json'))['report']['name'] == 'recorder'
    recorded.clear()
    assert jobs.evaluate(workdir, num=7) == {'score': 1.0}  # re-evaluation reads the job's own config
    assert recorded == [('evaluate', workdir, 0.5, 7)]
  assert not bucket or (tmp_path / 'bucket' / 'lgm-test' / 'job' / 'config.json').exists()


def test_an_unknown_report_is_refused_before_anything_is_trained(recorded, tmp_path):
  with pytest.raises(ValueError, match="unknown report 'nope'; valid: .*'text_to_image'"):
    jobs.run_job(_job('nope'), str(tmp_path / 'job'))
  assert recorded == [] and not (tmp_path / 'job').exists()


def test_is_job_tells_jobs_from_single_runs():
  assert jobs.is_job(_job('recorder')) and not jobs.is_job(make_tiny_config())


def test_a_score_model_that_does_not_divide_the_vaes_latents_is_refused_before_any_stage_trains(recorded, tmp_path):
  from configs import t2i_shapes
  job = t2i_shapes.get_config()
  job.data.image_size = 24  # the VAE halves it to 12; the score model's two downsamplings and patches need 16
  job.score.model.ch_mult = (1, 2, 2)
  with pytest.raises(ValueError, match=r'data.image_size=24 does not fit the text_to_image model on the latents of '
                                       r'its VAE \(.*\); use a size its downsampling divides'):
    jobs.run_job(job, str(tmp_path / 'job'))
  assert recorded == [] and not (tmp_path / 'job').exists()
  job.data.image_size = 32
  jobs.check_data(jobs.with_job_data(job))  # 16 x 16 latents fit

"""DIR/metrics.jsonl and TensorBoard events, written by process 0 only.

metrics.jsonl is an append-only log: one JSON object per line, always with "step". A process killed while
appending can leave a torn last line; readers drop it (with a warning) instead of refusing the file.
TensorBoard event files under a URL work directory are written through `lgm.files` too (`_UrlEventFiles`).
"""

from __future__ import annotations

import io
import json
import os
from typing import Mapping

import jax
from absl import logging

from lgm import files

METRICS_FILE = 'metrics.jsonl'


class MetricsWriter:
  """Appends records to DIR/metrics.jsonl and mirrors them to TensorBoard (DIR/tb).

  Opened for a run that resumes at step s (`resume_step=s`), it first drops the records logged after s,
  so that every step appears once; `resume_step=None` only appends (an evaluation of a trained run).
  Nothing is written, not even a TensorBoard file, until the first `write`.
  """

  def __init__(self, workdir: str, resume_step: int | None = None, enabled: bool | None = None):
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self.workdir = workdir
    self.path = os.path.join(workdir, METRICS_FILE)
    self._tb = None
    if not self.enabled or not files.exists(self.path):
      return
    records, lines = _parse(self.path)
    kept = [r for r in records if resume_step is None or r['step'] <= resume_step]
    if len(kept) < lines:
      with files.replacing(self.path) as f:
        f.writelines(json.dumps(r) + '\n' for r in kept)

  def write(self, step: int, metrics: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    record = {'step': int(step), **{k: float(v) for k, v in metrics.items()}}
    files.append_text(self.path, json.dumps(record) + '\n')
    if self._tb is None:
      self._tb = _summary_writer(os.path.join(self.workdir, 'tb'))
    for name, value in metrics.items():
      self._tb.add_scalar(name, float(value), int(step))
    self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


def read_metrics(workdir: str) -> list[dict]:
  """All records of DIR/metrics.jsonl, in file order (a torn or unreadable line is dropped with a warning)."""
  return _parse(os.path.join(workdir, METRICS_FILE))[0]


def _parse(path: str) -> tuple[list[dict], int]:
  """The records of a metrics file and its number of non-empty lines."""
  records, bad, lines = [], [], 0
  with files.open_file(path, 'rb') as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      lines += 1
      try:
        record = json.loads(line)
        int(record['step'])
        records.append(record)
      except (ValueError, KeyError, TypeError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        bad.append(number)
  if bad:
    logging.warning('%s: dropped %d unreadable line(s) (line %s), e.g. the torn last line of a killed run.',
                    path, len(bad), ', '.join(map(str, bad[:5])))
  return records, lines


def last_evaluation(workdir: str) -> dict[str, float]:
  """The `eval/...` values of the last evaluated step in DIR/metrics.jsonl ({} if none)."""
  if not files.exists(os.path.join(workdir, METRICS_FILE)):
    return {}
  evaluated = [r for r in read_metrics(workdir) if any(k.startswith('eval/') for k in r)]
  if not evaluated:
    return {}
  last = evaluated[-1]['step']
  return {k: v for r in evaluated if r['step'] == last for k, v in r.items() if k.startswith('eval/')}


def _summary_writer(logdir: str):
  from tensorboardX import SummaryWriter, record_writer  # imported lazily: only the writing process needs it
  if files.is_url(logdir):  # tensorboardX's own gs:// and s3:// writers need the clouds' client libraries
    record_writer.register_writer_factory(logdir.split('://', 1)[0], _UrlEventFiles())
  return SummaryWriter(logdir)


class _UrlEventFiles:
  """tensorboardX's writer factory for URLs: an event file kept in memory and uploaded whole at each flush
  (objects cannot be appended to; a run's scalar events stay small)."""

  def directory_check(self, path: str) -> None:
    files.makedirs(path)

  def open(self, path: str) -> '_UrlEventFile':
    return _UrlEventFile(path)


class _UrlEventFile:

  def __init__(self, path: str):
    self.path, self.buffer = path, io.BytesIO()

  def write(self, data: bytes) -> None:
    self.buffer.write(data)

  def flush(self) -> None:
    with files.replacing(self.path, 'wb') as f:
      f.write(self.buffer.getvalue())

  def close(self) -> None:
    self.flush()

"""DIR/metrics.jsonl and TensorBoard events, written by process 0 only."""

from __future__ import annotations

import json
import os
from typing import Mapping

import jax


class MetricsWriter:
  """Appends one JSON object per line, always with "step"; mirrors scalars to TensorBoard (DIR/tb).

  Opening it for a run that resumes at step s first drops the lines logged after s, so that every
  step appears once in the file.
  """

  def __init__(self, workdir: str, resume_step: int, enabled: bool | None = None):
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self.path = os.path.join(workdir, 'metrics.jsonl')
    self._tb = None
    if not self.enabled:
      return
    if os.path.exists(self.path):
      with open(self.path) as f:
        kept = [line for line in f if line.strip() and json.loads(line)['step'] <= resume_step]
      with open(self.path, 'w') as f:
        f.writelines(kept)
    from tensorboardX import SummaryWriter  # imported lazily: only the writing process needs it
    self._tb = SummaryWriter(os.path.join(workdir, 'tb'))

  def write(self, step: int, metrics: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    record = {'step': int(step), **{k: float(v) for k, v in metrics.items()}}
    with open(self.path, 'a') as f:
      f.write(json.dumps(record) + '\n')
    for name, value in metrics.items():
      self._tb.add_scalar(name, float(value), int(step))
    self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


def read_metrics(workdir: str) -> list[dict]:
  """All records of DIR/metrics.jsonl, in file order."""
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f if line.strip()]

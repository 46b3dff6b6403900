"""Benchmark scripts (`python -m benchmarks.NAME`), each writing its results as JSON lines."""

from __future__ import annotations

import json
import os
import time


def report(record: dict, out: str | None, stamp: bool = True) -> None:
  """Print `record` as one JSON line and append it to `out` when given; `stamp` puts the date and the CPU
  count first."""
  if stamp:
    record = {'date': time.strftime('%Y-%m-%d'), 'cpus': os.cpu_count(), **record}
  line = json.dumps(record)
  print(line, flush=True)
  if out:
    with open(out, 'a') as f:
      f.write(line + '\n')

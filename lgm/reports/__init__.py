"""Reports: the evaluation a job runs once its stages are trained, named by `config.report.name`.

A report is a pair of functions:
  evaluate(workdir, report_config, num=None) -> metrics   measure the trained job (also `experiments.evaluate`)
  write(workdir, job_config, metrics, seconds) -> path     DIR/report.md (and report.json) from those metrics

`write` writes DIR/report.md last: a job whose stages are trained and that has one is finished.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import ml_collections

from lgm.reports import text_to_image


@dataclasses.dataclass(frozen=True)
class Report:
  evaluate: Callable[[str, ml_collections.ConfigDict, int | None], dict[str, float]]
  write: Callable[[str, ml_collections.ConfigDict, dict[str, float], dict[str, float]], str]


REPORT_FILE = 'report.md'

REPORTS: dict[str, Report] = {
    'text_to_image': Report(text_to_image.evaluate, text_to_image.write),
}


def get_report(name: str) -> Report:
  if name not in REPORTS:
    raise ValueError(f'unknown report {name!r}; valid: {sorted(REPORTS)}')
  return REPORTS[name]

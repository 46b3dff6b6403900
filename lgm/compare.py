"""Comparing work directories, e.g. a sweep's points: which config keys differ between them, their final
metrics in one table (compare.md, compare.csv), a metric against step, and the final metric against each
swept number. The keys that differ are found from the runs' config.json alone, so any set of runs compares.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from typing import Any, Sequence

import matplotlib

matplotlib.use('Agg')  # headless: figures are files, never windows
import matplotlib.pyplot as plt  # noqa: E402
from absl import logging  # noqa: E402

from lgm import files, semantic, sweeps  # noqa: E402
from lgm.train import metrics as metrics_lib  # noqa: E402
from lgm.train import workdir as workdir_lib  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Run:
  name: str                # the directory's own name
  path: str
  config: dict[str, Any]   # flattened: dotted key -> value
  records: list[dict]      # metrics.jsonl

  def final(self) -> dict[str, float]:
    """The last value of every `eval/...` metric and of `train/loss`."""
    out: dict[str, float] = {}
    for record in self.records:
      out.update((k, v) for k, v in record.items() if k.startswith('eval/') or k == 'train/loss')
    return out


def load_runs(paths: Sequence[str]) -> list[Run]:
  """The work directories among `paths`; the rest (files, directories without config.json) are skipped with
  one warning naming them."""
  runs, skipped = [], []
  for path in paths:
    if not files.exists(workdir_lib.config_path(path)):
      skipped.append(path)
      continue
    config = workdir_lib.flatten(files.read_json(workdir_lib.config_path(path)))
    has_metrics = files.exists(os.path.join(path, metrics_lib.METRICS_FILE))
    runs.append(Run(os.path.basename(os.path.normpath(path)), path, config,
                    metrics_lib.read_metrics(path) if has_metrics else []))
  if skipped:
    logging.warning('skipped %d path(s) that are not work directories (no config.json): %s', len(skipped),
                    ', '.join(skipped))
  return runs


def differing_keys(runs: Sequence[Run]) -> list[str]:
  """The config keys whose values are not the same in every run (absent counts as a value): the swept ones."""
  keys = sorted({key for run in runs for key in run.config})
  return [key for key in keys if len({json.dumps(run.config.get(key)) for run in runs}) > 1]


def compare(paths: Sequence[str], out: str | None = None, metric: str | None = None) -> tuple[str, list[str]]:
  """Write OUT/compare.md, OUT/compare.csv, OUT/metric_vs_step.png and OUT/final_vs_<key>.png (one per swept
  numeric key) for the runs among `paths`; returns the markdown table and the paths written.

  OUT defaults to the runs' common parent directory; `metric` to the first `eval/...` metric every run logs.
  """
  runs = load_runs(paths)
  if not runs:
    raise ValueError(f'no work directory (a directory with config.json) among {", ".join(paths)}.' if paths
                     else 'no work directories given: name them, e.g. runs/sweep/*.')
  keys = differing_keys(runs)
  runs = sorted(runs, key=lambda run: [_sortable(run.config.get(key)) for key in keys])
  metric = metric or _first_common_eval_metric(runs)
  missing = [run.name for run in runs if not any(metric in record for record in run.records)]
  if missing:
    raise ValueError(f'{metric} is not in the metrics.jsonl of {", ".join(missing)}.')
  out = out or _common_parent([run.path for run in runs])
  files.makedirs(out)
  header, rows = _table(runs, keys)
  table = _markdown(header, rows)
  figures = [_plot_against_step(runs, keys, metric, os.path.join(out, 'metric_vs_step.png'))]
  short = sweeps.short_keys(keys)
  figures += [_plot_final(runs, keys, key, metric, os.path.join(out, f'final_vs_{short[key]}.png'))
              for key in keys if all(_is_number(run.config.get(key)) for run in runs)]
  written = [os.path.join(out, 'compare.md'), os.path.join(out, 'compare.csv')]
  files.write_text(written[0], table + '\n' + ''.join(f'\n![]({os.path.basename(p)})\n' for p in figures))
  with files.replacing(written[1], 'w') as f:
    csv.writer(f, lineterminator='\n').writerows([header, *rows])
  return table, written + figures


def _common_parent(paths: Sequence[str]) -> str:
  parents = [os.path.dirname(files.absolute(path).rstrip('/')) for path in paths]
  if any(files.is_url(parent) for parent in parents):
    if len(set(parents)) > 1:
      raise ValueError('the runs are in different directories of an object store; name the output with --out.')
    return parents[0]
  return os.path.commonpath(parents)


def _first_common_eval_metric(runs: Sequence[Run]) -> str:
  names = [[k for record in run.records for k in record if k.startswith('eval/')] for run in runs]
  common = [name for name in dict.fromkeys(names[0]) if all(name in other for other in names[1:])]
  if not common:
    raise ValueError('no eval/ metric is in the metrics.jsonl of every run; name one with --metric.')
  return common[0]


def _table(runs: Sequence[Run], keys: Sequence[str]) -> tuple[list[str], list[list[Any]]]:
  """Header and rows: run, each differing key, final step, the final eval/ metrics and train/loss."""
  finals = [run.final() for run in runs]
  metrics = sorted({k for final in finals for k in final if k.startswith('eval/')})
  if any('train/loss' in final for final in finals):
    metrics.append('train/loss')
  header = ['run', *keys, 'step', *metrics]
  rows = [[run.name, *(run.config.get(key) for key in keys),
           max((record['step'] for record in run.records), default=None), *(final.get(m) for m in metrics)]
          for run, final in zip(runs, finals)]
  return header, rows


def _markdown(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
  def cell(value: Any) -> str:
    if value is None:
      return '—'
    return f'{value:.4g}' if isinstance(value, float) else str(value).replace('|', '\\|')
  lines = [header, ['---'] * len(header), *([cell(v) for v in row] for row in rows)]
  return '\n'.join('| ' + ' | '.join(line) + ' |' for line in lines)


def _label(run: Run, keys: Sequence[str]) -> str:
  short = sweeps.short_keys(keys)
  return ', '.join(f'{short[key]}={run.config.get(key)}' for key in keys) or run.name


def _plot_against_step(runs: Sequence[Run], keys: Sequence[str], metric: str, path: str) -> str:
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for run in runs:
    steps, values = zip(*[(record['step'], record[metric]) for record in run.records if metric in record])
    ax.plot(steps, values, marker='o', markersize=3, label=_label(run, keys))
  ax.set(xlabel='step', ylabel=metric, title=f'{metric} against step')
  ax.legend(fontsize='small')
  return semantic.save_figure(fig, path)


def _plot_final(runs: Sequence[Run], keys: Sequence[str], key: str, metric: str, path: str) -> str:
  """The final `metric` against `key`, one line per combination of the other differing keys."""
  others = [k for k in keys if k != key]
  lines: dict[str, list[tuple[float, float]]] = {}
  for run in runs:
    value = [record[metric] for record in run.records if metric in record][-1]
    lines.setdefault(_label(run, others) if others else '', []).append((run.config[key], value))
  fig, ax = plt.subplots(figsize=(6, 4.5))
  for label, points in lines.items():
    xs, ys = zip(*sorted(points))
    ax.plot(xs, ys, marker='o', label=label or None)
  xs = sorted({run.config[key] for run in runs})
  if xs[0] > 0 and xs[-1] >= 10 * xs[0]:
    ax.set_xscale('log')
    ax.minorticks_off()
  ax.set_xticks(xs, [str(x) for x in xs])  # the swept values themselves, never crowded fractions
  ax.set(xlabel=key, ylabel=f'final {metric}', title=f'final {metric} against {key}')
  if others:
    ax.legend(fontsize='small')
  return semantic.save_figure(fig, path)


def _is_number(value: Any) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def _sortable(value: Any) -> tuple:
  """Numbers in numeric order before anything else, in the order of its JSON text."""
  return (0, value, '') if _is_number(value) else (1, 0, json.dumps(value))

"""Compare work directories (a sweep's points): the keys that differ, the final metrics, two kinds of figure.

python -m experiments.compare runs/sweep/* [--out=DIR] [--metric=eval/psnr]

Writes DIR/compare.md and DIR/compare.csv (a row per run: the differing keys, the final step, the final
eval/ metrics and train/loss), DIR/metric_vs_step.png and DIR/final_vs_<key>.png per swept numeric key;
prints the table. Paths that are not work directories (sweep.json, earlier outputs) are skipped.
"""

from absl import flags

from experiments import common

_OUT = flags.DEFINE_string('out', None, 'Directory for the table and figures; default: the runs\' common parent.')
_METRIC = flags.DEFINE_string('metric', None, 'Metric of the figures; default: the first eval/ metric of every run.')


def main(argv):
  from lgm import compare
  table, written = compare.compare(argv[1:], _OUT.value, _METRIC.value)
  print(table)
  print('\nwrote ' + ', '.join(written))


def cli() -> None:
  """The `lgm-compare` command."""
  common.run(main)


if __name__ == '__main__':
  cli()

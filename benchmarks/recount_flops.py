"""Achieved FLOP/s of recorded train-step results, re-derived with FLOPs counted before backend optimisation.

python -m benchmarks.recount_flops --results=benchmarks/results/h100_device_suite.jsonl [--t2i_workdir=runs/t2i_shapes] \
    [--out=benchmarks/results/h100_device_suite_recounted.jsonl]

Results recorded before `lgm.inspection.program_flops` counted the compiled program, whose count on a GPU
leaves out the convolutions and matmuls it hands to cuDNN and cuBLAS. For each train-step record this counts
the same step again (the config, batch and dtype of `benchmarks.device_suite`, traced on abstract values: no
accelerator needed) and divides by the recorded step time and matmul peak. A record whose model has another
parameter count today (its config changed since) is reported as not recounted.
"""

import json
import os

from absl import app, flags

from benchmarks import device_suite, report, train_step
from lgm.train import workdir as workdir_lib

_RESULTS = flags.DEFINE_string('results', 'benchmarks/results/h100_device_suite.jsonl', 'Recorded results.')
FLAGS = flags.FLAGS  # --t2i_workdir and --out: benchmarks.device_suite's flags


def main(argv):
  del argv
  runs = {(name, batch, dtype, per_call): (config, stage) for name, config, batch, dtype, stage, per_call
          in device_suite.train_step_runs(workdir_lib.read_config(FLAGS.t2i_workdir), cifar=True)}
  with open(_RESULTS.value) as f:
    records = [json.loads(line) for line in f if line.strip()]
  for record in records:
    if record.get('benchmark') != 'train_step':
      continue
    config, stage = runs[(record['config'], record['batch_size'], record['compute_dtype'],
                          record.get('steps_per_call', 1))]
    config = config.copy_and_resolve_references()
    config.train.batch_size, config.train.compute_dtype = record['batch_size'], record['compute_dtype']
    flops, params = train_step.step_flops(config, None if stage is None else os.path.join(FLAGS.t2i_workdir, stage))
    if params != record['params']:
      report({'config': record['config'], 'batch_size': record['batch_size'], 'not_recounted':
              f'the config changed since the record ({params} parameters now, {record["params"]} then)'},
             FLAGS.out, stamp=False)
      continue
    achieved = flops / (record['step_ms'] / 1e3)
    report({'config': record['config'], 'devices': record['devices'], 'compute_dtype': record['compute_dtype'],
            'batch_size': record['batch_size'], 'step_ms': record['step_ms'],
            'compiled_count_gflop': record['step_gflop'], 'step_gflop': flops / 1e9,
            'achieved_tflops': achieved / 1e12, 'matmul_peak_tflops': record['matmul_peak_gflops'] / 1e3,
            'fraction_of_peak': achieved / (record['matmul_peak_gflops'] * 1e9)}, FLAGS.out, stamp=False)


if __name__ == '__main__':
  app.run(main)

"""Evaluate the latest checkpoint of a work directory; appends `eval/...` to DIR/metrics.jsonl.

python -m experiments.evaluate --workdir=runs/vae_shapes [--num_samples=2000]
python -m experiments.evaluate --workdir=runs/t2i_shapes [--num_samples=1000]   # a job: its report's metrics
"""

from absl import flags

from experiments import common

_WORKDIR = flags.DEFINE_string('workdir', None, 'Work directory of a trained run.')
_NUM_SAMPLES = flags.DEFINE_integer('num_samples', None,
                                    'Held-out examples (or generated samples) to measure; default config.eval.num_examples.')
flags.mark_flags_as_required(['workdir'])


def main(argv):
  del argv
  common.initialize_distributed()
  import jax

  from lgm import jobs, stages
  from lgm.data import loader as loader_lib
  from lgm.train import lock as lock_lib, mesh as mesh_lib, metrics as metrics_lib, trainer, workdir as workdir_lib

  config = workdir_lib.read_config(_WORKDIR.value)
  if jobs.is_job(config):
    results = jobs.evaluate(_WORKDIR.value, _NUM_SAMPLES.value)
    print(', '.join(f'{k}={v:.4f}' for k, v in results.items()))
    return
  mesh = mesh_lib.make_mesh(config.mesh)
  trainer.check_batch_size(config.eval.batch_size, mesh.size, 'eval.batch_size')
  trained = stages.load_trained(_WORKDIR.value, mesh=mesh)
  eval_loader = loader_lib.make_loader(
      config, config.data.eval_split, train=False, process_index=jax.process_index(),
      process_count=jax.process_count(), batch_size=config.eval.batch_size,
      max_examples=_NUM_SAMPLES.value or config.eval.num_examples)
  results = trainer.evaluate(trained.task, trained.params, eval_loader, mesh, config.seed)
  with lock_lib.hold(_WORKDIR.value):  # one writer of metrics.jsonl at a time
    writer = metrics_lib.MetricsWriter(_WORKDIR.value)
    writer.write(trained.step, results)
    writer.close()
  print(f'step {trained.step}: ' + ', '.join(f'{k}={v:.4f}' for k, v in results.items()))


def cli() -> None:
  """The `lgm-evaluate` command."""
  common.run(main)


if __name__ == '__main__':
  cli()

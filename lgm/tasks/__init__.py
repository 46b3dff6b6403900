"""Task registry: what a model learns and how it is measured, looked up by `config.task`.

A task owns its model and gives the one trainer (`lgm.train`) everything model-specific:
  init(rng) -> params
  loss(params, batch, rng, train) -> (scalar loss, dict of scalar metrics)     [jitted by the trainer]
  evaluate(params, batch, rng) -> dict of scalar metrics, averaged over eval batches
  images(params, batch, rng) -> dict of name -> image batch in [-1, 1], saved as grids
and, where a task needs them:
  prepare_batch(batch) -> batch            host side, on each process-local numpy batch (e.g. tokenize)
  batch_spec(batch_size) -> shapes         the device fields of a batch, for compiling without data
  summarize(params, outputs) -> metrics    whole-set metrics from the per-example (batch-leading)
                                           arrays `evaluate` returned, concatenated over the eval set
A task is built as `Task(config, workdir)`; `workdir` (None outside a run) is where a task keeps what
is not in the checkpoint, such as a learned tokenizer. New models plug in here; the trainer is never forked.
"""

from __future__ import annotations

from typing import Any

import ml_collections

from lgm.tasks import attributes, autoencoding, clip, score, text_to_image

TASKS: dict[str, Any] = {
    'autoencoding': autoencoding.AutoencoderTask,
    'clip': clip.ClipTask,
    'attributes': attributes.AttributeTask,
    'text_to_image': text_to_image.TextToImageTask,
    'score': score.ScoreTask,
}


def get_task(config: ml_collections.ConfigDict, workdir: str | None = None):
  """The task object for `config.task`, built from the whole config (and its run's work directory)."""
  if config.task not in TASKS:
    raise ValueError(f'unknown task {config.task!r}; valid: {sorted(TASKS)}')
  return TASKS[config.task](config, workdir)

"""Task registry: what a model learns and how it is measured, looked up by `config.task`.

A task owns its model and gives the one trainer (`lgm.train`) everything model-specific:
  init(rng) -> params
  loss(params, batch, rng, train) -> (scalar loss, dict of scalar metrics)     [jitted by the trainer]
  evaluate(params, batch, rng) -> dict of scalar metrics, averaged over eval batches
  images(params, batch, rng) -> dict of name -> image batch in [-1, 1], saved as grids
New models plug in here; the trainer is never forked.
"""

from __future__ import annotations

from typing import Any

import ml_collections

from lgm.tasks import autoencoding, score

TASKS: dict[str, Any] = {
    'autoencoding': autoencoding.AutoencoderTask,
    'score': score.ScoreTask,
}


def get_task(config: ml_collections.ConfigDict):
  """The task object for `config.task`, built from the whole config."""
  if config.task not in TASKS:
    raise ValueError(f'unknown task {config.task!r}; valid: {sorted(TASKS)}')
  return TASKS[config.task](config)

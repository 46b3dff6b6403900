"""Task registry: what a model learns and how it is measured, looked up by `config.task`.

Every task implements the protocol of `lgm.tasks.base.Task`; the one trainer (`lgm.train`) asks nothing
else of it. A task is built from its config and its trained dependencies passed in as objects: build one
from a work directory with `lgm.stages.build_task`, or directly in code (tests do) from in-memory parts.
New models plug in here; the trainer is never forked.
"""

from __future__ import annotations

from lgm.tasks import attributes, autoencoding, clip, embedding_decoder, prior, score, signature, text_to_image
from lgm.tasks.base import Task, TextConditioned, Trained

TASKS: dict[str, type[Task]] = {
    'autoencoding': autoencoding.AutoencoderTask,
    'clip': clip.ClipTask,
    'attributes': attributes.AttributeTask,
    'text_to_image': text_to_image.TextToImageTask,
    'score': score.ScoreTask,
    'prior': prior.PriorTask,  # unCLIP: text -> CLIP image embedding
    'embedding_decoder': embedding_decoder.EmbeddingDecoderTask,  # unCLIP: CLIP image embedding -> image
    'signature': signature.SignatureTask,  # a signed VAE decoder and its watermark extractor
}

__all__ = ['TASKS', 'Task', 'TextConditioned', 'Trained', 'task_class']


def task_class(name: str) -> type[Task]:
  """The task class registered as `name`, or a one-line error listing the valid names."""
  if name not in TASKS:
    raise ValueError(f'unknown task {name!r}; valid: {sorted(TASKS)}')
  return TASKS[name]

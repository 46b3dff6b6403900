"""Applying a jitted function to many examples in batches of one size (one compilation per call site)."""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np


def map_in_batches(fn: Callable[[Any, np.ndarray], Any], params: Any, inputs: np.ndarray, batch_size: int) -> Any:
  """`fn(params, batch)` over `inputs` in batches of exactly `batch_size`, the last one zero-padded and its
  padding dropped from the outputs; the outputs (an array or a pytree of arrays) are concatenated in order."""
  outputs = []
  for start in range(0, len(inputs), batch_size):
    batch = inputs[start:start + batch_size]
    padding = np.zeros((batch_size - len(batch), *batch.shape[1:]), batch.dtype)
    out = fn(params, np.concatenate([batch, padding]))
    outputs.append(jax.tree.map(lambda a, n=len(batch): np.asarray(a)[:n], out))
  return jax.tree.map(lambda *parts: np.concatenate(parts), *outputs)

"""Applying a jitted function to many examples in batches of one size (one compilation per call site)."""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np


def map_in_batches(fn: Callable[[Any, Any], Any], params: Any, inputs: Any, batch_size: int) -> Any:
  """`fn(params, batch)` over `inputs` in batches of exactly `batch_size`, the last one zero-padded and its
  padding dropped from the outputs; the outputs (an array or a pytree of arrays) are concatenated in order.

  `inputs` is an array or a pytree of arrays that share their leading (example) axis."""
  num = len(jax.tree.leaves(inputs)[0])
  outputs = []
  for start in range(0, num, batch_size):
    real = min(batch_size, num - start)
    pad = lambda a: np.concatenate([a[start:start + real], np.zeros((batch_size - real, *a.shape[1:]), a.dtype)])
    out = fn(params, jax.tree.map(lambda a: pad(np.asarray(a)), inputs))
    outputs.append(jax.tree.map(lambda a: np.asarray(a)[:real], out))
  return jax.tree.map(lambda *parts: np.concatenate(parts), *outputs)

"""Sizes and costs of a config's model, without training it (experiments.inspect, benchmarks)."""

from __future__ import annotations

import jax
import ml_collections
import numpy as np

from lgm import stages
from lgm.tasks import Task


def parameter_table(params) -> list[tuple[str, tuple[int, ...], int]]:
  """(path, shape, count) for every parameter array, in tree order."""
  rows = []
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    rows.append(('/'.join(str(getattr(k, 'key', k)) for k in path), tuple(leaf.shape), int(np.prod(leaf.shape))))
  return rows


def parameter_count(params) -> int:
  """How many numbers a parameter tree holds (arrays or their abstract shapes)."""
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(params))


def program_flops(fn, *args) -> float:
  """FLOPs of `fn(*args)` as XLA counts them in the program before any backend optimisation.

  The same count on every backend: convolutions and dots are still HLO operations there (a multiply-add of
  the window inside the input, padding excluded, is 2 FLOPs), where the compiled program of a GPU calls
  them in cuDNN / cuBLAS and the compiled program's count leaves them out (16x too few for a U-Net).
  Elementwise operations count one per element, transcendental functions apart."""
  analysis = jax.jit(fn).lower(*args).cost_analysis()
  if isinstance(analysis, list):  # older jax returned one dict per device program
    analysis = analysis[0]
  return float((analysis or {}).get('flops', 0.0))


def loss_flops(task: Task, params, batch_size: int, with_gradient: bool) -> float:
  """FLOPs of one loss evaluation on a batch, or of loss + gradient (optimizer update excluded)."""
  fn = lambda p, b, r: task.loss(p, b, r, with_gradient)[0]
  if with_gradient:
    fn = jax.grad(fn)
  return program_flops(fn, params, task.batch_spec(batch_size), jax.random.PRNGKey(0))


def report(config: ml_collections.ConfigDict, workdir: str | None = None) -> str:
  """The text experiments.inspect prints; its last line is `params: N`, preceded by FLOPs where known."""
  task = stages.build_task(config, workdir)
  params = jax.eval_shape(task.init, jax.random.PRNGKey(0))
  rows = parameter_table(params)
  width = max(len(r[0]) for r in rows)
  lines = [f'{"parameter".ljust(width)}  {"shape":>20}  {"count":>10}']
  lines += [f'{path.ljust(width)}  {str(shape):>20}  {count:>10,}' for path, shape, count in rows]
  lines.append(f'flops_per_example: {loss_flops(task, params, 1, with_gradient=False):.4g}')
  lines.append(f'params: {sum(r[2] for r in rows)}')
  return '\n'.join(lines)

"""DIR/checkpoints: orbax checkpoints of the train state that degrade gracefully.

Each finished checkpoint gets a digest (size and CRC-32 of every file, DIR/checkpoints/digest-STEP.json)
once orbax has committed it (at the next save, or when the run ends or stops). A restore verifies the
newest checkpoint against its digest before orbax reads it; one that is damaged (a file missing, truncated
or overwritten) or that orbax cannot read is reported in one line, moved aside to
DIR/checkpoints/corrupt-STEP by the run that holds the work directory, and the previous checkpoint is
tried. When none can be read, the restore stops with an error rather than start the run over. The run
holding the directory also keeps only the newest `keep_checkpoints` steps, even after crashes (orbax's
partly written temporary directories are removed).

DIR/checkpoints/STEP/   orbax: {'state': TrainState, 'meta': {'step', 'data': {'next_step'}}}

On a local disk orbax writes STEP.orbax-checkpoint-tmp-* and renames it; on an object store (no rename) it
writes STEP/ in place and commits it with STEP/commit_success.txt, so only such steps count as committed.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging as pylogging
import os
import re
import sys
import time
import zlib
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

from lgm import files

CORRUPT_PREFIX = 'corrupt-'
_COMMITTED_ON_OBJECT_STORES = 'commit_success.txt'  # orbax's commit marker where it cannot rename
_DIGEST = re.compile(r'^digest-(\d+)\.json$')
_MIN_SLICE_BYTES = 64 * 1024  # per replica: smaller replicated arrays are written whole by one replica
_SETTLE_SECONDS, _SETTLE_TRIES = 0.5, 20  # how long a failed save's directory must stay clean, how often


class CheckpointError(RuntimeError):
  """No checkpoint of a work directory can be read."""


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(files.absolute(workdir), 'checkpoints')


def committed_steps(directory: str) -> set[int]:
  """The steps of the committed checkpoints in a checkpoint directory (a listing: orbax is not started)."""
  return {int(name) for name in files.listdir(directory) if name.isdigit() and _committed(directory, name)}


def _committed(directory: str, name: str) -> bool:
  return not files.is_url(directory) or files.exists(os.path.join(directory, name, _COMMITTED_ON_OBJECT_STORES))


def saved_step(workdir: str) -> int:
  """The step of DIR's latest committed checkpoint, 0 if none."""
  return max(committed_steps(checkpoint_dir(workdir)), default=0)


def abstract_like(tree: Any, shardings: Any) -> Any:
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


@functools.cache
def _split_only_large_arrays() -> None:
  """orbax shares the writing of a replicated array among its replicas, one slice each. Every slice of a new
  shape is an XLA program compiled at the first save (~30 ms on CPU; 192 for a small text-to-image model on
  8 devices), which small arrays (biases, norms: most leaves of a model) do not repay. From
  _MIN_SLICE_BYTES per replica down, the first replica writes the array whole. Sets the option on orbax's
  registered jax.Array handler (a private field; left alone where it has moved)."""
  handler = ocp.type_handlers.get_type_handler(jax.Array)
  if getattr(handler, '_min_slice_bytes_for_replica_parallel', 0) is None:
    tuned = copy.copy(handler)
    tuned._min_slice_bytes_for_replica_parallel = _MIN_SLICE_BYTES
    ocp.type_handlers.register_type_handler(jax.Array, tuned, override=True)


class Checkpoints:
  """The checkpoints of one work directory. `writer=True` only for the run holding its lock (`lgm.train.lock`):
  it saves, moves damaged checkpoints aside and prunes; a reader (sampling, evaluation) only falls back."""

  def __init__(self, workdir: str, keep: int = 3, writer: bool = False):
    self.directory = checkpoint_dir(workdir)
    self.writer = writer
    self._keep = keep
    if writer:
      _split_only_large_arrays()
      options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, cleanup_tmp_directories=True,
                                             enable_async_checkpointing=True)
    else:
      options = ocp.CheckpointManagerOptions(create=False)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any, meta: dict) -> None:
    """Starts writing `step` in the background (the previous save is finished, and digested, first)."""
    self.wait_until_finished()
    with self._discarding_partial_saves():
      self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                       meta=ocp.args.JsonSave(meta)))

  def restore(self, abstract_state: Any) -> tuple[Any, dict, int] | None:
    """(state, meta, step) of the newest readable checkpoint, laid out as `abstract_state`; None if there
    are no checkpoints; CheckpointError if there are some and none can be read, or if the newest intact one
    does not fit `abstract_state` (then nothing is moved: the checkpoint is sound, the model is not its own)."""
    steps = self.steps()
    if not steps:
      return None
    problems = []
    for step in reversed(steps):
      problem = self.verify(step)
      if problem is None:
        try:
          with _quiet_async_failures():
            restored = self._manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
          if self.writer:
            self._prune(keep_from=step)
          return restored['state'], restored['meta'], step
        except Exception as e:  # orbax and tensorstore raise many types for a damaged file
          problem = _first_line(e)
          if files.exists(self._digest_path(step)):  # its files are as written: the reader differs
            raise CheckpointError(
                f'checkpoint of step {step} in {self.directory} is intact (its files match their digest) but '
                f'does not fit the model restoring it ({self._misfit(step, abstract_state) or problem}): run '
                'the code and config that wrote it, or train into a new --workdir.') from None
      problems.append(f'step {step}: {problem}')
      moved = self._move_aside(step) if self.writer else None
      logging.warning('checkpoint of step %d in %s cannot be read (%s)%s; trying the previous one.', step,
                      self.directory, problem, f'; moved to {moved}' if moved else '')
    moved = f'the damaged ones were moved to {CORRUPT_PREFIX}STEP. ' if self.writer else ''
    raise CheckpointError(f'no checkpoint in {self.directory} can be read ({"; ".join(problems)}); {moved}Restore '
                          'them from a backup, or train into a new --workdir.')

  def _misfit(self, step: int, abstract_state: Any) -> str:
    """Which arrays checkpoint `step` has and the model lacks, and the reverse ('' if that cannot be told)."""
    try:
      saved = ocp.StandardCheckpointer().metadata(os.path.join(self.directory, str(step), 'state')).item_metadata
    except Exception:  # noqa: BLE001 -- a diagnostic only: the caller's error stands without it
      return ''
    saved, wanted = _leaf_paths(getattr(saved, 'tree', saved)), _leaf_paths(abstract_state)
    parts = [f'{label} {len(paths)} array(s) such as {", ".join(sorted(paths)[:3])}'
             for label, paths in (('the checkpoint has', saved - wanted), ('the model has', wanted - saved)) if paths]
    return '; '.join(parts)

  def verify(self, step: int) -> str | None:
    """What is wrong with checkpoint `step` against its digest (None: intact, or written without one)."""
    path = self._digest_path(step)
    if not files.exists(path):
      return None  # killed between orbax's commit and the digest: orbax's own checks remain
    expected = files.read_json(path)
    actual = _digest(os.path.join(self.directory, str(step)))
    for name, (size, crc) in sorted(expected.items()):
      if name not in actual:
        return f'file {step}/{name} is missing'
      if actual[name][0] != size:
        return f'file {step}/{name} has {actual[name][0]} bytes, {size} were written'
      if actual[name][1] != crc:
        return f'file {step}/{name} was overwritten (its CRC-32 differs from the one written)'
    return None

  def wait_until_finished(self) -> None:
    """Finish the save in flight and write the digests of the committed checkpoints."""
    with self._discarding_partial_saves():
      self._manager.wait_until_finished()
    self._write_digests()

  @contextlib.contextmanager
  def _discarding_partial_saves(self):
    """A save that failed (a full disk) leaves no partly written checkpoint behind."""
    try:
      yield
    except BaseException:
      if jax.process_index() == 0:
        self._remove_partial_saves()
      raise

  def _remove_partial_saves(self) -> None:
    """Removes what failed saves wrote. orbax reports a save's first failed write while tensorstore may still
    be writing the rest, which re-creates the directory: the removal repeats until the checkpoint directory
    has stayed clean for _SETTLE_SECONDS."""
    for _ in range(_SETTLE_TRIES):
      partial = [name for name in files.listdir(self.directory)
                 if '.orbax-checkpoint-tmp' in name or (name.isdigit() and not _committed(self.directory, name))]
      if not partial:
        return
      for name in partial:
        files.rmtree(os.path.join(self.directory, name))
      time.sleep(_SETTLE_SECONDS)

  def close(self) -> None:
    self._manager.close()

  def _write_digests(self) -> None:
    """Digest the committed steps that have none; drop the digests of deleted steps."""
    if jax.process_index() != 0 or not self.writer:
      return
    present = committed_steps(self.directory)
    digested = {int(m.group(1)) for name in files.listdir(self.directory) if (m := _DIGEST.match(name))}
    for step in sorted(present - digested):
      files.write_json(self._digest_path(step), _digest(os.path.join(self.directory, str(step))), indent=0)
    for step in digested - present:
      files.remove_quietly(self._digest_path(step))

  def _digest_path(self, step: int) -> str:
    return os.path.join(self.directory, f'digest-{step}.json')

  def _move_aside(self, step: int) -> str | None:
    multihost_utils.sync_global_devices(f'lgm: checkpoint {step} verified')  # every process decided first
    target = None
    if jax.process_index() == 0:
      target = os.path.join(self.directory, f'{CORRUPT_PREFIX}{step}')
      suffix = 1
      while files.exists(target):
        target, suffix = os.path.join(self.directory, f'{CORRUPT_PREFIX}{step}.{suffix}'), suffix + 1
      files.rename(os.path.join(self.directory, str(step)), target)
      files.remove_quietly(self._digest_path(step))
    multihost_utils.sync_global_devices(f'lgm: checkpoint {step} moved aside')
    self._manager.reload()
    return target

  def _prune(self, keep_from: int) -> None:
    """Keep the newest `keep` steps up to `keep_from` (orbax's retention misses steps left by a crash)."""
    older = [s for s in self.steps() if s <= keep_from][:-self._keep]
    if not older:
      return
    if jax.process_index() == 0:
      for step in older:
        files.rmtree(os.path.join(self.directory, str(step)))
        files.remove_quietly(self._digest_path(step))
      logging.info('Removed checkpoints %s of %s (keep_checkpoints=%d).', older, self.directory, self._keep)
    multihost_utils.sync_global_devices('lgm: checkpoints pruned')
    self._manager.reload()


def _digest(step_dir: str) -> dict[str, list[int]]:
  """Relative path -> [size, CRC-32] of every file under a checkpoint directory."""
  out = {}
  for name in files.file_names(step_dir):
    crc, size = 0, 0
    with files.open_file(os.path.join(step_dir, name), 'rb') as f:
      while chunk := f.read(1 << 22):
        crc, size = zlib.crc32(chunk, crc), size + len(chunk)
    out[name] = [size, crc]
  return out


def _leaf_paths(tree: Any) -> set[str]:
  """'params/decoder/Conv_0/kernel' for every leaf of a pytree (dicts, dataclasses and sequences alike)."""
  return {jax.tree_util.keystr(path, simple=True, separator='/')
          for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _first_line(error: BaseException) -> str:
  """The innermost cause of an orbax/tensorstore error, on one line."""
  while error.__cause__ is not None:
    error = error.__cause__
  text = str(error).strip().splitlines()
  return f'{type(error).__name__}: {text[0] if text else ""}'[:300]


class _quiet_async_failures:
  """Silences the hundreds of tracebacks that tensorstore's reader threads print after one read failed."""

  def __enter__(self):
    self._hook, self._level = sys.unraisablehook, pylogging.getLogger('asyncio').level
    sys.unraisablehook = lambda unraisable: None
    pylogging.getLogger('asyncio').setLevel(pylogging.CRITICAL)

  def __exit__(self, *exc):
    if exc[0] is None:  # success: no failing readers are left behind
      sys.unraisablehook = self._hook
      pylogging.getLogger('asyncio').setLevel(self._level)
    return False

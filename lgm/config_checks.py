"""Every config value checked before a run or a job starts work: nothing is created for a bad config.

Rules go by the name of the key, wherever it sits (`num_steps` is a positive integer in `train` and in
`sampling` alike), so a new config section gets them for free. All the problems of a config are reported
together, on one line, each naming its key.
"""

from __future__ import annotations

import numbers
from typing import Any, Callable

import ml_collections

from lgm import losses, sampling, sde
from lgm.models import DTYPES, MODELS
from lgm.tasks import TASKS

Rule = Callable[[Any], str | None]  # a value -> what is wrong with it, or None


def _int_at_least(low: int) -> Rule:
  def rule(value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
      return f'must be an integer >= {low}'
    return None
  return rule


def _number_in(low: float, high: float, low_open: bool = False, high_open: bool = False) -> Rule:
  def rule(value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
      return 'must be a number'
    if value < low or value > high or (low_open and value == low) or (high_open and value == high):
      if high == float('inf'):
        return f'must be {">" if low_open else ">="} {low:g}'
      return f'must be in {"(" if low_open else "["}{low:g}, {high:g}{")" if high_open else "]"}'
    return None
  return rule


def _one_of(names) -> Rule:
  def rule(value):
    return None if value in names else f'must be one of {sorted(names)}'
  return rule


def _sequence_of(element: Rule, what: str, length: int | None = None, nonempty: bool = False) -> Rule:
  def rule(value):
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
      return f'must be a list of {what}'
    if length is not None and len(value) != length:
      return f'must be a list of {length} {what}'
    if nonempty and not value:
      return f'must be a non-empty list of {what}'
    if any(element(v) for v in value):
      return f'must be a list of {what}'
    return None
  return rule


def _string(value):
  return None if isinstance(value, str) else 'must be a string'


POSITIVE_INT = _int_at_least(1)
NON_NEGATIVE_INT = _int_at_least(0)
POSITIVE = _number_in(0, float('inf'), low_open=True)
GUIDANCE = _number_in(0, 100)  # 0: unconditional, 1: conditional, > 1: classifier-free guidance

# Leaf key name -> rule; a dotted suffix ('sampling.method') narrows a name used in several sections.
RULES: dict[str, Rule] = {
    'num_steps': POSITIVE_INT,
    'log_every': POSITIVE_INT,
    'checkpoint_every': POSITIVE_INT,
    'eval.every': POSITIVE_INT,
    'keep_checkpoints': POSITIVE_INT,
    'steps_per_call': POSITIVE_INT,
    'batch_size': POSITIVE_INT,
    'num_examples': POSITIVE_INT,
    'image_size': POSITIVE_INT,
    'channels': POSITIVE_INT,
    'num_scales': POSITIVE_INT,
    'n_steps_each': POSITIVE_INT,
    'num_samples': POSITIVE_INT,
    'num_images': POSITIVE_INT,
    'context_length': POSITIVE_INT,
    'num_threads': POSITIVE_INT,
    'warmup_steps': NON_NEGATIVE_INT,
    'bpd_per_batch': NON_NEGATIVE_INT,
    'seed': NON_NEGATIVE_INT,
    'learning_rate': POSITIVE,
    'grad_clip': _number_in(0, float('inf')),
    'ema_decay': _number_in(0, 1, high_open=True),
    'dropout': _number_in(0, 1, high_open=True),
    'p_uncond': _number_in(0, 1),
    'partial_captions': _number_in(0, 1),
    'final_lr_fraction': _number_in(0, 1),
    'loss.eps': _number_in(0, 1, low_open=True, high_open=True),
    'sampling.eps': _number_in(0, 1, low_open=True, high_open=True),
    'sampling_guidance': GUIDANCE,
    'guidance_interval': _sequence_of(_number_in(0, 1), 'two times in [0, 1] (fractions of T)', length=2),
    'guidances': _sequence_of(GUIDANCE, 'guidances in [0, 100]', nonempty=True),
    'ch_mult': _sequence_of(POSITIVE_INT, 'positive integers', nonempty=True),
    'attn_resolutions': _sequence_of(POSITIVE_INT, 'positive integers'),
    'log_sigma': _sequence_of(_number_in(-100, 100), 'numbers (mean, std)', length=2),
    'prompts': _sequence_of(_string, 'strings'),
    'compute_dtype': _one_of(DTYPES),
    'task': _one_of(TASKS),
    'model.name': _one_of(MODELS),
    'sde.name': _one_of(sde.SDES),
    'sampling.method': _one_of(sampling.METHODS),
    'sampling.predictor': _one_of(sampling.PREDICTORS),
    'sampling.corrector': _one_of(sampling.CORRECTORS),
    'time_distribution': _one_of(losses.TIME_DISTRIBUTIONS),
    'signature.bits': POSITIVE_INT,
    'calibration_images': _int_at_least(2),
    'signature_real_images': POSITIVE_INT,
    'target_psnr': POSITIVE,
    'image_weight': _number_in(0, float('inf')),
    'signature_false_positive_rate': _number_in(0, 1, low_open=True, high_open=True),
}


def problems(config: ml_collections.ConfigDict, prefix: str = '') -> list[str]:
  """'KEY=VALUE RULE' for every value of `config` that breaks a rule."""
  found = []
  for key, value in _leaves(config.to_dict()):
    rule = _rule_for(key)
    message = rule(value) if rule else None
    if message:
      found.append(f'{prefix}{key}={value!r} {message}')
  found += _step_multiples(config, prefix)
  mesh = config.get('mesh')
  if mesh is not None:
    for axis, size in mesh.items():
      if isinstance(size, bool) or not isinstance(size, int) or (size != -1 and size < 1):
        found.append(f'{prefix}mesh.{axis}={size!r} must be a positive integer, or -1 for the remaining devices')
  return found


def _step_multiples(config: ml_collections.ConfigDict, prefix: str) -> list[str]:
  """Several steps per call log, evaluate, checkpoint and stop only at multiples of their number."""
  per_call = config.get('train', {}).get('steps_per_call', 1)
  if POSITIVE_INT(per_call) or per_call == 1:
    return []
  counts = {'train.num_steps': config.train.get('num_steps'), 'train.log_every': config.train.get('log_every'),
            'train.checkpoint_every': config.train.get('checkpoint_every'),
            'eval.every': config.get('eval', {}).get('every')}
  return [f'{prefix}{key}={value} must be a multiple of train.steps_per_call={per_call}'
          for key, value in counts.items() if isinstance(value, int) and value % per_call]


def check_run(config: ml_collections.ConfigDict) -> None:
  """Raise one ValueError naming every bad value of a training config."""
  _raise(problems(config))


def check_job(config: ml_collections.ConfigDict) -> None:
  """Raise one ValueError naming every bad value of a job config (its stages and its report)."""
  order = config.stage_order
  if _sequence_of(_string, 'stage names', nonempty=True)(order):
    _raise([f'stage_order={order!r} must be a non-empty list of stage names'])
  sections = sorted(k for k in config if hasattr(config[k], 'keys') and 'task' in config[k])
  missing = [name for name in order if name not in sections]
  if missing:
    _raise([f'stage_order names {missing}, which are not training configs of this job; valid: {sections}'])
  found = [problem for name in order for problem in problems(config[name], prefix=f'{name}.')]
  if 'data' in config:  # the job's images, set in every stage
    found += problems(config.data, prefix='data.')
  if 'report' in config:
    found += problems(config.report, prefix='report.')
  _raise(found)


def _raise(found: list[str]) -> None:
  if found:
    raise ValueError(f'bad config value{"s" if len(found) > 1 else ""}: {"; ".join(found)}; '
                     'fix them with --config.KEY=VALUE or in the config file.')


def _rule_for(key: str) -> Rule | None:
  parts = key.split('.')
  for n in range(min(len(parts), 2), 0, -1):  # 'sampling.method' before 'method'
    rule = RULES.get('.'.join(parts[-n:]))
    if rule is not None:
      return rule
  return None


def _leaves(tree: dict, prefix: str = ''):
  for key, value in tree.items():
    if key == 'mesh' and not prefix:
      continue  # checked as a whole: its keys are axis names
    if isinstance(value, dict):
      yield from _leaves(value, f'{prefix}{key}.')
    else:
      yield f'{prefix}{key}', value

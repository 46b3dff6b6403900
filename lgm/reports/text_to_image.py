"""The text-to-image report: how well images generated from held-out captions show what was asked.

For each guidance of `report.guidances`, images are generated from `report.num_images` held-out captions
(one seed each) by the job's pipeline. Every dataset gets: caption retrieval (is the image's nearest
held-out caption, by CLIP, its own prompt), CLIP score, Frechet distance of CLIP image features (FID
(CLIP)), images/s. When `report.classifier_stage` names a stage (an attribute or label classifier trained
on real images), it reads each image: fidelity per attribute and all at once; with
`report.negative_images_per_value`, how far a negative prompt moves samples away from what it names.
Written: DIR/report.md, DIR/report.json, DIR/samples/prompts.png, and `eval/...` lines in DIR/metrics.jsonl.
"""

from __future__ import annotations

import os
import time

import jax
import ml_collections
import numpy as np

from lgm import batching, evaluation, files, stages
from lgm import images as image_lib
from lgm.data import loader as loader_lib
from lgm.pipeline import SCORE_STAGE, TextToImage
from lgm.tasks.attributes import read_attributes
from lgm.train import metrics as metrics_lib

GRID_PROMPTS = 8  # the prompt grid's held-out captions when `report.prompts` is empty


def evaluate(workdir: str, report: ml_collections.ConfigDict, num: int | None = None) -> dict[str, float]:
  """Fidelity, CLIP score and FID (CLIP image features) of images generated from held-out captions, at
  each guidance of `report.guidances`, with the score stage's sampler; appended to DIR/metrics.jsonl.
  Also writes DIR/samples/prompts.png (the report's prompt grid)."""
  pipe = TextToImage.from_workdir(workdir)
  classifier = (stages.load_stage(workdir, report.classifier_stage, 'classifier')
                if report.classifier_stage else None)
  clip = pipe.task.clip
  num = num or report.num_images
  held_out, _ = loader_lib.load_arrays(pipe.task.config, pipe.task.config.data.eval_split, num)
  prompts = [str(c) for c in held_out['caption']]
  real = _embed_images(clip, held_out['image'])
  real_stats = evaluation.gaussian_statistics(real)
  texts = clip.task.encode_text(clip.params, prompts)
  metrics = {}
  for guidance in report.guidances:
    start = time.perf_counter()
    generated, nfe = pipe(prompts, guidance=guidance, seeds=range(len(prompts)))
    seconds = time.perf_counter() - start
    tag = f'g{guidance:g}'
    features = _embed_images(clip, generated)
    if classifier is not None:
      read = read_attributes(classifier.task, classifier.params, generated)
      asked = {name: held_out[name] for name in classifier.task.attributes}
      metrics.update({f'{k}_{tag}': v for k, v in evaluation.fidelity(read, asked).items()})
    metrics[f'caption_retrieval_{tag}'] = evaluation.caption_retrieval(features, texts, prompts)
    metrics[f'clip_score_{tag}'] = evaluation.clip_score(features, texts)
    metrics[f'fid_clip_{tag}'] = evaluation.frechet_distance(*real_stats, *evaluation.gaussian_statistics(features))
    metrics[f'nfe_{tag}'] = nfe
    metrics[f'images_per_sec_{tag}'] = len(prompts) / seconds
  metrics['num_images'] = len(prompts)
  metrics['caption_retrieval_chance'] = 1 / len(set(prompts))
  if classifier is not None and report.get('negative_images_per_value'):
    metrics.update(negative_prompt_effect(pipe, classifier, report.negative_images_per_value,
                                          max(report.guidances)))
  step = pipe.step
  writer = metrics_lib.MetricsWriter(workdir)
  writer.write(step, {f'eval/{k}': v for k, v in metrics.items()})
  writer.close()
  if jax.process_index() == 0:
    grid_prompts = list(report.prompts) or prompts[:GRID_PROMPTS]
    grid, _ = pipe(grid_prompts, guidance=max(report.guidances), seeds=range(len(grid_prompts)))
    image_lib.save_grid(os.path.join(workdir, 'samples', 'prompts.png'), grid, ncol=len(grid_prompts) // 2 or 1,
                        upscale=2)
  return metrics


def negative_prompt_effect(pipe, classifier, per_value: int, guidance: float) -> dict[str, float]:
  """Does a negative prompt steer away from what it names? For every value of every attribute (the word
  'red', 'circle', 'small', 'top left', ...), the share of unconditional samples (empty prompt) showing
  that value, drawn without and with the word as the negative prompt from the same `per_value` seeds.

  `negative_<attribute>_without` / `_with`: the shares averaged over the attribute's values (without it,
  the average is 1 / number of values by construction; the per-value shares are in
  `negative_<attribute>=<value>_without` / `_with`).
  """
  seeds = range(per_value)
  read = lambda negative: read_attributes(classifier.task, classifier.params, pipe(
      [''] * per_value, negative_prompt=negative, guidance=guidance, seeds=seeds)[0])
  plain = read(None)
  metrics = {}
  for name, values in classifier.task.value_names.items():
    for v, word in enumerate(values):
      metrics[f'negative_{name}={word}_without'] = float(np.mean(plain[name] == v))
      metrics[f'negative_{name}={word}_with'] = float(np.mean(read(word)[name] == v))
    for when in ('without', 'with'):
      metrics[f'negative_{name}_{when}'] = float(np.mean([metrics[f'negative_{name}={w}_{when}'] for w in values]))
  metrics['negative_guidance'] = guidance
  metrics['negative_images_per_value'] = per_value
  return metrics


def _embed_images(clip, images: np.ndarray, batch_size: int = 250) -> np.ndarray:
  return batching.map_in_batches(clip.task.encode_images, clip.params, images, batch_size)


def write(workdir: str, config: ml_collections.ConfigDict, metrics: dict[str, float],
                 seconds: dict[str, float]) -> str:
  """DIR/report.md: the figures of the run, the table of guidances, the prompt grid, the time per stage."""
  score = config[SCORE_STAGE]
  attributes = sorted({k[len('fidelity_'):].rsplit('_g', 1)[0] for k in metrics if k.startswith('fidelity_')})
  guidances = list(config.report.guidances)
  lines = [f'# Text-to-image report: {workdir}', '',
           f"{int(metrics['num_images'])} images generated from held-out `{score.data.dataset}` captions, "
           'one seed each; '
           f"sampler `{score.sampling.method}` ({metrics[f'nfe_g{guidances[0]:g}']} score evaluations per image, "
           'each a conditional + unconditional pair); EMA parameters.'
           + (f' Fidelity: the classifier of stage `{config.report.classifier_stage}` (trained on real images) '
              'reads each generated image.' if attributes else '')
           + ' Caption retrieval: the share of images whose nearest distinct held-out caption (CLIP) is their own '
           f"prompt (chance {metrics['caption_retrieval_chance']:.3f}).", '',
           '| guidance | ' + ' | '.join(f'fidelity_{a}' for a in attributes)
           + ' | caption retrieval | CLIP score | FID (CLIP features) | images/s |',
           '|---' * (len(attributes) + 5) + '|']
  for g in guidances:
    tag = f'g{g:g}'
    cells = [f"{metrics[f'fidelity_{a}_{tag}']:.3f}" for a in attributes]
    lines.append(f'| {g:g} | ' + ''.join(c + ' | ' for c in cells) + f"{metrics[f'caption_retrieval_{tag}']:.3f} | "
                 f"{metrics[f'clip_score_{tag}']:.2f} | {metrics[f'fid_clip_{tag}']:.4f} | "
                 f"{metrics[f'images_per_sec_{tag}']:.1f} |")
  negatives = [a for a in attributes if f'negative_{a}_with' in metrics]
  if negatives:
    lines += ['', f"Negative prompts (guidance {metrics['negative_guidance']:g}, empty prompt, "
              f"{int(metrics['negative_images_per_value'])} seeds per value): the share of samples showing the "
              'value named by the negative prompt, averaged over the values of each attribute.', '',
              '| attribute | without the negative prompt | with it |', '|---|---|---|']
    lines += [f"| {a} | {metrics[f'negative_{a}_without']:.3f} | {metrics[f'negative_{a}_with']:.3f} |"
              for a in negatives]
  lines += ['', '![prompt grid](samples/prompts.png)', '', 'Prompts (row-major): ' +
            ('; '.join(f'"{p}"' for p in config.report.prompts) or f'the first {GRID_PROMPTS} held-out captions'),
            '', '| stage | seconds |', '|---|---|']
  lines += [f'| {name} | {s:.0f} |' for name, s in seconds.items()]
  lines.append(f'| total | {sum(seconds.values()):.0f} |')
  path = os.path.join(workdir, 'report.md')
  files.write_json(os.path.join(workdir, 'report.json'), {'metrics': metrics, 'seconds': seconds}, indent=1)
  files.write_text(path, '\n'.join(lines) + '\n')  # last: report.md is what marks the job as finished
  return path

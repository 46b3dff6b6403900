"""The text-to-image report: how well images generated from held-out captions show what was asked.

For each guidance of `report.guidances`, images are generated from `report.num_images` held-out captions
(one seed each) by the job's pipeline. Every dataset gets: caption retrieval (is the image's nearest
held-out caption, by CLIP, its own prompt), CLIP score, Frechet distance of CLIP image features (FID
(CLIP)), images/s. When `report.classifier_stage` names a stage (an attribute or label classifier trained
on real images), it reads each image: fidelity per attribute and all at once; with
`report.negative_images_per_value`, how far a negative prompt moves samples away from what it names. A job
with a `signature` stage also gets the signature section (`lgm.reports.signature`) and the rows of its
highest guidance decoded without the signature (what signing costs).
Written: DIR/report.md, DIR/report.json, DIR/samples/prompts.png, and `eval/...` lines in DIR/metrics.jsonl.
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from lgm import batching, evaluation, files, stages, xla
from lgm import images as image_lib
from lgm.data import loader as loader_lib
from lgm.pipeline import SCORE_STAGE, SIGNATURE_STAGE, TextToImage
from lgm.reports import signature as signature_report
from lgm.reports import unclip as unclip_report
from lgm.tasks.attributes import read_attributes
from lgm.train import metrics as metrics_lib

GRID_PROMPTS = 8  # the prompt grid's held-out captions when `report.prompts` is empty


def evaluate(workdir: str, report: ml_collections.ConfigDict, num: int | None = None) -> dict[str, float]:
  """Fidelity, CLIP score and FID (CLIP image features) of images generated from held-out captions, at
  each guidance of `report.guidances`, with the score stage's sampler; appended to DIR/metrics.jsonl.
  The same figures for two references, tagged `real` (the held-out images themselves) and `vae` (their
  VAE reconstructions: the most the decoder lets a generated image show). With a classifier, the
  confusion counts of every attribute (`confusion_<attribute>=<asked>><read>_<tag>`).

  Each road of `report.routes` ('guided', tagged g<guidance>; 'prior', tagged prior_g<guidance>) and each
  baseline of `report.baselines` (the decoder fed 'text_embedding' or the 'nearest_image' training embedding)
  is measured at every guidance; with `report.diversity_prompts`, their diversity; with `report.variations`,
  the decoder's variations of held-out images (`lgm.reports.unclip`).
  Also writes DIR/samples/prompts.png (the report's prompt grid)."""
  pipe = TextToImage.from_workdir(workdir)
  classifier = (stages.load_stage(workdir, report.classifier_stage, 'classifier')
                if report.classifier_stage else None)
  clip = pipe.clip
  num = num or report.num_images
  config = (pipe.task or pipe.decoder.task).config
  held_out, _ = loader_lib.load_arrays(config, config.data.eval_split, num)
  prompts = [str(c) for c in held_out['caption']]
  real = _embed_images(clip, held_out['image'])
  real_stats = evaluation.gaussian_statistics(real)
  texts = clip.task.encode_text(clip.params, prompts)

  def measure(images: np.ndarray, tag: str) -> dict[str, float]:
    features = real if tag == 'real' else _embed_images(clip, images)
    out = {}
    if classifier is not None:
      read = read_attributes(classifier.task, classifier.params, images)
      asked = {name: held_out[name] for name in classifier.task.attributes}
      out.update(evaluation.fidelity(read, asked))
      out.update(confusion_counts(read, asked, classifier.task.value_names))
    out['caption_retrieval'] = evaluation.caption_retrieval(features, texts, prompts)
    out['clip_score'] = evaluation.clip_score(features, texts)
    out['fid_clip'] = evaluation.frechet_distance(*real_stats, *evaluation.gaussian_statistics(features))
    return {f'{k}_{tag}': v for k, v in out.items()}

  autoencoded = _reconstruct(pipe.decoder.task if pipe.task is None else pipe.task, held_out['image'])
  metrics = {**measure(held_out['image'], 'real'), **measure(autoencoded, 'vae')}
  roads = unclip_report.roads(pipe, config, report)
  main_road, last_guidance = list(roads)[0], report.guidances[-1]  # the signature section reads these images
  for guidance in report.guidances:
    for name, generate in roads.items():
      tag = route_tag(name, guidance)
      start = time.perf_counter()
      generated, nfe = generate(prompts, guidance, range(len(prompts)))
      if (name, guidance) == (main_road, last_guidance):
        signed_images = generated
      seconds = time.perf_counter() - start
      metrics.update(measure(generated, tag))
      metrics.update({f'{key}_{tag}': n for key, n in nfe.items()})
      metrics[f'images_per_sec_{tag}'] = len(prompts) / seconds
      if report.get('diversity_prompts'):
        metrics[f'diversity_{tag}'] = unclip_report.diversity(pipe, generate, prompts[:report.diversity_prompts],
                                                              guidance)
  if files.exists(os.path.join(workdir, SIGNATURE_STAGE, 'config.json')):
    unsigned = unclip_report.roads(TextToImage.from_workdir(workdir, signed=False), config, report)
    images, _ = unsigned[main_road](prompts, last_guidance, range(len(prompts)))
    metrics.update(measure(images, f'{route_tag(main_road, last_guidance)}_{signature_report.UNSIGNED}'))
    real, _ = loader_lib.load_arrays(config, config.data.eval_split, report.get('signature_real_images', 2000))
    metrics.update(signature_report.evaluate(workdir, signed_images, real['image'],
                                             report.get('signature_false_positive_rate', 1e-3)))
  metrics['num_images'] = len(prompts)
  metrics['caption_retrieval_chance'] = 1 / len(set(prompts))
  if classifier is not None and report.get('negative_images_per_value'):
    metrics.update(negative_prompt_effect(pipe, classifier, report.negative_images_per_value,
                                          max(report.guidances)))
  if report.get('variations'):
    metrics.update(unclip_report.variations(pipe, classifier, held_out, report.variations))
  step = pipe.step if pipe.task is not None else pipe.decoder.step
  writer = metrics_lib.MetricsWriter(workdir)
  writer.write(step, {f'eval/{k}': v for k, v in metrics.items()})
  writer.close()
  if jax.process_index() == 0:
    grid_prompts = list(report.prompts) or prompts[:GRID_PROMPTS]
    rows = [roads[name](grid_prompts, max(report.guidances), range(len(grid_prompts)))[0] for name in roads]
    image_lib.save_grid(os.path.join(workdir, 'samples', 'prompts.png'), np.concatenate(rows),
                        ncol=len(grid_prompts) // (2 if len(rows) == 1 else 1) or 1, upscale=2)
    if classifier is not None and report.get('negative_images_per_value'):
      words = [values[0] for values in classifier.task.value_names.values()]
      negative_prompt_grid(pipe, words, max(report.guidances), os.path.join(workdir, 'samples', 'negative_prompts.png'))
    if pipe.decoder is not None:
      unclip_report.figures(pipe, held_out, os.path.join(workdir, 'samples'))
  return metrics


def route_tag(name: str, guidance: float) -> str:
  """The metrics' tag of a road or baseline at a guidance: g3 (the guided road), prior_g3, nearest_image_g3."""
  return f'g{guidance:g}' if name == 'guided' else f'{name}_g{guidance:g}'


def negative_prompt_grid(pipe, words: list[str], guidance: float, path: str, num: int = GRID_PROMPTS) -> str:
  """`num` samples of the empty prompt (first row), then the same seeds with each word as the negative prompt
  (one row per word)."""
  rows = [pipe([''] * num, negative_prompt=word, guidance=guidance, seeds=range(num))[0] for word in [None, *words]]
  return image_lib.save_grid(path, np.concatenate(rows), ncol=num, upscale=2)


def confusion_counts(read: dict[str, np.ndarray], asked: dict[str, np.ndarray],
                     value_names: dict[str, tuple[str, ...]]) -> dict[str, float]:
  """`confusion_<attribute>=<asked>><read>`: how many images asked for one value were read as another (or
  as it, on the diagonal), for every pair of values."""
  counts = {}
  for name, values in value_names.items():
    table = np.zeros((len(values), len(values)), int)
    np.add.at(table, (np.asarray(asked[name]), np.asarray(read[name])), 1)
    counts.update({f'confusion_{name}={a}>{r}': float(table[i, j])
                   for i, a in enumerate(values) for j, r in enumerate(values)})
  return counts


def _reconstruct(task, images: np.ndarray, batch_size: int = 250) -> np.ndarray:
  """Images through the VAE of a text-to-image task: encode, decode (what generation can at best give)."""
  roundtrip = xla.jit(lambda params, x: jnp.clip(task.to_images(task.to_data(x)), -1.0, 1.0))
  return batching.map_in_batches(roundtrip, None, images, batch_size)


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


REFERENCES = (('real', 'held-out images (reference)'), ('vae', 'their VAE reconstructions (ceiling)'))
ROUTE_NAMES = {'guided': 'guided', 'prior': 'prior', 'text_embedding': 'baseline: text embedding',
               'nearest_image': 'baseline: nearest training image'}
BASELINE_NAMES = ('text_embedding', 'nearest_image')


def write(workdir: str, config: ml_collections.ConfigDict, metrics: dict[str, float],
          seconds: dict[str, float]) -> str:
  """DIR/report.md: the figures of the run (the references, then each guidance), the confusion tables of the
  best guidance, the negative prompts, the prompt grid, the time per stage."""
  score = config[SCORE_STAGE if SCORE_STAGE in config.stage_order else 'decoder']
  guidances = list(config.report.guidances)
  attributes = sorted(k[len('fidelity_'):-len('_real')] for k in metrics
                      if k.startswith('fidelity_') and k.endswith('_real'))
  names = [*config.report.get('routes', ('guided',)), *config.report.get('baselines', ())]
  diverse = any(k.startswith('diversity_') for k in metrics)
  first = route_tag(names[0], guidances[0])
  lines = [f'# Text-to-image report: {workdir}', '',
           f"{int(metrics['num_images'])} images generated from held-out `{score.data.dataset}` captions, "
           'one seed each; '
           f"sampler `{score.sampling.method}` ({metrics[f'nfe_{first}']} score evaluations per image, "
           'each a conditional + unconditional pair); EMA parameters.'
           + (f' Fidelity: the classifier of stage `{config.report.classifier_stage}` (trained on real images) '
              'reads each generated image.' if attributes else '')
           + ' Caption retrieval: the share of images whose nearest distinct held-out caption (CLIP) is their own '
           f"prompt (chance {metrics['caption_retrieval_chance']:.3f}). The first rows measure the held-out images "
           'and their reconstructions by the VAE the same way.']
  if 'prior' in names:
    tag = route_tag('prior', guidances[0])
    lines += ['', f"The prior road: the prior samples a CLIP image embedding from the caption "
              f"({metrics[f'nfe_prior_stage_{tag}']} evaluations, guidance {config.prior.sampling_guidance:g}), "
              f"the decoder decodes it ({metrics[f'nfe_decoder_stage_{tag}']} evaluations) at the guidance of the row. "
              'Baselines (DALL-E 2\'s): the decoder fed the caption\'s text embedding, or the embedding of the '
              'training image nearest to it.' + (f' Diversity: the mean pairwise distance, in CLIP image space, of '
                                                 f'16 samples of each of {config.report.diversity_prompts} prompts.'
                                                 if diverse else '')]
  lines += ['', '| images | ' + ' | '.join(f'fidelity_{a}' for a in attributes)
            + ' | caption retrieval | CLIP score | FID (CLIP features) |' + (' diversity |' if diverse else '')
            + ' images/s |', '|---' * (len(attributes) + 5 + diverse) + '|']
  rows = [(tag, name) for tag, name in REFERENCES if f'clip_score_{tag}' in metrics]
  rows += [(route_tag(n, g), f'{ROUTE_NAMES[n] + ", " if len(names) > 1 else ""}guidance {g:g}')
           for g in guidances for n in names]
  rows += [(f'{tag}_{signature_report.UNSIGNED}', f'{name}, unsigned decoder') for tag, name in rows
           if f'clip_score_{tag}_{signature_report.UNSIGNED}' in metrics]
  for tag, name in rows:
    cells = [f"{metrics[f'fidelity_{a}_{tag}']:.3f}" for a in attributes]
    cells += [f"{metrics[f'caption_retrieval_{tag}']:.3f}", f"{metrics[f'clip_score_{tag}']:.2f}",
              '–' if tag == 'real' else f"{metrics[f'fid_clip_{tag}']:.4f}"]
    if diverse:
      cells.append(f"{metrics[f'diversity_{tag}']:.3f}" if f'diversity_{tag}' in metrics else '–')
    cells.append(f"{metrics[f'images_per_sec_{tag}']:.1f}" if f'images_per_sec_{tag}' in metrics else '–')
    lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
  for road in [n for n in names if n not in BASELINE_NAMES] if attributes else []:
    best = max(guidances, key=lambda g: metrics[f'fidelity_all_{route_tag(road, g)}'])
    lines += ['', f'What the classifier read in the images generated by the {ROUTE_NAMES[road]} road at guidance '
              f'{best:g} (rows: asked, columns: read):']
    for a in attributes:
      if a != 'all':
        lines += ['', *confusion_table(metrics, a, route_tag(road, best))]
  if 'variations' in metrics:
    lines += ['', *unclip_report.variation_lines(metrics, config.decoder.sampling_guidance)]
  if 'signature_psnr' in metrics:
    lines += ['', *signature_report.lines(metrics)]
  negatives = [a for a in attributes if f'negative_{a}_with' in metrics]
  if negatives:
    per_value = int(metrics['negative_images_per_value'])
    lines += ['', f"Negative prompts (guidance {metrics['negative_guidance']:g}, empty prompt, "
              f'{per_value} seeds per value): the share of samples showing the value named by the negative prompt, '
              'averaged over the values of each attribute, then for each value with the standard error of the change.',
              '', '| attribute | without the negative prompt | with it |', '|---|---|---|']
    lines += [f"| {a} | {metrics[f'negative_{a}_without']:.3f} | {metrics[f'negative_{a}_with']:.3f} |"
              for a in negatives]
    lines += ['', '| attribute | negative prompt | without | with | change | standard error |',
              '|---|---|---|---|---|---|']
    for key in sorted(k for k in metrics if k.startswith('negative_') and '=' in k and k.endswith('_without')):
      value = key[len('negative_'):-len('_without')]
      p0, p1 = metrics[key], metrics[f'negative_{value}_with']
      se = np.sqrt((p0 * (1 - p0) + p1 * (1 - p1)) / per_value)
      lines.append(f'| {" | ".join(value.split("=", 1))} | {p0:.3f} | {p1:.3f} | {p1 - p0:+.3f} | {se:.3f} |')
    words = ', '.join(f'"{word}"' for word in _first_values(metrics))
    lines += ['', '![negative prompts](samples/negative_prompts.png)', '',
              f'The empty prompt (first row), then the same seeds with the negative prompt {words} (one row each).']
  lines += ['', '![prompt grid](samples/prompts.png)', '', 'Prompts (row-major' +
            (f'; one row per road: {", ".join(n for n in names)}' if len(names) > 1 else '') + '): ' +
            ('; '.join(f'"{p}"' for p in config.report.prompts) or f'the first {GRID_PROMPTS} held-out captions'),
            '', '| stage | seconds |', '|---|---|']
  lines += [f'| {name} | {s:.0f} |' for name, s in seconds.items()]
  lines.append(f'| total | {sum(seconds.values()):.0f} |')
  path = os.path.join(workdir, 'report.md')
  files.write_json(os.path.join(workdir, 'report.json'), {'metrics': metrics, 'seconds': seconds}, indent=1)
  files.write_text(path, '\n'.join(lines) + '\n')  # last: report.md is what marks the job as finished
  return path


def _first_values(metrics: dict[str, float]) -> list[str]:
  """The first value of each attribute in the negative-prompt metrics, in their order: the words of the
  negative-prompt grid."""
  first = {}
  for key in metrics:
    if key.startswith('negative_') and '=' in key:
      name, value = key[len('negative_'):].rsplit('_', 1)[0].split('=', 1)
      first.setdefault(name, value)
  return list(first.values())


def confusion_table(metrics: dict[str, float], attribute: str, tag: str) -> list[str]:
  """Markdown rows of one attribute's confusion counts (`confusion_counts`), asked by read."""
  prefix = f'confusion_{attribute}='
  pairs = [k[len(prefix):-len(tag) - 1].split('>') for k in metrics if k.startswith(prefix) and k.endswith(f'_{tag}')]
  values = list(dict.fromkeys(a for a, _ in pairs))
  lines = [f'| {attribute} | ' + ' | '.join(values) + ' |', '|---' * (len(values) + 1) + '|']
  for a in values:
    lines.append(f'| {a} | ' + ' | '.join(f"{int(metrics[f'{prefix}{a}>{r}_{tag}'])}" for r in values) + ' |')
  return lines

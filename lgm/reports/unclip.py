"""The prior road's part of the text-to-image report: the roads and baselines it measures, diversity,
variations of held-out images and their figures (used by `lgm.reports.text_to_image`).

A road is a function (prompts, guidance, seeds) -> (images, {'nfe': per image, ...}):
  guided         the text-guided score stage;
  prior          the prior samples an image embedding from the prompt (at its own config's guidance), the
                 decoder decodes it at `guidance`;
  text_embedding DALL-E 2's first baseline: the prompt's CLIP *text* embedding fed to the decoder as if it were
                 an image embedding;
  nearest_image  its second: the decoder fed the embedding of the training image whose embedding is nearest
                 the prompt's text embedding (retrieval, then decoding).
"""

from __future__ import annotations

import os
import time
from typing import Callable

import ml_collections
import numpy as np

from lgm import evaluation, semantic
from lgm import images as image_lib
from lgm.data import loader as loader_lib
from lgm.pipeline import TextToImage
from lgm.tasks.attributes import read_attributes

Road = Callable[[list, float, range], tuple[np.ndarray, dict]]
BASELINES = ('text_embedding', 'nearest_image')
DIVERSITY_SAMPLES = 16  # samples of each prompt whose pairwise distances give the diversity


def roads(pipe: TextToImage, config: ml_collections.ConfigDict, report: ml_collections.ConfigDict) -> dict[str, Road]:
  """Name -> road, for each of `report.routes` and `report.baselines` (default: the guided road alone)."""
  out = {}
  for name in report.get('routes', ('guided',)):
    if name == 'guided':
      out[name] = lambda prompts, guidance, seeds: _nfe(pipe(prompts, guidance=guidance, seeds=seeds, route='guided'))
    elif name == 'prior':
      out[name] = lambda prompts, guidance, seeds: _prior_road(pipe, prompts, guidance, seeds)
    else:
      raise ValueError(f'unknown route {name!r} in report.routes; valid: guided, prior')
  baselines = tuple(report.get('baselines', ()))
  if baselines:
    unknown = sorted(set(baselines) - set(BASELINES))
    if unknown:
      raise ValueError(f'unknown baselines {unknown} in report.baselines; valid: {list(BASELINES)}')
    bank = _training_embeddings(pipe, config) if 'nearest_image' in baselines else None
    for name in baselines:
      out[name] = lambda prompts, guidance, seeds, name=name: _baseline(pipe, name, bank, prompts, guidance, seeds)
  return out


def _nfe(result: tuple[np.ndarray, int]) -> tuple[np.ndarray, dict]:
  return result[0], {'nfe': result[1]}


def _prior_road(pipe: TextToImage, prompts, guidance, seeds) -> tuple[np.ndarray, dict]:
  embeddings, prior_nfe = pipe.sample_embeddings(prompts, seeds=seeds)
  images, decoder_nfe = pipe.decode(embeddings, guidance, seeds)
  return images, {'nfe': prior_nfe + decoder_nfe, 'nfe_prior_stage': prior_nfe, 'nfe_decoder_stage': decoder_nfe}


def _training_embeddings(pipe: TextToImage, config: ml_collections.ConfigDict) -> np.ndarray:
  images = loader_lib.load_arrays(config, config.data.train_split)[0]['image']
  return pipe.embed_images(images)


def _baseline(pipe: TextToImage, name: str, bank: np.ndarray | None, prompts, guidance, seeds):
  embeddings = pipe.embed_text(prompts)
  if name == 'nearest_image':
    embeddings = bank[semantic.nearest_neighbours(embeddings, bank, 1)[0][:, 0]]
  return _nfe(pipe.decode(embeddings, guidance, seeds))


def diversity(pipe: TextToImage, road: Road, prompts: list[str], guidance: float) -> float:
  """`evaluation.diversity` of DIVERSITY_SAMPLES samples of each prompt (seeds 0, 1, ...), in CLIP image space."""
  repeated = [p for p in prompts for _ in range(DIVERSITY_SAMPLES)]
  seeds = [s for _ in prompts for s in range(DIVERSITY_SAMPLES)]
  images, _ = road(repeated, guidance, seeds)
  return evaluation.diversity(pipe.embed_images(images).reshape(len(prompts), DIVERSITY_SAMPLES, -1))


def variations(pipe: TextToImage, classifier, held_out: dict[str, np.ndarray], num: int,
               per_image: int = 16) -> dict[str, float]:
  """`num` variations (`per_image` of each of the first held-out images) at the decoder's own guidance.

  `variations_keep_<attribute>` / `_all`: the share read by the classifier as showing the source image's value
  (with a classifier); `variations_pixel_rms`: root-mean-square pixel difference (in [-1, 1] units) between a
  variation and its source; `same_attributes_pixel_rms`: the same between held-out images whose attributes
  are all equal (how much real renders of one description differ)."""
  sources = -(-num // per_image)
  start = time.perf_counter()
  images = np.concatenate([pipe.variations(held_out['image'][i], per_image, seed=0) for i in range(sources)])[:num]
  seconds = time.perf_counter() - start
  index = np.arange(len(images)) // per_image
  originals = held_out['image'][index]
  metrics = {'variations': float(len(images)), 'variations_per_sec': len(images) / seconds,
             'variations_pixel_rms': _rms(images, originals)}
  if classifier is not None:
    read = read_attributes(classifier.task, classifier.params, images)
    source = {name: np.asarray(held_out[name])[index] for name in classifier.task.attributes}
    kept = evaluation.fidelity(read, source)
    metrics.update({f'variations_keep_{key[len("fidelity_"):]}': value for key, value in kept.items()})
    attributes = np.stack([held_out[name] for name in classifier.task.attributes], axis=1)
    pairs = [(i, j) for i in range(len(attributes)) for j in range(i + 1, len(attributes))
             if (attributes[i] == attributes[j]).all()]
    if pairs:
      first, second = np.asarray(pairs).T
      metrics['same_attributes_pixel_rms'] = _rms(held_out['image'][first], held_out['image'][second])
      metrics['same_attributes_pairs'] = float(len(pairs))
  return metrics


def _rms(a: np.ndarray, b: np.ndarray) -> float:
  """Mean over images of the root-mean-square difference of their pixels."""
  return float(np.sqrt(np.square(np.asarray(a, np.float64) - b).reshape(len(a), -1).mean(axis=1)).mean())


def figures(pipe: TextToImage, held_out: dict[str, np.ndarray], directory: str, rows: int = 6,
            per_row: int = 7, steps: int = 8) -> list[str]:
  """DIR/samples/variations.png (each row: a held-out image, then `per_row` variations of it) and
  interpolation.png (each row: the decoded path between two held-out images' embeddings, the two images at its
  ends)."""
  images = held_out['image']
  grid = [np.concatenate([images[i][None], pipe.variations(images[i], per_row, seed=0)]) for i in range(rows)]
  paths = [image_lib.save_grid(os.path.join(directory, 'variations.png'), np.concatenate(grid), ncol=per_row + 1,
                               upscale=2)]
  strips = []
  for i in range(rows // 2):
    a, b = images[2 * i], images[2 * i + 1]
    strips.append(np.concatenate([a[None], pipe.interpolate(a, b, steps, seed=i), b[None]]))
  paths.append(image_lib.save_grid(os.path.join(directory, 'interpolation.png'), np.concatenate(strips),
                                   ncol=steps + 2, upscale=2))
  return paths


def variation_lines(metrics: dict[str, float], guidance: float) -> list[str]:
  """The report's paragraph and table on the variations of held-out images."""
  lines = [f"Variations: {int(metrics['variations'])} images decoded (guidance {guidance:g}) from the CLIP image "
           f"embeddings of held-out images, 16 per image ({metrics['variations_per_sec']:.1f} images/s). Root-mean-"
           f"square pixel difference to the source image {metrics['variations_pixel_rms']:.3f}"
           + (f"; between held-out images of the same four attributes {metrics['same_attributes_pixel_rms']:.3f} "
              f"({int(metrics['same_attributes_pairs'])} pairs)" if 'same_attributes_pixel_rms' in metrics else '')
           + '.']
  kept = sorted(k[len('variations_keep_'):] for k in metrics if k.startswith('variations_keep_'))
  if kept:
    lines += ['', 'Share of variations the classifier reads as showing the source image\'s value:', '',
              '| ' + ' | '.join(kept) + ' |', '|---' * len(kept) + '|',
              '| ' + ' | '.join(f"{metrics[f'variations_keep_{k}']:.3f}" for k in kept) + ' |']
  lines += ['', '![variations](samples/variations.png)', '',
            'Each row: a held-out image, then variations of it. Below: decoded paths along the great circle between '
            'two held-out images\' embeddings, the two images at the ends.', '',
            '![interpolation](samples/interpolation.png)']
  return lines

"""Look at a trained semantic space: an autoencoder / VAE's latents, or a CLIP model's text-image space.

python -m experiments.explore --workdir=DIR [--num=64] [--split=test] [--seed=0] [--max_examples=2000]
python -m experiments.explore --workdir=runs/clip_shapes [--query="a big blue circle" --query=...]

Writes into DIR/samples/ and prints each path. For an autoencoder / VAE:
  semantic_map.png   PCA of the encoded held-out images, coloured by label (by shape for `shapes`);
  interpolation.png  decoded paths between random pairs of held-out images (slerp for a VAE,
                     lerp for an AE);
  prior_samples.png  decoded N(0, I) latents (VAE only: a plain autoencoder has no prior);
  neighbours.png     generated images beside their nearest training images in latent space, the
                     check that the model generates rather than recalls. Only the first
                     --max_examples training images are searched; raise it for a stricter check.
For a CLIP model:
  text_image_map.png  held-out images and their captions in one PCA plane, coloured by label;
  text_queries.png    the nearest held-out images of each --query (default: a few captions).
"""

from __future__ import annotations

import functools
import os

import numpy as np
from absl import flags, logging

from experiments import common

from lgm import batching, semantic, stages
from lgm.data.loader import load_arrays
from lgm.images import save_grid
from lgm.tasks import Trained

_WORKDIR = flags.DEFINE_string('workdir', None, 'Work directory of a trained autoencoder or VAE.')
_NUM = flags.DEFINE_integer('num', 64, 'Number of prior samples in prior_samples.png.')
_SPLIT = flags.DEFINE_string('split', 'test', 'Held-out split to map and interpolate.')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of every random choice (pairs, latents).')
_MAX_EXAMPLES = flags.DEFINE_integer('max_examples', 2000, 'Images read per split.')
_QUERY = flags.DEFINE_multi_string('query', None, 'CLIP models: free-text queries for text_queries.png.')

NUM_PAIRS = 8  # interpolation strips
STRIP_LENGTH = 10  # images per strip, endpoints included
NUM_QUERIES = 8  # generated images in neighbours.png
NUM_NEIGHBOURS = 5
BATCH_SIZE = 256


def _in_batches(fn, params, inputs: np.ndarray) -> np.ndarray:
  """Applies a jitted `fn(params, batch)` over equal-sized batches, the last one zero-padded.

  Equal sizes mean one compilation per call site, however many examples there are.
  """
  return batching.map_in_batches(fn, params, inputs, min(BATCH_SIZE, len(inputs)))


def _sample_gaussian_fit(latents: np.ndarray, num: int, rng: np.random.Generator) -> np.ndarray:
  """Samples N(mean, covariance) of `latents` without forming the D x D covariance.

  mean + eps @ centred / sqrt(N - 1) with eps ~ N(0, I_N) has exactly the sample covariance.
  """
  flat = latents.reshape(len(latents), -1).astype(np.float64)
  centred = flat - flat.mean(axis=0)
  eps = rng.standard_normal((num, len(flat)))
  samples = flat.mean(axis=0) + eps @ centred / np.sqrt(max(len(flat) - 1, 1))
  return samples.reshape(num, *latents.shape[1:]).astype(np.float32)


def _colouring(arrays: dict, info) -> tuple[np.ndarray, tuple[str, ...], str]:
  """(labels, label names, legend title): the shape attribute where there is one, else 'label'."""
  if 'shape' in info.attributes and 'shape' in arrays:
    return arrays['shape'], info.attributes['shape'], 'shape'
  return arrays['label'], info.label_names, 'label'


def explore(workdir: str, num: int = 64, split: str = 'test', seed: int = 0,
            max_examples: int = 2000, queries: list[str] | None = None) -> dict[str, str]:
  """Writes the semantic-space figures of the model trained in `workdir`; returns name -> path."""
  if num < 1:
    raise ValueError(f'num must be >= 1, got {num}')
  trained = stages.load_trained(workdir)
  space = trained.task.semantic_space
  if space not in EXPLORERS:
    raise ValueError(f'{workdir} holds a {trained.config.task} model, which has no semantic space to explore; '
                     'give the work directory of an autoencoder, a VAE or a CLIP model.')
  return EXPLORERS[space](trained, workdir, num=num, split=split, seed=seed, max_examples=max_examples,
                          queries=queries)


def explore_image_space(trained: Trained, workdir: str, num: int = 64, split: str = 'test', seed: int = 0,
                        max_examples: int = 2000, queries: list[str] | None = None) -> dict[str, str]:
  """The autoencoder / VAE figures: a latent map, interpolations, prior samples and their neighbours."""
  del queries
  task, config = trained.task, trained.config
  encode = functools.partial(_in_batches, task.encode, trained.params)
  decode = functools.partial(_in_batches, task.decode, trained.params)
  rng = np.random.default_rng(seed)
  out_dir = os.path.join(workdir, 'samples')
  kind = 'VAE' if task.is_variational else 'autoencoder'
  about = f'{kind} on {config.data.dataset}, step {trained.step}'
  written = {}

  held_out, info = load_arrays(config, split=split, max_examples=max_examples)
  latents = encode(held_out['image'])
  coords, _, _ = semantic.pca(latents, k=2)
  labels, label_names, legend_title = _colouring(held_out, info)
  written['semantic_map'] = semantic.plot_semantic_map(
      os.path.join(out_dir, 'semantic_map.png'), coords, labels, label_names,
      thumbnails=held_out['image'], legend_title=legend_title,
      title=f'PCA of {len(latents)} encoded {split} images ({about})')

  method = 'slerp' if task.is_variational else 'lerp'
  pairs = rng.choice(len(latents), size=(NUM_PAIRS, 2), replace=len(latents) < 2 * NUM_PAIRS)
  paths = [semantic.interpolate(latents[a], latents[b], STRIP_LENGTH, method) for a, b in pairs]
  strips = decode(np.concatenate(paths))
  written['interpolation'] = semantic.save_interpolation_strips(
      os.path.join(out_dir, 'interpolation.png'),
      strips.reshape(NUM_PAIRS, STRIP_LENGTH, *strips.shape[1:]),
      title=f'{method} between encoded {split} images, decoded ({about})')

  train, _ = load_arrays(config, split='train', max_examples=max_examples)
  train_latents = encode(train['image'])
  if task.is_variational:
    prior_latents = rng.standard_normal((max(num, NUM_QUERIES), *task.latent_shape)).astype(np.float32)
    prior_images = decode(prior_latents)
    written['prior_samples'] = save_grid(os.path.join(out_dir, 'prior_samples.png'), prior_images[:num],
                                         upscale=max(1, 64 // config.data.image_size))
    query_latents, query_images = prior_latents[:NUM_QUERIES], prior_images[:NUM_QUERIES]
  else:
    logging.info('Skipping prior_samples.png: a plain autoencoder has no prior, its latents are not '
                 'N(0, I), so decoded Gaussian noise would say nothing about the model.')
    logging.info('neighbours.png: an autoencoder has no prior, so the generated images decode random '
                 'latents from a Gaussian fit (mean, covariance) to %d encoded training images.',
                 len(train_latents))
    query_latents = _sample_gaussian_fit(train_latents, NUM_QUERIES, rng)
    query_images = decode(query_latents)
  indices, _ = semantic.nearest_neighbours(query_latents, train_latents, NUM_NEIGHBOURS)
  written['neighbours'] = semantic.save_neighbours(
      os.path.join(out_dir, 'neighbours.png'), query_images, train['image'][indices],
      title=f'Generated images and their nearest of {len(train_latents)} training images ({about})')
  return written


def explore_text_image(trained: Trained, workdir: str, num: int = 64, split: str = 'test', seed: int = 0,
                       max_examples: int = 2000, queries: list[str] | None = None) -> dict[str, str]:
  """The CLIP figures: one map of images and captions, and the nearest images of text queries."""
  del num, seed
  task, config = trained.task, trained.config
  held_out, info = load_arrays(config, split=split, max_examples=max_examples)
  captions = [str(c) for c in held_out['caption']]
  images = _in_batches(task.encode_images, trained.params, held_out['image'])
  texts = task.encode_text(trained.params, captions)
  _, mean, components = semantic.pca(np.concatenate([images, texts]), k=2)
  labels, label_names, legend_title = _colouring(held_out, info)
  about = f'CLIP on {config.data.dataset}, step {trained.step}'
  out_dir = os.path.join(workdir, 'samples')
  written = {'text_image_map': semantic.plot_text_image_map(
      os.path.join(out_dir, 'text_image_map.png'), (images - mean) @ components.T,
      (texts - mean) @ components.T, labels, label_names, captions, legend_title=legend_title,
      title=f'PCA of {len(images)} {split} images and their captions ({about})')}
  queries = queries or captions[:NUM_QUERIES]
  indices, _ = semantic.nearest_neighbours(task.encode_text(trained.params, queries), images, NUM_NEIGHBOURS)
  written['text_queries'] = semantic.save_text_queries(
      os.path.join(out_dir, 'text_queries.png'), queries, held_out['image'][indices],
      title=f'Nearest of {len(images)} {split} images ({about})')
  return written


# Task.semantic_space -> the figures that show that kind of space.
EXPLORERS = {'image': explore_image_space, 'text_image': explore_text_image}


def main(argv):
  del argv
  written = explore(_WORKDIR.value, num=_NUM.value, split=_SPLIT.value, seed=_SEED.value,
                    max_examples=_MAX_EXAMPLES.value, queries=_QUERY.value)
  for name, path in written.items():
    print(f'{name}: {path}')


def cli() -> None:
  """The `lgm-explore` command."""
  flags.mark_flags_as_required(['workdir'])
  common.run(main)


if __name__ == '__main__':
  cli()

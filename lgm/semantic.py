"""Making the semantic (latent) space visible: PCA maps, interpolation, nearest neighbours, figures.

An encoder turns images into points; these tools ask what the space of points looks like. Does a
2-D projection separate the classes? Do paths between two codes decode to plausible images all the
way? Is a generated image new, or a copy of its nearest training image?

The array functions are plain numpy on latents of any shape (N, ...), treated as flattened vectors,
so they work on autoencoder latents, CLIP embeddings or raw pixels alike. The figure writers render
with matplotlib's Agg backend to PNG and return the path they wrote.
"""

from __future__ import annotations

import os

import matplotlib

matplotlib.use('Agg')  # headless: figures are files, never windows
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.offsetbox import AnnotationBbox, OffsetImage  # noqa: E402

from lgm import files  # noqa: E402
from lgm.images import make_grid, to_rgb_uint8  # noqa: E402

INTERPOLATION_METHODS = ('lerp', 'slerp')
_DPI = 120
_PAD = 1  # pixels between tiles in the image figures


def _as_rows(array) -> np.ndarray:
  """(N, ...) -> (N, D), also for N = 0 where reshape(N, -1) is ambiguous."""
  array = np.asarray(array)
  return array.reshape(array.shape[0], int(np.prod(array.shape[1:])))


# --- PCA ------------------------------------------------------------------------------------------


def pca(latents, k: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Principal components of latents (N, ...), flattened to (N, D).

  Returns `(coords (N, k), mean (D,), components (k, D))`: orthonormal components in decreasing
  order of variance, and `coords = (x - mean) @ components.T`. Eigenvectors have no intrinsic
  sign, so each component is flipped to make its largest-magnitude entry positive: the same data
  always draws the same map, never its mirror image.

  Diagonalises the smaller of the D x D and N x N second-moment matrices: for 2000 latents of
  dimension 4096 that is ~5x faster than a thin SVD on this project's 2-core CPUs.
  """
  x = _as_rows(latents).astype(np.float64)
  count, dim = x.shape
  if not 1 <= k <= min(count, dim):
    raise ValueError(f'k must be in [1, min(N, D)] = [1, {min(count, dim)}], got {k}')
  mean = x.mean(axis=0)
  centred = x - mean
  if dim <= count:
    _, eigvecs = np.linalg.eigh(centred.T @ centred)
    components = eigvecs[:, ::-1][:, :k].T
  else:
    _, eigvecs = np.linalg.eigh(centred @ centred.T)
    axes = centred.T @ eigvecs[:, ::-1][:, :k]  # (D, k); column norms are sqrt(eigenvalues)
    norms = np.linalg.norm(axes, axis=0)
    components = (axes / np.where(norms > 0, norms, 1.0)).T
  largest = components[np.arange(k), np.argmax(np.abs(components), axis=1)]
  components = components * np.where(largest < 0, -1.0, 1.0)[:, None]
  return centred @ components.T, mean, components


# --- interpolation --------------------------------------------------------------------------------


def interpolate(z0, z1, num: int, method: str = 'slerp') -> np.ndarray:
  """`num` evenly spaced points from z0 to z1, both endpoints exact: shape (num, *z0.shape).

  'lerp' walks the straight line. 'slerp' turns the direction of the flattened vector along the
  great circle at constant angular speed while its norm changes linearly. It suits Gaussian
  latents, whose mass lies on a shell that the straight line's midpoint falls inside (White 2016,
  "Sampling generative networks"). For parallel, anti-parallel or zero vectors the circle is
  undefined and slerp falls back to lerp.
  """
  if method not in INTERPOLATION_METHODS:
    raise ValueError(f'unknown interpolation method {method!r}; '
                     f'valid: {", ".join(INTERPOLATION_METHODS)}')
  if num < 2:
    raise ValueError(f'interpolation needs num >= 2 to include both endpoints, got {num}')
  start, end = np.asarray(z0), np.asarray(z1)
  if start.shape != end.shape:
    raise ValueError(f'endpoints differ in shape: {start.shape} vs {end.shape}')
  weights = np.linspace(0.0, 1.0, num)
  points = slerp(start, end, weights) if method == 'slerp' else lerp(start, end, weights)
  dtype = np.result_type(start.dtype, end.dtype, np.float32)
  path = points.astype(dtype)
  path[0], path[-1] = start, end  # exact, whatever the rounding of the weights
  return path


def lerp(z0, z1, weights) -> np.ndarray:
  """Points (1 - w) z0 + w z1 for each weight w, in float64: shape (len(weights), *z0.shape)."""
  a, b = np.asarray(z0, np.float64), np.asarray(z1, np.float64)
  w = np.asarray(weights, np.float64).reshape(-1, *[1] * a.ndim)
  return (1.0 - w) * a + w * b


def slerp(z0, z1, weights) -> np.ndarray:
  """Points at each weight w (0 at z0, 1 at z1) along the great circle of the flattened vectors, their norm
  changing linearly (for unit vectors: on the unit sphere); `lerp` where the circle is undefined."""
  a, b = np.asarray(z0, np.float64), np.asarray(z1, np.float64)
  norm_a, norm_b = np.linalg.norm(a), np.linalg.norm(b)
  if norm_a == 0 or norm_b == 0:
    return lerp(a, b, weights)
  unit_a, unit_b = a / norm_a, b / norm_b
  angle = np.arccos(np.clip(np.sum(unit_a * unit_b), -1.0, 1.0))
  if np.sin(angle) <= 1e-6:
    return lerp(a, b, weights)
  w = np.asarray(weights, np.float64).reshape(-1, *[1] * a.ndim)
  directions = (np.sin((1.0 - w) * angle) * unit_a + np.sin(w * angle) * unit_b) / np.sin(angle)
  return ((1.0 - w) * norm_a + w * norm_b) * directions


# --- nearest neighbours ---------------------------------------------------------------------------


def nearest_neighbours(queries, bank, k: int,
                       block_size: int = 2048) -> tuple[np.ndarray, np.ndarray]:
  """The k bank entries closest to each query in flattened Euclidean distance.

  Returns `(indices (Q, k) int64, distances (Q, k) float64)`, sorted by ascending distance, ties
  broken by the lower bank index. Queries and bank go in blocks of `block_size`, so memory stays
  near block_size**2 floats whatever the sizes: a 20k x 256 bank never becomes one distance matrix.
  """
  query_vectors, bank_vectors = _as_rows(queries).astype(np.float64), _as_rows(bank)
  if query_vectors.shape[1] != bank_vectors.shape[1]:
    raise ValueError(f'queries have dimension {query_vectors.shape[1]}, '
                     f'the bank {bank_vectors.shape[1]}')
  if not 1 <= k <= len(bank_vectors):
    raise ValueError(f'k must be in [1, bank size {len(bank_vectors)}], got {k}')
  if block_size < 1:
    raise ValueError(f'block_size must be >= 1, got {block_size}')
  results = [  # max(..., 1): no queries still gives (0, k) arrays
      _nearest_in_bank(query_vectors[start:start + block_size], bank_vectors, k, block_size)
      for start in range(0, max(len(query_vectors), 1), block_size)
  ]
  indices = np.concatenate([found for found, _ in results])
  return indices, np.sqrt(np.concatenate([squared for _, squared in results]))


def _nearest_in_bank(queries: np.ndarray, bank: np.ndarray, k: int, block_size: int):
  """Running top-k over blocks of the bank for one block of queries; squared distances."""
  best_indices = np.zeros((len(queries), 0), np.int64)
  best_squared = np.zeros((len(queries), 0))
  query_norms = np.sum(queries**2, axis=1, keepdims=True)
  for start in range(0, len(bank), block_size):
    block = bank[start:start + block_size].astype(np.float64)
    squared = np.maximum(query_norms - 2.0 * queries @ block.T + np.sum(block**2, axis=1), 0.0)
    block_indices = np.broadcast_to(np.arange(start, start + len(block)), squared.shape)
    # The running best holds lower indices than this block and is sorted by (distance, index),
    # so a stable sort on distance alone keeps ties in index order.
    candidates = np.concatenate([best_squared, squared], axis=1)
    candidate_indices = np.concatenate([best_indices, block_indices], axis=1)
    order = np.argsort(candidates, axis=1, kind='stable')[:, :k]
    best_squared = np.take_along_axis(candidates, order, axis=1)
    best_indices = np.take_along_axis(candidate_indices, order, axis=1)
  return best_indices, best_squared


# --- figures --------------------------------------------------------------------------------------


def _label_colours(num_labels: int) -> np.ndarray:
  """Distinct RGBA colours: tab10 / tab20 while they last, then evenly spaced along turbo."""
  if num_labels <= 20:
    listed = matplotlib.colormaps['tab10' if num_labels <= 10 else 'tab20'].colors
    return matplotlib.colors.to_rgba_array(listed[:max(num_labels, 1)])
  return matplotlib.colormaps['turbo'](np.linspace(0.0, 1.0, num_labels))


def _spread_out(coords: np.ndarray, num: int) -> np.ndarray:
  """Greedy farthest-point subset of 2-D points, so thumbnails cover the map instead of piling up."""
  spread = np.ptp(coords, axis=0)
  points = coords / np.where(spread > 0, spread, 1.0)  # equal weight to both axes, as drawn

  def squared_distance_to(index: int) -> np.ndarray:
    return np.sum((points - points[index])**2, axis=1)

  chosen = [int(np.argmin(np.sum((points - np.median(points, axis=0))**2, axis=1)))]
  nearest_chosen = squared_distance_to(chosen[0])
  for _ in range(min(num, len(points)) - 1):
    chosen.append(int(np.argmax(nearest_chosen)))
    nearest_chosen = np.minimum(nearest_chosen, squared_distance_to(chosen[-1]))
  return np.asarray(chosen)


def save_figure(fig, path: str) -> str:
  """Writes a matplotlib figure (the format from the name: .png, .pdf, ...) on any file system, closes it and
  returns the path."""
  files.makedirs(os.path.dirname(path) or '.')
  with files.replacing(path, 'wb') as f:
    fig.savefig(f, format=os.path.splitext(path)[1][1:] or 'png', dpi=_DPI, bbox_inches='tight')
  plt.close(fig)
  return path


def plot_semantic_map(path: str, coords, labels, label_names, thumbnails=None,
                      num_thumbnails: int = 80,
                      title: str = 'Semantic map: PCA of encoded images',
                      legend_title: str = 'label') -> str:
  """Scatter of 2-D coordinates (e.g. from `pca`) coloured by label, with a legend of label names.

  With `thumbnails` (N, h, w, C), uint8 or [-1, 1] floats, `num_thumbnails` of them, chosen to
  spread over the map, are drawn at their points in a frame of their label's colour: one sees what
  changes along each direction. Labels outside `label_names` are shown by their number.
  """
  coords, labels = np.asarray(coords, np.float64), np.asarray(labels).astype(np.int64)
  names = [str(name) for name in label_names]
  colours = _label_colours(max(len(names), int(labels.max(initial=-1)) + 1))
  fig, ax = plt.subplots(figsize=(9, 7))
  for label in np.unique(labels):
    at = labels == label
    ax.scatter(coords[at, 0], coords[at, 1], s=10, color=colours[label], alpha=0.6, linewidths=0,
               label=names[label] if label < len(names) else str(label))
  if thumbnails is not None and num_thumbnails > 0:
    chosen = _spread_out(coords, num_thumbnails)
    pictures = to_rgb_uint8(np.asarray(thumbnails)[chosen])
    zoom = 20.0 / max(pictures.shape[1:3])  # ~0.3 inch whatever the image size
    for index, picture in zip(chosen, pictures):
      frame = {'edgecolor': colours[labels[index]], 'linewidth': 1.5}
      ax.add_artist(AnnotationBbox(OffsetImage(picture, zoom=zoom, interpolation='nearest'),
                                   coords[index], pad=0.1, bboxprops=frame))
  ax.set(title=title, xlabel='principal component 1', ylabel='principal component 2')
  ax.legend(title=legend_title, loc='upper left', bbox_to_anchor=(1.01, 1.0), markerscale=2.0,
            fontsize='small', ncol=1 + len(names) // 25)
  return save_figure(fig, path)


def _tile_centres(left: int, count: int, tile_width: int) -> list[float]:
  """x of the centre of each tile of a `make_grid` row starting at pixel column `left`."""
  return [left + _PAD + column * (tile_width + _PAD) + (tile_width - 1) / 2 for column in range(count)]


def _plot_tiles(path: str, picture: np.ndarray, title: str, xlabel: str,
                column_ticks: list[tuple[float, str]]) -> str:
  """Shows an assembled uint8 picture pixel-sharp, enlarged up to 4x, with labelled columns."""
  height, width = picture.shape[:2]
  scale = int(np.clip(900 // width, 1, 4))
  fig, ax = plt.subplots(figsize=(width * scale / _DPI, height * scale / _DPI + 0.8))
  ax.imshow(picture, interpolation='nearest')
  positions, tick_labels = zip(*column_ticks)
  ax.set_xticks(positions, tick_labels, fontsize='small')
  ax.set_yticks([])
  ax.tick_params(length=0)
  ax.set(title=title, xlabel=xlabel)
  ax.spines[:].set_visible(False)
  return save_figure(fig, path)


def save_interpolation_strips(path: str, rows_of_images,
                              title: str = 'Interpolation through the latent space') -> str:
  """One row per pair: rows_of_images (R, num, h, w, C) runs from image A (left) to B (right)."""
  rows = np.asarray(rows_of_images)
  num_rows, num, width = rows.shape[0], rows.shape[1], rows.shape[3]
  picture = make_grid(rows.reshape(num_rows * num, *rows.shape[2:]), ncol=num, pad=_PAD)
  labels = ['A'] + [f'{t:.2f}' for t in np.linspace(0.0, 1.0, num)[1:-1]] + ['B']
  return _plot_tiles(path, picture, title, 'interpolation weight t (A: t = 0, B: t = 1)',
                     list(zip(_tile_centres(0, num, width), labels)))


def save_neighbours(path: str, queries_images, neighbour_images,
                    title: str = 'Generated images and their nearest training images') -> str:
  """Each row: a query image (Q, h, w, C), a dark rule, then its k neighbours (Q, k, h, w, C).

  Neighbours nearly identical to their query mean the model reproduces its training data rather
  than generating new images.
  """
  queries, neighbours = np.asarray(queries_images), np.asarray(neighbour_images)
  num_queries, k = neighbours.shape[:2]
  if queries.shape[0] != num_queries or queries.shape[1:] != neighbours.shape[2:]:
    raise ValueError(f'expected queries (Q, h, w, C) and neighbours (Q, k, h, w, C), '
                     f'got {queries.shape} and {neighbours.shape}')
  width = queries.shape[2]
  query_column = make_grid(queries, ncol=1, pad=_PAD)
  neighbour_columns = make_grid(neighbours.reshape(num_queries * k, *neighbours.shape[2:]),
                                ncol=k, pad=_PAD)
  gap = np.full((query_column.shape[0], max(6, width // 2), 3), 255, np.uint8)
  gap[:, gap.shape[1] // 2 - 1:gap.shape[1] // 2 + 1] = 80
  picture = np.concatenate([query_column, gap, neighbour_columns], axis=1)
  first_neighbour = query_column.shape[1] + gap.shape[1]
  ticks = [(_tile_centres(0, 1, width)[0], 'generated')]
  ticks += zip(_tile_centres(first_neighbour, k, width), [f'#{i + 1}' for i in range(k)])
  return _plot_tiles(path, picture, title, 'nearest training images in latent space, closest first',
                     ticks)


def plot_text_image_map(path: str, image_coords, text_coords, labels, label_names, captions=(),
                        num_pairs: int = 12, title: str = 'Images and captions in one space',
                        legend_title: str = 'label') -> str:
  """Image points (dots) and caption points (crosses) of one 2-D projection, coloured by label.

  Row i of `image_coords` and `text_coords` is one image and its caption; `num_pairs` pairs, spread over
  the map, are joined by a grey line and the caption is written at its cross. A contrastive space keeps
  the two modalities apart by a roughly constant offset (the "modality gap"), so what to look for is that
  both clouds are ordered the same way, label by label.
  """
  image_coords, text_coords = np.asarray(image_coords, np.float64), np.asarray(text_coords, np.float64)
  labels = np.asarray(labels).astype(np.int64)
  names = [str(name) for name in label_names]
  colours = _label_colours(max(len(names), int(labels.max(initial=-1)) + 1))
  fig, ax = plt.subplots(figsize=(10, 7.5))
  for label in np.unique(labels):
    at = labels == label
    name = names[label] if label < len(names) else str(label)
    ax.scatter(*image_coords[at].T, s=9, color=colours[label], alpha=0.5, linewidths=0, label=f'{name} (image)')
    ax.scatter(*text_coords[at].T, s=22, color=colours[label], alpha=0.8, marker='x', linewidths=0.9,
               label=f'{name} (caption)')
  if num_pairs and len(labels):
    for i in _spread_out(np.concatenate([image_coords, text_coords], axis=1), num_pairs):
      ax.plot(*np.stack([image_coords[i], text_coords[i]]).T, color='0.5', linewidth=0.6, alpha=0.8)
      if i < len(captions):
        ax.annotate(captions[i], text_coords[i], fontsize=6, alpha=0.9, xytext=(3, 3), textcoords='offset points')
  ax.set(title=title, xlabel='principal component 1', ylabel='principal component 2')
  ax.legend(title=legend_title, loc='upper left', bbox_to_anchor=(1.01, 1.0), fontsize='small',
            ncol=1 + 2 * len(names) // 25)
  return save_figure(fig, path)


def save_text_queries(path: str, queries, neighbour_images,
                      title: str = 'Nearest images of free-text queries') -> str:
  """Each row: the nearest images (Q, k, h, w, C), closest first, of the query written at its left."""
  neighbours = np.asarray(neighbour_images)
  num_queries, k = neighbours.shape[:2]
  if len(queries) != num_queries:
    raise ValueError(f'{len(queries)} queries for {num_queries} rows of neighbours')
  width, height = neighbours.shape[3], neighbours.shape[2]
  picture = make_grid(neighbours.reshape(num_queries * k, *neighbours.shape[2:]), ncol=k, pad=_PAD)
  ticks = list(zip(_tile_centres(0, k, width), [f'#{i + 1}' for i in range(k)]))
  height_px, width_px = picture.shape[:2]
  scale = int(np.clip(700 // width_px, 1, 4))
  fig, ax = plt.subplots(figsize=(width_px * scale / _DPI + 3.0, height_px * scale / _DPI + 0.8))
  ax.imshow(picture, interpolation='nearest')
  ax.set_xticks(*zip(*ticks), fontsize='small')
  ax.set_yticks([_PAD + row * (height + _PAD) + (height - 1) / 2 for row in range(num_queries)],
                [f'"{q}"' for q in queries], fontsize='small')
  ax.tick_params(length=0)
  ax.set(title=title, xlabel='nearest held-out images in the text-image space, closest first')
  ax.spines[:].set_visible(False)
  return save_figure(fig, path)

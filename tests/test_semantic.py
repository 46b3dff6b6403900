"""Image grids and the semantic-space tools: PCA, interpolation, nearest neighbours, figures."""

import numpy as np
import pytest
from PIL import Image

from lgm import images, semantic


def _rng(seed=0):
  return np.random.default_rng(seed)


# --- images -------------------------------------------------------------------------------------


def test_to_uint8_rounds_and_clips():
  x = np.array([-1.0, 1.0, 0.0, -2.0, 3.0, np.nan], np.float32)
  np.testing.assert_array_equal(images.to_uint8(x), [0, 255, 128, 0, 255, 0])
  levels = np.arange(256)
  np.testing.assert_array_equal(images.to_uint8(levels / 127.5 - 1.0), levels)  # round trip
  np.testing.assert_array_equal(images.to_uint8(np.array([0.3, 0.7]) / 127.5 - 1.0), [0, 1])


def test_to_uint8_passes_uint8_and_takes_jax_bfloat16():
  import jax.numpy as jnp
  pixels = np.array([0, 7, 255], np.uint8)
  np.testing.assert_array_equal(images.to_uint8(pixels), pixels)
  np.testing.assert_array_equal(images.to_uint8(jnp.array([-1.0, 1.0], jnp.bfloat16)), [0, 255])
  with pytest.raises(TypeError):
    images.to_uint8(np.array([1, 2], np.int32))


def test_make_grid_puts_each_image_in_its_tile():
  count, h, w, ncol, pad = 5, 3, 4, 3, 2
  tiles = np.stack([np.full((h, w, 3), 10 * (i + 1), np.uint8) for i in range(count)])
  grid = images.make_grid(tiles, ncol=ncol, pad=pad, pad_value=7)
  assert grid.shape == (2 * (h + pad) + pad, ncol * (w + pad) + pad, 3) and grid.dtype == np.uint8
  covered = np.zeros(grid.shape[:2], bool)
  for i in range(count):
    row, col = divmod(i, ncol)
    top, left = pad + row * (h + pad), pad + col * (w + pad)
    assert (grid[top:top + h, left:left + w] == 10 * (i + 1)).all()
    covered[top:top + h, left:left + w] = True
  assert (grid[~covered] == 7).all()  # padding and the empty sixth tile


def test_make_grid_grey_to_rgb_square_default_and_rgb_pad():
  grey = np.linspace(-1, 1, 10 * 2 * 2).reshape(10, 2, 2, 1)
  grid = images.make_grid(grey, pad=1, pad_value=(255, 0, 0))
  assert grid.shape == (3 * 3 + 1, 4 * 3 + 1, 3)  # ceil(sqrt(10)) = 4 columns, 3 rows
  assert (grid[..., 0] == grid[..., 1])[1:3, 1:3].all() and (grid[..., 1] == grid[..., 2]).all()
  np.testing.assert_array_equal(grid[1:3, 1:3, 0], images.to_uint8(grey[0, ..., 0]))
  np.testing.assert_array_equal(grid[0, 0], [255, 0, 0])


def test_save_grid_upscales_each_image(tmp_path):
  batch = _rng().uniform(-1, 1, (6, 4, 5, 3))
  path = images.save_grid(str(tmp_path / 'sub' / 'grid.png'), batch, ncol=3, upscale=2)
  with Image.open(path) as saved:
    pixels = np.asarray(saved)
  assert pixels.shape == (2 * (8 + 1) + 1, 3 * (10 + 1) + 1, 3)
  np.testing.assert_array_equal(pixels[1:9:2, 1:11:2], images.to_uint8(batch[0]))


# --- PCA ----------------------------------------------------------------------------------------


@pytest.mark.parametrize('count, dim', [(200, 12), (15, 40)])  # both branches: D <= N and D > N
def test_pca_matches_svd(count, dim):
  x = _rng().normal(size=(count, dim)) * np.linspace(3, 0.5, dim)
  coords, mean, components = semantic.pca(x.reshape(count, dim // 2, 2), k=3)
  _, _, vt = np.linalg.svd(x - x.mean(0), full_matrices=False)
  np.testing.assert_allclose(mean, x.mean(0))
  np.testing.assert_allclose(np.abs(components @ vt[:3].T), np.eye(3), atol=1e-8)
  np.testing.assert_allclose(coords, (x - mean) @ components.T)
  largest = components[np.arange(3), np.abs(components).argmax(1)]
  assert (largest > 0).all()


def test_pca_finds_dominant_direction_with_a_fixed_sign():
  rng = _rng(1)
  direction = rng.normal(size=30)
  direction /= np.linalg.norm(direction)
  t = rng.normal(size=500) * 5
  x = t[:, None] * direction + 0.05 * rng.normal(size=(500, 30))
  coords, _, components = semantic.pca(x, k=2)
  assert abs(components[0] @ direction) > 0.999
  assert abs(np.corrcoef(coords[:, 0], t)[0, 1]) > 0.999
  _, _, flipped = semantic.pca(-x, k=2)  # mirrored data: same axes, not mirrored ones
  np.testing.assert_allclose(flipped, components, atol=1e-8)
  with pytest.raises(ValueError):
    semantic.pca(x, k=31)


# --- interpolation ------------------------------------------------------------------------------


def _angle(u, v):
  return np.arccos(np.clip(u @ v / np.linalg.norm(u) / np.linalg.norm(v), -1, 1))


def test_slerp_endpoints_exact_and_constant_angular_steps():
  rng = _rng(2)
  z0, z1 = rng.normal(size=(2, 4, 4, 2)).astype(np.float32)
  path = semantic.interpolate(z0, z1, 7, 'slerp')
  assert path.shape == (7, 4, 4, 2) and path.dtype == np.float32
  np.testing.assert_array_equal(path[0], z0)
  np.testing.assert_array_equal(path[-1], z1)
  flat = path.reshape(7, -1).astype(np.float64)
  steps = [_angle(flat[i], flat[i + 1]) for i in range(6)]
  np.testing.assert_allclose(steps, _angle(flat[0], flat[-1]) / 6, rtol=1e-4)


def test_slerp_keeps_unit_vectors_on_the_sphere():
  rng = _rng(3)
  a, b = rng.normal(size=(2, 64))
  a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
  np.testing.assert_allclose(np.linalg.norm(semantic.interpolate(a, b, 9), axis=1), 1.0, rtol=1e-12)


def test_slerp_parallel_vectors_fall_back_to_lerp():
  a = np.array([1.0, 2.0, 3.0])
  for b in (2 * a, -a, a):
    path = semantic.interpolate(a, b, 5, 'slerp')
    assert np.isfinite(path).all()
    np.testing.assert_allclose(path, semantic.interpolate(a, b, 5, 'lerp'))


def test_lerp_midpoint_and_unknown_method():
  a, b = np.zeros(3), np.array([2.0, 4.0, -6.0])
  np.testing.assert_allclose(semantic.interpolate(a, b, 3, 'lerp')[1], [1.0, 2.0, -3.0])
  with pytest.raises(ValueError, match='lerp, slerp'):
    semantic.interpolate(a, b, 3, 'cubic')


# --- nearest neighbours -------------------------------------------------------------------------


def _brute_force(queries, bank, k):
  differences = queries.reshape(len(queries), 1, -1) - bank.reshape(1, len(bank), -1)
  distances = np.linalg.norm(differences, axis=-1)
  order = np.lexsort((np.broadcast_to(np.arange(len(bank)), distances.shape), distances), axis=-1)[:, :k]
  return order, np.take_along_axis(distances, order, axis=1)


def test_nearest_neighbours_match_brute_force_with_small_blocks():
  rng = _rng(4)
  queries, bank = rng.normal(size=(7, 3, 4)), rng.normal(size=(103, 3, 4))
  indices, distances = semantic.nearest_neighbours(queries, bank, k=5, block_size=4)
  expected_indices, expected_distances = _brute_force(queries, bank, 5)
  assert indices.shape == distances.shape == (7, 5)
  np.testing.assert_allclose(distances, expected_distances, rtol=1e-9)
  np.testing.assert_array_equal(indices, expected_indices)


def test_nearest_neighbours_with_ties_are_sorted_and_take_lower_indices():
  # Small integers make every distance exact, so ties are real ties.
  rng = _rng(5)
  base = rng.integers(-3, 4, size=(20, 6)).astype(np.float32)
  bank = np.concatenate([base, base, base])  # every distance appears (at least) three times
  queries = np.concatenate([base[:4], rng.integers(-3, 4, size=(3, 6))])
  indices, distances = semantic.nearest_neighbours(queries, bank, k=6, block_size=7)
  expected_indices, expected_distances = _brute_force(queries, bank, 6)
  assert (np.diff(distances, axis=1) >= 0).all()
  np.testing.assert_allclose(distances, expected_distances, atol=1e-12)
  np.testing.assert_array_equal(indices, expected_indices)
  np.testing.assert_array_equal(indices[:4, 0], np.arange(4))  # a query in the bank finds itself
  with pytest.raises(ValueError):
    semantic.nearest_neighbours(queries, bank, k=len(bank) + 1)


# --- figures ------------------------------------------------------------------------------------


def _read_png(path):
  with Image.open(path) as image:
    assert image.format == 'PNG'
    return np.asarray(image.convert('RGB'))


def test_plot_semantic_map_with_thumbnails(tmp_path):
  rng = _rng(6)
  labels = rng.integers(0, 4, 150)  # label 3 has no name: shown by its number
  coords = rng.normal(size=(150, 2)) + labels[:, None]
  thumbnails = rng.uniform(-1, 1, (150, 8, 8, 1))
  path = semantic.plot_semantic_map(str(tmp_path / 'map.png'), coords, labels, ['a', 'b', 'c'],
                                    thumbnails=thumbnails, num_thumbnails=20, title='test map')
  pixels = _read_png(path)
  assert 500 < pixels.shape[1] < 2000 and 400 < pixels.shape[0] < 1500
  assert (tmp_path / 'map.png').stat().st_size < 1_000_000
  assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50  # more than a blank canvas


def test_save_interpolation_strips_and_neighbours(tmp_path):
  rng = _rng(7)
  strips = rng.uniform(-1, 1, (3, 6, 8, 8, 3))
  strip_pixels = _read_png(semantic.save_interpolation_strips(str(tmp_path / 'interp.png'), strips))
  assert strip_pixels.shape[1] > strip_pixels.shape[0] > 3 * 8
  queries = rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
  neighbours = rng.integers(0, 256, (4, 5, 8, 8, 3), dtype=np.uint8)
  path = semantic.save_neighbours(str(tmp_path / 'nn' / 'neighbours.png'), queries, neighbours)
  pixels = _read_png(path)
  assert pixels.shape[0] > 4 * 8 and pixels.shape[1] > 6 * 8
  with pytest.raises(ValueError):
    semantic.save_neighbours(str(tmp_path / 'bad.png'), queries[:3], neighbours)


# --- explore ------------------------------------------------------------------------------------


def test_explore_is_importable_and_its_gaussian_fit_matches_the_data():
  from experiments import explore
  rng = _rng(8)
  data = rng.normal(size=(50, 3)) @ np.array([[2.0, 0.0, 0.0], [1.0, 0.5, 0.0], [0.0, 0.0, 1.0]])
  samples = explore._sample_gaussian_fit(data.reshape(50, 3, 1), 20000, rng).reshape(20000, 3)
  np.testing.assert_allclose(samples.mean(0), data.mean(0), atol=0.1)
  np.testing.assert_allclose(np.cov(samples.T), np.cov(data.T), atol=0.15)

"""Image arrays to pixels and back: uint8 conversion, tiled grids, PNG files, reading an image file.

Models work on float images in [-1, 1]; people look at uint8 PNGs. Everything that writes pictures
(trainer, samplers, explore tools) goes through here, so a given array always becomes the same
pixels.
"""

from __future__ import annotations

import math
import os
from typing import Mapping

import numpy as np
from PIL import Image, PngImagePlugin

from lgm import files


def to_uint8(images) -> np.ndarray:
  """Float images in [-1, 1] -> uint8 by `round((x + 1) * 127.5)`, clipped; uint8 passes through.

  Clipping matters because samplers overshoot [-1, 1]: without it a bright pixel would wrap around
  to black. NaN becomes 0 so that a diverged sample still renders (black) instead of an undefined
  cast. Takes numpy or JAX arrays of any float dtype, bfloat16 included.
  """
  array = np.asarray(images)
  if array.dtype == np.uint8:
    return array
  # numpy's dtype kind 'f' misses the ml_dtypes floats (bfloat16, float8_*) that JAX hands back.
  if not array.dtype.name.startswith(('float', 'bfloat')):
    raise TypeError(f'expected float images in [-1, 1] or uint8, got dtype {array.dtype}')
  scaled = np.round((array.astype(np.float32) + 1.0) * 127.5)
  return np.clip(np.nan_to_num(scaled, nan=0.0), 0, 255).astype(np.uint8)


def to_rgb_uint8(images) -> np.ndarray:
  """A batch (N, h, w, C), C in {1, 3}, float [-1, 1] or uint8 -> uint8 (N, h, w, 3)."""
  pixels = to_uint8(images)
  if pixels.ndim != 4 or pixels.shape[-1] not in (1, 3):
    raise ValueError(f'expected images (N, h, w, C) with C in {{1, 3}}, got shape {pixels.shape}')
  return np.repeat(pixels, 3, axis=-1) if pixels.shape[-1] == 1 else pixels


def upscale_nearest(images: np.ndarray, factor: int) -> np.ndarray:
  """Repeats each pixel of (N, h, w, C) images `factor` times along height and width."""
  if factor < 1:
    raise ValueError(f'upscale factor must be >= 1, got {factor}')
  return np.repeat(np.repeat(images, factor, axis=1), factor, axis=2)


def make_grid(images, ncol: int | None = None, pad: int = 1, pad_value=255) -> np.ndarray:
  """Tiles images (N, h, w, C) row-major into one uint8 (H, W, 3) picture.

  `pad` pixels of `pad_value` (an int or an RGB triple) separate the tiles and frame the grid;
  tiles left empty in the last row take it too. `ncol` defaults to ceil(sqrt(N)), a square-ish
  grid, and is capped at N.
  """
  tiles = to_rgb_uint8(images)
  count, height, width, _ = tiles.shape
  if count == 0:
    raise ValueError('make_grid needs at least one image')
  ncol = min(ncol or math.ceil(math.sqrt(count)), count)
  nrow = math.ceil(count / ncol)
  grid = np.empty((nrow * (height + pad) + pad, ncol * (width + pad) + pad, 3), np.uint8)
  grid[...] = np.asarray(pad_value, np.uint8)
  for index, tile in enumerate(tiles):
    row, col = divmod(index, ncol)
    top, left = pad + row * (height + pad), pad + col * (width + pad)
    grid[top:top + height, left:left + width] = tile
  return grid


def save_png(path: str, array_uint8: np.ndarray, text: Mapping[str, str] | None = None) -> str:
  """Writes uint8 (H, W), (H, W, 1) or (H, W, 3) pixels as PNG, creating parent dirs; returns path. `text`:
  PNG text chunks (UTF-8), e.g. a generation's recipe (`lgm.provenance`)."""
  array = np.asarray(array_uint8)
  if array.dtype != np.uint8:
    raise TypeError(f'save_png expects uint8 pixels, got {array.dtype}; convert with to_uint8')
  if array.ndim == 3 and array.shape[-1] == 1:
    array = array[..., 0]
  files.makedirs(os.path.dirname(path) or '.')
  info = PngImagePlugin.PngInfo()
  for key, value in (text or {}).items():
    info.add_itxt(key, value)
  with files.replacing(path, 'wb') as f:
    Image.fromarray(array).save(f, format='PNG', pnginfo=info)
  return path


def save_grid(path: str, images, ncol: int | None = None, upscale: int = 1,
              text: Mapping[str, str] | None = None) -> str:
  """Saves `images` as a PNG grid and returns the path.

  `upscale` enlarges each image (nearest neighbour) so that 32x32 samples are visible; it is
  applied before tiling, so the lines between tiles stay one pixel wide.
  """
  return save_png(path, make_grid(upscale_nearest(to_rgb_uint8(images), upscale), ncol=ncol), text)


def read_image(path: str, shape: tuple[int | None, int | None, int]) -> np.ndarray:
  """An image file as an (H, W, C) float array in [-1, 1], converted to C channels (1 or 3) and resized to H x W
  (H and W None: at its own size)."""
  height, width, channels = shape
  with Image.open(path) as image:
    image = image.convert('L' if channels == 1 else 'RGB')
    if height is not None:
      image = image.resize((width, height), Image.BICUBIC)
    array = np.asarray(image, np.float32)
  return (array.reshape(*array.shape[:2], channels) / 127.5 - 1.0).astype(np.float32)

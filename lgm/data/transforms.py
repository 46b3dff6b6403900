"""Per-example image transforms between stored uint8 images and model inputs in [-1, 1].

Cheap on purpose: the data loader calls them once per example.
Resizing uses PIL: BOX (area average, no ringing) when shrinking, BICUBIC when enlarging
(smooth strokes for 8x8 digits rather than blocks). Channel conversions are exact arithmetic:
1 -> 3 repeats, 3 -> 1 is ITU-R 601 luma (0.299 R + 0.587 G + 0.114 B), 4 -> 3 composites the
alpha channel on white.
"""

from __future__ import annotations

import numpy as np
import PIL.Image

# The inverse of to_model_image's scaling lives with the rest of the pixel output code.

LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], np.float32)


def composite_on_white(rgba: np.ndarray) -> np.ndarray:
  """uint8 (..., 4) RGBA -> uint8 (..., 3) RGB over a white background (rounded)."""
  alpha = rgba[..., 3:].astype(np.float32) / 255
  rgb = rgba[..., :3].astype(np.float32) * alpha + 255 * (1 - alpha)
  return np.round(rgb).astype(np.uint8)


def _centre_crop(image: np.ndarray) -> np.ndarray:
  h, w = image.shape[:2]
  side = min(h, w)
  top, left = (h - side) // 2, (w - side) // 2
  return image[top:top + side, left:left + side]


def _resize(image: np.ndarray, size: int) -> np.ndarray:
  if image.shape[0] == size:
    return image
  resample = PIL.Image.BOX if image.shape[0] > size else PIL.Image.BICUBIC
  if image.shape[-1] == 1:
    return np.asarray(PIL.Image.fromarray(image[..., 0]).resize((size, size), resample))[..., None]
  return np.asarray(PIL.Image.fromarray(image).resize((size, size), resample))


def _convert_channels(x: np.ndarray, channels: int) -> np.ndarray:
  have = x.shape[-1]
  if have == channels:
    return x
  if have == 1 and channels == 3:
    return np.repeat(x, 3, axis=-1)
  if have == 3 and channels == 1:
    return x @ LUMA_WEIGHTS[:, None]
  raise ValueError(f'cannot convert {have} channels to {channels}')


def to_model_image(image_uint8: np.ndarray, image_size: int, channels: int) -> np.ndarray:
  """uint8 HxWxC (or HxW) -> float32 (image_size, image_size, channels) in [-1, 1].

  Centre-crops to a square, resizes, converts channels.
  """
  image = image_uint8 if image_uint8.ndim == 3 else image_uint8[..., None]
  if image.shape[-1] == 4:
    image = composite_on_white(image)
  image = _resize(_centre_crop(image), image_size)
  x = image.astype(np.float32) / 127.5 - 1
  return _convert_channels(x, channels)


def hflip(image: np.ndarray) -> np.ndarray:
  """Mirrors left-right an HxWxC image (or a batch NxHxWxC)."""
  return np.flip(image, axis=-2)

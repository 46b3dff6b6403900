"""What happens to an image after it leaves the generator: JPEG, resizing, cropping, noise, brightness.

Two forms of each. The JAX form (`jpeg`, `resize_back`, `crop`, `gaussian_noise`, `brightness`) is
differentiable and runs inside a training step: the signature stage (`lgm.tasks.signature`) puts these between
the decoder and the watermark extractor so that the signature learns to survive them. JPEG's rounding of the
DCT coefficients passes gradients straight through (forward: rounded; backward: identity), as in "Stable
Signature" (Fernandez et al. 2023). The numpy form (`REPORT_DISTORTIONS`) is what a user does to a file: PIL's
own JPEG encoder at a quality, PIL resizing; the report measures robustness with those.

Images are (B, H, W, C) in [-1, 1], lgm's model space; noise sigma and brightness are on the [0, 1] scale.
"""

from __future__ import annotations

import io
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from lgm import images as images_lib

# The JPEG standard's example quantisation tables (ITU T.81, Annex K), scaled by quality as libjpeg does.
_LUMA_TABLE = np.array([
    [16, 11, 10, 16, 24, 40, 51, 61], [12, 12, 14, 19, 26, 58, 60, 55],
    [14, 13, 16, 24, 40, 57, 69, 56], [14, 17, 22, 29, 51, 87, 80, 62],
    [18, 22, 37, 56, 68, 109, 103, 77], [24, 35, 55, 64, 81, 104, 113, 92],
    [49, 64, 78, 87, 103, 121, 120, 101], [72, 92, 95, 98, 112, 100, 103, 99]], np.float32)
_CHROMA_TABLE = np.full((8, 8), 99, np.float32)
_CHROMA_TABLE[:4, :4] = [[17, 18, 24, 47], [18, 21, 26, 66], [24, 26, 56, 99], [47, 66, 99, 99]]


def quantisation_tables(quality: jax.Array) -> tuple[jax.Array, jax.Array]:
  """libjpeg's luma and chroma tables at `quality` in [1, 100] (a traced scalar is fine)."""
  quality = jnp.clip(quality, 1, 100)
  scale = jnp.where(quality < 50, 5000.0 / quality, 200.0 - 2.0 * quality)
  table = lambda base: jnp.clip(jnp.floor((base * scale + 50.0) / 100.0), 1, 255)
  return table(_LUMA_TABLE), table(_CHROMA_TABLE)


def _dct_matrix() -> np.ndarray:
  """The orthonormal 8-point DCT-II as a matrix: coefficients = D @ block @ D.T."""
  k, n = np.meshgrid(np.arange(8), np.arange(8), indexing='ij')
  d = np.sqrt(2 / 8) * np.cos((2 * n + 1) * k * np.pi / 16)
  d[0] /= np.sqrt(2)
  return d.astype(np.float32)


_DCT = _dct_matrix()
# ITU-R BT.601 full range, as JFIF uses.
_TO_YCBCR = np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]], np.float32)
_FROM_YCBCR = np.linalg.inv(_TO_YCBCR).astype(np.float32)


def _round_straight_through(x: jax.Array) -> jax.Array:
  return x + jax.lax.stop_gradient(jnp.round(x) - x)


def _quantise_blocks(plane: jax.Array, table: jax.Array) -> jax.Array:
  """(B, H, W) plane (0-255 scale, centred) -> its 8x8 blocks' DCT coefficients rounded to `table`, and back."""
  b, h, w = plane.shape
  blocks = plane.reshape(b, h // 8, 8, w // 8, 8).transpose(0, 1, 3, 2, 4)
  coefficients = jnp.einsum('ki,bxyij,lj->bxykl', _DCT, blocks, _DCT)
  coefficients = _round_straight_through(coefficients / table) * table
  blocks = jnp.einsum('ki,bxykl,lj->bxyij', _DCT, coefficients, _DCT)
  return blocks.transpose(0, 1, 3, 2, 4).reshape(b, h, w)


def jpeg(images: jax.Array, quality: jax.Array) -> jax.Array:
  """JPEG compression and decompression at `quality`, differentiable: RGB -> YCbCr, chroma averaged over 2x2
  (4:2:0), 8x8 DCT, coefficients rounded to libjpeg's tables, and back. A side that is not a multiple of 16 is
  padded by repeating its last row or column, as encoders fill a partial block, and cropped back; a single
  channel image is coded as luma alone."""
  b, h, w, c = images.shape
  pad_h, pad_w = -h % 16, -w % 16
  x = jnp.pad(jnp.clip(images, -1, 1), ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode='edge')
  x = (x + 1) * 127.5
  luma_table, chroma_table = quantisation_tables(jnp.asarray(quality, jnp.float32))
  if c == 1:
    out = (_quantise_blocks(x[..., 0] - 128, luma_table) + 128)[..., None]
  else:
    ycbcr = x @ _TO_YCBCR.T
    luma = _quantise_blocks(ycbcr[..., 0] - 128, luma_table) + 128
    ph, pw = h + pad_h, w + pad_w
    chroma = ycbcr[..., 1:].reshape(b, ph // 2, 2, pw // 2, 2, 2).mean(axis=(2, 4))
    chroma = jnp.stack([_quantise_blocks(chroma[..., i], chroma_table) for i in range(2)], axis=-1)
    chroma = jax.image.resize(chroma, (b, ph, pw, 2), 'linear')
    out = jnp.concatenate([luma[..., None], chroma], axis=-1) @ _FROM_YCBCR.T
  return jnp.clip(out[:, :h, :w] / 127.5 - 1, -1, 1)


def resize_back(images: jax.Array, scale: float) -> jax.Array:
  """Resized by `scale` (antialiased, bilinear) and back to the original size."""
  b, h, w, c = images.shape
  small = jax.image.resize(images, (b, round(h * scale), round(w * scale), c), 'linear', antialias=True)
  return jax.image.resize(small, images.shape, 'linear', antialias=True)


def crop_size(size: int, keep: float) -> int:
  return max(1, round(size * keep))


def crop(images: jax.Array, rng: jax.Array, keep: float) -> jax.Array:
  """A window of `keep` times each side at a random place (one place per batch): a smaller image."""
  b, h, w, c = images.shape
  ch, cw = crop_size(h, keep), crop_size(w, keep)
  top = jax.random.randint(rng, (), 0, h - ch + 1)
  left = jax.random.randint(jax.random.fold_in(rng, 1), (), 0, w - cw + 1)
  return jax.lax.dynamic_slice(images, (0, top, left, 0), (b, ch, cw, c))


def gaussian_noise(images: jax.Array, rng: jax.Array, sigma: jax.Array) -> jax.Array:
  """Added N(0, sigma^2) per pixel, sigma on the [0, 1] scale; clipped to the image range."""
  return jnp.clip(images + 2 * sigma * jax.random.normal(rng, images.shape), -1, 1)


def brightness(images: jax.Array, factor: jax.Array) -> jax.Array:
  """[0, 1] intensities times `factor` (PIL's ImageEnhance.Brightness), clipped."""
  return jnp.clip((images + 1) * factor - 1, -1, 1)


# --- what a user does to a file: the report's distortions ---------------------------------------------------
def _pil_map(images: np.ndarray, fn: Callable[[Image.Image], Image.Image]) -> np.ndarray:
  out = []
  for image in images_lib.to_uint8(images):
    pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
    result = np.asarray(fn(pil), np.float32) / 127.5 - 1
    out.append(result[..., None] if result.ndim == 2 else result)
  return np.stack(out)


def to_8_bit(images: np.ndarray) -> np.ndarray:
  """Written to 8 bits, as an image file holds it, and read back."""
  return _pil_map(images, lambda pil: pil)


def pil_jpeg(images: np.ndarray, quality: int) -> np.ndarray:
  """Saved as a JPEG file at `quality` (PIL's libjpeg, 4:2:0) and read back."""
  def fn(pil):
    buffer = io.BytesIO()
    pil.save(buffer, format='JPEG', quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue()))
  return _pil_map(images, fn)


def pil_resize_back(images: np.ndarray, scale: float) -> np.ndarray:
  """Resized by `scale` with PIL's bilinear filter and back."""
  def fn(pil):
    small = pil.resize((round(pil.width * scale), round(pil.height * scale)), Image.BILINEAR)
    return small.resize(pil.size, Image.BILINEAR)
  return _pil_map(images, fn)


def _numpy_crop(images: np.ndarray, seed: int, keep: float) -> np.ndarray:
  """Each image's own window of `keep` times each side, at a place drawn from `seed`."""
  n, h, w, _ = images.shape
  ch, cw = crop_size(h, keep), crop_size(w, keep)
  rng = np.random.default_rng(seed)
  tops, lefts = rng.integers(0, h - ch + 1, n), rng.integers(0, w - cw + 1, n)
  return np.stack([image[t:t + ch, l:l + cw] for image, t, l in zip(to_8_bit(images), tops, lefts)])


def _numpy_noise(images: np.ndarray, seed: int, sigma: float) -> np.ndarray:
  noisy = images + 2 * sigma * np.random.default_rng(seed).standard_normal(images.shape)
  return to_8_bit(np.clip(noisy, -1, 1))


def _numpy_brightness(images: np.ndarray, factor: float) -> np.ndarray:
  return to_8_bit(np.clip((images + 1) * factor - 1, -1, 1))


# name -> fn(images in [-1, 1], seed) -> distorted images, each written to 8 bits as a file would be.
REPORT_DISTORTIONS: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {
    'none': lambda x, seed: to_8_bit(x),
    'jpeg90': lambda x, seed: pil_jpeg(x, 90),
    'jpeg75': lambda x, seed: pil_jpeg(x, 75),
    'jpeg50': lambda x, seed: pil_jpeg(x, 50),
    'resize0.5': lambda x, seed: pil_resize_back(x, 0.5),
    'crop0.9': lambda x, seed: _numpy_crop(x, seed, 0.9),
    'noise0.02': lambda x, seed: _numpy_noise(x, seed, 0.02),
    'brightness1.1': lambda x, seed: _numpy_brightness(x, 1.1),
    'brightness0.9': lambda x, seed: _numpy_brightness(x, 0.9),
}
DESCRIPTIONS = {
    'none': 'none (8-bit PNG)', 'jpeg90': 'JPEG quality 90', 'jpeg75': 'JPEG quality 75', 'jpeg50': 'JPEG quality 50',
    'resize0.5': 'resized to half and back (bilinear)', 'crop0.9': 'cropped to 90% of each side (81% of the area)',
    'noise0.02': 'Gaussian noise, sigma 0.02', 'brightness1.1': 'brightness +10%', 'brightness0.9': 'brightness -10%',
}

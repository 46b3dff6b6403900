"""Winograd F(2x2, 3x3) convolutions: the 3x3 'SAME' convolutions of the U-Nets in 4/9 of the multiplications.

Lavin & Gray 2016: each 2x2 block of outputs is read from a 4x4 input tile, V = B^T d B, the kernel becomes
U = G g G^T (4x4 per channel pair), and Y = A^T (U . V) A. Over channels the 16 products U . V are 16 matmuls
of (tiles x C_in) by (C_in x C_out), so the convolution's multiply count drops from 36 to 16 per 2x2 block,
and the tile transforms are additions only. The kernel parameter stays the 3x3 HWIO kernel: checkpoints do
not depend on the algorithm.

Why: on XLA:CPU a 3x3 convolution runs at about the machine's matmul rate, so fewer multiplications are the
one way left to make it faster (measured in docs/results.md, "Against PyTorch, side by side"). Both gradients
stay in the Winograd domain (`_backward`). Float32 rounding differs from a direct convolution by about 1e-6
relative (tests/test_winograd.py); on accelerators the vendor libraries choose their own algorithms, hence
`conv_algorithm='auto'`: Winograd on CPU only. A `precision` argument is not honoured (float32 matmuls at
XLA:CPU's one precision).
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

ALGORITHMS = ('xla', 'winograd', 'auto')
# Below these the 16 small matmuls and the tile transforms cost about what the saved multiplications gain, or more
# (measured alone on 2 CPU cores: level at 128 tiles of 256 channels, 1.5x slower at 32 tiles, slower with 4
# channels; in the t2i job's latent model, 256 and 1,024 tiles of 48-192 channels, the step was no faster).
_MIN_TILES = 256  # N * H * W / 4
_MIN_CHANNELS = 16

_BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]])  # input tile transform
_G = np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]])  # kernel transform
_AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]])  # output transform


def _combine(matrix: np.ndarray, terms: Sequence[jnp.ndarray]) -> list[jnp.ndarray]:
  """[sum_j matrix[i, j] * terms[j] for each row i], skipping zeros and multiplications by +-1."""
  rows = []
  for row in matrix:
    total = None
    for c, t in zip(row, terms):
      if c == 0:
        continue
      t = t if c == 1 else -t if c == -1 else t * float(c)
      total = t if total is None else total + t
    rows.append(total)
  return rows


def _input_tiles(x: jnp.ndarray) -> list[list[jnp.ndarray]]:
  """V = B^T d B for every 4x4 tile d of the zero-padded input (stride 2): v[p][q] is (N, H/2, W/2, C)."""
  h, wd = x.shape[1:3]
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  rows = _combine(_BT, [xp[:, a:a + h:2] for a in range(4)])  # B^T along H: 4 x (N, H/2, W+2, C)
  return [_combine(_BT, [r[:, :, b:b + wd:2] for b in range(4)]) for r in rows]


def _winograd(x: jnp.ndarray, w: jnp.ndarray) -> tuple[jnp.ndarray, list[list[jnp.ndarray]]]:
  """The convolution and the transformed input tiles it multiplied (the kernel gradient's operand)."""
  n, h, wd, _ = x.shape
  v = _input_tiles(x)
  gw = _combine(_G, [w[i] for i in range(3)])  # G along the kernel's rows: 4 x (3, C, D)
  u = [_combine(_G, [g[j] for j in range(3)]) for g in gw]  # u[p][q]: (C, D)
  m = [[v[p][q] @ u[p][q] for q in range(4)] for p in range(4)]
  half = [_combine(_AT, m[p]) for p in range(4)]  # A^T along W: half[p][s]
  y = [_combine(_AT, [half[p][s] for p in range(4)]) for s in range(2)]  # A^T along H: y[s][r]
  y = jnp.stack([jnp.stack([y[s][r] for s in range(2)], axis=3) for r in range(2)], axis=2)  # N,H/2,2,W/2,2,D
  return y.reshape(n, h, wd, w.shape[-1]), v


@jax.custom_vjp
def winograd_conv3x3(x: jnp.ndarray, w: jnp.ndarray) -> jnp.ndarray:
  """The 'SAME', stride-1 3x3 convolution (cross-correlation, as `lax.conv_general_dilated`) of NHWC `x` (H and
  W even) with the HWIO kernel `w`, by Winograd F(2x2, 3x3)."""
  return _winograd(x, w)[0]


def _forward(x, w):
  y, v = _winograd(x, w)
  return y, (v, w)


def _backward(residuals, dy):
  """dx: the Winograd convolution of dy with the kernel rotated by 180 degrees and its channels swapped.
  dw: in the Winograd domain, dU[p][q] = V[p][q]^T dM[p][q] with dM = A dY A^T per output tile, then
  dw = G^T dU G; V is kept from the forward pass (4x the input's memory), since recomputing it in the same
  program as its 16 matmuls made them twice as slow on XLA:CPU."""
  v, w = residuals
  c, d = w.shape[2:]
  dx = _winograd(dy, jnp.flip(w, (0, 1)).transpose(0, 1, 3, 2))[0]
  tiles = [[dy[:, r::2, s::2] for s in range(2)] for r in range(2)]  # dY[r][s]: (N, H/2, W/2, D)
  half = [_combine(_AT.T, [tiles[0][s], tiles[1][s]]) for s in range(2)]  # A along H: half[s][p]
  dm = [_combine(_AT.T, [half[0][p], half[1][p]]) for p in range(4)]  # A along W: dm[p][q]
  du = [[v[p][q].reshape(-1, c).T @ dm[p][q].reshape(-1, d) for q in range(4)] for p in range(4)]
  half_w = [_combine(_G.T, [du[p][q] for p in range(4)]) for q in range(4)]  # G^T along p: half_w[q][i]
  dw = jnp.stack([jnp.stack(_combine(_G.T, [half_w[q][i] for q in range(4)])) for i in range(3)])  # (3, 3, C, D)
  return dx, dw


winograd_conv3x3.defvjp(_forward, _backward)


_NHWC = jax.lax.ConvDimensionNumbers((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))


def applies(x_shape: Sequence[int], w_shape: Sequence[int], dtype: Any, strides: Sequence[int],
            padding: Any, dimension_numbers: Any = None, **options: Any) -> bool:
  """Whether a `lax.conv_general_dilated` call is one that `winograd_conv3x3` computes, and worth it."""
  if len(x_shape) != 4 or len(w_shape) != 4:
    return False
  layout = jax.lax.conv_dimension_numbers(tuple(x_shape), tuple(w_shape), dimension_numbers) == _NHWC
  same = padding == 'SAME' or (not isinstance(padding, str) and tuple(map(tuple, padding)) == ((1, 1), (1, 1)))
  plain = all(options.get(k) in (None, 1, (1, 1)) for k in ('lhs_dilation', 'rhs_dilation', 'feature_group_count',
                                                               'batch_group_count'))
  return (layout and tuple(w_shape[:2]) == (3, 3) and tuple(strides) == (1, 1) and same and plain
          and jnp.dtype(dtype) == jnp.float32 and x_shape[1] % 2 == 0 and x_shape[2] % 2 == 0
          and x_shape[0] * x_shape[1] * x_shape[2] // 4 >= _MIN_TILES and min(w_shape[2:]) >= _MIN_CHANNELS)


def conv_general_dilated(algorithm: str):
  """A drop-in for `lax.conv_general_dilated` (flax's `nn.Conv(conv_general_dilated=...)`) that computes the
  convolutions `applies` accepts by Winograd for `algorithm` 'winograd', or 'auto' on the CPU backend."""
  if algorithm not in ALGORITHMS:
    raise ValueError(f'conv_algorithm {algorithm!r}; valid: {ALGORITHMS}')

  def conv(lhs, rhs, window_strides, padding, **options):
    use = algorithm == 'winograd' or (algorithm == 'auto' and jax.default_backend() == 'cpu')
    if use and rhs.dtype == lhs.dtype and applies(lhs.shape, rhs.shape, lhs.dtype, window_strides, padding,
                                                  **options):
      return winograd_conv3x3(lhs, rhs)
    return jax.lax.conv_general_dilated(lhs, rhs, window_strides, padding, **options)

  return conv

"""Winograd F(2x2, 3x3) convolutions against a direct float64 computation, and inside the score U-Net."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lgm.models import layers, score_unet, winograd


def direct_conv(x: np.ndarray, w: np.ndarray) -> np.ndarray:
  """'SAME' 3x3 cross-correlation in float64, written out over the nine taps."""
  x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
  _, h, wd, _ = x.shape
  xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  return sum(np.einsum('nhwc,cd->nhwd', xp[:, i:i + h, j:j + wd], w[i, j]) for i in range(3) for j in range(3))


@pytest.mark.parametrize('shape, features', [((2, 16, 16, 8), 12), ((1, 6, 10, 5), 3)])
def test_matches_a_direct_convolution_and_its_gradients(shape, features):
  kx, kw, kg = jax.random.split(jax.random.PRNGKey(0), 3)
  x = jax.random.normal(kx, shape)
  w = jax.random.normal(kw, (3, 3, shape[-1], features)) / 3
  g = jax.random.normal(kg, (*shape[:3], features))  # the output's cotangent

  @jax.jit
  def output_and_gradients(x, w, g):
    y, vjp = jax.vjp(winograd.winograd_conv3x3, x, w)
    return y, vjp(g)

  y, (dx, dw) = output_and_gradients(x, w, g)
  np.testing.assert_allclose(y, direct_conv(x, w), rtol=0, atol=2e-5 * np.abs(y).max())
  # conv is linear in each argument, so the gradients of <g, conv(x, w)> satisfy <dx, x> = <dw, w> = <g, conv(x, w)>,
  # the right side computed in float64 by the direct convolution.
  inner = float(np.sum(np.asarray(g, np.float64) * direct_conv(x, w)))
  np.testing.assert_allclose(float(np.sum(np.asarray(dx, np.float64) * np.asarray(x, np.float64))), inner, rtol=1e-5)
  np.testing.assert_allclose(float(np.sum(np.asarray(dw, np.float64) * np.asarray(w, np.float64))), inner, rtol=1e-5)
  ref_dx, ref_dw = jax.vjp(lambda a, b: jax.lax.conv_general_dilated(
      a, b, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
      precision=jax.lax.Precision.HIGHEST), x, w)[1](g)
  np.testing.assert_allclose(dx, ref_dx, rtol=0, atol=2e-5 * np.abs(ref_dx).max())
  np.testing.assert_allclose(dw, ref_dw, rtol=0, atol=2e-5 * np.abs(ref_dw).max())


def test_applies_only_where_it_computes_the_same_thing():
  nhwc = ('NHWC', 'HWIO', 'NHWC')
  ok = dict(x_shape=(4, 16, 16, 16), w_shape=(3, 3, 16, 16), dtype=jnp.float32, strides=(1, 1), padding='SAME',
            dimension_numbers=nhwc)
  assert winograd.applies(**ok)
  assert winograd.applies(**{**ok, 'padding': ((1, 1), (1, 1))})
  assert winograd.applies(**{**ok, 'x_shape': (64, 4, 4, 16)})  # 256 tiles of 2x2 outputs
  for change in ({'strides': (2, 2)}, {'padding': 'VALID'}, {'x_shape': (4, 8, 8, 16)}, {'x_shape': (4, 17, 16, 16)},
                 {'w_shape': (1, 1, 16, 16)}, {'w_shape': (3, 3, 16, 4)}, {'dtype': jnp.bfloat16},
                 {'x_shape': (4, 16, 16, 16), 'dimension_numbers': ('NCHW', 'OIHW', 'NCHW')}):
    assert not winograd.applies(**{**ok, **change}), change
  assert not winograd.applies(**ok, rhs_dilation=(2, 2))
  assert not winograd.applies(**ok, feature_group_count=2)
  with pytest.raises(ValueError, match='conv_algorithm'):
    winograd.conv_general_dilated('fft')


def test_the_score_unet_is_the_same_function_under_every_algorithm():
  """Same parameter tree (checkpoints move between algorithms), outputs and gradients within float32 rounding;
  'auto' is Winograd on this (CPU) backend."""
  x = jax.random.normal(jax.random.PRNGKey(1), (4, 16, 16, 3))  # 256 tiles: Winograd applies
  t = jnp.array([0.3, 0.7, 0.1, 0.9])
  nets = {a: score_unet.DDPM(nf=16, ch_mult=(1,), num_res_blocks=1, attn_resolutions=(), dropout=0.0,
                             conv_algorithm=a) for a in winograd.ALGORITHMS}
  params = jax.jit(nets['xla'].init)(jax.random.PRNGKey(0), x, t)
  for algorithm, net in nets.items():
    assert jax.tree.structure(jax.eval_shape(net.init, jax.random.PRNGKey(0), x, t)) == jax.tree.structure(params)
    assert ('name=winograd_conv3x3' in str(jax.make_jaxpr(net.apply)(params, x, t))) == (algorithm != 'xla'), algorithm

  @jax.jit
  def values_and_grads(p):
    return [jax.value_and_grad(lambda p: jnp.mean(nets[a].apply(p, x, t) ** 2))(p) for a in ('xla', 'winograd')]

  (reference, reference_grads), (value, grads) = values_and_grads(params)
  np.testing.assert_allclose(value, reference, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(reference_grads)):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * max(float(np.abs(b).max()), 1e-6))


def test_conv3x3_keeps_flax_conv_parameters():
  conv = layers.conv3x3(4, jax.nn.initializers.lecun_normal(), jnp.float32, algorithm='winograd')
  params = conv.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 2)))
  assert {k: v.shape for k, v in params['params'].items()} == {'kernel': (3, 3, 2, 4), 'bias': (4,)}

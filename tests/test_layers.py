"""The shared block library (lgm.models.layers): group rule, block options, initialisation schemes.

Structure is checked by tracing (jax.eval_shape); the few real initialisations are of 8-channel blocks.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lgm.models import layers

X = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 4, 8))


def shapes(module, *args):
  tree = jax.eval_shape(module.init, jax.random.PRNGKey(0), *args)['params']
  return jax.tree.map(lambda s: s.shape, tree)


def test_group_norm_uses_min_c_over_4_and_32_groups_reduced_to_a_divisor():
  for channels in range(1, 257):
    groups = layers.group_norm(channels).num_groups
    assert channels % groups == 0 and 1 <= groups <= 32
    if channels % min(max(channels // 4, 1), 32) == 0:
      assert groups == min(max(channels // 4, 1), 32)
  # At the autoencoder's power-of-two widths this is its former rule, gcd(C / 4, 32).
  for channels in (8, 16, 32, 64, 128):
    assert layers.group_norm(channels).num_groups == math.gcd(channels // 4, 32)


def _numpy_group_norm(x, scale, bias, groups, eps=1e-6):
  b, c = x.shape[0], x.shape[-1]
  g = x.reshape(b, -1, groups, c // groups).astype(np.float64)
  mean, var = g.mean((1, 3), keepdims=True), g.var((1, 3), keepdims=True)
  return ((g - mean) / np.sqrt(var + eps)).reshape(x.shape) * scale + bias


@pytest.mark.parametrize('shape, groups', [((3, 4, 4, 12), 3), ((2, 5, 16), 4), ((2, 2, 3, 3, 8), 8)])
def test_group_norm_and_its_written_out_gradient_match_numpy_and_autodiff(shape, groups):
  keys = jax.random.split(jax.random.PRNGKey(1), 4)
  x = 3.0 * jax.random.normal(keys[0], shape) + 2.0  # an offset mean, as after a conv with a bias
  scale, bias = 1.0 + 0.3 * jax.random.normal(keys[1], shape[-1:]), jax.random.normal(keys[2], shape[-1:])
  cotangent = jax.random.normal(keys[3], shape)
  y = layers.group_normalize(x, scale, bias, groups, 1e-6)
  np.testing.assert_allclose(y, _numpy_group_norm(np.asarray(x), scale, bias, groups), atol=2e-5)
  # The hand-written gradient against autodiff through the same formula (the primal without custom_vjp).
  autodiff = lambda *a: layers._group_norm_forward(*a, groups, 1e-6)[0]
  loss = lambda f: lambda *a: jnp.sum(f(*a) * cotangent)
  written = jax.grad(loss(lambda *a: layers.group_normalize(*a, groups, 1e-6)), argnums=(0, 1, 2))(x, scale, bias)
  derived = jax.grad(loss(autodiff), argnums=(0, 1, 2))(x, scale, bias)
  for ours, reference in zip(written, derived):
    np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-4 * float(jnp.abs(reference).max()))


def test_group_norm_module_has_flax_parameters_and_returns_its_dtype():
  module = layers.group_norm(8, jnp.bfloat16)
  variables = module.init(jax.random.PRNGKey(0), X)
  assert jax.tree.map(lambda a: (a.shape, a.dtype), variables['params']) == {
      'scale': ((8,), jnp.float32), 'bias': ((8,), jnp.float32)}
  y = module.apply(variables, X)
  assert y.dtype == jnp.bfloat16
  np.testing.assert_allclose(y.astype(jnp.float32), _numpy_group_norm(np.asarray(X), 1.0, 0.0, 2), atol=2e-2)


def test_res_block_projects_temb_only_when_given_and_shortcuts_by_kind():
  assert 'Dense_0' not in shapes(layers.ResBlock(8), X)
  assert shapes(layers.ResBlock(8), X, jnp.ones((2, 16)))['Dense_0']['kernel'] == (16, 8)
  assert shapes(layers.ResBlock(16), X)['Dense_0']['kernel'] == (8, 16)  # 1x1 shortcut on a width change
  # Resampling: BigGAN's block takes a shortcut at equal width too, DDPM's does not; both resample x.
  assert 'Dense_0' in shapes(layers.ResBlock(8, kind='biggan', down=True), X)
  assert 'Dense_0' not in shapes(layers.ResBlock(8, kind='ddpm', down=True), X)
  out = jax.eval_shape(lambda x: layers.ResBlock(8, up=True, fir=True).init_with_output(
      jax.random.PRNGKey(0), x)[0], X)
  assert out.shape == (2, 8, 8, 8)


@pytest.mark.parametrize('kernel_init,closing_is_zero', [(layers.lecun_init, True), (layers.ddpm_init, False)])
def test_kernel_init_selects_the_scheme_and_closing_layers_start_near_zero(kernel_init, closing_is_zero):
  block = layers.ResBlock(16, kernel_init=kernel_init)
  params = block.init(jax.random.PRNGKey(0), X)['params']
  closing, opening, shortcut = (params[n]['kernel'] for n in ('Conv_1', 'Conv_0', 'Dense_0'))
  assert np.all(closing == 0) == closing_is_zero and float(jnp.abs(closing).max()) < 1e-4
  if kernel_init is layers.lecun_init:  # flax's default: (truncated) normal of std 1 / sqrt(fan_in)
    assert abs(float(opening.std()) * math.sqrt(9 * 8) - 1.0) < 0.1
    assert abs(float(shortcut.std()) * math.sqrt(8) - 1.0) < 0.25
  else:  # fan-average uniform: bound sqrt(3 scale / fan_avg)
    assert float(jnp.abs(opening).max()) <= math.sqrt(3 / (9 * 12))
    assert float(jnp.abs(shortcut).max()) <= math.sqrt(3 / 12)
  # A zero closing layer makes the residual branch vanish: only the shortcut is left.
  if closing_is_zero:
    out = block.apply({'params': params}, X)
    np.testing.assert_allclose(out, X @ shortcut + params['Dense_0']['bias'], atol=1e-5)


@pytest.mark.parametrize('fir', [False, True])
@pytest.mark.parametrize('up', [False, True])
def test_resample_shapes_and_parameters(fir, up):
  size = 8 if up else 2
  assert jax.eval_shape(layers.Resample(up, fir=fir).apply, {}, X).shape == (2, size, size, 8)
  params = shapes(layers.Resample(up, out_ch=12, with_conv=True, fir=fir), X)
  assert params == {'FIRConv_0' if fir else 'Conv_0': {'bias': (12,), 'kernel': (3, 3, 8, 12)}}


def test_attention_block_starts_as_identity_and_masks_context():
  block = layers.AttnBlock(num_heads=2, kernel_init=layers.lecun_init)
  context = jax.random.normal(jax.random.PRNGKey(1), (2, 3, 5))
  params = block.init(jax.random.PRNGKey(0), X, context)['params']
  assert np.all(params['self_out']['kernel'] == 0) and params['cross_key']['kernel'].shape == (5, 8)
  np.testing.assert_array_equal(block.apply({'params': params}, X, context), X)
  # attend: masked keys get weight 0, a fully masked row attends to nothing.
  q, k, v = (jax.random.normal(jax.random.PRNGKey(i), (1, 2, 4)) for i in (2, 3, 4))
  mask = jnp.array([[True, False]])
  np.testing.assert_allclose(layers.attend(q, k, v, 2, mask), jnp.broadcast_to(v[:, :1], (1, 2, 4)), atol=1e-6)
  np.testing.assert_array_equal(layers.attend(q, k, v, 2, jnp.zeros_like(mask)), 0.0)


def test_attend_matches_a_numpy_softmax_attention_with_masks():
  b, lq, lk, heads, d = 3, 5, 7, 2, 4
  q, k, v = (np.array(jax.random.normal(jax.random.PRNGKey(i), (b, n, heads * d))) for i, n in
             ((0, lq), (1, lk), (2, lk)))
  k[0, 6] *= 50.0  # a masked key with a logit far above the others: the softmax's max is over valid keys
  mask = np.array([[True] * 6 + [False], [True] * 7, [False, True, False, True, False, False, False]])
  logits = np.einsum('bqhd,bkhd->bhqk', q.reshape(b, lq, heads, d), k.reshape(b, lk, heads, d)) / np.sqrt(d)
  logits = np.where(mask[:, None, None], logits, -np.inf)
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  expected = np.einsum('bhqk,bkhd->bqhd', weights, v.reshape(b, lk, heads, d)).reshape(b, lq, heads * d)
  np.testing.assert_allclose(layers.attend(q, k, v, heads, mask), expected, atol=1e-5)
  np.testing.assert_allclose(layers.attend(q, k, v, heads), layers.attend(q, k, v, heads, np.ones((b, lk), bool)),
                             atol=1e-6)


def test_attention_projections_have_dense_parameters_and_dense_results():
  """`DenseParams` + `project` is nn.Dense: the same parameters at the same path, the same products."""
  import flax.linen as nn

  class Separate(nn.Module):
    @nn.compact
    def __call__(self, x):
      return [nn.Dense(f, kernel_init=layers.ddpm_init(0.1), name=n)(x) for n, f in (('a', 3), ('b', 5))]

  class Fused(nn.Module):
    @nn.compact
    def __call__(self, x):
      params = [layers.DenseParams(f, layers.ddpm_init(0.1), name=n)(x.shape[-1]) for n, f in (('a', 3), ('b', 5))]
      return layers.project(x, params, jnp.float32)

  x = jax.random.normal(jax.random.PRNGKey(3), (2, 6, 4))
  separate, fused = Separate().init(jax.random.PRNGKey(0), x), Fused().init(jax.random.PRNGKey(0), x)
  assert jax.tree.all(jax.tree.map(lambda a, b: bool((a == b).all()), separate, fused))
  for a, b in zip(Separate().apply(separate, x), Fused().apply(separate, x)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_matmul_gradients_are_those_of_a_plain_product():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 5, 4))
  kernel = jax.random.normal(jax.random.PRNGKey(1), (4, 6))
  g = jax.random.normal(jax.random.PRNGKey(2), (2, 3, 5, 6))
  ours = jax.vjp(layers.matmul, x, kernel)
  plain = jax.vjp(jnp.dot, x, kernel)
  np.testing.assert_allclose(ours[0], plain[0], rtol=1e-6)
  for a, b in zip(ours[1](g), plain[1](g)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)

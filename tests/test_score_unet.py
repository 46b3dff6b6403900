"""Score networks (lgm.models.score_unet): the paper's parameter counts, variants, conditioning hooks.

Big networks and the architecture variants are only traced (jax.eval_shape). Tiny ones run with
random parameters drawn in numpy from the traced shapes (compiling `init` costs tens of seconds on
CPU, and random values also wake the branches that the real initialisation starts near zero),
compiled without XLA's backend optimisations, which are most of the compile time of such programs.
"""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import sde_base
from lgm.models import build_model, layers, score_unet

# score_sde's CIFAR-10 configs: (module, exact count of our network, the reference's count in millions).
PAPER_CONFIGS = [
    ('cifar10_ddpmpp_continuous', 61_804_419, 61.80),
    ('cifar10_ncsnpp_continuous', 62_758_915, 62.76),
    ('cifar10_ddpmpp_deep_continuous', 106_632_579, 106.63),
    ('cifar10_ncsnpp_deep_continuous', 107_587_075, 107.59),
    ('cifar10_ddpm', 35_218_947, 35.22),
]
TINY = dict(nf=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), dropout=0.0)
X = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 3))
SIGMA = jnp.array([0.3, 4.0])


def flat_keys(tree, prefix=''):
  return {k for key, value in tree.items()
          for k in (flat_keys(value, f'{prefix}{key}.') if isinstance(value, dict) else [prefix + key])}


def random_params(model, *args, **kwargs):
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), *args, **kwargs)['params']
  rng = np.random.default_rng(0)
  return jax.tree.map(lambda s: jnp.asarray(rng.normal(0, 0.3, s.shape), s.dtype), shapes)


def compile_fast(fn, *args):
  """jax.jit(fn) compiled for these arguments' shapes, without XLA's backend optimisations."""
  fast = {'xla_backend_optimization_level': 0, 'xla_llvm_disable_expensive_passes': True}
  return jax.jit(fn).lower(*args).compile(fast)


def count(params):
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))


@pytest.mark.parametrize('name,exact,millions', PAPER_CONFIGS)
def test_paper_configs_have_the_reference_parameter_counts(name, exact, millions):
  config = importlib.import_module(f'configs.score_sde.{name}').get_config()
  base = sde_base.sde_config(config.sde.name).to_dict()
  base.pop('model')
  resolved = config.to_dict()
  resolved.pop('model')
  assert flat_keys(resolved) <= flat_keys(base), 'score_sde configs only set keys that sde_base defines'
  model = build_model(config.model)
  x = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
  t = jax.ShapeDtypeStruct((1,), jnp.float32)
  n = count(jax.eval_shape(model.init, jax.random.PRNGKey(0), x, t)['params'])
  assert n == exact
  assert abs(n / 1e6 - millions) < 0.005


def test_fir_resampling_matches_its_definition():
  x = jax.random.normal(jax.random.PRNGKey(1), (1, 8, 8, 2))
  # Box kernel (1, 1): FIR upsampling is nearest neighbour, downsampling is 2x2 average pooling.
  np.testing.assert_allclose(layers.fir_upsample(x, (1, 1)), jnp.repeat(jnp.repeat(x, 2, 1), 2, 2), atol=1e-6)
  np.testing.assert_allclose(layers.fir_downsample(x, (1, 1)),
                             x.reshape(1, 4, 2, 4, 2, 2).mean((2, 4)), atol=1e-6)
  # (1, 3, 3, 1) downsampling by hand: zero-pad 1, filter, keep every other pixel.
  taps = np.outer([1, 3, 3, 1], [1, 3, 3, 1]) / 64.0
  padded = np.pad(np.asarray(x)[0], ((1, 1), (1, 1), (0, 0)))
  expected = np.stack([[np.einsum('ij,ijc->c', taps, padded[2 * r:2 * r + 4, 2 * c:2 * c + 4])
                        for c in range(4)] for r in range(4)])
  np.testing.assert_allclose(layers.fir_downsample(x)[0], expected, atol=1e-5)
  # A constant image stays constant away from the zero-padded border, at both resolutions.
  ones = jnp.ones((1, 8, 8, 1))
  np.testing.assert_allclose(layers.fir_upsample(ones)[0, 2:-2, 2:-2], 1.0, atol=1e-6)
  # With a centred identity 3x3 kernel the fused FIR convolutions are exactly the plain resamplers.
  kernel = np.zeros((3, 3, 2, 2), np.float32)
  kernel[1, 1] = np.eye(2)
  params = {'params': {'kernel': jnp.asarray(kernel), 'bias': jnp.zeros(2)}}
  np.testing.assert_allclose(layers.FIRConv(2, down=True).apply(params, x), layers.fir_downsample(x), atol=1e-6)
  np.testing.assert_allclose(layers.FIRConv(2, up=True).apply(params, x), layers.fir_upsample(x), atol=1e-6)


@pytest.mark.parametrize('variant', [
    dict(fir=False, progressive_input='none', embedding_type='positional', scale_by_sigma=False),  # DDPM++
    dict(progressive='output_skip', progressive_input='input_skip', progressive_combine='cat'),
    dict(progressive='residual', resblock_type='ddpm', resamp_with_conv=False),
    dict(progressive='residual', fir=False, resblock_type='ddpm', progressive_input='input_skip'),
    dict(space_to_depth=2, attn_resolutions=(2,), conditional=False, num_heads=2),
])
def test_variants_keep_the_input_shape(variant):
  model = score_unet.NCSNpp(**{**TINY, **variant})
  params = jax.eval_shape(model.init, jax.random.PRNGKey(0), X, SIGMA)
  out = jax.eval_shape(model.apply, params, X, SIGMA)
  assert out.shape == X.shape and out.dtype == jnp.float32


def test_ncsnpp_runs_scales_by_sigma_and_runs_in_bfloat16():
  scaled = score_unet.NCSNpp(**TINY)  # NCSN++: FIR, input pyramid, Fourier features, output / sigma
  params = random_params(scaled, X, SIGMA)
  apply = lambda model: compile_fast(lambda p, x, s: model.apply({'params': p}, x, s), params, X, SIGMA)
  out = apply(scaled)(params, X, SIGMA)
  assert out.shape == X.shape and np.all(np.isfinite(out)) and float(jnp.std(out)) > 0
  plain = apply(score_unet.NCSNpp(**TINY, scale_by_sigma=False))(params, X, SIGMA)
  np.testing.assert_allclose(out * SIGMA[:, None, None, None], plain, rtol=1e-5, atol=1e-6)
  out_bf16 = apply(score_unet.NCSNpp(**TINY, dtype=jnp.bfloat16))(params, X, SIGMA)
  assert out_bf16.dtype == jnp.float32 and np.all(np.isfinite(out_bf16))
  assert float(jnp.abs(out_bf16 - out).mean()) < 0.1 * float(jnp.abs(out).mean())


def test_ddpm_model_is_registered():
  model = build_model(importlib.import_module('configs.score_sde.cifar10_ddpm').get_config().model)
  assert isinstance(model, score_unet.DDPM) and model.resblock_type == 'ddpm' and not model.skip_rescale


def test_conditioning_hooks_and_context_mask():
  model = score_unet.NCSNpp(**TINY, num_classes=5, vector_dim=3, context_dim=6, num_heads=2)
  labels = jnp.array([1, 2])
  vector = jax.random.normal(jax.random.PRNGKey(2), (2, 3))
  context = jax.random.normal(jax.random.PRNGKey(3), (2, 4, 6))
  mask = jnp.array([[True, True, False, False], [True, False, False, False]])
  params = random_params(model, X, SIGMA, labels=labels, vector=vector, context=context, context_mask=mask)
  assert 'Embed_0' in params and any('cross' in k for k in flat_keys(params))
  f = compile_fast(lambda lab, vec, ctx, m: model.apply({'params': params}, X, SIGMA, labels=lab, vector=vec,
                                                         context=ctx, context_mask=m), labels, vector, context, mask)
  out = f(labels, vector, context, mask)
  assert not np.allclose(out, f(jnp.array([1, 3]), vector, context, mask))
  assert not np.allclose(out, f(labels, vector + 1.0, context, mask))
  assert not np.allclose(out, f(labels, vector, context.at[:, 0].add(1.0), mask))
  # Masked-out context positions are ignored exactly, also where a whole row is masked.
  np.testing.assert_array_equal(out, f(labels, vector, context.at[:, 2:].set(99.0), mask))
  empty = jnp.zeros_like(mask)
  np.testing.assert_array_equal(f(labels, vector, context, empty), f(labels, vector, -context, empty))
  with pytest.raises(ValueError, match='context'):
    model.apply({'params': params}, X, SIGMA, labels=labels, vector=vector)


def test_initialisation_starts_residual_branches_near_zero():
  block = layers.ResBlock(8, dropout=0.0)
  x = jnp.ones((1, 2, 2, 8))
  params = compile_fast(lambda key: block.init(key, x, None, False), jax.random.PRNGKey(0))(jax.random.PRNGKey(0))
  # fan-average uniform variance scaling: bound sqrt(3 scale / fan_avg), fan_avg = 9 * 8 here.
  closing, opening = (np.abs(params['params'][n]['kernel']).max() for n in ('Conv_1', 'Conv_0'))
  assert closing <= np.sqrt(3e-10 / 72) and 0.5 * np.sqrt(3 / 72) < opening <= np.sqrt(3 / 72)

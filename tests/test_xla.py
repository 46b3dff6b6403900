"""lgm.xla: the per-backend compiler options reach the compiled program, and nesting still works."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from lgm import xla


def _conv(x, w):
  return jax.lax.conv_general_dilated(x, w, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def test_cpu_programs_leave_convolutions_to_xla_and_compute_the_same():
  assert jax.default_backend() == 'cpu'
  assert xla.compiler_options() == xla.CPU_OPTIONS
  x = jax.random.normal(jax.random.PRNGKey(0), (64, 8, 8, 96))
  w = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 96, 96)) * 0.05
  with_options = xla.jit(_conv).lower(x, w).compile().as_text()
  default = jax.jit(_conv).lower(x, w).compile().as_text()
  # XLA's default hands this convolution to YNNPACK; lgm's options keep it in XLA's own emitter.
  assert 'ynn_fusion' in default and 'ynn_fusion' not in with_options
  np.testing.assert_allclose(xla.jit(_conv)(x, w), jax.jit(_conv)(x, w), rtol=1e-5, atol=1e-5)


def test_nested_and_method_uses_trace_as_plain_jits():
  double = xla.jit(lambda x: 2.0 * x)
  outer = xla.jit(lambda x: double(x) + 1.0)  # jax refuses compiler options on a nested jit
  np.testing.assert_array_equal(outer(jnp.ones(3)), 3.0 * np.ones(3))
  np.testing.assert_array_equal(jax.vmap(double)(jnp.ones((2, 3))), 2.0 * np.ones((2, 3)))
  np.testing.assert_array_equal(jax.grad(lambda x: double(x).sum())(jnp.ones(3)), 2.0 * np.ones(3))

  class Scaler:
    def __init__(self, scale):
      self.scale = scale

    @functools.partial(xla.jit, static_argnums=0)
    def apply(self, x):
      return self.scale * x

  np.testing.assert_array_equal(Scaler(3.0).apply(jnp.ones(2)), [3.0, 3.0])


def test_the_users_flags_and_the_switch_take_precedence(monkeypatch):
  choose = xla.compiler_options.__wrapped__  # uncached
  monkeypatch.setenv('XLA_FLAGS', '--xla_cpu_experimental_ynn_fusion_type=')
  assert choose() == {'xla_disable_hlo_passes': 'cse_barrier_expander'}
  monkeypatch.setenv('XLA_FLAGS', '--xla_disable_hlo_passes=fusion --xla_cpu_experimental_ynn_fusion_type=')
  assert choose() == {}
  monkeypatch.delenv('XLA_FLAGS')
  monkeypatch.setenv('LGM_XLA_OPTIONS', '0')
  assert choose() == {}
  monkeypatch.delenv('LGM_XLA_OPTIONS')
  assert choose() == xla.CPU_OPTIONS


def _residual_chain(ws, x, store):
  for w in ws:  # one residual sum per "block", each with its own weight to differentiate
    x = (x + jnp.tanh(x * w)) * 0.7
    x = xla.materialize(x) if store else x
  return (x ** 2).sum()


def test_materialize_stops_xla_recomputing_a_residual_gradient_in_each_consumer():
  ws = [jnp.full(64, 0.1 + 0.01 * i) for i in range(12)]
  x = jax.random.normal(jax.random.PRNGKey(0), (256, 64))
  grad = xla.jit(jax.grad(_residual_chain), static_argnums=2)
  compiled = {store: grad.lower(ws, x, store).compile() for store in (False, True)}
  flops = {store: program.cost_analysis()['flops'] for store, program in compiled.items()}
  # Without the barriers each weight's gradient re-derives the residual gradient from the loss: O(depth^2).
  assert flops[True] < flops[False] / 3, flops
  for got, want in zip(compiled[True](ws, x), compiled[False](ws, x)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  assert 'opt-barrier' in compiled[True].as_text()
  # Under a plain jit XLA removes the barriers before it fuses: the same program as without them.
  plain = jax.jit(jax.grad(_residual_chain), static_argnums=2)
  assert 'opt-barrier' not in plain.lower(ws, x, True).compile().as_text()

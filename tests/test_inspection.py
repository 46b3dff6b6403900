"""FLOP counts against hand counts: the program before backend optimisation, as every benchmark reports."""

import jax.numpy as jnp
from jax import lax

from lgm import inspection
from lgm.models import layers


def test_a_dense_layer_is_two_flops_per_multiply_add():
  batch, width_in, width_out = 4, 32, 64
  flops = inspection.program_flops(lambda x, w: x @ w, jnp.zeros((batch, width_in)), jnp.zeros((width_in, width_out)))
  assert flops == 2 * batch * width_in * width_out


def test_a_convolution_counts_the_taps_inside_the_image():
  """3x3 'SAME' on 8x8: along each axis the 8 outputs see 2, 3, 3, 3, 3, 3, 3, 2 taps inside the image
  (padding multiplies nothing); plus one addition per output for the bias."""
  batch, size, c_in, c_out = 2, 8, 3, 16
  conv = lambda x, k, b: lax.conv_general_dilated(x, k, (1, 1), 'SAME',
                                                   dimension_numbers=('NHWC', 'HWIO', 'NHWC')) + b
  flops = inspection.program_flops(conv, jnp.zeros((batch, size, size, c_in)), jnp.zeros((3, 3, c_in, c_out)),
                                   jnp.zeros((c_out,)))
  taps_per_axis = 2 + 3 * (size - 2) + 2
  assert flops == 2 * batch * taps_per_axis**2 * c_in * c_out + batch * size * size * c_out


def test_attention_counts_both_products_and_a_few_flops_per_logit_for_the_softmax():
  batch, length, heads, head_dim = 2, 16, 4, 8
  q = jnp.zeros((batch, length, heads * head_dim))
  flops = inspection.program_flops(lambda q, k, v: layers.attend(q, k, v, heads), q, q, q)
  logits = batch * heads * length * length
  products = 2 * (2 * logits * head_dim)  # q.k for every logit, then the weighted sum of values
  assert products + logits <= flops <= products + 8 * logits  # scale, max, subtract, sum, divide

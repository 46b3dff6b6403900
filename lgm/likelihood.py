"""Exact log-likelihoods through the probability-flow ODE (Song et al. 2021, appendix D.2).

The ODE dx/dt = f(x, t) - g(t)^2 s(x, t) / 2 is an invertible flow from the data at t = eps to the prior at
T, so log p_eps(x) = log p_T(z) + int_eps^T div f~(x_t, t) dt (instantaneous change of variables). The
divergence is estimated with the Hutchinson-Skilling trick (E[v^T J v] = tr J, v Rademacher or Gaussian,
one v per solve) or computed exactly, one Jacobian-vector product per dimension, for small inputs.

Bits/dim of 8-bit images: dequantise uniformly, (k + u) / 256 for the level k in 0..255 and u ~ U(0, 1),
mapped to the model's data range; a range of width w gets the offset log2(256 / w) bits per dimension
(7 for [-1, 1], 8 for [0, 1]: the paper's `offset`).
"""

from __future__ import annotations

import math

import diffrax
import jax
import jax.numpy as jnp

from lgm.losses import per_example_sum
from lgm.sampling import ode_nfe
from lgm.sde import SDE, ScoreFn

DIVERGENCES = ('rademacher', 'gaussian', 'exact')


def dequantize(rng: jax.Array, x: jax.Array, centered: bool = True) -> jax.Array:
  """[-1, 1] model images on the 256 levels -> uniformly dequantised data in [-1, 1) or [0, 1)."""
  levels = jnp.round((x + 1.0) * 127.5)
  data = (levels + jax.random.uniform(rng, x.shape)) / 256.0
  return 2.0 * data - 1.0 if centered else data


def _divergence_fn(fn, x_shape, method: str, rng: jax.Array):
  """div fn at x: Hutchinson with one fixed probe per example, or exact. Both read the Jacobian through
  reverse mode (p . J^T p = p . J p): the networks' written-out gradients (GroupNorm, Winograd convolutions)
  are custom VJPs, which forward mode cannot differentiate."""
  if method == 'exact':
    dims = math.prod(x_shape[1:])
    basis = jnp.eye(dims).reshape((dims, 1) + tuple(x_shape[1:]))

    def exact(x, t):
      out, transposed = jax.vjp(lambda y: fn(y, t), x)
      diag = jax.vmap(lambda e: transposed(jnp.broadcast_to(e, out.shape).astype(out.dtype))[0] * e)(basis)
      return per_example_sum(diag.sum(0))
    return exact
  if method == 'rademacher':
    probe = jax.random.rademacher(rng, x_shape, dtype=jnp.float32)
  else:
    probe = jax.random.normal(rng, x_shape)

  def hutchinson(x, t):
    out, transposed = jax.vjp(lambda y: fn(y, t), x)
    return per_example_sum(transposed(probe.astype(out.dtype))[0] * probe)
  return hutchinson


def log_likelihood(rng: jax.Array, sde: SDE, score_fn: ScoreFn, x: jax.Array, *, eps: float = 1e-5,
                   divergence: str = 'rademacher', rtol: float = 1e-5, atol: float = 1e-5
                   ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(log p(x) in nats per example, the latent z at T, drift evaluations) for x in model space."""
  if divergence not in DIVERGENCES:
    raise ValueError(f'unknown divergence estimator {divergence!r}; valid: {list(DIVERGENCES)}')
  if not 0.0 < eps < sde.T:
    raise ValueError(f'need 0 < eps < T={sde.T}; got eps={eps}')
  batch = x.shape[0]
  drift = lambda y, t: sde.reverse(score_fn, probability_flow=True).sde(y, jnp.full((batch,), t))[0]
  div = _divergence_fn(drift, x.shape, divergence, rng)

  def vector_field(t, state, args):
    y, _ = state
    return drift(y, t), div(y, t)

  sol = diffrax.diffeqsolve(diffrax.ODETerm(vector_field), diffrax.Tsit5(), t0=eps, t1=sde.T, dt0=None,
                            y0=(x, jnp.zeros((batch,), jnp.float32)),
                            stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
                            max_steps=100_000)
  z, delta_logp = sol.ys[0][-1], sol.ys[1][-1]
  return sde.prior_logp(z) + delta_logp, z, ode_nfe(sol.stats)


def bits_per_dim(rng: jax.Array, sde: SDE, score_fn: ScoreFn, x: jax.Array, *, data_width: float = 2.0,
                 **options) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(bits/dim of the 8-bit data, z, nfe) for dequantised `x` in a model range `data_width` wide.

  `options` go to `log_likelihood` (eps, divergence, rtol, atol).
  """
  logp, z, nfe = log_likelihood(rng, sde, score_fn, x, **options)
  dims = math.prod(x.shape[1:])
  return -logp / (dims * math.log(2.0)) + math.log2(256.0 / data_width), z, nfe

"""Forward noising processes as SDEs dx = f(x, t) dt + g(t) dw (Song et al. 2021), on arrays of any shape.

All three SDEs are linear in x, so the perturbation kernel is Gaussian: x_t = alpha(t) x_0 + sigma(t) z.
`marginal_coefficients(t) -> (alpha, sigma)` is that pair; the few-step samplers (DDIM, DPM-Solver++,
EDM) only need it, the score, and `t_from_log_snr`, so they work for every SDE here.

`t` is always a `(batch,)` array; coefficients are broadcast over the other axes of `x`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp

from lgm.losses import per_example_sum

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]


def broadcast_to(v: jax.Array, x: jax.Array) -> jax.Array:
  """(batch,) -> (batch, 1, ..., 1) to multiply `x`."""
  return jnp.reshape(v, v.shape + (1,) * (x.ndim - v.ndim))


class SDE:
  """Interface shared by the forward SDEs (score_sde's abstract SDE)."""
  T: float = 1.0
  N: int

  def sde(self, x: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(drift f(x, t), diffusion g(t) of shape (batch,))."""
    raise NotImplementedError

  def marginal_coefficients(self, t: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(alpha(t), sigma(t)), each (batch,): x_t | x_0 ~ N(alpha x_0, sigma^2 I)."""
    raise NotImplementedError

  def marginal_prob(self, x: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean (shaped like x) and std ((batch,)) of p_t(x_t | x_0 = x)."""
    alpha, sigma = self.marginal_coefficients(t)
    return broadcast_to(alpha, x) * x, sigma

  def prior_std(self) -> float:
    raise NotImplementedError

  def prior_sampling(self, rng: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    return self.prior_std() * jax.random.normal(rng, shape)

  def prior_logp(self, z: jax.Array) -> jax.Array:
    """log N(z; 0, prior_std^2 I), summed over all axes but the first."""
    n = math.prod(z.shape[1:])
    s = self.prior_std()
    return -0.5 * n * math.log(2 * math.pi * s * s) - per_example_sum(z * z) / (2 * s * s)

  def log_snr(self, t: jax.Array) -> jax.Array:
    """lambda(t) = log(alpha / sigma), strictly decreasing in t."""
    alpha, sigma = self.marginal_coefficients(t)
    return jnp.log(alpha) - jnp.log(sigma)

  def t_from_log_snr(self, lam: jax.Array, eps: float = 1e-5) -> jax.Array:
    """Inverse of `log_snr` on [eps, T] by bisection (60 halvings: exact to float32)."""
    lo, hi = jnp.full_like(lam, eps), jnp.full_like(lam, self.T)

    def halve(_, bounds):
      lo, hi = bounds
      mid = 0.5 * (lo + hi)
      later = self.log_snr(mid) > lam  # lambda decreases: the answer is later than mid
      return jnp.where(later, mid, lo), jnp.where(later, hi, mid)

    lo, hi = jax.lax.fori_loop(0, 60, halve, (lo, hi))
    return 0.5 * (lo + hi)

  def timestep_index(self, t: jax.Array) -> jax.Array:
    """Index i of the N-point grid t_i = i T / (N - 1) at or just below t (robust to float rounding)."""
    return jnp.clip(jnp.floor(t * (self.N - 1) / self.T + 1e-4), 0, self.N - 1).astype(jnp.int32)

  def discretize(self, x: jax.Array, t: jax.Array, dt: float | jax.Array | None = None
                 ) -> tuple[jax.Array, jax.Array]:
    """One step x_{t} -> x_{t+dt}: x_{t+dt} = x + f + G z. Euler-Maruyama here; dt defaults to T / N."""
    dt = jnp.broadcast_to(self.T / self.N if dt is None else dt, t.shape)
    drift, diffusion = self.sde(x, t)
    return drift * broadcast_to(dt, x), diffusion * jnp.sqrt(dt)

  def reverse(self, score_fn: ScoreFn, probability_flow: bool = False) -> 'ReverseSDE':
    """The reverse-time SDE (or, with probability_flow, the ODE with the same marginals)."""
    return ReverseSDE(self, score_fn, probability_flow)


@dataclasses.dataclass(frozen=True)
class ReverseSDE:
  """dx = [f - c g^2 score] dt + [g dw if not probability_flow], c = 1 (SDE) or 1/2 (ODE), time running backwards."""
  forward: SDE
  score_fn: ScoreFn
  probability_flow: bool = False

  @property
  def _c(self) -> float:
    return 0.5 if self.probability_flow else 1.0

  def sde(self, x: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]:
    drift, diffusion = self.forward.sde(x, t)
    drift = drift - broadcast_to(diffusion ** 2, x) * self.score_fn(x, t) * self._c
    return drift, jnp.zeros_like(diffusion) if self.probability_flow else diffusion

  def discretize(self, x: jax.Array, t: jax.Array, dt: float | jax.Array | None = None
                 ) -> tuple[jax.Array, jax.Array]:
    """Reverse of the forward discretisation: x_{t-dt} = x - f_rev + G_rev z."""
    f, g = self.forward.discretize(x, t, dt)
    f = f - broadcast_to(g ** 2, x) * self.score_fn(x, t) * self._c
    return f, jnp.zeros_like(g) if self.probability_flow else g


@dataclasses.dataclass(frozen=True)
class VPSDE(SDE):
  """Variance preserving: f = -beta(t) x / 2, g = sqrt(beta(t)); the continuous limit of DDPM."""
  beta_min: float = 0.1
  beta_max: float = 20.0
  N: int = 1000

  def beta(self, t: jax.Array) -> jax.Array:
    return self.beta_min + t * (self.beta_max - self.beta_min)

  def integrated_beta(self, t: jax.Array) -> jax.Array:
    """B(t) = int_0^t beta(s) ds."""
    return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t * t

  @property
  def discrete_betas(self) -> jax.Array:
    """DDPM's betas: beta(t_i) / N on t_i = i / (N - 1)."""
    return jnp.linspace(self.beta_min / self.N, self.beta_max / self.N, self.N)

  @property
  def alphas_cumprod(self) -> jax.Array:
    return jnp.cumprod(1.0 - self.discrete_betas)

  def sde(self, x, t):
    beta = self.beta(t)
    return -0.5 * broadcast_to(beta, x) * x, jnp.sqrt(beta)

  def marginal_coefficients(self, t):
    b = self.integrated_beta(t)
    return jnp.exp(-0.5 * b), jnp.sqrt(-jnp.expm1(-b))  # expm1: sigma stays accurate at small t

  def prior_std(self):
    return 1.0

  def step_alpha(self, t: jax.Array, dt: float | jax.Array) -> jax.Array:
    """1 - beta of the exact transition from t - dt to t: exp(-(B(t) - B(t - dt)))."""
    return jnp.exp(self.integrated_beta(jnp.maximum(t - dt, 0.0)) - self.integrated_beta(t))

  def discretize(self, x, t, dt=None):
    """DDPM's Markov chain. dt=None: its betas on the N-point grid; otherwise the exact VP transition over dt."""
    if dt is None:
      beta = self.discrete_betas[self.timestep_index(t)]
    else:
      beta = 1.0 - self.step_alpha(t, dt)
    return (jnp.sqrt(1.0 - broadcast_to(beta, x)) - 1.0) * x, jnp.sqrt(beta)


@dataclasses.dataclass(frozen=True)
class subVPSDE(SDE):  # noqa: N801  (the paper's name)
  """Sub-VP: VP's drift with g^2 = beta(t) (1 - exp(-2 B(t))); its variance is below VP's at every t."""
  beta_min: float = 0.1
  beta_max: float = 20.0
  N: int = 1000

  beta = VPSDE.beta
  integrated_beta = VPSDE.integrated_beta
  step_alpha = VPSDE.step_alpha  # the Langevin corrector's scale, as for VP

  def sde(self, x, t):
    beta = self.beta(t)
    discount = -jnp.expm1(-2.0 * self.integrated_beta(t))
    return -0.5 * broadcast_to(beta, x) * x, jnp.sqrt(beta * discount)

  def marginal_coefficients(self, t):
    b = self.integrated_beta(t)
    return jnp.exp(-0.5 * b), -jnp.expm1(-b)

  def prior_std(self):
    return 1.0


@dataclasses.dataclass(frozen=True)
class VESDE(SDE):
  """Variance exploding: f = 0, sigma(t) = sigma_min (sigma_max / sigma_min)^t; the continuous limit of SMLD."""
  sigma_min: float = 0.01
  sigma_max: float = 50.0
  N: int = 1000

  def sigma(self, t: jax.Array) -> jax.Array:
    return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

  @property
  def discrete_sigmas(self) -> jax.Array:
    """SMLD's noise levels sigma(t_i) on t_i = i / (N - 1), increasing."""
    return jnp.exp(jnp.linspace(math.log(self.sigma_min), math.log(self.sigma_max), self.N))

  def sde(self, x, t):
    g = self.sigma(t) * math.sqrt(2 * (math.log(self.sigma_max) - math.log(self.sigma_min)))
    return jnp.zeros_like(x), g

  def marginal_coefficients(self, t):
    return jnp.ones_like(t), self.sigma(t)

  def prior_std(self):
    return self.sigma_max

  def previous_sigma(self, t: jax.Array, dt: float | jax.Array | None = None) -> jax.Array:
    """sigma one step earlier: SMLD's grid neighbour (0 below the first level) or sigma(t - dt)."""
    if dt is None:
      i = self.timestep_index(t)
      return jnp.where(i == 0, 0.0, self.discrete_sigmas[jnp.maximum(i - 1, 0)])
    return jnp.where(t - dt <= 0.0, 0.0, self.sigma(t - dt))

  def discretize(self, x, t, dt=None):
    """SMLD's chain: variance grows by sigma_i^2 - sigma_{i-1}^2 per step (exact over any dt)."""
    sigma = self.sigma_at(t, dt)
    return jnp.zeros_like(x), jnp.sqrt(sigma ** 2 - self.previous_sigma(t, dt) ** 2)

  def sigma_at(self, t: jax.Array, dt: float | jax.Array | None = None) -> jax.Array:
    """The noise level of the chain at t: the grid's sigma_i (dt=None) or sigma(t)."""
    return self.discrete_sigmas[self.timestep_index(t)] if dt is None else self.sigma(t)


SDES = {'vpsde': VPSDE, 'subvpsde': subVPSDE, 'vesde': VESDE}


def get_sde(config) -> SDE:
  """The SDE of `config.sde` (name + the hyper-parameters that SDE takes)."""
  name = config.name
  if name not in SDES:
    raise ValueError(f'unknown sde {name!r}; valid: {sorted(SDES)}')
  if name == 'vesde':
    return VESDE(sigma_min=config.sigma_min, sigma_max=config.sigma_max, N=config.num_scales)
  return SDES[name](beta_min=config.beta_min, beta_max=config.beta_max, N=config.num_scales)

"""Drawing samples by reversing an SDE of `lgm.sde`, given any score function `score_fn(x, t)`.

One entry point, `sample(rng, sde, score_fn, shape, method, num_steps, **options) -> (x, nfe)`:
  pc          predictor-corrector (Song et al. 2021, Alg. 1-3): predictors `euler_maruyama`,
              `reverse_diffusion`, `ancestral`, `none`; correctors `langevin`, `ald`, `none`
  ode         the probability-flow ODE with an adaptive solver (diffrax, rtol / atol)
  ddim        DDIM (Song et al. 2021a), eta = 0 deterministic, eta = 1 ancestral
  dpm_solver  DPM-Solver++(2M) (Lu et al. 2022), or 3M with order=3, by default on a grid uniform in log-SNR
  edm_heun    Heun's method, by default on Karras et al.'s (2022) rho-spaced noise levels
(`grid` moves any stepping sampler onto another grid: uniform in t, in log-SNR, or Karras')
The few-step samplers are written with the perturbation kernel x_t = alpha(t) x_0 + sigma(t) z only, so
they serve VP, sub-VP and VE alike. Every method starts from the prior at T (or from a given `x_start` at
`t_start`, for img2img), runs to `eps`, and by default ends with one Tweedie denoising step
x_0 = (x + sigma^2 s) / alpha at eps (EDM's final step to sigma = 0 is exactly this).

Controllable generation is an option of every stepping sampler, not a copy of it:
  guidance   score + guidance_scale * guidance_fn(x, t)   (classifier guidance: grad log p(y | x_t))
  constraint known values re-imposed after every step at the current noise level (score_sde's
             inpainting and colorization; see `inpainting` and `colorization`). Replacement alone
             only approximates the conditional; PC with corrector steps mixes the unknown part
             towards it (tests/test_sde.py measures both on a Gaussian).
`nfe` counts score evaluations.
"""

from __future__ import annotations

import dataclasses

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from lgm.sde import SDE, VESDE, VPSDE, ScoreFn, broadcast_to

METHODS = ('pc', 'ode', 'ddim', 'dpm_solver', 'edm_heun')
PREDICTORS = ('euler_maruyama', 'reverse_diffusion', 'ancestral', 'none')
CORRECTORS = ('langevin', 'ald', 'none')


# --- constraints: inpainting and colorization ------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Constraint:
  """Known values of the sample: where `mask` is 1, x equals `data` (in a channel basis `transform`).

  `transform` is an orthogonal (C, C) matrix; the mask applies to x @ transform. After each step the
  known part is replaced by `data` perturbed to the current time, as score_sde does.
  """
  data: jax.Array
  mask: jax.Array
  transform: jax.Array | None = None

  def _to(self, x):
    return x if self.transform is None else x @ self.transform

  def _from(self, x):
    return x if self.transform is None else x @ self.transform.T

  def _replace(self, x: jax.Array, known: jax.Array) -> jax.Array:
    return self._from(self._to(x) * (1 - self.mask) + known * self.mask)

  def project(self, rng: jax.Array, sde: SDE, x: jax.Array, t: jax.Array) -> jax.Array:
    """Known part <- the data perturbed to time t (a sample of p_t(x_t | data))."""
    mean, std = sde.marginal_prob(self._to(self.data), t)
    return self._replace(x, mean + broadcast_to(std, x) * jax.random.normal(rng, x.shape))

  def impose(self, x: jax.Array) -> jax.Array:
    """Known part <- the data itself (the final, noise-free step)."""
    return self._replace(x, self._to(self.data))


def inpainting(data: jax.Array, mask: jax.Array) -> Constraint:
  """Keep `data` where `mask` (broadcastable to data, 1 = known) is set; generate the rest."""
  return Constraint(data, jnp.broadcast_to(mask, data.shape).astype(data.dtype))


def colorization(gray: jax.Array) -> Constraint:
  """Generate colour images whose channel mean is `gray` (B, H, W, 1), in model space.

  The channel mean is known; the orthonormal basis with first vector (1, 1, 1) / sqrt(3) separates it
  from the two colour directions the sampler fills in.
  """
  basis = np.linalg.qr(np.array([[1.0, 1.0, 0.0], [1.0, -1.0, 1.0], [1.0, 0.0, -1.0]]))[0]
  basis *= np.sign(basis[0, 0])
  transform = jnp.asarray(basis, jnp.float32)  # columns: (1,1,1)/sqrt(3), then two colour axes
  data = jnp.broadcast_to(gray, gray.shape[:-1] + (3,))  # any image with that channel mean: only its mean is kept
  mask = jnp.zeros(gray.shape[:-1] + (3,)).at[..., 0].set(1.0)
  return Constraint(data, mask, transform)


# --- validation -------------------------------------------------------------------------------------

def _check(sde: SDE, method: str, num_steps: int, eps: float, predictor: str, corrector: str,
           shape: tuple[int, ...], x_start, t_start: float, constraint: Constraint | None,
           guidance_fn, guidance_scale: float, grid: str | None, order: int, sigma_max: float | None) -> None:
  if method not in METHODS:
    raise ValueError(f'unknown sampling method {method!r}; valid: {list(METHODS)}')
  if order not in (1, 2, 3):
    raise ValueError(f'dpm_solver order must be 1, 2 or 3, got {order!r}')
  if sigma_max is not None and not sigma_max > 0:
    raise ValueError(f'sigma_max must be > 0, got {sigma_max!r}')
  if grid is not None and grid not in GRIDS:
    raise ValueError(f'unknown time grid {grid!r}; valid: {list(GRIDS)}')
  if not isinstance(num_steps, (int, np.integer)) or num_steps < 1:
    raise ValueError(f'num_steps must be an integer >= 1, got {num_steps!r}')
  if not 0.0 < eps < t_start <= sde.T:
    raise ValueError(f'need 0 < eps < t_start <= T={sde.T}; got eps={eps}, t_start={t_start}')
  if predictor not in PREDICTORS:
    raise ValueError(f'unknown predictor {predictor!r}; valid: {list(PREDICTORS)}')
  if corrector not in CORRECTORS:
    raise ValueError(f'unknown corrector {corrector!r}; valid: {list(CORRECTORS)}')
  if method == 'pc' and predictor == 'ancestral' and not isinstance(sde, (VPSDE, VESDE)):
    raise ValueError(f'the ancestral predictor needs a VP or VE SDE, not {type(sde).__name__}; '
                     'use reverse_diffusion or euler_maruyama')
  for name, value in (('x_start', x_start), ('constraint data', None if constraint is None else constraint.data)):
    if value is not None and tuple(value.shape) != tuple(shape):
      raise ValueError(f'{name} has shape {tuple(value.shape)} but the samples have shape {tuple(shape)}')
  if constraint is not None and method == 'ode':
    raise ValueError('constraints (inpainting, colorization) need a stepping sampler: pc, ddim, dpm_solver or edm_heun')
  if guidance_fn is None and guidance_scale != 0.0:
    raise ValueError('guidance_scale is set but no guidance_fn was given')


# --- steps --------------------------------------------------------------------------------------------

def _vp_step_alpha(sde: SDE, t: jax.Array, dt: jax.Array) -> jax.Array:
  """1 - beta of the step for VP-type SDEs (the Langevin corrector's scale), 1 for VE."""
  return sde.step_alpha(t, dt) if hasattr(sde, 'step_alpha') else jnp.ones_like(t)


def _predictor(name: str, sde: SDE, score_fn: ScoreFn):
  """(rng, x, t, dt) -> x one step earlier, t - dt."""
  rsde = sde.reverse(score_fn)

  def euler_maruyama(rng, x, t, dt):
    drift, g = rsde.sde(x, t)
    return x - drift * broadcast_to(dt, x) + broadcast_to(g * jnp.sqrt(dt), x) * jax.random.normal(rng, x.shape)

  def reverse_diffusion(rng, x, t, dt):
    f, g = rsde.discretize(x, t, dt)
    return x - f + broadcast_to(g, x) * jax.random.normal(rng, x.shape)

  def ancestral(rng, x, t, dt):
    s = score_fn(x, t)
    if isinstance(sde, VESDE):
      var, prev_var = sde.sigma(t) ** 2, sde.sigma(t - dt) ** 2
      mean = x + broadcast_to(var - prev_var, x) * s
      std = jnp.sqrt(prev_var * (var - prev_var) / var)
    else:
      alpha = sde.step_alpha(t, dt)
      mean = (x + broadcast_to(1 - alpha, x) * s) / broadcast_to(jnp.sqrt(alpha), x)
      std = jnp.sqrt(1 - alpha)
    return mean + broadcast_to(std, x) * jax.random.normal(rng, x.shape)

  return {'euler_maruyama': euler_maruyama, 'reverse_diffusion': reverse_diffusion,
          'ancestral': ancestral, 'none': lambda rng, x, t, dt: x}[name]


def _corrector(name: str, sde: SDE, score_fn: ScoreFn, snr: float, n_steps: int):
  """(rng, x, t, dt) -> x after `n_steps` Langevin moves that leave p_t invariant."""
  if name == 'none':
    return lambda rng, x, t, dt: x

  def step_size(x, s, z, t, dt):
    alpha = _vp_step_alpha(sde, t, dt)
    if name == 'ald':  # annealed Langevin dynamics: the step follows the noise level
      return 2 * alpha * (snr * sde.marginal_coefficients(t)[1]) ** 2
    # Song et al.'s signal-to-noise rule with norms averaged over the batch: per-example norms blow the
    # step up wherever the score vanishes (at a mode), which low-dimensional data hits often.
    norm = lambda v: jnp.linalg.norm(v.reshape(v.shape[0], -1), axis=-1).mean()
    return 2 * alpha * (snr * norm(z) / norm(s)) ** 2

  def correct(rng, x, t, dt):
    for r in jax.random.split(rng, n_steps):
      s = score_fn(x, t)
      z = jax.random.normal(r, x.shape)
      h = broadcast_to(step_size(x, s, z, t, dt), x)
      x = x + h * s + jnp.sqrt(2 * h) * z
    return x

  return correct


def _denoiser(sde: SDE, score_fn: ScoreFn, clip: tuple[float, float] | None = None):
  """Tweedie's estimate E[x_0 | x_t] = (x + sigma^2 s) / alpha, optionally clipped to the data range.

  At high noise alpha is tiny and the estimate divides the network's error by it; clipping to where
  the data can be (DDPM's `clip_denoised`, DPM-Solver's thresholding) keeps an imperfect network's
  first steps from throwing the trajectory off.
  """
  def denoise(x, t):
    alpha, sigma = sde.marginal_coefficients(t)
    x0 = (x + broadcast_to(sigma ** 2, x) * score_fn(x, t)) / broadcast_to(alpha, x)
    return x0 if clip is None else jnp.clip(x0, *clip)
  return denoise


def _ddim_step(sde: SDE, denoise, eta: float):
  def step(rng, x, t, t_next):
    alpha, sigma = sde.marginal_coefficients(t)
    alpha_n, sigma_n = sde.marginal_coefficients(t_next)
    x0 = denoise(x, t)
    noise = (x - broadcast_to(alpha, x) * x0) / broadcast_to(sigma, x)
    # The posterior's spread that keeps p_{t_next} exact for any eta (DDIM's sigma_t(eta), for any alpha, sigma).
    c = eta * sigma_n * jnp.sqrt(jnp.clip(1 - (alpha * sigma_n / (alpha_n * sigma)) ** 2, 0.0))
    return (broadcast_to(alpha_n, x) * x0 + broadcast_to(jnp.sqrt(sigma_n ** 2 - c ** 2), x) * noise
            + broadcast_to(c, x) * jax.random.normal(rng, x.shape))
  return step


def _heun_step(sde: SDE, denoise):
  """EDM's Heun step in the scaled variables x / alpha, noise level sigma / alpha = exp(-lambda)."""
  def step(rng, x, t, t_next):
    del rng
    alpha, alpha_n = sde.marginal_coefficients(t)[0], sde.marginal_coefficients(t_next)[0]
    level, level_n = jnp.exp(-sde.log_snr(t)), jnp.exp(-sde.log_snr(t_next))
    y = x / broadcast_to(alpha, x)
    d = (y - denoise(x, t)) / broadcast_to(level, x)
    y_euler = y + broadcast_to(level_n - level, x) * d
    d_next = (y_euler - denoise(broadcast_to(alpha_n, x) * y_euler, t_next)) / broadcast_to(level_n, x)
    return broadcast_to(alpha_n, x) * (y + broadcast_to(level_n - level, x) * 0.5 * (d + d_next))
  return step


# --- time grids ----------------------------------------------------------------------------------------

GRIDS = ('time', 'log_snr', 'karras')
DEFAULT_GRIDS = {'pc': 'time', 'ddim': 'log_snr', 'dpm_solver': 'log_snr', 'edm_heun': 'karras'}


def time_grid(sde: SDE, grid: str, num_steps: int, t_start: float, eps: float, rho: float = 7.0,
              sigma_max: float | None = None) -> jax.Array:
  """num_steps + 1 decreasing times from t_start to eps: uniform in t (`time`), in log-SNR (`log_snr`:
  DDIM and DPM-Solver++ are exact for a constant data prediction over a log-SNR step), or rho-spaced in
  the noise level exp(-lambda) = sigma / alpha (`karras`, EDM's grid; more steps at low noise).

  `sigma_max` (EDM's): where the noise level at t_start is above it, the first step jumps straight to
  the time of noise level sigma_max, and the other num_steps - 1 are spaced from there. At such noise the
  data prediction is nearly the data mean, which a one-step exponential integrator follows exactly, so
  the steps are better spent below it.
  """
  with jax.ensure_compile_time_eval():  # the grid is a constant of the sampler, even under jit
    start = jnp.asarray(t_start, jnp.float32)
    if sigma_max is not None and num_steps > 1 and float(jnp.exp(-sde.log_snr(start))) > sigma_max:
      first = sde.t_from_log_snr(-jnp.log(jnp.float32(sigma_max)), eps)
      return jnp.concatenate([start[None], time_grid(sde, grid, num_steps - 1, float(first), eps, rho)])
    ends = jnp.stack([start, jnp.asarray(eps, jnp.float32)])
    if grid == 'log_snr':
      lam = sde.log_snr(ends)
      return sde.t_from_log_snr(jnp.linspace(lam[0], lam[1], num_steps + 1), eps)
    if grid == 'karras':
      lo, hi = jnp.exp(-sde.log_snr(ends)) ** (1 / rho)
      levels = jnp.linspace(lo, hi, num_steps + 1) ** rho
      return sde.t_from_log_snr(-jnp.log(levels), eps)
    return jnp.linspace(start, eps, num_steps + 1)


# --- the entry point -------------------------------------------------------------------------------------

def sample(rng: jax.Array, sde: SDE, score_fn: ScoreFn, shape: tuple[int, ...], method: str = 'pc',
           num_steps: int = 1000, *, eps: float = 1e-3, denoise: bool = True,
           predictor: str = 'reverse_diffusion', corrector: str = 'langevin', snr: float = 0.16,
           n_steps_each: int = 1, eta: float = 0.0, order: int = 2, grid: str | None = None,
           rho: float = 7.0, sigma_max: float | None = None, lower_order_final: bool = True,
           rtol: float = 1e-5, atol: float = 1e-5, clip_denoised: tuple[float, float] | None = None,
           guidance_fn: ScoreFn | None = None, guidance_scale: float = 0.0,
           constraint: Constraint | None = None,
           x_start: jax.Array | None = None, t_start: float | None = None) -> tuple[jax.Array, jax.Array]:
  """Samples of shape `shape` and the number of score evaluations used (an int32 scalar array, so
  that `sample` can be jitted). See the module docstring.

  For `ode`, `num_steps` is ignored (the solver adapts); its nfe is counted from diffrax's statistics.
  `order` is DPM-Solver++'s multistep order (1 = DDIM, 2 = 2M, 3 = 3M).
  `grid` (one of GRIDS) places the steps of a stepping sampler; None is the method's own (DEFAULT_GRIDS);
  `sigma_max` lets the first step jump to that noise level (see `time_grid`).
  `clip_denoised` = (lo, hi) clips every data prediction (ddim, dpm_solver, edm_heun and the final
  denoising step of all methods) to the data range.
  """
  t_start = sde.T if t_start is None else float(t_start)
  _check(sde, method, num_steps, eps, predictor, corrector, shape, x_start, t_start, constraint,
         guidance_fn, guidance_scale, grid, order, sigma_max)
  grid = grid or DEFAULT_GRIDS.get(method)
  if guidance_fn is not None:
    base_fn = score_fn
    score_fn = lambda x, t: base_fn(x, t) + guidance_scale * guidance_fn(x, t)

  rng, init_rng, project_rng = jax.random.split(rng, 3)
  batch = shape[0]
  x = sde.prior_sampling(init_rng, shape) if x_start is None else x_start
  if constraint is not None and x_start is None:
    x = constraint.project(project_rng, sde, x, jnp.full((batch,), t_start))
  tweedie = _denoiser(sde, score_fn, clip_denoised)

  if method == 'ode':
    x, nfe = _solve_probability_flow(sde, score_fn, x, t_start, eps, rtol, atol)
  else:
    x, nfe = _integrate(sde, score_fn, tweedie, x, rng, method, num_steps, t_start, eps, predictor,
                        corrector, snr, n_steps_each, eta, order, grid, rho, sigma_max, lower_order_final,
                        constraint)
  if denoise:
    x = tweedie(x, jnp.full((batch,), eps))
    nfe += 1
  if constraint is not None:
    x = constraint.impose(x)
  return x, jnp.asarray(nfe, jnp.int32)


def _integrate(sde, score_fn, tweedie, x, rng, method, num_steps, t_start, eps, predictor, corrector,
               snr, n_steps_each, eta, order, grid, rho, sigma_max, lower_order_final, constraint):
  """Run a stepping sampler over its time grid; returns (x at eps, nfe)."""
  times = time_grid(sde, grid, num_steps, t_start, eps, rho, sigma_max)
  batch = x.shape[0]
  vec = lambda s: jnp.full((batch,), s)

  if method == 'pc':
    predict = _predictor(predictor, sde, score_fn)
    correct = _corrector(corrector, sde, score_fn, snr, n_steps_each)
    nfe = num_steps * ((predictor != 'none') + n_steps_each * (corrector != 'none'))

    def step(state, rng, t, t_next):
      c_rng, c_proj, p_rng = jax.random.split(rng, 3)
      x = correct(c_rng, state, t, t - t_next)
      if constraint is not None:
        x = constraint.project(c_proj, sde, x, t)
      return predict(p_rng, x, t, t - t_next)
  elif method == 'ddim':
    ddim = _ddim_step(sde, tweedie, eta)
    nfe = num_steps
    step = lambda state, rng, t, t_next: ddim(rng, state, t, t_next)
  elif method == 'edm_heun':
    heun = _heun_step(sde, tweedie)
    nfe = 2 * num_steps
    step = lambda state, rng, t, t_next: heun(rng, state, t, t_next)
  else:  # dpm_solver: the state carries the last two data predictions and log-SNR steps
    nfe = num_steps
    x = (x, jnp.zeros((2, *x.shape), x.dtype), jnp.zeros((2,)), jnp.zeros((), jnp.int32))

    def step(state, rng, t, t_next):
      del rng
      x, prev_x0, prev_h, i = state
      alpha_n, sigma_n = sde.marginal_coefficients(t_next)
      sigma = sde.marginal_coefficients(t)[1]
      h = sde.log_snr(t_next)[0] - sde.log_snr(t)[0]
      x0 = tweedie(x, t)
      # Order: limited by the history (i steps done) and, for short runs, lowered over the last steps.
      steps_left = num_steps - i
      cap = jnp.where(lower_order_final & (num_steps < 15), steps_left, order)
      current = jnp.minimum(jnp.minimum(i + 1, order), cap)
      r0, r1 = prev_h[0] / h, prev_h[1] / h
      d1_0 = (x0 - prev_x0[0]) / jnp.where(current >= 2, r0, 1.0)
      d1_1 = (prev_x0[0] - prev_x0[1]) / jnp.where(current >= 3, r1, 1.0)
      phi_1 = jnp.expm1(-h)
      phi_2 = phi_1 / h + 1.0
      phi_3 = phi_2 / h - 0.5
      r01 = jnp.where(current >= 3, r0 + r1, 1.0)
      third_d1 = d1_0 + (r0 / r01) * (d1_0 - d1_1)
      third_d2 = (d1_0 - d1_1) / r01
      data_term = jnp.where(current == 1, -phi_1 * x0,
                            jnp.where(current == 2, -phi_1 * (x0 + 0.5 * d1_0),
                                      -phi_1 * x0 + phi_2 * third_d1 - phi_3 * third_d2))
      x = broadcast_to(sigma_n / sigma, x) * x + broadcast_to(alpha_n, x) * data_term
      return x, jnp.stack([x0, prev_x0[0]]), jnp.stack([h, prev_h[0]]), i + 1

  def body(state, inputs):
    t, t_next, key = inputs
    step_rng, proj_rng = jax.random.split(key)
    state = step(state, step_rng, vec(t), vec(t_next))
    if constraint is not None:
      xs = state[0] if method == 'dpm_solver' else state
      xs = constraint.project(proj_rng, sde, xs, vec(t_next))
      state = (xs, *state[1:]) if method == 'dpm_solver' else xs
    return state, None

  state, _ = jax.lax.scan(body, x, (times[:-1], times[1:], jax.random.split(rng, num_steps)))
  return (state[0] if method == 'dpm_solver' else state), nfe


def _solve_probability_flow(sde, score_fn, x, t_start, eps, rtol, atol) -> tuple[jax.Array, int]:
  """Integrate dx/dt = f - g^2 s / 2 from t_start down to eps with Tsit5 and a PID step-size controller."""
  rsde = sde.reverse(score_fn, probability_flow=True)
  batch = x.shape[0]
  term = diffrax.ODETerm(lambda t, y, args: rsde.sde(y, jnp.full((batch,), t))[0])
  sol = diffrax.diffeqsolve(term, diffrax.Tsit5(), t0=t_start, t1=eps, dt0=None, y0=x,
                            stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
                            max_steps=100_000)
  return sol.ys[-1], ode_nfe(sol.stats)


def ode_nfe(stats: dict) -> int:
  """Score evaluations of a Tsit5 solve: 1 at the start, then 6 per attempted step (first same as last)."""
  return 1 + 6 * stats['num_steps']


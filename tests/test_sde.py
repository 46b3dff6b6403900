"""SDEs, score losses, samplers and likelihoods against closed forms on Gaussian data.

For x_0 ~ N(mu, S) every SDE here perturbs to N(alpha mu, alpha^2 S + sigma^2 I), so the exact score is
known at every t and each sampler, the likelihood ODE and the DSM loss can be checked without training.
"""


import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.special import logsumexp
from jax.scipy.stats import multivariate_normal
from scipy.integrate import solve_ivp

from lgm import likelihood, losses, sampling
from lgm import sde as sde_lib

MU = np.array([1.0, -0.5], np.float32)
COV = np.array([[1.0, 0.6], [0.6, 0.8]], np.float32)
SDES = {'vp': sde_lib.VPSDE(), 'subvp': sde_lib.subVPSDE(), 've': sde_lib.VESDE()}
NUM = 4000


def mixture_score(sde, means, covs, weights):
  """Exact score of a perturbed Gaussian mixture (one component: a Gaussian) in 2-D."""
  means, covs, log_w = jnp.asarray(means), jnp.asarray(covs), jnp.log(jnp.asarray(weights))

  def score(x, t):
    alpha, sigma = sde.marginal_coefficients(t)
    cov_t = alpha[:, None, None, None] ** 2 * covs + sigma[:, None, None, None] ** 2 * jnp.eye(2)  # (B, K, 2, 2)
    a, b, d = cov_t[..., 0, 0], cov_t[..., 0, 1], cov_t[..., 1, 1]
    det = a * d - b * b                                    # 2x2 inverse written out: fast on CPU
    diff = x[:, None, :] - alpha[:, None, None] * means    # (B, K, 2)
    prec_diff = jnp.stack([d * diff[..., 0] - b * diff[..., 1], a * diff[..., 1] - b * diff[..., 0]], -1) / det[..., None]
    logp = log_w - 0.5 * jnp.sum(diff * prec_diff, -1) - 0.5 * jnp.log(det)
    return -jnp.sum(jax.nn.softmax(logp, -1)[..., None] * prec_diff, axis=1)
  return score


def gaussian_score(sde):
  return mixture_score(sde, MU[None], COV[None], [1.0])


def whitened_prior(sde, num=NUM, seed=1):
  """Prior draws with exactly zero mean and identity covariance: deterministic samplers are then
  measured without Monte Carlo error in the starting points."""
  z = np.random.default_rng(seed).standard_normal((num, 2))
  z -= z.mean(0)
  z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z.T))).T
  return jnp.asarray(z * sde.prior_std(), jnp.float32)


def relative_errors(x):
  x = np.asarray(x, np.float64)
  return (np.linalg.norm(x.mean(0) - MU) / np.linalg.norm(MU),
          np.linalg.norm(np.cov(x.T) - COV) / np.linalg.norm(COV))


# --- the SDEs -------------------------------------------------------------------------------------

@pytest.mark.parametrize('name', SDES)
def test_marginals_solve_the_moment_odes(name):
  """mean' = f mean and var' = 2 f var + g^2 (scalar f = drift / x) integrated numerically in float64."""
  sde = SDES[name]
  drift_and_diffusion = jax.jit(lambda t: sde.sde(jnp.ones((1, 1)), t[None]))
  coef = lambda t: float(drift_and_diffusion(t)[0][0, 0])
  g2 = lambda t: float(drift_and_diffusion(t)[1][0]) ** 2
  var0 = 0.0 if name != 've' else sde.sigma_min ** 2
  ts = np.array([0.01, 0.1, 0.5, 1.0])
  sol = solve_ivp(lambda t, y: [coef(t) * y[0], 2 * coef(t) * y[1] + g2(t)], (0.0, 1.0), [1.0, var0],
                  t_eval=ts, rtol=1e-10, atol=1e-12)
  alpha, sigma = sde.marginal_coefficients(jnp.asarray(ts, jnp.float32))
  np.testing.assert_allclose(alpha, sol.y[0], rtol=1e-4)
  np.testing.assert_allclose(sigma ** 2, sol.y[1], rtol=1e-4)


def test_small_t_is_accurate_in_float32():
  """sigma(t) of VP and sub-VP at t = 1e-6 keeps its digits (expm1, not 1 - exp)."""
  t = 1e-6
  b = 0.1 * t + 0.5 * 19.9 * t * t
  np.testing.assert_allclose(SDES['vp'].marginal_coefficients(jnp.array([t]))[1], np.sqrt(-np.expm1(-b)), rtol=1e-5)
  np.testing.assert_allclose(SDES['subvp'].marginal_coefficients(jnp.array([t]))[1], -np.expm1(-b), rtol=1e-5)


def test_discretisations_are_ddpm_and_smld():
  vp, ve = SDES['vp'], SDES['ve']
  n = vp.N
  i = jnp.array([0, 1, 500, n - 1])
  t = i / (n - 1)
  x = jnp.ones((4, 3))
  betas = np.linspace(0.1 / n, 20.0 / n, n)
  f, g = vp.discretize(x, t)
  np.testing.assert_allclose(g, np.sqrt(betas[i]), rtol=1e-5)
  np.testing.assert_allclose(f[:, 0], np.sqrt(1 - betas[i]) - 1, rtol=1e-4, atol=1e-7)
  sigmas = np.exp(np.linspace(np.log(0.01), np.log(50.0), n))
  prev = np.where(i == 0, 0.0, sigmas[np.maximum(i - 1, 0)])
  np.testing.assert_allclose(ve.discretize(x, t)[1], np.sqrt(sigmas[i] ** 2 - prev ** 2), rtol=1e-4)


@pytest.mark.parametrize('name', SDES)
def test_log_snr_inverse(name):
  sde = SDES[name]
  t = jnp.array([1e-3, 0.1, 0.5, 0.9, 1.0])
  np.testing.assert_allclose(sde.t_from_log_snr(sde.log_snr(t)), t, rtol=1e-4, atol=1e-6)


def test_reverse_sde_drifts():
  sde, s = SDES['vp'], lambda x, t: -x
  x, t = jnp.ones((2, 3)), jnp.array([0.3, 0.7])
  f, g = sde.sde(x, t)
  np.testing.assert_allclose(sde.reverse(s).sde(x, t)[0], f + g[:, None] ** 2 * x, rtol=1e-6)
  drift, diffusion = sde.reverse(s, probability_flow=True).sde(x, t)
  np.testing.assert_allclose(drift, f + 0.5 * g[:, None] ** 2 * x, rtol=1e-6)
  np.testing.assert_array_equal(diffusion, 0.0)


# --- losses -----------------------------------------------------------------------------------------

@pytest.mark.parametrize('loss_name,sde_name', [('dsm', 'vp'), ('dsm', 'subvp'), ('dsm', 've'),
                                                 ('ddpm', 'vp'), ('smld', 've')])
@pytest.mark.parametrize('options', [{}, {'likelihood_weighting': True}, {'time_distribution': 'lognormal'}],
                         ids=['plain', 'likelihood_weighting', 'lognormal_times'])
def test_score_losses_are_minimised_by_the_true_score(loss_name, sde_name, options):
  """L(c) for score + c * h is a quadratic in c; with common random numbers its minimiser is ~0."""
  if options and loss_name != 'dsm':
    pytest.skip('likelihood weighting and time distributions are DSM options')
  sde = SDES[sde_name]

  def chain_score(x, t):  # DDPM's chain has discrete alphas: its optimal score is that of the chain
    a = jnp.sqrt(sde.alphas_cumprod[sde.timestep_index(t)])
    cov = a[:, None, None] ** 2 * COV + (1 - a[:, None, None] ** 2) * jnp.eye(2)
    return -jnp.linalg.solve(cov, (x - a[:, None] * MU)[..., None])[..., 0]

  true = chain_score if loss_name == 'ddpm' else gaussian_score(sde)
  direction = lambda x, t: jnp.sin(3 * x[:, ::-1]) + 0.5
  x = MU + jax.random.normal(jax.random.PRNGKey(0), (200_000, 2)) @ np.linalg.cholesky(COV).T

  def loss(c):
    score = lambda y, t: true(y, t) + c * direction(y, t)
    return losses.SCORE_LOSSES[loss_name](jax.random.PRNGKey(1), sde, score, x, **options).mean()

  l0, lp, lm = (float(loss(c)) for c in (0.0, 0.1, -0.1))
  curvature, slope = (lp + lm - 2 * l0) / 0.02, (lp - lm) / 0.2
  assert curvature > 0
  assert abs(slope / curvature) < 0.01  # argmin of the quadratic, in units of the perturbation


# --- samplers ------------------------------------------------------------------------------------------

def jit_optimised(fun):
  """jax.jit at XLA's full optimisation level: for the samplers' hundreds of steps over thousands of samples,
  where run time, not compile time, dominates (the suite compiles at level 0; 1,000 Euler steps over 16k
  samples run in 3.0 s instead of 5.4 s)."""
  return jax.jit(fun, compiler_options={'xla_backend_optimization_level': 3})


SAMPLERS = [
    ('pc', 1000, {'predictor': 'euler_maruyama', 'corrector': 'none'}),
    ('pc', 1000, {'predictor': 'reverse_diffusion', 'corrector': 'none'}),
    ('pc', 1000, {'predictor': 'ancestral', 'corrector': 'none'}),
    # Langevin's step is set by a signal-to-noise ratio; the paper's 0.16 is tuned for images, and in
    # 2-D it leaves a ~4% variance bias (the discretisation bias of unadjusted Langevin).
    ('pc', 500, {'predictor': 'reverse_diffusion', 'corrector': 'langevin', 'snr': 0.05}),
    ('pc', 500, {'predictor': 'ancestral', 'corrector': 'ald', 'snr': 0.05}),
    ('ode', 1, {}),
    ('ddim', 300, {}),
    ('ddim', 1000, {'eta': 1.0}),
    ('dpm_solver', 40, {}),
    ('dpm_solver', 20, {'order': 3, 'sigma_max': 20.0}),
    ('edm_heun', 40, {}),
]


@pytest.mark.parametrize('grid', sampling.GRIDS)
def test_time_grids_and_the_sigma_max_jump(grid):
  sde = SDES['vp']
  plain = np.asarray(sampling.time_grid(sde, grid, 10, 1.0, 1e-3))
  jumped = np.asarray(sampling.time_grid(sde, grid, 10, 1.0, 1e-3, sigma_max=20.0))
  for times in (plain, jumped):
    assert times.shape == (11,) and times[0] == 1.0 and np.isclose(times[-1], 1e-3) and np.all(np.diff(times) < 0)
  level = lambda t: float(jnp.exp(-sde.log_snr(jnp.asarray(t))))
  np.testing.assert_allclose(level(jumped[1]), 20.0, rtol=1e-4)  # the first step lands on sigma_max
  if grid == 'log_snr':  # uniform in log-SNR from there on
    lam = np.asarray(sde.log_snr(jnp.asarray(jumped[1:])))
    np.testing.assert_allclose(np.diff(lam), np.diff(lam)[0], rtol=1e-3)
  # A sigma_max above the prior's noise level changes nothing.
  np.testing.assert_array_equal(sampling.time_grid(sde, grid, 10, 1.0, 1e-3, sigma_max=1e4), plain)


@pytest.mark.parametrize('sde_name', SDES)
@pytest.mark.parametrize('method,steps,options', SAMPLERS, ids=lambda v: str(v))
def test_samplers_match_gaussian_moments(sde_name, method, steps, options):
  sde = SDES[sde_name]
  if options.get('predictor') == 'ancestral' and sde_name == 'subvp':
    pytest.skip('no ancestral sampler for sub-VP (as in Song et al.)')
  deterministic = method in ('ode', 'ddim', 'dpm_solver', 'edm_heun') and not options.get('eta')
  # A deterministic sampler maps whitened prior draws, so 4k samples measure its own error. A stochastic
  # one adds fresh noise at every step: the sample covariance of 4k draws is itself ~2.5% off (Monte
  # Carlo), so those are judged on 16k samples.
  num = NUM if deterministic else 4 * NUM
  x_start = whitened_prior(sde, num)
  run = jit_optimised(lambda r: sampling.sample(r, sde, gaussian_score(sde), (num, 2), method, steps,
                                                x_start=x_start, **options))
  x, nfe = run(jax.random.PRNGKey(1))
  mean_err, cov_err = relative_errors(x)
  assert mean_err <= 0.03 and cov_err <= 0.03, (mean_err, cov_err, int(nfe))


def test_nfe_counts_every_score_call():
  sde, calls = SDES['vp'], []
  score = gaussian_score(sde)
  counted = lambda x, t: (jax.debug.callback(lambda: calls.append(1)), score(x, t))[1]
  for method, steps, options, expected in [('pc', 7, {'n_steps_each': 2}, 7 * 3 + 1), ('ddim', 7, {}, 8),
                                           ('dpm_solver', 7, {}, 8), ('edm_heun', 7, {}, 15), ('ode', 1, {}, None)]:
    calls.clear()
    _, nfe = sampling.sample(jax.random.PRNGKey(0), sde, counted, (8, 2), method, steps, **options)
    jax.effects_barrier()
    assert int(nfe) == len(calls), method
    assert expected is None or int(nfe) == expected


def test_gaussian_mixture_modes_and_weights():
  """Two well separated modes: the samplers put the right share of samples at the right places."""
  means, weights = np.array([[-2.0, 0.0], [2.0, 1.0]], np.float32), np.array([0.3, 0.7], np.float32)
  covs = np.stack([0.1 * np.eye(2), np.array([[0.3, 0.1], [0.1, 0.2]])]).astype(np.float32)
  for name in ('vp', 've'):
    sde = SDES[name]
    score = mixture_score(sde, means, covs, weights)
    for method, steps in (('pc', 1000), ('dpm_solver', 25), ('edm_heun', 40)):
      x, _ = jit_optimised(lambda r: sampling.sample(r, sde, score, (NUM, 2), method, steps))(jax.random.PRNGKey(2))
      x = np.asarray(x)
      right = x[:, 0] > 0
      assert abs(right.mean() - 0.7) < 0.03, (name, method, right.mean())
      np.testing.assert_allclose(x[right].mean(0), means[1], atol=0.05)
      np.testing.assert_allclose(np.cov(x[right].T), covs[1], atol=0.03)
      np.testing.assert_allclose(x[~right].mean(0), means[0], atol=0.05)


# --- controllable generation ------------------------------------------------------------------------

def test_inpainting_keeps_known_values_and_fills_the_rest_conditionally():
  """Known x_1 = 2 in N(MU, COV): the unknown x_2 follows (approximately) the Gaussian conditional."""
  sde = SDES['vp']
  data = jnp.broadcast_to(jnp.array([2.0, 0.0]), (NUM, 2))
  constraint = sampling.inpainting(data, jnp.array([1.0, 0.0]))
  # Replacement alone under-mixes the unknown part (its mean lands ~1/3 of a std short here); Langevin
  # corrector steps at each noise level let it reach the conditional, as in score_sde's PC inpainter.
  x, _ = sampling.sample(jax.random.PRNGKey(0), sde, gaussian_score(sde), (NUM, 2), 'pc', 500,
                         corrector='langevin', snr=0.1, n_steps_each=3, constraint=constraint)
  np.testing.assert_array_equal(x[:, 0], 2.0)
  cond_mean = MU[1] + COV[1, 0] / COV[0, 0] * (2.0 - MU[0])
  cond_std = np.sqrt(COV[1, 1] - COV[1, 0] ** 2 / COV[0, 0])
  assert abs(float(x[:, 1].mean()) - cond_mean) < 0.1 * cond_std
  assert abs(float(x[:, 1].std()) / cond_std - 1) < 0.1


def test_colorization_keeps_the_gray_level():
  """Pixels drawn i.i.d. from N(0, C) over RGB: colorization keeps each pixel's channel mean exactly."""
  sde = SDES['vp']
  cov = jnp.array([[1.0, 0.8, 0.5], [0.8, 1.0, 0.7], [0.5, 0.7, 1.0]])

  def score(x, t):
    alpha, sigma = sde.marginal_coefficients(t)
    cov_t = alpha[:, None, None] ** 2 * cov + sigma[:, None, None] ** 2 * jnp.eye(3)
    flat = x.reshape(x.shape[0], -1, 3)
    return -jnp.einsum('bij,bpj->bpi', jnp.linalg.inv(cov_t), flat).reshape(x.shape)

  gray = jax.random.uniform(jax.random.PRNGKey(1), (64, 4, 4, 1), minval=-1, maxval=1)
  x, _ = sampling.sample(jax.random.PRNGKey(0), sde, score, (64, 4, 4, 3), 'dpm_solver', 30,
                         constraint=sampling.colorization(gray))
  np.testing.assert_allclose(x.mean(-1, keepdims=True), gray, atol=1e-5)
  assert float(x.std(-1).mean()) > 0.05  # colour was generated, not left gray


def test_classifier_guidance_samples_the_posterior():
  """Prior N(0, 1), observation y ~ N(x, tau^2). The exact noisy-classifier gradient with scale 1
  gives samples of the posterior N(y / (1 + tau^2), tau^2 / (1 + tau^2))."""
  sde, y, tau2 = SDES['vp'], 1.5, 0.5
  score = lambda x, t: -x  # N(0, 1) is invariant under VP: every p_t is N(0, 1)

  def guidance(x, t):  # grad_x log N(y; E[x0|x_t], Var[x0|x_t] + tau^2)
    alpha, _ = sde.marginal_coefficients(t)
    alpha = alpha[:, None]
    return alpha * (y - alpha * x) / (1 - alpha ** 2 + tau2)

  x, _ = sampling.sample(jax.random.PRNGKey(0), sde, score, (NUM, 1), 'dpm_solver', 30,
                         x_start=whitened_prior(sde)[:, :1] * 1.0, guidance_fn=guidance, guidance_scale=1.0)
  np.testing.assert_allclose(float(x.mean()), y / (1 + tau2), rtol=0.03)
  np.testing.assert_allclose(float(x.var()), tau2 / (1 + tau2), rtol=0.05)


# --- likelihood ----------------------------------------------------------------------------------------

@pytest.mark.parametrize('sde_name', SDES)
def test_probability_flow_log_likelihood_is_exact(sde_name):
  sde = SDES[sde_name]
  # VE keeps the data mean at T, where its N(0, sigma_max^2) prior assumes 0: a model error of up to
  # mu z / sigma_max^2 ~ 0.05 nats per example. Zero-mean data isolates the ODE's own accuracy.
  mu = 0 * MU if sde_name == 've' else MU
  score = mixture_score(sde, mu[None], COV[None], [1.0])
  x = mu + jax.random.normal(jax.random.PRNGKey(3), (512, 2)) @ np.linalg.cholesky(COV).T
  true = multivariate_normal.logpdf(x, mu, COV)
  for divergence, tolerance in (('exact', 0.01), ('rademacher', 0.03)):
    logp, z, _ = jax.jit(lambda r: likelihood.log_likelihood(r, sde, score, x, divergence=divergence))(
        jax.random.PRNGKey(0))
    assert abs(float(logp.mean() - true.mean())) <= tolerance * abs(float(true.mean())), divergence
    if divergence == 'exact':
      np.testing.assert_allclose(logp, true, rtol=0.01, atol=0.01)


def test_mixture_log_likelihood_and_bits_per_dim():
  sde = SDES['vp']
  means, covs, weights = np.array([[-1.0, 0.0], [1.0, 0.5]]), np.stack([0.2 * np.eye(2), 0.1 * np.eye(2)]), [0.5, 0.5]
  x = jnp.asarray(np.random.default_rng(0).normal(size=(256, 2)) * 0.3 + means[np.arange(256) % 2], jnp.float32)
  true = logsumexp(jnp.stack([multivariate_normal.logpdf(x, m, c) for m, c in zip(means, covs)]) + np.log(0.5), axis=0)
  score = mixture_score(sde, means.astype(np.float32), covs.astype(np.float32), weights)
  bpd, _, _ = likelihood.bits_per_dim(jax.random.PRNGKey(0), sde, score, x, data_width=2.0, divergence='exact')
  np.testing.assert_allclose(bpd, -true / (2 * np.log(2)) + 7.0, atol=0.01 * float(jnp.abs(true).mean()) / np.log(2))


def test_likelihood_differentiates_networks_with_written_out_gradients():
  """The divergence is read by reverse mode: a score function containing a custom VJP (lgm's GroupNorm;
  forward mode cannot differentiate it) gets the log-likelihood of the same function built from plain ops."""
  from lgm.models import layers
  sde = SDES['vp']
  x = jax.random.normal(jax.random.PRNGKey(3), (4, 2, 2, 4))
  scale, bias = jnp.array([1.0, 0.5, 2.0, 1.5]), jnp.array([0.1, -0.2, 0.0, 0.3])

  def score(normalize):
    return lambda y, t: -y + 0.1 * normalize(y, scale, bias, 2, 1e-6) * t[:, None, None, None]

  custom = score(layers.group_normalize)
  plain = score(lambda *a: layers._group_norm_forward(*a)[0])
  for divergence in ('exact', 'rademacher'):
    ours, reference = (likelihood.log_likelihood(jax.random.PRNGKey(0), sde, f, x, divergence=divergence)[0]
                       for f in (custom, plain))
    np.testing.assert_allclose(ours, reference, rtol=1e-4)


def test_dequantize_stays_in_its_bin():
  x = jnp.linspace(-1, 1, 256)[None]
  d = likelihood.dequantize(jax.random.PRNGKey(0), x)
  bins = jnp.floor((d + 1) / 2 * 256)
  np.testing.assert_array_equal(bins, jnp.arange(256)[None])


# --- bad input -----------------------------------------------------------------------------------------

@pytest.mark.parametrize('kwargs,message', [
    ({'method': 'heun'}, "valid: ['pc', 'ode'"),
    ({'predictor': 'leapfrog'}, "valid: ['euler_maruyama'"),
    ({'corrector': 'hmc'}, "valid: ['langevin'"),
    ({'num_steps': 0}, 'num_steps must be an integer >= 1'),
    ({'eps': 0.0}, 'need 0 < eps'),
    ({'eps': 1.5}, 'need 0 < eps'),
    ({'x_start': jnp.zeros((3, 2))}, 'x_start has shape (3, 2) but the samples have shape (4, 2)'),
    ({'method': 'ode', 'constraint': sampling.inpainting(jnp.zeros((4, 2)), jnp.ones(2))}, 'need a stepping sampler'),
    ({'guidance_scale': 2.0}, 'no guidance_fn'),
    ({'method': 'dpm_solver', 'grid': 'cosine'}, "unknown time grid 'cosine'; valid: ['time', 'log_snr', 'karras']"),
    ({'method': 'dpm_solver', 'order': 4}, 'order must be 1, 2 or 3'),
    ({'method': 'dpm_solver', 'sigma_max': 0.0}, 'sigma_max must be > 0'),
])
def test_bad_sampler_arguments(kwargs, message):
  sde = SDES['vp']
  with pytest.raises(ValueError, match=None) as error:
    sampling.sample(jax.random.PRNGKey(0), sde, gaussian_score(sde), (4, 2), **kwargs)
  assert message in str(error.value)


def test_ancestral_needs_vp_or_ve():
  with pytest.raises(ValueError, match='ancestral predictor needs a VP or VE SDE'):
    sampling.sample(jax.random.PRNGKey(0), SDES['subvp'], lambda x, t: -x, (4, 2), predictor='ancestral')


def test_unknown_sde_and_divergence_names():
  import ml_collections
  with pytest.raises(ValueError, match=r"valid: \['subvpsde', 'vesde', 'vpsde'\]"):
    sde_lib.get_sde(ml_collections.ConfigDict({'name': 'cld'}))
  with pytest.raises(ValueError, match="valid: \\['rademacher'"):
    likelihood.log_likelihood(jax.random.PRNGKey(0), SDES['vp'], lambda x, t: -x, jnp.zeros((2, 2)), divergence='x')

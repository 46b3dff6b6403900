"""The signature's parts that need no trained model: the file distortions, the JPEG simulation, the p-value,
the whitening and the penalty that holds unsigned images at chance (the stage itself: test_text_to_image.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from lgm import distortions, losses, provenance
from lgm.data import shapes
from lgm.tasks import signature


@pytest.fixture(scope='module')
def images():
  """32 renders of `shapes` in [-1, 1], written to 8 bits."""
  rendered = np.stack([example['image'] for example in shapes.make_examples(0, 'test', range(32))])
  return rendered.astype(np.float32) / 127.5 - 1


def test_the_jpeg_simulation_is_libjpeg_up_to_rounding(images):
  """The differentiable JPEG is PIL's encoder and decoder to within 40 dB at every quality, much closer than
  either is to the original; its rounding passes gradients straight through."""
  for quality in (90, 75, 50):
    simulated = np.asarray(distortions.jpeg(jnp.asarray(images), quality))
    encoded = distortions.pil_jpeg(images, quality)
    to_pil = float(losses.psnr(simulated, encoded).mean())
    assert to_pil > 40 and to_pil > float(losses.psnr(encoded, images).mean()) + 10
  gradient = jax.grad(lambda x: distortions.jpeg(x, 50.0).sum())(jnp.asarray(images) * 0.9)
  assert np.isfinite(gradient).all() and np.abs(gradient).mean() > 0.5
  odd = images[:, :24, :20]  # sides that are not multiples of 16: padded, coded, cropped back
  assert float(losses.psnr(np.asarray(distortions.jpeg(jnp.asarray(odd), 75)), distortions.pil_jpeg(odd, 75)).mean()) > 35
  grey = images[..., :1]
  assert float(losses.psnr(np.asarray(distortions.jpeg(jnp.asarray(grey), 75)), distortions.pil_jpeg(grey, 75)).mean()) > 40


def test_resize_and_crop_match_their_file_versions(images):
  resized = np.asarray(distortions.resize_back(jnp.asarray(images), 0.5))
  assert float(losses.psnr(resized, distortions.pil_resize_back(images, 0.5)).mean()) > 40
  cropped = distortions.REPORT_DISTORTIONS['crop0.9'](images, seed=0)
  assert cropped.shape == (32, 29, 29, 3)
  windows = {tuple(np.argwhere((image[:29, :29] == crop).all(-1)).shape) for image, crop in zip(images, cropped)}
  assert len(windows) > 1  # each image its own window
  assert distortions.crop(jnp.asarray(images), jax.random.PRNGKey(0), 0.8).shape == (32, 26, 26, 3)
  assert set(distortions.DESCRIPTIONS) == set(distortions.REPORT_DISTORTIONS)


def test_the_p_value_is_the_exact_binomial_tail():
  for bits in (1, 16, 48):
    matches = np.arange(bits + 1)
    np.testing.assert_allclose(provenance.p_value(matches, bits), scipy.stats.binom.sf(matches - 1, bits, 0.5),
                               rtol=1e-12, atol=0)
  assert provenance.p_value(16, 16) == 2.0**-16 and provenance.p_value(0, 16) == 1.0
  assert provenance.match_threshold(16, 1e-3) == 15  # P(>= 15 of 16) = 17 / 65536 = 2.6e-4; P(>= 14) = 2.1e-3
  assert provenance.match_threshold(16, 1e-6) == 17  # no count is that unlikely: nothing is called signed


def test_whitening_makes_correlated_offset_logits_fair_independent_bits():
  """Logits with a mean and a strong common factor: raw signs are biased and agree with each other; whitened,
  the share of each bit set is 1/2, the bits are uncorrelated and the match count is Binomial(bits, 1/2)."""
  rng = np.random.default_rng(0)
  bits, n = 16, 20000
  mixing = np.eye(bits) + 0.8 * rng.standard_normal((bits, bits)) / np.sqrt(bits)
  logits = (rng.standard_normal((n, bits)) + 1.5 * rng.standard_normal((n, 1))) @ mixing + 0.7
  mean, whitening = provenance.fit_whitening(logits[:n // 2])
  message = rng.integers(0, 2, bits).astype(bool)
  detector = provenance.Detector(lambda x: x, message, mean, whitening)
  read = detector.read(logits[n // 2:])
  assert np.abs(read.mean(0) - 0.5).max() < 0.03
  assert np.abs(np.corrcoef(read, rowvar=False) - np.eye(bits)).max() < 0.05
  counts = np.bincount(detector.matches(logits[n // 2:]), minlength=bits + 1)
  expected = scipy.stats.binom.pmf(np.arange(bits + 1), bits, 0.5) * (n // 2)
  keep = expected > 5
  assert scipy.stats.chisquare(counts[keep], expected[keep] * counts[keep].sum() / expected[keep].sum()).pvalue > 1e-3
  raw = logits[n // 2:] > 0  # far from it
  assert np.abs(raw.mean(0) - 0.5).max() > 0.2 and np.abs(np.corrcoef(raw, rowvar=False) - np.eye(bits)).max() > 0.3


def test_a_message_is_bits_or_drawn_from_the_seed():
  np.testing.assert_array_equal(signature.message_bits('0110', 4, 0), [False, True, True, False])
  drawn = signature.message_bits('', 16, 0)
  np.testing.assert_array_equal(drawn, signature.message_bits('', 16, 0))
  assert not np.array_equal(drawn, signature.message_bits('', 16, 1))
  with pytest.raises(ValueError, match='must be 4 characters 0 or 1'):
    signature.message_bits('012', 4, 0)


def test_a_bad_message_is_refused_before_the_job_trains():
  from configs import t2i_shapes
  from lgm import jobs
  config = jobs.with_job_data(t2i_shapes.get_config())
  config.signature.signature.message = '0101'  # the stage's settings: --config.signature.signature.KEY
  with pytest.raises(ValueError, match=r"signature.message='0101' must be 16 characters 0 or 1"):
    jobs.check_data(config)

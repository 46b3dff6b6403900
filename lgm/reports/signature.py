"""The signature section of the text-to-image report, for a job with a `signature` stage (`lgm.tasks.signature`).

Generated images (the report's, from held-out captions) and real held-out images go through each file-level
distortion of `lgm.distortions.REPORT_DISTORTIONS`; the job's detector (`lgm.provenance.load_detector`) reads
them. Per distortion: the share of the message's bits read right from generated images, the share of generated
images called signed at `report.signature_false_positive_rate`, and the share of real images called signed
(false positives, with a one-sided 95% Clopper-Pearson upper bound). The cost: PSNR of the signed decoder's
images against the unsigned decoder's, for the same latents (those of the held-out images); the report's
fidelity rows of the unsigned decoder are the other half of it.
"""

from __future__ import annotations

import numpy as np
import scipy.stats

from lgm import batching, distortions, losses, provenance, stages
from lgm.tasks import Trained

UNSIGNED = 'unsigned'  # the tag suffix of the report's rows decoded without the signature


def evaluate(workdir: str, generated: np.ndarray, real: np.ndarray, false_positive_rate: float,
             batch_size: int = 250) -> dict[str, float]:
  signature = stages.load_trained(provenance.signature_stage(workdir))
  detector = provenance.load_detector(workdir, batch_size, signature)
  metrics = {}
  for i, (name, distort) in enumerate(distortions.REPORT_DISTORTIONS.items()):
    ours, theirs = distort(generated, 2 * i), distort(real, 2 * i + 1)
    metrics[f'signature_bit_accuracy_{name}'] = float(np.mean(detector.read(ours) == detector.message))
    metrics[f'signature_detected_{name}'] = float(detector.verdicts(ours, false_positive_rate)['signed'].mean())
    false_positives = int(detector.verdicts(theirs, false_positive_rate)['signed'].sum())
    metrics[f'signature_false_positives_{name}'] = false_positives / len(real)
    metrics[f'signature_false_positives_bound_{name}'] = float(
        scipy.stats.beta.ppf(0.95, false_positives + 1, len(real) - false_positives))
  metrics['signature_psnr'] = _psnr_to_unsigned(signature, real, batch_size)
  metrics.update(signature_bits=detector.bits, signature_false_positive_rate=false_positive_rate,
                 signature_generated_images=len(generated), signature_real_images=len(real))
  return metrics


def _psnr_to_unsigned(signature: Trained, images: np.ndarray, batch_size: int) -> float:
  """Mean PSNR of the signature stage's signed decoder against its VAE's own decoder, on the latents of `images`."""
  vae = signature.task.vae

  def pair(params, x):
    latents = vae.task.encode(params['unsigned'], x)
    return losses.psnr(vae.task.decode(params['signed'], latents), vae.task.decode(params['unsigned'], latents))
  params = {'signed': signature.task.signed_params(signature.params), 'unsigned': vae.params}
  return float(np.mean(batching.map_in_batches(pair, params, images, batch_size)))


def lines(metrics: dict[str, float]) -> list[str]:
  """The report's signature section (markdown)."""
  rate = metrics['signature_false_positive_rate']
  bits = int(metrics['signature_bits'])
  out = [f"Signature: every image is decoded by the signed decoder of stage `signature` ({bits} bits). "
         f"{int(metrics['signature_generated_images'])} generated images (the last row of guidance above) and "
         f"{int(metrics['signature_real_images'])} real held-out images, each written to 8 bits and distorted, are "
         f"read by the detector; an image is called signed when its p-value is at most {rate:g} (at least "
         f'{provenance.match_threshold(bits, rate)} of {bits} bits match). PSNR of signed against unsigned decodes '
         f"of the same latents: {metrics['signature_psnr']:.2f} dB.", '',
         '| distortion | bits right (generated) | generated called signed | real called signed | '
         'its 95% upper bound |', '|---|---|---|---|---|']
  for name, description in distortions.DESCRIPTIONS.items():
    if f'signature_detected_{name}' in metrics:
      out.append(f"| {description} | {metrics[f'signature_bit_accuracy_{name}']:.4f} | "
                 f"{metrics[f'signature_detected_{name}']:.4f} | {metrics[f'signature_false_positives_{name}']:.4f} | "
                 f"{metrics[f'signature_false_positives_bound_{name}']:.4f} |")
  return out

"""Text -> image: prompt -> tokens -> text features -> guided reverse SDE/ODE in latent space -> decoder.

    pipe = TextToImage.from_workdir('runs/t2i_shapes')
    images, nfe = pipe(['a large red circle in the top left'], guidance=3.0, seeds=[0])

Every sampler of `lgm.sampling` works (`sampler`, `steps`; the config's few-step sampler by default).
Each image starts from the prior noise of its own seed, so an image does not depend on its batch-mates.
An empty prompt is the unconditional model; a negative prompt takes the place of the unconditional half
of classifier-free guidance, pushing samples away from what it names (at the times where the model's
`guidance_interval` guides). img2img (SDEdit, Meng et al. 2022)
noises the encoded image to time `strength` * T and denoises from there; inpainting keeps the latent cells
outside the mask; `interpolate` walks between two prompts' text features under fixed noise.
"""

from __future__ import annotations

import os
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lgm import batching, sampling, stages
from lgm.tasks.text_to_image import TextToImageTask

SCORE_STAGE = 'score'


class TextToImage:
  """A trained text-to-image model (the `score` stage of a t2i job and the stages it reads)."""

  def __init__(self, task: TextToImageTask, params, step: int = 0, batch_size: int = 64):
    self.task, self.params, self.step, self.batch_size = task, params, step, batch_size

  @classmethod
  def from_workdir(cls, workdir: str, batch_size: int = 64) -> TextToImage:
    """From a t2i job directory (its `score` stage) or from the score stage's own directory."""
    stage = os.path.join(workdir, SCORE_STAGE)
    path = stage if os.path.isdir(stage) else workdir
    if not os.path.exists(os.path.join(path, 'config.json')):
      raise FileNotFoundError(f'{workdir} holds no text-to-image model: the score stage ({stage}) is missing; '
                              f'train it: python -m experiments.train --config=configs/t2i_shapes.py --workdir={workdir}')
    trained = stages.load_trained(path)
    if not trained.task.generates_from_text:
      raise ValueError(f'{path} holds a {trained.config.task} model, not a text-to-image one.')
    return cls(trained.task, trained.params, trained.step, batch_size)

  # --- helpers ----------------------------------------------------------------------------------------
  def _options(self, sampler: str | None, steps: int | None) -> tuple:
    options = {}
    if sampler is not None:
      options['method'] = sampler
    if steps is not None:
      if steps < 1:
        raise ValueError(f'steps must be >= 1, got {steps}.')
      options['num_steps'] = int(steps)
    return tuple(sorted(options.items()))

  def _noise(self, seeds: Sequence[int]) -> np.ndarray:
    """The prior draw of each seed, as if drawn alone (one vmapped call, not one dispatch per image)."""
    shape = (1, *self.task.data_shape)
    draw = lambda seed: self.task.sde.prior_sampling(jax.random.PRNGKey(seed), shape)[0]
    return np.asarray(jax.vmap(draw)(jnp.asarray(seeds, jnp.uint32)))

  def _run(self, prompts, negative_prompt, guidance, noise, seeds, options, known=None):
    if guidance is None:
      guidance = self.task.guidance
    if guidance < 0:
      raise ValueError(f'guidance must be >= 0 (1 = no guidance, larger = follow the prompt more), got {guidance}.')
    tokens = self.task.tokenize(list(prompts))
    negatives = self.task.tokenize([negative_prompt or ''] * len(prompts))
    use_text = np.stack([[bool(p.strip()) for p in prompts], [bool(negative_prompt)] * len(prompts)], axis=1)
    # Guidance 1 is the conditional score alone: the other half cancels, so it is not computed.
    guidance = None if guidance == 1 else jnp.float32(guidance)
    inputs = {'noise': np.asarray(noise), 'tokens': tokens, 'negatives': negatives, 'use_text': use_text,
              'seed': np.asarray(seeds, np.uint32)}
    if known is not None:
      inputs['known'] = tuple(np.asarray(a) for a in known)

    def generate(params, batch):
      images, nfe = self.task.sample_images(
          params, jnp.asarray(batch['noise']), batch['tokens'], batch['negatives'], batch['use_text'], guidance,
          jax.random.PRNGKey(batch['seed'][0]), known=batch.get('known'), options=options)
      return {'images': images, 'nfe': np.full(len(images), int(nfe))}
    out = batching.map_in_batches(generate, self.params, inputs, min(self.batch_size, len(prompts)))
    return out['images'], int(out['nfe'][0])

  def _seeds(self, num: int, seeds: Sequence[int] | None, seed: int) -> list[int]:
    seeds = list(range(seed, seed + num)) if seeds is None else list(seeds)
    if len(seeds) != num:
      raise ValueError(f'{len(seeds)} seeds for {num} prompts; give one seed per prompt.')
    if any(not 0 <= int(s) < 2**32 for s in seeds):
      raise ValueError(f'seeds must be integers in [0, 2**32), got {seeds}.')
    return seeds

  # --- the API ------------------------------------------------------------------------------------------
  def __call__(self, prompts: str | Sequence[str], negative_prompt: str | None = None, guidance: float | None = None,
               seeds: Sequence[int] | None = None, seed: int = 0, sampler: str | None = None,
               steps: int | None = None) -> tuple[np.ndarray, int]:
    """(images (N, H, W, C) in [-1, 1], score evaluations per image) for `prompts` ('' = unconditional)."""
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    seeds = self._seeds(len(prompts), seeds, seed)
    return self._run(prompts, negative_prompt, guidance, self._noise(seeds), seeds, self._options(sampler, steps))

  def img2img(self, images: np.ndarray, prompts: str | Sequence[str], strength: float = 0.6, **kwargs):
    """SDEdit: encode, noise to t = strength * T, denoise guided by the prompts."""
    if not 0.0 < strength <= 1.0:
      raise ValueError(f'strength must be in (0, 1], got {strength}.')
    return self._edit(images, prompts, strength, None, **kwargs)

  def inpaint(self, images: np.ndarray, mask: np.ndarray, prompts: str | Sequence[str], **kwargs):
    """Regenerate where `mask` (H, W) or (N, H, W) is 1, keep the rest (in latent cells: the mask is
    max-pooled to the latent grid)."""
    return self._edit(images, prompts, 1.0, mask, **kwargs)

  def _edit(self, images, prompts, strength, mask, negative_prompt=None, guidance=None, seeds=None, seed=0,
            sampler=None, steps=None):
    prompts = [prompts] * len(images) if isinstance(prompts, str) else list(prompts)
    seeds = self._seeds(len(prompts), seeds, seed)
    latents = np.asarray(self.task.to_data(jnp.asarray(images, jnp.float32)))
    sde, t_start = self.task.sde, strength * self.task.sde.T
    noise = self._noise(seeds)
    options, known = dict(self._options(sampler, steps)), None
    if mask is None:
      alpha, sigma = sde.marginal_coefficients(jnp.full((len(latents),), t_start))
      x = np.asarray(alpha)[:, None, None, None] * latents + np.asarray(sigma)[:, None, None, None] * noise
      options.update(t_start=t_start)
    else:
      mask = np.broadcast_to(np.asarray(mask, np.float32), images.shape[:3])
      h, w = latents.shape[1:3]
      cells = mask.reshape(len(mask), h, mask.shape[1] // h, w, mask.shape[2] // w).max(axis=(2, 4))
      known = (latents, 1.0 - np.repeat(cells[..., None], latents.shape[-1], axis=-1))
      x = noise
    return self._run(prompts, negative_prompt, guidance, x, seeds, tuple(sorted(options.items())), known)

  def interpolate(self, prompt_a: str, prompt_b: str, num: int = 8, seed: int = 0, guidance: float | None = None,
                  **kwargs) -> np.ndarray:
    """Images along a straight path between the two prompts' text features, under one fixed noise."""
    task = self.task
    conds = [task.text_conditioning(self.params, jnp.asarray(task.tokenize(p))) for p in (prompt_a, prompt_b)]
    weights = np.linspace(0.0, 1.0, num)
    mix = {k: (conds[0][k] * (1 - weights[:, None, None]) + conds[1][k] * weights[:, None, None]) if k == 'context'
           else (conds[0][k] | conds[1][k]) if k == 'context_mask'
           else conds[0][k] * (1 - weights[:, None]) + conds[1][k] * weights[:, None] for k in conds[0]}
    mix = {k: jnp.broadcast_to(v, (num, *v.shape[1:])) for k, v in mix.items()}
    null = task.keep_only(mix, jnp.zeros((num,), bool))
    guidance = task.guidance if guidance is None else guidance
    score = task.guided_score_fn(self.params, mix, null, guidance)
    noise = jnp.asarray(np.repeat(self._noise([seed]), num, axis=0))
    x, _ = sampling.sample(jax.random.PRNGKey(seed), task.sde, score, noise.shape, x_start=noise,
                           **{**task.sampling, **kwargs})
    return np.asarray(jnp.clip(task.to_images(x), -1.0, 1.0))

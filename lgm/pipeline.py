"""Text -> image, two roads:
  guided  prompt -> tokens -> text features -> guided reverse SDE/ODE in latent space -> VAE decoder
          (the `score` stage of a t2i job, `lgm.tasks.text_to_image`);
  prior   prompt -> text features -> the unCLIP prior samples a CLIP image embedding -> the embedding
          decoder's reverse SDE in latent space -> VAE decoder (its `prior` and `decoder` stages,
          `lgm.tasks.prior`, `lgm.tasks.embedding_decoder`).

    pipe = TextToImage.from_workdir('runs/t2i_shapes')     # or .from_pretrained(DIR) of an exported model
    images, nfe = pipe(['a large red circle in the top left'], guidance=3.0, seeds=[0])
    images, nfe = pipe(['a large red circle in the top left'], route='prior', seeds=[0])   # a job with both

Every sampler of `lgm.sampling` works (`sampler`, `steps`; the config's few-step sampler by default).
Each image starts from the prior noise of its own seed, so an image does not depend on its batch-mates.
An empty prompt is the unconditional model; a negative prompt takes the place of the unconditional half
of classifier-free guidance, pushing samples away from what it names (at the times where the model's
`guidance_interval` guides). img2img (SDEdit, Meng et al. 2022)
noises the encoded image to time `strength` * T and denoises from there; inpainting keeps the latent cells
outside the mask; `interpolate` walks between two prompts' text features under fixed noise.

The prior road adds what only an image embedding gives: `variations` (decode an image's own embedding with
new noise), `interpolate` between two images (along the great circle of their unit-norm embeddings) and
`text_diff` (turn an image's embedding towards the difference of two captions' text embeddings, DALL-E 2's
text diffs).
"""

from __future__ import annotations

import functools
import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lgm import batching, exported, files, provenance, sampling, semantic, stages
from lgm.tasks import Trained
from lgm.tasks.text_to_image import TextToImageTask
from lgm.train import workdir as workdir_lib

SCORE_STAGE = 'score'
PRIOR_STAGE, DECODER_STAGE = 'prior', 'decoder'
SIGNATURE_STAGE = provenance.SIGNATURE_STAGE  # a signed VAE decoder: every road decodes with it
ROUTES = ('guided', 'prior')


def vae_dir(stage: str) -> str:
  """The real path of the VAE stage that the stage at `stage` reads (its `config.stages.vae`)."""
  return files.real(stages.stage_dir(stage, workdir_lib.read_config(stage).stages.vae))


def signed_vae(workdir: str) -> Trained:
  """The VAE of the job at `workdir` with the signed decoder of its `signature` stage."""
  signature = stages.load_stage(workdir, SIGNATURE_STAGE, SIGNATURE_STAGE)
  signs = vae_dir(os.path.join(workdir, SIGNATURE_STAGE))
  for name in (SCORE_STAGE, DECODER_STAGE):
    if files.exists(workdir_lib.config_path(os.path.join(workdir, name))):
      theirs = vae_dir(os.path.join(workdir, name))
      if theirs != signs:
        raise ValueError(f'the signature stage of {workdir} signs the VAE at {signs}, but its {name} stage '
                         f'decodes with {theirs}; train the signature stage on the VAE the job uses.')
  return signature.task.signed_vae(signature.params)


class TextToImage:
  """A trained text-to-image model: the `score` stage of a t2i job (the guided road) and/or its `prior` and
  `decoder` stages (the prior road), with the stages they read."""

  def __init__(self, task: TextToImageTask | None, params=None, step: int = 0, batch_size: int = 64,
               prior: Trained | None = None, decoder: Trained | None = None):
    if task is None and (prior is None or decoder is None):
      raise ValueError('a text-to-image pipeline needs a text-guided model, or a prior and a decoder.')
    self.task, self.params, self.step, self.batch_size = task, params, step, batch_size
    self.prior, self.decoder = prior, decoder
    self.route = 'guided' if task is not None else 'prior'  # the default road
    self.clip = (task or prior.task).clip

  @classmethod
  def from_workdir(cls, workdir: str, batch_size: int = 64, signed: bool = True) -> TextToImage:
    """From a t2i job directory (its `score` stage and, when it has them, its `prior` and `decoder` stages) or
    from the score stage's own directory. A job with a `signature` stage decodes with its signed decoder
    (`signed=False`: with the VAE's own, to measure what signing costs)."""
    has = lambda name: files.exists(os.path.join(workdir, name, 'config.json'))
    given = {'vae': signed_vae(workdir)} if signed and has(SIGNATURE_STAGE) else None
    prior = decoder = None
    if has(PRIOR_STAGE) and has(DECODER_STAGE):
      prior, decoder = (stages.load_stage(workdir, name, name, given) for name in (PRIOR_STAGE, DECODER_STAGE))
      if not has(SCORE_STAGE):
        return cls(None, prior=prior, decoder=decoder, batch_size=batch_size)
    path = os.path.join(workdir, SCORE_STAGE) if has(SCORE_STAGE) else workdir
    if not files.exists(os.path.join(path, 'config.json')):
      raise FileNotFoundError(f'{workdir} holds no text-to-image model: the score stage ({path}) is missing; '
                              f'train it: python -m experiments.train --config=configs/t2i_shapes.py --workdir={workdir}')
    trained = stages.load_trained(path, given=given)
    if not trained.task.generates_from_text:
      raise ValueError(f'{path} holds a {trained.config.task} model, not a text-to-image one.')
    return cls(trained.task, trained.params, trained.step, batch_size, prior, decoder)

  @classmethod
  def from_pretrained(cls, directory: str, batch_size: int = 64) -> TextToImage:
    """From an exported model (`lgm.export`): its safetensors parameters, stage configs, tokenizer and latent
    scale; no checkpoint, optimizer state or data is read."""
    exported.read_manifest(directory)  # an lgm model, of a format version this lgm reads
    return cls.from_workdir(directory, batch_size)

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return (self.task or self.decoder.task).image_shape

  @functools.cached_property
  def model_id(self) -> str:
    """`lgm.provenance.model_id` of every stage this pipeline generates with (score, prior, decoder and the
    VAE and text tower they read)."""
    trees = [self.params, self.task.vae.params] if self.task is not None else []
    for stage in (self.prior, self.decoder):
      trees += [stage.params] if stage is not None else []
    trees.append(self.clip.params)
    if self.decoder is not None:
      trees.append(self.decoder.task.vae.params)
    return provenance.model_id(*trees)

  def recipe(self, prompt: str, negative_prompt: str | None = None, guidance: float | None = None,
             seeds: Sequence[int] = (0,), sampler: str | None = None, steps: int | None = None,
             route: str | None = None, score_evaluations: int | None = None) -> dict[str, Any]:
    """The recipe of a generation (`lgm.provenance`), with the defaults a call would use filled in."""
    route = route or self.route
    task = self.task if route == 'guided' else self.decoder.task
    return provenance.recipe(
        self.model_id, prompt=prompt, negative_prompt=negative_prompt or '', seeds=[int(s) for s in seeds],
        route=route, sampler=sampler or task.sampling.get('method'), steps=steps or task.sampling.get('num_steps'),
        guidance=float(task.guidance if guidance is None else guidance), score_evaluations=score_evaluations)

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

  @staticmethod
  def _noise(task, seeds: Sequence[int], stream: int = 0) -> np.ndarray:
    """The prior draw of `task`'s diffusion for each seed, as if drawn alone (one vmapped call, not one
    dispatch per image); `stream` 1 is the prior road's first stage, independent of its decoder's draw."""
    shape = (1, *task.data_shape)

    def draw(seed):
      key = jax.random.PRNGKey(seed)
      return task.sde.prior_sampling(jax.random.fold_in(key, stream) if stream else key, shape)[0]
    return np.asarray(jax.vmap(draw)(jnp.asarray(seeds, jnp.uint32)))

  @staticmethod
  def _guidance(task, guidance: float | None) -> jax.Array | None:
    """The guidance weight to trace (the task's default for None); None for 1, the conditional score alone:
    the other half cancels, so it is not computed."""
    guidance = task.guidance if guidance is None else guidance
    if guidance < 0:
      raise ValueError(f'guidance must be >= 0 (1 = no guidance, larger = follow the prompt more), got {guidance}.')
    return None if guidance == 1 else jnp.float32(guidance)

  def _prompt_inputs(self, task, prompts, negative_prompt, seeds) -> dict[str, np.ndarray]:
    use_text = np.stack([[bool(p.strip()) for p in prompts], [bool(negative_prompt)] * len(prompts)], axis=1)
    return {'tokens': task.tokenize(list(prompts)), 'negatives': task.tokenize([negative_prompt or ''] * len(prompts)),
            'use_text': use_text, 'seed': np.asarray(seeds, np.uint32)}

  def _run(self, prompts, negative_prompt, guidance, noise, seeds, options, known=None):
    self._need('guided')
    guidance = self._guidance(self.task, guidance)
    inputs = {'noise': np.asarray(noise), **self._prompt_inputs(self.task, prompts, negative_prompt, seeds)}
    if known is not None:
      inputs['known'] = tuple(np.asarray(a) for a in known)

    def generate(params, batch):
      images, nfe = self.task.sample_images(
          params, jnp.asarray(batch['noise']), batch['tokens'], batch['negatives'], batch['use_text'], guidance,
          jax.random.PRNGKey(batch['seed'][0]), known=batch.get('known'), options=options)
      return {'images': images, 'nfe': np.full(len(images), int(nfe))}
    out = batching.map_in_batches(generate, self.params, inputs, min(self.batch_size, len(prompts)))
    return out['images'], int(out['nfe'][0])

  def _need(self, route: str) -> None:
    if route not in ROUTES:
      raise ValueError(f'unknown route {route!r}; valid: {list(ROUTES)}')
    if route == 'guided' and self.task is None:
      raise ValueError('this model has no text-guided score stage; use route="prior".')
    if route == 'prior' and self.prior is None:
      raise ValueError('this model has no prior and decoder stages (a job like configs/t2i_unclip_shapes.py trains '
                       'them); use route="guided".')

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
               steps: int | None = None, route: str | None = None,
               prior_guidance: float | None = None) -> tuple[np.ndarray, int]:
    """(images (N, H, W, C) in [-1, 1], score evaluations per image) for `prompts` ('' = unconditional).

    `route` 'guided' (the default where the model has it) or 'prior'. On the prior road `guidance`, `sampler`
    and `steps` are the decoder's, `prior_guidance` and `negative_prompt` the prior's, and the evaluations
    counted are both stages'."""
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    seeds = self._seeds(len(prompts), seeds, seed)
    route = route or self.route
    self._need(route)
    options = self._options(sampler, steps)
    if route == 'guided':
      return self._run(prompts, negative_prompt, guidance, self._noise(self.task, seeds), seeds, options)
    embeddings, prior_nfe = self.sample_embeddings(prompts, negative_prompt, prior_guidance, seeds)
    images, nfe = self.decode(embeddings, guidance, seeds, sampler=sampler, steps=steps)
    return images, prior_nfe + nfe

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
    self._need('guided')
    prompts = [prompts] * len(images) if isinstance(prompts, str) else list(prompts)
    seeds = self._seeds(len(prompts), seeds, seed)
    latents = np.asarray(self.task.to_data(jnp.asarray(images, jnp.float32)))
    sde, t_start = self.task.sde, strength * self.task.sde.T
    noise = self._noise(self.task, seeds)
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

  def interpolate(self, a: str | np.ndarray, b: str | np.ndarray, num: int = 8, seed: int = 0,
                  guidance: float | None = None, **kwargs) -> np.ndarray:
    """Images along a path from `a` to `b` under one fixed noise: two prompts, along the straight line between
    their text features (the guided road); two images (H, W, C) in [-1, 1], along the great circle between
    their unit-norm CLIP image embeddings, decoded (the prior road)."""
    if not isinstance(a, str):
      path = semantic.interpolate(*self.embed_images(np.stack([a, b])), num, method='slerp')
      return self.decode(path, guidance, [seed] * num, **kwargs)[0]
    self._need('guided')
    task = self.task
    conds = [task.text_conditioning(self.params, jnp.asarray(task.tokenize(p))) for p in (a, b)]
    weights = np.linspace(0.0, 1.0, num)
    mix = {k: (conds[0][k] * (1 - weights[:, None, None]) + conds[1][k] * weights[:, None, None]) if k == 'context'
           else (conds[0][k] | conds[1][k]) if k == 'context_mask'
           else conds[0][k] * (1 - weights[:, None]) + conds[1][k] * weights[:, None] for k in conds[0]}
    mix = {k: jnp.broadcast_to(v, (num, *v.shape[1:])) for k, v in mix.items()}
    null = task.keep_only(mix, jnp.zeros((num,), bool))
    guidance = task.guidance if guidance is None else guidance
    score = task.guided_score_fn(self.params, mix, null, guidance)
    noise = jnp.asarray(np.repeat(self._noise(task, [seed]), num, axis=0))
    x, _ = sampling.sample(jax.random.PRNGKey(seed), task.sde, score, noise.shape, x_start=noise,
                           **{**task.sampling, **kwargs})
    return np.asarray(jnp.clip(task.to_images(x), -1.0, 1.0))

  # --- the prior road: image embeddings -------------------------------------------------------------------
  def embed_images(self, images: np.ndarray) -> np.ndarray:
    """Unit-norm CLIP image embeddings (N, D) of images (N, H, W, C) in [-1, 1]."""
    return batching.map_in_batches(self.clip.task.encode_images, self.clip.params, np.asarray(images, np.float32),
                                   min(self.batch_size, len(images)))

  def embed_text(self, prompts: Sequence[str]) -> np.ndarray:
    """Unit-norm CLIP text embeddings (N, D) of prompts."""
    return self.clip.task.encode_text(self.clip.params, list(prompts))

  def sample_embeddings(self, prompts: Sequence[str], negative_prompt: str | None = None,
                        guidance: float | None = None, seeds: Sequence[int] | None = None,
                        seed: int = 0) -> tuple[np.ndarray, int]:
    """(unit-norm image embeddings (N, D) the prior draws for `prompts`, its score evaluations per sample)."""
    self._need('prior')
    prompts = list(prompts)
    seeds = self._seeds(len(prompts), seeds, seed)
    task, params = self.prior.task, self.prior.params
    guidance = self._guidance(task, guidance)
    inputs = {'noise': self._noise(task, seeds, stream=1), **self._prompt_inputs(task, prompts, negative_prompt, seeds)}

    def generate(params, batch):
      embeddings, nfe = task.sample_embeddings(params, jnp.asarray(batch['noise']), batch['tokens'], batch['negatives'],
                                               batch['use_text'], guidance, jax.random.PRNGKey(batch['seed'][0]))
      return {'embeddings': embeddings, 'nfe': np.full(len(embeddings), int(nfe))}
    out = batching.map_in_batches(generate, params, inputs, min(self.batch_size, len(prompts)))
    return out['embeddings'], int(out['nfe'][0])

  def decode(self, embeddings: np.ndarray, guidance: float | None = None, seeds: Sequence[int] | None = None,
             seed: int = 0, sampler: str | None = None, steps: int | None = None) -> tuple[np.ndarray, int]:
    """(images decoded from image embeddings (N, D), score evaluations per image), one seed each."""
    self._need('prior')
    embeddings = np.asarray(embeddings, np.float32)
    seeds = self._seeds(len(embeddings), seeds, seed)
    task, options = self.decoder.task, self._options(sampler, steps)
    guidance = self._guidance(task, guidance)
    inputs = {'noise': self._noise(task, seeds), 'embeddings': embeddings, 'seed': np.asarray(seeds, np.uint32)}

    def generate(params, batch):
      images, nfe = task.sample_images(params, jnp.asarray(batch['noise']), batch['embeddings'], guidance,
                                       jax.random.PRNGKey(batch['seed'][0]), options=options)
      return {'images': images, 'nfe': np.full(len(images), int(nfe))}
    out = batching.map_in_batches(generate, self.decoder.params, inputs, min(self.batch_size, len(embeddings)))
    return out['images'], int(out['nfe'][0])

  def variations(self, image: np.ndarray, num: int = 8, seed: int = 0, **kwargs) -> np.ndarray:
    """`num` images decoded from the embedding of `image` (H, W, C) in [-1, 1] with seeds seed, seed + 1, ..."""
    embedding = self.embed_images(np.asarray(image)[None])
    return self.decode(np.repeat(embedding, num, axis=0), seeds=range(seed, seed + num), **kwargs)[0]

  def text_diff(self, image: np.ndarray, from_text: str, to_text: str, amounts: Sequence[float] = (0, .25, .5, .75),
                seed: int = 0, **kwargs) -> np.ndarray:
    """DALL-E 2's text diff: the image's embedding turned towards normalize(text(to) - text(from)) by each of
    `amounts` (the share of the great circle from one to the other), decoded under one fixed noise."""
    if any(not 0 <= a <= 1 for a in amounts):
      raise ValueError(f'amounts must lie in [0, 1] (0: the image itself), got {list(amounts)}.')
    image_embedding = self.embed_images(np.asarray(image)[None])[0]
    direction = np.subtract(*self.embed_text([to_text, from_text]))
    direction /= np.linalg.norm(direction)
    path = semantic.slerp(image_embedding, direction, amounts)
    return self.decode(path, seeds=[seed] * len(path), **kwargs)[0]

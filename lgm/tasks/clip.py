"""Contrastive text-image training (CLIP / SigLIP): one space where captions meet their images.

The task tokenizes captions on the host (`prepare_batch`), embeds images and tokens with
`lgm.models.clip.CLIP`, and trains with `config.loss.name` of `lgm.losses.CONTRASTIVE_LOSSES` over the
global batch. Evaluation embeds the whole held-out set, then reports zero-shot accuracy per attribute
from the dataset's caption templates and retrieval recall@1/@5 both ways (`lgm.evaluation`).

The tokenizer is part of the model and is handed in: `lgm.stages` learns it (`config.tokenizer.name='bpe'`:
byte-level BPE merges from the first `config.tokenizer.num_captions` training captions) and keeps it in
DIR/tokenizer.json, which a resumed run or a later sampler reads back, so the ids never change under a
trained model.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from lgm import batching, evaluation, losses, xla
from lgm import tokenizer as tokenizer_lib
from lgm.models import build_model
from lgm.models.clip import CLIP
from lgm.tasks.base import TextConditioned, Trained

PyTree = Any
_TEXT_BATCH = 256  # prompts embedded per call when evaluating
IMAGE_INPUTS = ('pixels', 'latent')


class ClipTask(TextConditioned):
  """A dual encoder trained contrastively; `encode_text` / `encode_images` are the space's API."""

  semantic_space = 'text_image'

  @classmethod
  def needs(cls, config: ml_collections.ConfigDict) -> tuple[str, ...]:
    return ('tokenizer', 'vae') if config.get('image_input', 'pixels') == 'latent' else ('tokenizer',)

  def __init__(self, config: ml_collections.ConfigDict, tokenizer: tokenizer_lib.Tokenizer,
               vae: Trained | None = None):
    """`tokenizer` turns captions into ids; `vae` is the trained VAE whose latents the image tower reads
    when `config.image_input == 'latent'` (the space a latent diffusion model generates in)."""
    self.tokenizer = tokenizer
    self.model: CLIP = build_model(config.model, config.train.compute_dtype, vocab_size=self.tokenizer.vocab_size,
                                   context_length=self.tokenizer.context_length)
    if config.loss.name not in losses.CONTRASTIVE_LOSSES:
      raise ValueError(f'unknown contrastive loss {config.loss.name!r}; valid: {sorted(losses.CONTRASTIVE_LOSSES)}')
    if config.loss.name == 'siglip' and self.model.logit_bias_init is None:
      raise ValueError("the siglip loss needs a learnable bias: set model.logit_bias_init (SigLIP uses -10).")
    self.loss_fn = losses.CONTRASTIVE_LOSSES[config.loss.name]
    size, channels = config.data.image_size, config.data.channels
    self.image_shape = (size, size, channels)
    image_input = config.get('image_input', 'pixels')
    if image_input not in IMAGE_INPUTS:
      raise ValueError(f'unknown image_input {image_input!r}; valid: {list(IMAGE_INPUTS)}')
    if (image_input == 'latent') != (vae is not None):
      raise ValueError(f"image_input={image_input!r} takes {'a' if image_input == 'latent' else 'no'} trained VAE.")
    self.vae = vae
    self.prompts = evaluation.prompt_table(config.data.dataset)

  # --- the text-image space ------------------------------------------------------------------------
  @functools.partial(xla.jit, static_argnums=0)
  def encode_tokens(self, params: PyTree, tokens: jax.Array) -> dict[str, jax.Array]:
    """Normalised 'embedding' (batch, embed_dim), per-token features 'tokens' and their 'mask'."""
    return self.model.apply({'params': params}, tokens, method=CLIP.encode_text)

  def tower_input(self, images: jax.Array) -> jax.Array:
    """What the image tower reads: the images, or their VAE latents (posterior means)."""
    return images if self.vae is None else self.vae.task.encode(self.vae.params, images)

  @functools.partial(xla.jit, static_argnums=0)
  def encode_images(self, params: PyTree, images: jax.Array) -> jax.Array:
    """Images in [-1, 1] -> normalised embeddings (batch, embed_dim)."""
    return self.model.apply({'params': params}, self.tower_input(images), method=CLIP.encode_image)['embedding']

  def encode_text(self, params: PyTree, texts) -> np.ndarray:
    """Strings -> normalised embeddings (numpy), in fixed-size batches (one compilation)."""
    tokens = self.tokenize(texts)
    embed = lambda p, chunk: self.encode_tokens(p, chunk)['embedding']
    return batching.map_in_batches(embed, params, tokens, min(_TEXT_BATCH, len(tokens)))

  def logit_scale(self, params: PyTree) -> float:
    return float(self.model.apply({'params': params}, method=CLIP.scale_and_bias)[0])

  # --- what the trainer calls ------------------------------------------------------------------------
  def init(self, rng: jax.Array) -> PyTree:
    images = self.tower_input(jnp.zeros((1, *self.image_shape), jnp.float32))
    tokens = jnp.asarray(self.tokenize(''))
    return self.model.init(rng, images, tokens)['params']

  def _loss(self, params, batch):
    out = self.model.apply({'params': params}, self.tower_input(batch['image']), batch['tokens'])
    return self.loss_fn(out['image'], out['text'], out['scale'], out['bias']), out

  def loss(self, params: PyTree, batch: dict, rng: jax.Array, train: bool = True):
    del rng, train  # no dropout or noise
    loss, out = self._loss(params, batch)
    logits = out['image'] @ out['text'].T
    labels = jnp.arange(logits.shape[0])
    return loss, {'logit_scale': out['scale'],
                  'batch_i2t_accuracy': (logits.argmax(axis=1) == labels).mean(),
                  'batch_t2i_accuracy': (logits.argmax(axis=0) == labels).mean()}

  def evaluate(self, params: PyTree, batch: dict, rng: jax.Array) -> dict[str, jax.Array]:
    """The loss on a held-out batch (scalar), and per-example embeddings and attributes for `summarize`."""
    del rng
    loss, out = self._loss(params, batch)
    fields = {} if self.prompts is None else {f'field/{f}': batch[f] for f in self.prompts.fields.values()}
    return {'loss': loss, 'image_embedding': out['image'], 'text_embedding': out['text'], **fields}

  def summarize(self, params: PyTree, outputs: dict[str, np.ndarray]) -> dict[str, float]:
    """Zero-shot accuracy per attribute (`zeroshot_<attribute>`) and retrieval recall over the whole set."""
    images, texts = outputs['image_embedding'], outputs['text_embedding']
    if self.prompts is None:
      return evaluation.retrieval_metrics(images, texts)
    labels = {name: outputs[f'field/{field}'] for name, field in self.prompts.fields.items()}
    num_templates = len(self.prompts.prompts[0])
    flat = [p for prompts in self.prompts.prompts for p in prompts]
    classes = evaluation.class_embeddings(self.encode_text(params, flat), num_templates)
    accuracy = evaluation.zero_shot_accuracy(images, classes, self.logit_scale(params), self.prompts, labels)
    metrics = {f'zeroshot_{name}': value for name, value in accuracy.items()}
    attributes = np.stack([labels[name] for name in self.prompts.fields], axis=1)
    metrics.update(evaluation.retrieval_metrics(images, texts, attributes))
    return metrics

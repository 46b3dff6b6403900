"""Model registry: configs name a model by string (`config.model.name`)."""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from lgm.models import autoencoder, classifier, clip, extractor, prior, score_unet, text

MODELS: dict[str, Callable[..., nn.Module]] = {
    'autoencoder': autoencoder.Autoencoder,
    'vae': autoencoder.VAE,
    'ncsnpp': score_unet.NCSNpp,  # NCSN++ and DDPM++ (Song et al. 2021), selected by its fields
    'ddpm': score_unet.DDPM,  # Ho et al. 2020's U-Net
    'clip': clip.CLIP,  # text tower + ViT image tower (lgm.tasks.clip)
    'text_transformer': text.TextTransformer,  # a text tower alone (a converted CLIP's: lgm.convert)
    'prior_transformer': prior.PriorTransformer,  # the unCLIP prior's denoiser (lgm.tasks.prior)
    'attribute_classifier': classifier.AttributeClassifier,  # the judge of text-to-image fidelity
    'watermark_extractor': extractor.WatermarkExtractor,  # reads the signature (lgm.tasks.signature)
}

DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


def build_model(model_config: ml_collections.ConfigDict, compute_dtype: str = 'float32',
                **extra: Any) -> nn.Module:
  """Instantiate `MODELS[model_config.name]` with the config's other keys as constructor arguments."""
  name = model_config.name
  if name not in MODELS:
    raise ValueError(f'unknown model {name!r}; valid: {sorted(MODELS)}')
  if compute_dtype not in DTYPES:
    raise ValueError(f'unknown compute dtype {compute_dtype!r}; valid: {sorted(DTYPES)}')
  kwargs = {k: v for k, v in model_config.to_dict().items() if k != 'name'}
  return MODELS[name](dtype=DTYPES[compute_dtype], **kwargs, **extra)

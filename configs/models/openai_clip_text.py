"""OpenAI CLIP ViT-L/14's text tower (Stable Diffusion 1.x's text encoder) as an lgm `TextTransformer`.

    from lgm import convert
    config, params = convert.from_openai_clip_text(state_dict, get_config())

OpenAI's token ids (49,408 BPE tokens, end of text = 49407; `lgm.clip_tokenizer`), LayerNorm eps 1e-5,
quick-GELU, 77 positions. lgm.convert reads the sizes off any CLIP text tower's weights; this file states
ViT-L/14's.
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  del arg
  return ml_collections.ConfigDict(dict(
      name='text_transformer', vocab_size=49408, context_length=77, width=768, layers=12, heads=12,
      embed_dim=768, mlp_ratio=4.0, activation='quick_gelu', layer_norm_eps=1e-5, end_id=49407, pad_id=None))

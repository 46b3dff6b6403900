"""Weights trained elsewhere, onto lgm's modules: renames, transposes and reshapes, nothing else.

- `from_diffusers_autoencoder_kl`: a diffusers `AutoencoderKL` state dict (Stable Diffusion's VAE, in
  diffusers' safetensors layout) -> `lgm.models.autoencoder.VAE` in that layout (configs/models/sd_vae.py).
- `from_openai_clip_text`: the text tower of a transformers `CLIPTextModel(WithProjection)` / `CLIPModel`,
  or of an OpenAI / open_clip checkpoint -> `lgm.models.text.TextTransformer`.

Each returns `Converted(config, params)`: the model config that `lgm.models.build_model` builds (read off
the weights' shapes where they tell it), and the flax params. Before returning, every name and shape is
checked against that model; a mismatch raises one `ConversionError` that lists the missing, unexpected and
misshapen keys. PyTorch layouts: a Linear weight is (out, in) where a flax kernel is (in, out); a conv
weight is (out, in, kh, kw) where flax's is (kh, kw, in, out). docs/checkpoints.md lists every mapping.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from lgm import models

Transform = Callable[[np.ndarray], np.ndarray]
Rules = dict[str, tuple[tuple[str, ...], Transform]]  # source key -> (lgm param path, transform)
SHOWN = 4  # keys listed per kind of mismatch before "and N more"


class ConversionError(ValueError):
  """The weights do not fit the lgm model: keys missing, unexpected, or of the wrong shape."""


class Converted(NamedTuple):
  config: ml_collections.ConfigDict  # the model config (`lgm.models.build_model`)
  params: dict[str, Any]  # the flax params of that model


def as_numpy(value: Any) -> np.ndarray:
  """A numpy array from a numpy array, a jax array or a (CPU) torch tensor."""
  if hasattr(value, 'detach'):  # torch: no gradient, on the CPU, as numpy
    value = value.detach().cpu().numpy()
  return np.asarray(value)


def conv_kernel(w: np.ndarray) -> np.ndarray:
  return w.transpose(2, 3, 1, 0)


def dense_kernel(w: np.ndarray) -> np.ndarray:
  """Linear (out, in), or a 1x1 conv (out, in, 1, 1) used as one -> (in, out)."""
  return (w[:, :, 0, 0] if w.ndim == 4 else w).T


def same(w: np.ndarray) -> np.ndarray:
  return w


def _listed(kind: str, items: list[str]) -> str:
  more = f' and {len(items) - SHOWN} more' if len(items) > SHOWN else ''
  return f'{len(items)} {kind} ({", ".join(items[:SHOWN])}{more})'


def apply_rules(rules: Rules, state_dict: Mapping[str, Any], model: Any, example_inputs: tuple,
                source: str, defaults: Mapping[tuple[str, ...], Any] = (),
                ignored: Callable[[str], bool] = lambda key: False) -> dict[str, Any]:
  """Map `state_dict` onto `model`'s params by `rules`, checking every name and shape.

  Rules whose lgm path the model lacks are dropped (optional layers, e.g. a shortcut only where widths
  change), so a source key they would have read counts as unexpected. `defaults` fill lgm-only
  parameters; keys for which `ignored` is true (buffers, other towers) are skipped.
  """
  shapes = flax.traverse_util.flatten_dict(
      jax.eval_shape(lambda: model.init(jax.random.key(0), *example_inputs))['params'])
  rules = {key: rule for key, rule in rules.items() if rule[0] in shapes}
  keys = [key for key in state_dict if not ignored(key)]
  missing = [key for key in rules if key not in state_dict]
  unexpected = [key for key in keys if key not in rules]
  flat, misshapen = {}, []
  for key in keys:
    if key in rules:
      path, transform = rules[key]
      value = as_numpy(state_dict[key])
      try:
        array = transform(value)
      except (ValueError, IndexError):
        array = None
      if array is None or array.shape != shapes[path].shape:
        misshapen.append(f'{key} {tuple(value.shape)} for {"/".join(path)} {shapes[path].shape}')
      else:
        flat[path] = np.asarray(array, shapes[path].dtype, order='C')
  defaults = dict(defaults)
  flat.update({path: np.full(shapes[path].shape, value, shapes[path].dtype) for path, value in defaults.items()})
  covered = {path for path, _ in rules.values()} | set(defaults)  # missing or misshapen sources are named above
  unmapped = ['/'.join(path) for path in shapes if path not in covered]
  problems = [_listed(kind, items) for kind, items in (('missing', missing), ('unexpected', unexpected),
                                                      ('of the wrong shape', misshapen),
                                                      ('lgm parameters without a source', unmapped)) if items]
  if problems:
    raise ConversionError(f'{source}: the state dict does not fit the lgm model: {"; ".join(problems)}.')
  return flax.traverse_util.unflatten_dict(flat)


# --- Stable Diffusion's autoencoder (diffusers AutoencoderKL) -----------------------------------------

# Attention names of diffusers before 0.14 (and of checkpoints saved then) -> today's.
_OLD_ATTENTION_NAMES = {'.query.': '.to_q.', '.key.': '.to_k.', '.value.': '.to_v.', '.proj_attn.': '.to_out.0.'}


def _renamed_attention(key: str) -> str:
  for old, new in _OLD_ATTENTION_NAMES.items():
    key = key.replace(old, new)
  return key


def _norm(rules: Rules, source: str, path: tuple[str, ...]) -> None:
  rules[f'{source}.weight'] = (path + ('scale',), same)
  rules[f'{source}.bias'] = (path + ('bias',), same)


def _layer(rules: Rules, source: str, path: tuple[str, ...], kernel: Transform) -> None:
  rules[f'{source}.weight'] = (path + ('kernel',), kernel)
  rules[f'{source}.bias'] = (path + ('bias',), same)


def _resnet(rules: Rules, source: str, path: tuple[str, ...]) -> None:
  _norm(rules, f'{source}.norm1', path + ('GroupNorm_0',))
  _layer(rules, f'{source}.conv1', path + ('Conv_0',), conv_kernel)
  _norm(rules, f'{source}.norm2', path + ('GroupNorm_1',))
  _layer(rules, f'{source}.conv2', path + ('Conv_1',), conv_kernel)
  _layer(rules, f'{source}.conv_shortcut', path + ('Dense_0',), dense_kernel)


def _attention(rules: Rules, source: str, path: tuple[str, ...]) -> None:
  _norm(rules, f'{source}.group_norm', path + ('GroupNorm_0',))
  for theirs, ours in (('to_q', 'self_query'), ('to_k', 'self_key'), ('to_v', 'self_value'),
                       ('to_out.0', 'self_out')):
    _layer(rules, f'{source}.{theirs}', path + (ours,), dense_kernel)


def autoencoder_kl_rules(levels: int, num_res_blocks: int) -> Rules:
  """diffusers AutoencoderKL names -> lgm VAE paths. flax numbers a module's children of one kind in call
  order: the encoder's ResBlock_k are the down blocks' resnets then the mid block's two; the decoder's are
  the mid block's two then the up blocks' (num_res_blocks + 1 each); Conv_0 is conv_in, Conv_1 conv_out."""
  rules: Rules = {}
  enc, dec = ('encoder',), ('decoder',)
  _layer(rules, 'encoder.conv_in', enc + ('Conv_0',), conv_kernel)
  for level in range(levels):
    for j in range(num_res_blocks):
      _resnet(rules, f'encoder.down_blocks.{level}.resnets.{j}', enc + (f'ResBlock_{level * num_res_blocks + j}',))
    _layer(rules, f'encoder.down_blocks.{level}.downsamplers.0.conv', enc + (f'Resample_{level}', 'Conv_0'),
           conv_kernel)
  mid = levels * num_res_blocks
  for part, first in (('encoder', mid), ('decoder', 0)):
    _resnet(rules, f'{part}.mid_block.resnets.0', (part, f'ResBlock_{first}'))
    _attention(rules, f'{part}.mid_block.attentions.0', (part, 'AttnBlock_0'))
    _resnet(rules, f'{part}.mid_block.resnets.1', (part, f'ResBlock_{first + 1}'))
    _norm(rules, f'{part}.conv_norm_out', (part, 'GroupNorm_0'))
    _layer(rules, f'{part}.conv_out', (part, 'Conv_1'), conv_kernel)
  _layer(rules, 'decoder.conv_in', dec + ('Conv_0',), conv_kernel)
  for i in range(levels):
    for j in range(num_res_blocks + 1):
      _resnet(rules, f'decoder.up_blocks.{i}.resnets.{j}', dec + (f'ResBlock_{2 + i * (num_res_blocks + 1) + j}',))
    _layer(rules, f'decoder.up_blocks.{i}.upsamplers.0.conv', dec + (f'Resample_{i}', 'Conv_0'), conv_kernel)
  _layer(rules, 'quant_conv', ('quant_conv',), conv_kernel)
  _layer(rules, 'post_quant_conv', ('post_quant_conv',), conv_kernel)
  return rules


def autoencoder_kl_config(state_dict: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """The lgm VAE config of an AutoencoderKL layout (space-to-depth 1, 32 norm groups, mid attention, quant
  convs) with the widths, depth and channels that the weights' shapes say (configs/models/sd_vae.py: SD's)."""
  config = ml_collections.ConfigDict(dict(name='vae', space_to_depth=1, mid_attention=True, norm_groups=32,
                                          quant_conv=True, dropout=0.0))
  widths = []
  while f'encoder.down_blocks.{len(widths)}.resnets.0.conv1.weight' in state_dict:
    widths.append(as_numpy(state_dict[f'encoder.down_blocks.{len(widths)}.resnets.0.conv1.weight']).shape[0])
  if not widths or 'post_quant_conv.weight' not in state_dict:
    raise ConversionError('not a diffusers AutoencoderKL state dict: no encoder.down_blocks.0.resnets.0.conv1.weight '
                          'or post_quant_conv.weight; pass a diffusers-format (not an LDM-format) checkpoint.')
  config.ch = widths[0]
  if any(w % widths[0] for w in widths):
    raise ConversionError(f'block widths {widths} are not multiples of the first; lgm cannot express them.')
  config.ch_mult = tuple(w // widths[0] for w in widths)
  config.num_res_blocks = sum(1 for key in state_dict
                              if key.startswith('encoder.down_blocks.0.resnets.') and key.endswith('.conv1.weight'))
  config.latent_channels = as_numpy(state_dict['post_quant_conv.weight']).shape[0]
  config.image_channels = as_numpy(state_dict['encoder.conv_in.weight']).shape[1]
  return config


def from_diffusers_autoencoder_kl(state_dict: Mapping[str, Any],
                                  config: ml_collections.ConfigDict | None = None) -> Converted:
  """A diffusers AutoencoderKL state dict -> lgm VAE params. `config` defaults to the one its shapes say
  (`autoencoder_kl_config`); give it to set what shapes cannot tell (norm_groups: 32 in every SD VAE).
  Encode with `VAE.posterior` (mean, log-variance), decode with `VAE.decode`: images in [-1, 1], NHWC;
  multiply latents by the checkpoint's scaling factor (0.18215 for SD 1.x) where a diffusion model expects it."""
  state_dict = {_renamed_attention(key): value for key, value in state_dict.items()}
  config = config or autoencoder_kl_config(state_dict)
  model = models.build_model(config)
  f = model.downsampling_factor
  rules = autoencoder_kl_rules(len(config.ch_mult), config.num_res_blocks)
  params = apply_rules(rules, state_dict, model, (jnp.zeros((1, 2 * f, 2 * f, config.image_channels)),),
                       'diffusers AutoencoderKL', defaults={('log_scale',): model.init_log_scale})
  return Converted(config, params)


# --- OpenAI CLIP's text tower -------------------------------------------------------------------------

def _split_heads(heads: int) -> Transform:
  """(out, in) -> (in, heads, out / heads): a flax attention q/k/v kernel; (out,) -> (heads, out / heads)."""
  def transform(w: np.ndarray) -> np.ndarray:
    return w.T.reshape(w.shape[1], heads, -1) if w.ndim == 2 else w.reshape(heads, -1)
  return transform


def _merge_heads(heads: int) -> Transform:
  """(out, in) -> (heads, in / heads, out): a flax attention output kernel."""
  return lambda w: w.T.reshape(heads, -1, w.shape[0])


def _unpacked_in_proj(state_dict: Mapping[str, Any]) -> dict[str, Any]:
  """PyTorch's packed attention input projection, in_proj_weight (3W, W) / in_proj_bias (3W,), as three keys
  'in_proj_weight[q]', '[k]', '[v]' (one source key per lgm parameter)."""
  out = {}
  for key, value in state_dict.items():
    if key.endswith(('.in_proj_weight', '.in_proj_bias')):
      for part, third in zip('qkv', np.split(as_numpy(value), 3, axis=0)):
        out[f'{key}[{part}]'] = third
    else:
      out[key] = value
  return out


def clip_text_rules(layers: int, heads: int, openai_names: bool) -> Rules:
  """transformers CLIPTextModel(WithProjection) names, or OpenAI's (with `_unpacked_in_proj`) -> lgm paths."""
  rules: Rules = {}
  prefix = '' if openai_names else 'text_model.'
  for i in range(layers):
    path = ('transformer', f'resblocks_{i}')
    if openai_names:
      src = f'transformer.resblocks.{i}'
      for part, ours in zip('qkv', ('query', 'key', 'value')):
        rules[f'{src}.attn.in_proj_weight[{part}]'] = (path + ('attn', ours, 'kernel'), _split_heads(heads))
        rules[f'{src}.attn.in_proj_bias[{part}]'] = (path + ('attn', ours, 'bias'), _split_heads(heads))
      names = dict(out='attn.out_proj', ln_1='ln_1', ln_2='ln_2', c_fc='mlp.c_fc', c_proj='mlp.c_proj')
    else:
      src = f'text_model.encoder.layers.{i}'
      for theirs, ours in (('q_proj', 'query'), ('k_proj', 'key'), ('v_proj', 'value')):
        rules[f'{src}.self_attn.{theirs}.weight'] = (path + ('attn', ours, 'kernel'), _split_heads(heads))
        rules[f'{src}.self_attn.{theirs}.bias'] = (path + ('attn', ours, 'bias'), _split_heads(heads))
      names = dict(out='self_attn.out_proj', ln_1='layer_norm1', ln_2='layer_norm2', c_fc='mlp.fc1',
                   c_proj='mlp.fc2')
    _layer(rules, f'{src}.{names["out"]}', path + ('attn', 'out'), _merge_heads(heads))
    _norm(rules, f'{src}.{names["ln_1"]}', path + ('ln_1',))
    _norm(rules, f'{src}.{names["ln_2"]}', path + ('ln_2',))
    _layer(rules, f'{src}.{names["c_fc"]}', path + ('mlp', 'c_fc'), dense_kernel)
    _layer(rules, f'{src}.{names["c_proj"]}', path + ('mlp', 'c_proj'), dense_kernel)
  if openai_names:
    rules['token_embedding.weight'] = (('token_embedding', 'embedding'), same)
    rules['positional_embedding'] = (('positional_embedding',), same)
    _norm(rules, 'ln_final', ('ln_final',))
    rules['text_projection'] = (('text_projection',), same)  # a (W, E) matrix, used as x @ P
  else:
    rules[f'{prefix}embeddings.token_embedding.weight'] = (('token_embedding', 'embedding'), same)
    rules[f'{prefix}embeddings.position_embedding.weight'] = (('positional_embedding',), same)
    _norm(rules, f'{prefix}final_layer_norm', ('ln_final',))
    rules['text_projection.weight'] = (('text_projection',), dense_kernel)  # a Linear without bias
  return rules


def _not_text_tower(key: str) -> bool:
  """Keys of a whole CLIP checkpoint that the text tower does not read: the image tower, the logit scale,
  transformers' position-id buffer."""
  return key.startswith(('visual.', 'vision_model.', 'visual_projection.', 'logit_scale', 'logit_bias')) or \
      key.endswith('position_ids') or key in ('attn_mask',)


def openai_clip_text_config(state_dict: Mapping[str, Any], heads: int | None = None) -> ml_collections.ConfigDict:
  """The lgm `TextTransformer` config of a CLIP text tower (OpenAI's token ids and LayerNorm eps, quick-GELU)
  with the sizes the weights' shapes say (configs/models/openai_clip_text.py: CLIP ViT-L/14's). The number
  of heads is not in the shapes: OpenAI's and OpenCLIP's text towers all have 64-dimensional heads, hence
  width / 64 unless `heads` says otherwise."""
  openai_names = 'token_embedding.weight' in state_dict
  prefix = '' if openai_names else 'text_model.'
  embedding = f'{prefix}token_embedding.weight' if openai_names else f'{prefix}embeddings.token_embedding.weight'
  if embedding not in state_dict:
    raise ConversionError('not a CLIP text tower: neither token_embedding.weight (OpenAI / open_clip) nor '
                          'text_model.embeddings.token_embedding.weight (transformers) is in the state dict.')
  config = ml_collections.ConfigDict(dict(name='text_transformer', activation='quick_gelu', layer_norm_eps=1e-5,
                                          end_id=49407, pad_id=None))
  config.vocab_size, config.width = as_numpy(state_dict[embedding]).shape
  positions = 'positional_embedding' if openai_names else f'{prefix}embeddings.position_embedding.weight'
  config.context_length = as_numpy(state_dict[positions]).shape[0]
  layer = 'transformer.resblocks.{}.' if openai_names else f'{prefix}encoder.layers.{{}}.'
  config.layers = 0
  while any(key.startswith(layer.format(config.layers)) for key in state_dict):
    config.layers += 1
  fc = (layer.format(0) + ('mlp.c_fc.weight' if openai_names else 'mlp.fc1.weight'))
  if fc in state_dict:
    config.mlp_ratio = as_numpy(state_dict[fc]).shape[0] / config.width
  projection = 'text_projection' if openai_names else 'text_projection.weight'
  if projection in state_dict:
    shape = as_numpy(state_dict[projection]).shape
    config.embed_dim = shape[1] if openai_names else shape[0]
  else:
    config.embed_dim = config.width
  config.heads = heads or config.width // 64
  return config


def from_openai_clip_text(state_dict: Mapping[str, Any], config: ml_collections.ConfigDict | None = None) -> Converted:
  """A CLIP text tower -> lgm `TextTransformer` params (model name 'text_transformer').

  Reads transformers' names (`CLIPTextModel`, `CLIPTextModelWithProjection`, `CLIPModel`) or OpenAI's
  (`clip.load(...).state_dict()`, open_clip). Outputs: 'tokens' = transformers' last_hidden_state,
  'pooled' = its pooler_output (the first end-of-text position), 'embedding' = text_embeds (the projection;
  for a `CLIPTextModel`, which has none, the identity). `config` defaults to the sizes the shapes say
  (`openai_clip_text_config`); give one for what they cannot (heads, activation: 'gelu_exact' for
  OpenCLIP's LAION-trained towers).
  """
  openai_names = 'token_embedding.weight' in state_dict
  config = config or openai_clip_text_config(state_dict)
  state_dict = _unpacked_in_proj(state_dict) if openai_names else dict(state_dict)
  projection = 'text_projection' if openai_names else 'text_projection.weight'
  if projection not in state_dict and config.embed_dim == config.width:
    state_dict[projection] = np.eye(config.width, dtype=np.float32)
  model = models.build_model(config)
  rules = clip_text_rules(config.layers, config.heads, openai_names)
  source = 'OpenAI CLIP text tower' if openai_names else 'transformers CLIP text model'
  params = apply_rules(rules, state_dict, model, (jnp.zeros((1, 1), jnp.int32),), source, ignored=_not_text_tower)
  return Converted(config, params)

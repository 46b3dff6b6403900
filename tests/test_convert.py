"""Converted models against the PyTorch reference implementations, built from their configs with random
weights: diffusers' AutoencoderKL, transformers' CLIPTextModelWithProjection, OpenAI's CLIP; and CLIP's
tokenizer against OpenAI's own, on the vocabulary file of the `clip` package (the test extra)."""

import importlib.util
import os
import random

import jax
import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL
from transformers import CLIPTextConfig, CLIPTextModelWithProjection

from configs.models import openai_clip_text, sd_vae
from lgm import clip_tokenizer, convert, export, exported, models
from lgm.models import autoencoder

TOLERANCE = 1e-4  # max abs difference, float32


def _perturbed(module: torch.nn.Module) -> torch.nn.Module:
  """Random weights everywhere: norms and biases too, which a fresh init leaves at 1 and 0."""
  torch.manual_seed(0)
  with torch.no_grad():
    for p in module.parameters():
      p.add_(0.05 * torch.randn_like(p))
  return module.eval()


def _nhwc(t: torch.Tensor) -> np.ndarray:
  return t.detach().numpy().transpose(0, 2, 3, 1)


def _autoencoder_kl(widths, layers_per_block, groups) -> AutoencoderKL:
  torch.manual_seed(0)
  return _perturbed(AutoencoderKL(block_out_channels=widths, layers_per_block=layers_per_block,
                                  down_block_types=('DownEncoderBlock2D',) * len(widths),
                                  up_block_types=('UpDecoderBlock2D',) * len(widths),
                                  latent_channels=4, norm_num_groups=groups))


def _check_autoencoder(ref: AutoencoderKL, config, size: int) -> None:
  converted_config, params = convert.from_diffusers_autoencoder_kl(ref.state_dict(), config)
  model = models.build_model(converted_config)
  rng = np.random.default_rng(0)
  x = rng.uniform(-1, 1, (2, size, size, 3)).astype(np.float32)
  with torch.no_grad():
    posterior = ref.encode(torch.from_numpy(x.transpose(0, 3, 1, 2))).latent_dist
    z = rng.normal(size=posterior.mean.shape).astype(np.float32)
    decoded = ref.decode(torch.from_numpy(z)).sample
  mean, logvar = model.apply({'params': params}, x, method=autoencoder.VAE.posterior)
  image = model.apply({'params': params}, z.transpose(0, 2, 3, 1), method=autoencoder.VAE.decode)
  np.testing.assert_allclose(mean, _nhwc(posterior.mean), rtol=0, atol=TOLERANCE)
  np.testing.assert_allclose(logvar, _nhwc(posterior.logvar), rtol=0, atol=TOLERANCE)
  np.testing.assert_allclose(image, _nhwc(decoded), rtol=0, atol=TOLERANCE)


def test_autoencoder_kl_small_matches_diffusers():
  ref = _autoencoder_kl((32, 64), layers_per_block=1, groups=8)
  config = convert.autoencoder_kl_config(ref.state_dict())
  config.norm_groups = 8  # the one setting the shapes cannot tell
  _check_autoencoder(ref, config, size=16)


def test_stable_diffusion_autoencoder_matches_diffusers():
  """SD's sizes (83.7M parameters); 32x32 images keep the test short: resolution adds no weights."""
  ref = _autoencoder_kl((128, 256, 512, 512), layers_per_block=2, groups=32)
  assert convert.autoencoder_kl_config(ref.state_dict()) == sd_vae.get_config()
  _check_autoencoder(ref, sd_vae.get_config(), size=32)


def test_autoencoder_kl_old_attention_names():
  """Checkpoints saved before diffusers 0.14 name the attention query/key/value/proj_attn."""
  state_dict = {k: v.numpy() for k, v in _autoencoder_kl((32, 64), 1, 8).state_dict().items()}
  old = {k.replace('.to_q.', '.query.').replace('.to_k.', '.key.').replace('.to_v.', '.value.')
         .replace('.to_out.0.', '.proj_attn.'): v for k, v in state_dict.items()}
  assert old != state_dict
  config = convert.autoencoder_kl_config(state_dict)
  config.norm_groups = 8
  new_params = convert.from_diffusers_autoencoder_kl(state_dict, config).params
  old_params = convert.from_diffusers_autoencoder_kl(old, config).params
  jax.tree.map(np.testing.assert_array_equal, new_params, old_params)


def test_bad_state_dict_lists_the_keys():
  state_dict = {k: v.numpy() for k, v in _autoencoder_kl((32, 64), 1, 8).state_dict().items()}
  config = convert.autoencoder_kl_config(state_dict)
  config.norm_groups = 8
  broken = dict(state_dict)
  del broken['decoder.conv_out.bias']
  broken['encoder.extra.weight'] = np.zeros(3)
  broken['quant_conv.weight'] = np.zeros((8, 8, 3, 3), np.float32)
  with pytest.raises(convert.ConversionError) as error:
    convert.from_diffusers_autoencoder_kl(broken, config)
  message = str(error.value)
  assert '\n' not in message
  assert '1 missing (decoder.conv_out.bias)' in message
  assert '1 unexpected (encoder.extra.weight)' in message
  assert '1 of the wrong shape (quant_conv.weight (8, 8, 3, 3) for quant_conv/kernel (1, 1, 8, 8))' in message
  decoder_only = {k: v for k, v in state_dict.items() if not k.startswith('decoder.')}
  with pytest.raises(convert.ConversionError, match=r'missing \(decoder\.\S+, decoder\.\S+, decoder\.\S+, '
                                                     r'decoder\.\S+ and \d+ more\)'):
    convert.from_diffusers_autoencoder_kl(decoder_only, config)


# --- CLIP's text tower --------------------------------------------------------------------------------

def _clip_ids(rows: int, length: int, pad: int) -> np.ndarray:
  """START, random ids, END, then padding; one row fills all 77 positions."""
  rng = np.random.default_rng(0)
  ids = np.full((rows, 77), pad, np.int64)
  for row, n in enumerate(np.linspace(1, 75, rows).astype(int)):
    ids[row, 0], ids[row, n + 1] = clip_tokenizer.START_ID, clip_tokenizer.END_ID
    ids[row, 1:n + 1] = rng.integers(0, clip_tokenizer.START_ID, n)
  return ids


@pytest.mark.parametrize('size', ['small', 'clip_l'])
def test_clip_text_matches_transformers(size):
  sizes = dict(small=dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                          projection_dim=32),
               clip_l=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                           projection_dim=768))[size]
  torch.manual_seed(0)
  ref = _perturbed(CLIPTextModelWithProjection(CLIPTextConfig(vocab_size=49408, **sizes)))
  state_dict = ref.state_dict()
  config = convert.openai_clip_text_config(state_dict, heads=sizes['num_attention_heads'])
  if size == 'clip_l':
    assert config == openai_clip_text.get_config()
  config, params = convert.from_openai_clip_text(state_dict, config)
  model = models.build_model(config)
  ids = _clip_ids(3, 77, pad=clip_tokenizer.END_ID)  # padded as transformers' tokenizer pads
  with torch.no_grad():
    out = ref(input_ids=torch.from_numpy(ids), output_hidden_states=False)
    pooled = ref.text_model(input_ids=torch.from_numpy(ids)).pooler_output
  ours = model.apply({'params': params}, ids.astype(np.int32))
  np.testing.assert_allclose(ours['tokens'], out.last_hidden_state.numpy(), rtol=0, atol=TOLERANCE)
  np.testing.assert_allclose(ours['pooled'], pooled.numpy(), rtol=0, atol=TOLERANCE)
  np.testing.assert_allclose(ours['embedding'], out.text_embeds.numpy(), rtol=0, atol=TOLERANCE)
  np.testing.assert_array_equal(ours['mask'], np.arange(77)[None] <= np.argmax(ids == clip_tokenizer.END_ID, 1)[:, None])


def _from_clip_package(module: str):
  """A module of OpenAI's `clip` package, loaded from its file: the package's __init__ needs torchvision."""
  folder = os.path.dirname(clip_tokenizer.vocabulary_path())
  spec = importlib.util.spec_from_file_location(f'openai_clip_{module}', os.path.join(folder, f'{module}.py'))
  loaded = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(loaded)
  return loaded


def test_clip_text_matches_openai_clip():
  """OpenAI's names (packed in_proj, text_projection as a matrix), against OpenAI's CLIP.encode_text."""
  torch.manual_seed(0)
  ref = _perturbed(_from_clip_package('model').CLIP(
      embed_dim=32, image_resolution=8, vision_layers=1, vision_width=64, vision_patch_size=4,
      context_length=77, vocab_size=49408, transformer_width=64, transformer_heads=4, transformer_layers=2))
  state_dict = ref.state_dict()
  config, params = convert.from_openai_clip_text(state_dict, convert.openai_clip_text_config(state_dict, heads=4))
  ids = _clip_ids(3, 77, pad=0)  # padded as clip.tokenize pads
  with torch.no_grad():
    expected = ref.encode_text(torch.from_numpy(ids)).numpy()
  ours = models.build_model(config).apply({'params': params}, ids.astype(np.int32))
  np.testing.assert_allclose(ours['embedding'], expected, rtol=0, atol=TOLERANCE)


# --- CLIP's tokenizer ---------------------------------------------------------------------------------

PROMPTS = [
    '', 'a photo of a cat', "It's the DOG's toy, isn't it?", "i'LL we'VE they'RE", 'café naïve résumé Ångström',
    'straße', 'İstanbul', 'ΣΊΣΥΦΟΣ', '東京タワーの夜景', '北京烤鸭', '한국어 문장', '👍🏽 thumbs 👨‍👩‍👧 family 🎉🎉',
    'Ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３', 'cafÃ© mojibake', '“curly” ‘quotes’', 'fish &amp; chips &lt;b&gt; &amp;lt;',
    'tab\tnew\nline  spaces', 'x²+y³=z¹', '1234567890', 'ﬁ ligature', 'e\u0301 combining', 'Ελληνικά',
    'русский текст', 'עברית', 'العربية', '<|startoftext|> inner <|endoftext|>', '...!!!???',
    '#hashtag @user $5.99 100%', 'C:\\path\\to\\file.txt', 'http://example.com/a?b=c', '\u200bzero\u200bwidth',
    '\x1c\x1d\x1e\x1f separators', '\u00a0nbsp\u3000ideographic space', 'ȺȾ', 'a' * 300,
]


def _prompts(n: int) -> list[str]:
  """PROMPTS, their combinations, random strings over their characters, random code points of all planes."""
  rng = random.Random(0)
  characters = ''.join(PROMPTS) + "!?.,;:'\"-_()[]{}<>/\\|@#$%^&*~` \t\n0123456789"
  texts = list(PROMPTS)
  while len(texts) < n:
    kind = rng.random()
    if kind < 0.05:  # over-long
      texts.append(' '.join(rng.choice(PROMPTS) for _ in range(rng.randint(8, 20))))
    elif kind < 0.4:
      texts.append(' '.join(rng.choice(PROMPTS) for _ in range(rng.randint(1, 4))))
    elif kind < 0.8:
      texts.append(''.join(rng.choice(characters) for _ in range(rng.randint(1, 60))))
    else:
      texts.append(''.join(chr(rng.randint(32, 0x2FFFF)) for _ in range(rng.randint(1, 20))))
  return texts


def test_clip_tokenizer_matches_openai():
  reference = _from_clip_package('simple_tokenizer').SimpleTokenizer(clip_tokenizer.vocabulary_path())
  tokenizer = clip_tokenizer.ClipTokenizer()
  texts = _prompts(1500)
  assert [tokenizer.encode(t) for t in texts] == [reference.encode(t) for t in texts]
  assert tokenizer.encode('a photo of a cat') == [320, 1125, 539, 320, 2368]  # CLIP's well-known ids
  # A batch, over-long prompts included: START, ids, END, padding, cut as clip.tokenize(truncate=True) cuts.
  long = [t for t in texts if len(reference.encode(t)) > 75]
  assert len(long) >= 20
  with pytest.warns(UserWarning, match=f'{len(long)} of {len(texts)} prompts were cut to 75 tokens'):
    batch = tokenizer(texts)
  for row, text in zip(batch, texts):
    ids = [clip_tokenizer.START_ID, *reference.encode(text), clip_tokenizer.END_ID]
    if len(ids) > 77:
      ids = ids[:77]
      ids[-1] = clip_tokenizer.END_ID
    assert row.tolist() == ids + [clip_tokenizer.END_ID] * (77 - len(ids))


def test_converted_weights_survive_the_safetensors_round_trip(tmp_path):
  """Converters return transposed views; safetensors writes buffers as they lie, so the writer must not."""
  state_dict = _autoencoder_kl((32, 64), 1, 8).state_dict()
  config = convert.autoencoder_kl_config(state_dict)
  config.norm_groups = 8
  converted = convert.from_diffusers_autoencoder_kl(state_dict, config)
  export.write_stage(str(tmp_path), converted.config, converted.params, step=0)
  abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), converted.params)
  loaded, step = exported.load_params(str(tmp_path), abstract)
  jax.tree.map(np.testing.assert_array_equal, loaded, converted.params)

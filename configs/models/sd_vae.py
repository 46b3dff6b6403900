"""Stable Diffusion's autoencoder (LDM's KL-f8: SD 1.x, 2.x and SDXL share the layout) as an lgm VAE.

    import safetensors.numpy
    from lgm import convert, models
    state_dict = safetensors.numpy.load_file('vae/diffusion_pytorch_model.safetensors')
    config, params = convert.from_diffusers_autoencoder_kl(state_dict, get_config())

f = 8: 256x256x3 images <-> 32x32x4 latents. lgm.convert reads the same sizes off any AutoencoderKL's
weights; this file states them for configs that build the model before any weights exist.
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  del arg
  return ml_collections.ConfigDict(dict(
      name='vae', image_channels=3, latent_channels=4, ch=128, ch_mult=(1, 2, 4, 4), num_res_blocks=2,
      space_to_depth=1, mid_attention=True, norm_groups=32, quant_conv=True, dropout=0.0))

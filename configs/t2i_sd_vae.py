"""Text-to-image on your captioned images in the latent space of a converted autoencoder (Stable
Diffusion's VAE, f = 8): `configs/t2i_sd_vae.py:VAE_DIR`.

python -m experiments.convert --checkpoint=sd-vae/diffusion_pytorch_model.safetensors --out=models/sd_vae
python -m experiments.train --config=configs/t2i_sd_vae.py:models/sd_vae --workdir=runs/t2i_sd_vae \
    --config.data.dataset=folder:/data/my_photos

configs/t2i_folder.py's job with its VAE stage taken frozen from VAE_DIR (`config.pretrained.vae`, a stage
written by experiments.convert) instead of trained: 256x256 images -> 32x32x4 latents, on which a DDPM++
U-Net with cross-attention at 16x16 and 8x8 learns the text-conditioned score (latents scaled to unit
variance as measured on the training images, not by SD's 0.18215). The text tower reads 32-pixel patches
(64 tokens). These sizes are lgm's choice for 256x256 data; this job was run here only at test scale
(tests/test_text_to_image.py), never with SD's weights (which lgm does not download).
"""

import ml_collections

from configs import t2i_folder


def get_config(arg: str | None = None):
  config = t2i_folder.get_config()
  config.pretrained = ml_collections.ConfigDict({'vae': arg or 'VAE_DIR'})
  config.data.image_size = 256
  config.clip.model.patch_size = 32
  m = config.score.model
  m.nf = 128
  m.ch_mult = (1, 2, 2, 2)
  m.num_res_blocks = 2
  m.attn_resolutions = (16, 8)
  config.score.train.batch_size = 32
  config.signature.bits = 48  # a longer message at 256x256 (Stable Signature's length)
  config.report.num_images = 200
  return config

"""Convert Stable Diffusion's autoencoder (a diffusers AutoencoderKL checkpoint) into an lgm model stage.

python -m experiments.convert --checkpoint=sd-vae/diffusion_pytorch_model.safetensors --out=models/sd_vae
python -m experiments.train --config=configs/t2i_sd_vae.py:models/sd_vae --workdir=runs/t2i_sd_vae \
    --config.data.dataset=folder:/data/my_photos

The stage (lgm's exported format: config.json + params.safetensors) loads with `lgm.stages.load_trained`
and serves a job as its frozen VAE (`config.pretrained.vae`). The weights are mapped by
`lgm.convert.from_diffusers_autoencoder_kl`: renames, transposes and reshapes only.
"""

from absl import flags

from experiments import common

_CHECKPOINT = flags.DEFINE_string('checkpoint', None, 'A diffusers AutoencoderKL .safetensors file.')
_OUT = flags.DEFINE_string('out', None, 'New (or empty) directory to write the stage to.')
_IMAGE_SIZE = flags.DEFINE_integer('image_size', 256, 'The image size the stage is configured for.')
flags.mark_flags_as_required(['checkpoint', 'out'])


def main(argv):
  del argv
  import safetensors.numpy

  from configs import vae_shapes
  from lgm import convert, export, inspection, models

  export.check_new(_OUT.value)
  converted = convert.from_diffusers_autoencoder_kl(safetensors.numpy.load_file(_CHECKPOINT.value))
  factor = models.build_model(converted.config).downsampling_factor
  config = vae_shapes.get_config()  # an autoencoding stage's settings; the network is the converted one
  config.model = converted.config
  config.data.channels = config.model.image_channels  # an autoencoding task gives the model its data's channels
  del config.model['image_channels']
  config.data.dataset = 'pretrained'  # trained elsewhere; a job sets its own data
  config.data.image_size = _IMAGE_SIZE.value
  config.train.num_steps = 0  # nothing trained here
  export.write_stage(_OUT.value, config, converted.params, step=0)
  count = inspection.parameter_count(converted.params)
  print(f'{_OUT.value}: {config.model.name}, f = {factor}, '
        f'{config.model.latent_channels} latent channels, {count:,} parameters')


def cli() -> None:
  """The `lgm-convert` command."""
  common.run(main)


if __name__ == '__main__':
  cli()

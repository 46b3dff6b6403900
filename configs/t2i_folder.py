"""Text-to-image on your own captioned images: `configs/t2i_folder.py:PATH`.

python -m experiments.train --config=configs/t2i_folder.py:/data/my_photos --workdir=runs/t2i_photos
python -m experiments.train --config=configs/t2i_folder.py:/data/my_photos --workdir=runs/t2i_photos64 \
    --config.data.image_size=64

PATH is a folder of images with captions (a metadata.jsonl with "file_name" and "text", or NAME.txt next to
NAME.png; lgm.data.folder), indexed once. The main job's VAE, text tower and latent score model, without the
attribute classifier: the report measures caption retrieval (is a generated image's nearest held-out caption
its own prompt), CLIP score and FID on CLIP features, and draws the first eight held-out captions. When the
images' parent folders are classes, add a label reader: --config.stage_order=vae,clip,classifier,score,signature
--config.report.classifier_stage=classifier. `data.image_size` (default 32) must be a multiple of 8 (the
VAE's 4x, the text tower's 8-pixel patches); the latents are image_size / 4 on a side.
"""

from configs import t2i_shapes


def get_config(arg: str | None = None):
  config = t2i_shapes.get_config()
  config.data.dataset = f'folder:{arg or "PATH"}'  # without an argument: "folder:PATH: no such directory"
  config.stage_order = ('vae', 'clip', 'score', 'signature')
  config.data.image_size = 32
  config.vae.data.random_flip = config.score.data.random_flip = False  # captions may say "left" and "right"
  config.clip.data.partial_captions = config.score.data.partial_captions = 0.0  # free text has no attributes
  config.clip.tokenizer.num_merges = 2000  # real captions use many more words than shapes'
  config.clip.tokenizer.context_length = 32
  config.report.classifier_stage = ''
  config.report.negative_images_per_value = 0
  config.report.prompts = ()  # the first held-out captions
  config.report.num_images = 500
  return config

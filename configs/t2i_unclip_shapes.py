"""Text to image the unCLIP way on `shapes`: a prior from the caption to a CLIP image embedding, a decoder from
that embedding to the image; measured side by side with the main job's text-guided model.

python -m experiments.train --config=configs/t2i_unclip_shapes.py:runs/t2i_shapes --workdir=runs/t2i_unclip
python -m experiments.train --config=configs/t2i_unclip_shapes.py --workdir=runs/t2i_unclip   # trains all six

With an argument (or --config.reuse=DIR), the vae, clip, classifier, score and signature stages are those of the finished
main job in DIR (configs/t2i_shapes.py; linked as DIR_unclip/<stage>, never retrained or written), and only
two stages train:
  prior    text -> image embedding: a diffusion prior over the CLIP stage's unit-norm image embedding,
           conditioned on the caption's text embedding and token features (lgm.tasks.prior)
  decoder  image embedding -> image: latent diffusion on the VAE's latents, the embedding projected into four
           context tokens and added to the time embedding (lgm.tasks.embedding_decoder)
Then DIR/report.md: both roads at each guidance of `report.guidances` (fidelity, caption retrieval, CLIP score,
FID on CLIP features, diversity, images/s), the two baselines of DALL-E 2 (the text embedding fed to the decoder
directly; the nearest training image's embedding), variations of held-out images, an interpolation strip.
Measured on a 2-core machine, 2026-12-05 (docs/results.md): prior 618 s + decoder 917 s; all four attributes right
in 0.895 of 1,000 images at decoder guidance 3 with the prior at guidance 1 (0.941 of 256 with the prior at 3);
variations keep all four in 0.914.
"""

import ml_collections

from configs import sde_base, t2i_shapes


def prior_config() -> ml_collections.ConfigDict:
  config = sde_base.sde_config('vpsde')
  config.task = 'prior'
  config.stages = ml_collections.ConfigDict({'clip': '../clip'})
  config.text = ml_collections.ConfigDict({'p_uncond': 0.1})
  config.data.partial_captions = 0.2  # as the score stage: bare words ('red') are prompts too
  config.prediction = 'data'  # the network predicts the clean embedding, as DALL-E 2's prior does
  config.loss.name = 'x0'
  config.loss.reduce_mean = True
  # Guidance 3 on the prior: all four 0.895 -> 0.941 on 256 held-out captions (decoder at 3; 2: 0.926), diversity
  # 0.140 -> 0.127 (benchmarks/unclip_guidance.py, docs/results.md).
  config.sampling_guidance = 3.0
  config.guidance_interval = (0.0, 1.0)

  s = config.sampling  # DPM-Solver++(3M) at 20 evaluations: the data prediction is what it steps with
  s.method = 'dpm_solver'
  s.num_steps = 19
  s.order = 3
  s.num_samples = 16

  config.model = ml_collections.ConfigDict({'name': 'prior_transformer', 'width': 128, 'layers': 4, 'heads': 4})

  config.train.batch_size = 128
  config.train.num_steps = 2000
  config.train.checkpoint_every = 1000
  config.train.ema_decay = 0.999
  config.optim.learning_rate = 1e-3
  config.optim.warmup_steps = 200
  config.optim.weight_decay = 0.0
  config.eval.every = 2000
  config.eval.num_examples = 1000
  config.eval.batch_size = 200
  config.eval.bpd_per_batch = 0
  return config


def decoder_config() -> ml_collections.ConfigDict:
  """The main job's score network and schedule, reading an image embedding instead of the text."""
  config = t2i_shapes.score_config()
  config.task = 'embedding_decoder'
  del config['text']
  del config.data['partial_captions']
  config.embedding = ml_collections.ConfigDict({'p_uncond': 0.1, 'num_tokens': 4, 'token_width': 128})
  config.sampling_guidance = 3.0
  return config


def get_config(arg: str | None = None):
  config = t2i_shapes.get_config()
  config.stage_order = (*config.stage_order, 'prior', 'decoder')
  config.reuse = arg or ''  # a finished main job whose stages below are used as they are
  config.reuse_stages = ('vae', 'clip', 'classifier', 'score', 'signature')
  config.prior = prior_config()
  config.decoder = decoder_config()
  config.report.routes = ('guided', 'prior')
  config.report.baselines = ('text_embedding', 'nearest_image')
  config.report.diversity_prompts = 16  # prompts whose 16 samples each give the diversity
  config.report.variations = 256  # variations of held-out images read by the classifier
  config.report.negative_images_per_value = 0  # measured by the main job
  return config

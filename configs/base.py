"""Keys every lgm training config has, with their defaults (docs/reference.md, "Config keys").

Experiment configs start from `base_config()` and override; adding a key here makes it valid on
the command line (`--config.KEY=VALUE`) for every experiment.
"""

import ml_collections


def base_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.task = ''

  config.data = data = ml_collections.ConfigDict()
  data.dataset = 'shapes'        # shapes | digits | folder:PATH | a prepared tfds catalog name
  data.image_size = 32
  data.channels = 3
  data.train_split = 'train'
  data.eval_split = 'test'
  data.random_flip = False       # off for shapes: a flip would swap "left" and "right" in captions
  data.num_threads = 2           # grain read-ahead threads
  data.data_dir = ''             # '' = the default cache ($LGM_DATA_DIR or ~/.cache/lgm)

  config.model = ml_collections.ConfigDict()  # constructor arguments of lgm.models.MODELS[name]
  config.loss = ml_collections.ConfigDict()   # the task's loss settings

  config.train = train = ml_collections.ConfigDict()
  train.batch_size = 32          # global, over all processes and devices
  train.num_steps = 1000
  train.log_every = 50
  train.checkpoint_every = 500
  train.keep_checkpoints = 3
  train.steps_per_call = 1       # optimizer steps per compiled call (lax.scan); divides the step counts above
  train.ema_decay = 0.999
  train.compute_dtype = 'float32'  # or bfloat16 (mixed precision: parameters stay float32)

  config.optim = optim = ml_collections.ConfigDict()
  optim.learning_rate = 1e-3
  optim.warmup_steps = 100
  optim.final_lr_fraction = 0.01
  optim.b1 = 0.9
  optim.b2 = 0.99
  optim.eps = 1e-8
  optim.weight_decay = 0.0
  optim.grad_clip = 1.0

  config.eval = ev = ml_collections.ConfigDict()
  ev.every = 500
  ev.batch_size = 200
  ev.num_examples = 2000
  ev.use_ema = True

  # Axis name -> size (axes laid out alphabetically, see lgm/train/mesh.py); -1 = the rest. The batch is split over all axes; 'fsdp' also splits parameters.
  config.mesh = ml_collections.ConfigDict({'data': -1, 'fsdp': 1})
  return config

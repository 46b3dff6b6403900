"""lgm against the PyTorch model its users would otherwise pick, side by side in one run on one machine.

python -m benchmarks.peer [--batch=8] [--steps=5] [--rounds=3] [--threads=2] [--torch_compile]
                          [--lgm_steps_per_call=1] [--out=FILE.jsonl]
python -m benchmarks.peer --model=t2i --t2i_workdir=runs/t2i_shapes --batch=64

`--model=ddpm`: Ho et al.'s DDPM U-Net for 32x32 images. lgm: `configs/score_sde/cifar10_ddpm.py`
(35,218,947 parameters). PyTorch: diffusers' `UNet2DModel` with the configuration of google/ddpm-cifar10-32
(the same blocks, channels, attention at 16x16 and mid-block; 35,746,307 parameters: diffusers' attention
has biases and its time embedding one more layer).
`--model=t2i`: the latent score model of a trained text-to-image job (its `score` stage config, on its VAE's
8x8x4 latents, cross-attending to its CLIP text tower's 24 token features of width 128). PyTorch: diffusers'
`UNet2DConditionModel` at the same widths (48, 96), one resnet per level, cross-attention at both levels and
in the middle, context width 128: 2.45M parameters against lgm's 1.89M (diffusers' transformer blocks add a
feed-forward layer), so each line also gives the step's FLOPs as each side counts them (lgm: XLA's count of
the program; PyTorch: `FlopCounterMode`). The same model with the feed-forward layers taken out of its
transformer blocks (`feed_forward: false`; 1.92M parameters, lgm's attention block plus diffusers' in/out
projections and LayerNorms) is the same-size comparison, timed beside it. Both train steps run the frozen
text tower on the batch's captions, as the job (and Stable Diffusion's training) does: lgm the job's, PyTorch
transformers' `CLIPTextModel` at its sizes (width 128, 3 layers, 4 heads, 24 tokens); the forward takes text
features computed beforehand.
Random weights (lgm's text tower: the job's), synthetic batches: speed only. lgm compiles with its
per-backend XLA options (`lgm.xla`), as its trainer and samplers do.

For each side and dtype (float32; bfloat16 mixed precision: lgm's `train.compute_dtype`, PyTorch's
`torch.autocast`), one line per measurement:
- `train_step`: noise-prediction loss, backward, Adam, gradient-norm clipping, EMA (lgm: its trainer's
  jitted step; PyTorch: fused Adam where the build has it, `torch._foreach_lerp_` for the EMA);
- `forward`: one network evaluation (the unit of sampling).
With `--lgm_steps_per_call=k` lgm's train step runs as its trainer runs it with `train.steps_per_call = k`
(k optimizer steps per compiled call, the same trajectory) and is timed per optimizer step.
The sides are timed in turn, not one after the other: after two warm-up calls of everything, `--rounds`
rounds in which each side runs `--steps` calls of each measurement, so that a drift of the machine's speed
(this benchmark's CPU machines drift by 10-20% within minutes) touches every side alike. Each line gives the
median over all rounds' calls, and each round's median; the last lines also give the ratios paired by round.
On a machine with a CUDA build of PyTorch its side runs on the GPU (TF32 allowed, `cudnn.benchmark`), as
lgm's runs on JAX's default device. PyTorch runs eager, with channels_last as well (its documented speed-up
for convolutions), and with `torch.compile` when asked (contiguous layout; minutes of compiling on CPU). The
last line (t2i: the last two, as shipped and same size) gives lgm's time over PyTorch's best for each
measurement (below 1: lgm is faster). PyTorch and diffusers come with the test extra (`.[test]`).
"""

import os
import statistics
import time
from typing import Callable, NamedTuple

import jax
from absl import app, flags

from benchmarks import report
from benchmarks import train_step as train_step_lib
from configs.score_sde import cifar10_ddpm
from lgm import xla

_BATCH = flags.DEFINE_integer('batch', 8, 'Batch size of every measurement.')
_STEPS = flags.DEFINE_integer('steps', 5, 'Timed calls per measurement and round.')
_ROUNDS = flags.DEFINE_integer('rounds', 3, 'Rounds of timing, each visiting every side in turn (medians over all).')
_THREADS = flags.DEFINE_integer('threads', 0, 'PyTorch CPU threads (0: one per core, as XLA uses).')
_COMPILE = flags.DEFINE_bool('torch_compile', False, 'Also measure PyTorch with torch.compile.')
_STEPS_PER_CALL = flags.DEFINE_integer(
    'lgm_steps_per_call', 1, "lgm's `train.steps_per_call`: its train step timed per optimizer step of k-step calls.")
_OUT = flags.DEFINE_string('out', None, 'Append the JSON lines to this file.')
_MODEL = flags.DEFINE_enum('model', 'ddpm', ['ddpm', 't2i'], 'Which pair of models to compare.')
_T2I_WORKDIR = flags.DEFINE_string('t2i_workdir', None, 'A trained text-to-image job (--model=t2i).')


class Contender(NamedTuple):
  """One side of the comparison: what it is (`record`), and per measurement one blocking call."""
  record: dict
  calls: dict[str, Callable[[], None]]  # 'train_step', 'forward'
  extra: dict[str, dict]  # per measurement, fields of its line besides the time (FLOPs)
  units: dict[str, int] = {}  # per measurement, how many of it one call makes (k optimizer steps); default 1


def interleaved_medians(contenders: list[Contender], steps: int, rounds: int, warmup: int = 2) -> list[dict]:
  """The median milliseconds of every contender's calls (`ms`), each timed `steps` times in each of `rounds`
  rounds that visit all contenders in turn (after `warmup` calls of each), and each round's median
  (`round_ms`)."""
  for contender in contenders:
    for call in contender.calls.values():
      for _ in range(warmup):
        call()
  times = [{what: [[] for _ in range(rounds)] for what in c.calls} for c in contenders]
  for r in range(rounds):
    for contender, timings in zip(contenders, times):
      for what, call in contender.calls.items():
        for _ in range(steps):
          start = time.perf_counter()
          call()
          timings[what][r].append(1e3 * (time.perf_counter() - start) / contender.units.get(what, 1))
  return [{**c.record, 'what': what, 'ms': statistics.median(sum(t[what], [])), 'timed_calls': steps * rounds,
           'round_ms': [statistics.median(calls) for calls in t[what]], **c.extra.get(what, {})}
          for c, t in zip(contenders, times) for what in c.calls]


# --- lgm -----------------------------------------------------------------------------------------------
def lgm_config(model: str, batch: int, dtype: str, steps_per_call: int = 1):
  if model == 'ddpm':
    config = cifar10_ddpm.get_config()
  else:
    from lgm.train import workdir as workdir_lib
    config = workdir_lib.read_config(os.path.join(_T2I_WORKDIR.value, 'score'))
  config.train.batch_size = batch
  config.train.compute_dtype = dtype
  config.train.steps_per_call = steps_per_call
  config.mesh = {'data': 1}  # one device, as PyTorch
  return config


def lgm_contender(model: str, batch: int, dtype: str, steps_per_call: int = 1) -> Contender:
  config = lgm_config(model, batch, dtype, steps_per_call)
  workdir = os.path.join(_T2I_WORKDIR.value, 'score') if model == 't2i' else None
  train = train_step_lib.prepare(config, workdir)
  task = train.task
  params = jax.jit(task.init)(jax.random.PRNGKey(0))
  x = jax.random.normal(jax.random.PRNGKey(1), (batch, *task.data_shape))
  t = jax.random.uniform(jax.random.PRNGKey(2), (batch,), minval=0.01, maxval=1.0)
  if model == 't2i':  # the network under the guidance: text features computed once per prompt batch
    condition = task.text_conditioning(params, task.tokenize(['a large red circle in the top left'] * batch))
    forward = xla.jit(lambda params, x, t: task.score_fn(params, **condition)(x, t))
  else:
    forward = xla.jit(lambda params, x, t: task.score_fn(params)(x, t))
  record = {'side': 'lgm', 'model': model, 'params': train.params, 'dtype': dtype, 'batch': batch,
            'steps_per_call': train.per_call}
  return Contender(record, {'train_step': train.advance,
                            'forward': lambda: jax.block_until_ready(forward(params, x, t))},
                   {'train_step': {'gflop': train.step_flops / 1e9}}, {'train_step': train.per_call})


# --- PyTorch / diffusers -------------------------------------------------------------------------------
def torch_ddpm():
  from diffusers import UNet2DModel
  return UNet2DModel(  # google/ddpm-cifar10-32
      sample_size=32, in_channels=3, out_channels=3, layers_per_block=2, block_out_channels=(128, 256, 256, 256),
      down_block_types=('DownBlock2D', 'AttnDownBlock2D', 'DownBlock2D', 'DownBlock2D'),
      up_block_types=('UpBlock2D', 'UpBlock2D', 'AttnUpBlock2D', 'UpBlock2D'), norm_num_groups=32,
      dropout=0.1, flip_sin_to_cos=False, freq_shift=1, downsample_padding=0, attention_head_dim=None)


def torch_t2i(feed_forward: bool = True):
  from diffusers import UNet2DConditionModel
  model = UNet2DConditionModel(
      sample_size=8, in_channels=4, out_channels=4, block_out_channels=(48, 96), layers_per_block=1,
      down_block_types=('CrossAttnDownBlock2D', 'CrossAttnDownBlock2D'),
      up_block_types=('CrossAttnUpBlock2D', 'CrossAttnUpBlock2D'), mid_block_type='UNetMidBlock2DCrossAttn',
      cross_attention_dim=128, attention_head_dim=4, norm_num_groups=16)
  if not feed_forward:
    without_feed_forward(model)
  return model


def without_feed_forward(model) -> None:
  """Takes the feed-forward sublayer (LayerNorm, GEGLU MLP) out of every diffusers transformer block: its
  output becomes a zero that the block adds to its residual stream."""
  import torch

  class Zero(torch.nn.Module):
    def forward(self, x, *args, **kwargs):
      return x.new_zeros(())

  blocks = [m for m in model.modules() if hasattr(m, 'ff') and hasattr(m, 'norm3')]
  if not blocks:
    raise ValueError('no transformer block with a feed-forward layer found: has diffusers renamed them?')
  for block in blocks:
    block.norm3, block.ff = torch.nn.Identity(), Zero()


def torch_text_encoder(text):
  """transformers' CLIPTextModel at the sizes of the job's frozen text tower (`text`, lgm's CLIP module)."""
  from transformers import CLIPTextConfig, CLIPTextModel
  return CLIPTextModel(CLIPTextConfig(
      vocab_size=text.vocab_size, hidden_size=text.text_width, num_hidden_layers=text.text_layers,
      num_attention_heads=text.text_heads, intermediate_size=int(text.mlp_ratio * text.text_width),
      max_position_embeddings=text.context_length, hidden_act='gelu_pytorch_tanh')).eval().requires_grad_(False)


def lgm_text_tower():
  """The t2i job's frozen text tower: lgm's CLIP module, whose sizes the PyTorch side copies."""
  from lgm import stages
  config = lgm_config('t2i', 1, 'float32')
  return stages.build_task(config, os.path.join(_T2I_WORKDIR.value, 'score')).clip.task.model


def torch_device():
  """CUDA where PyTorch has it (TF32 matmuls and convolutions allowed, cuDNN's autotuner on: PyTorch's
  documented fast settings), else the CPU."""
  import torch
  if not torch.cuda.is_available():
    return torch.device('cpu')
  torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
  torch.backends.cudnn.benchmark = True
  return torch.device('cuda')


def synchronize() -> None:
  """Wait for PyTorch's queued GPU work (timings end when the work does, as lgm's `block_until_ready`)."""
  import torch
  if torch.cuda.is_available():
    torch.cuda.synchronize()


def torch_contender(model_name: str, batch: int, dtype: str, channels_last: bool, compiled: bool,
                    text=None, feed_forward: bool = True) -> Contender:
  import torch
  torch.manual_seed(0)
  device = torch_device()
  model = torch_ddpm() if model_name == 'ddpm' else torch_t2i(feed_forward)
  memory_format = torch.channels_last if channels_last else torch.contiguous_format
  model = model.to(device, memory_format=memory_format)
  params = [p for p in model.parameters() if p.requires_grad]
  try:
    optimizer = torch.optim.Adam(params, lr=2e-4, fused=True)
    fused = True
  except (RuntimeError, TypeError):
    optimizer, fused = torch.optim.Adam(params, lr=2e-4, foreach=True), False
  ema = [p.detach().clone() for p in params]
  alphas = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, device=device), 0)
  shape = (batch, 3, 32, 32) if model_name == 'ddpm' else (batch, 4, 8, 8)
  x0 = torch.randn(*shape, device=device).to(memory_format=memory_format)
  bf16 = dtype == 'bfloat16'
  network = torch.compile(model) if compiled else model
  encoder = None
  if model_name == 't2i':
    encoder = torch_text_encoder(text).to(device)
    encoder = torch.compile(encoder) if compiled else encoder
    tokens = torch.randint(0, text.vocab_size, (batch, text.context_length), device=device)

  def conditioning():  # the frozen text tower, run in every train step as lgm's (and Stable Diffusion's)
    if encoder is None:
      return {}
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
      return {'encoder_hidden_states': encoder(tokens).last_hidden_state}

  context = conditioning()  # sampling: text features computed once per prompt batch, as lgm's

  def train_step():
    t = torch.randint(0, 1000, (batch,), device=device)
    noise = torch.randn_like(x0)
    a = alphas[t].view(-1, 1, 1, 1)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
      prediction = network(a.sqrt() * x0 + (1 - a).sqrt() * noise, t, **conditioning()).sample
    loss = torch.nn.functional.mse_loss(prediction.float(), noise)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    with torch.no_grad():
      torch._foreach_lerp_(ema, params, 1e-4)
    synchronize()

  t_eval = torch.randint(0, 1000, (batch,), device=device)

  def forward():
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
      network(x0, t_eval, **context)
    synchronize()

  count = sum(p.numel() for p in params)
  gflop = None
  if not compiled:  # the counter sees eager operators
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as flops:
      train_step()
    gflop = flops.get_total_flops() / 1e9
  record = {'side': 'pytorch', 'model': type(model).__name__, 'params': count, 'dtype': dtype, 'batch': batch,
            'channels_last': channels_last, 'torch_compile': compiled, 'fused_adam': fused,
            **({} if model_name == 'ddpm' else {'feed_forward': feed_forward}),
            'torch': torch.__version__, 'torch_device': device.type, 'threads': torch.get_num_threads()}
  return Contender(record, {'train_step': train_step, 'forward': forward}, {'train_step': {'gflop': gflop}})


def main(argv):
  del argv
  import torch
  if _THREADS.value:
    torch.set_num_threads(_THREADS.value)
  batch = _BATCH.value
  device = jax.devices()[0].device_kind
  records = []
  text = lgm_text_tower() if _MODEL.value == 't2i' else None
  variants = [(False, False), (True, False)] + ([(False, True)] if _COMPILE.value else [])
  sizes = (True, False) if _MODEL.value == 't2i' else (True,)  # t2i: diffusers' blocks, and lgm's size
  for dtype in ('float32', 'bfloat16'):  # one dtype's contenders at a time (memory); timed in turn
    contenders = [lgm_contender(_MODEL.value, batch, dtype, _STEPS_PER_CALL.value)] + [  # (minutes of compiling)
        torch_contender(_MODEL.value, batch, dtype, channels_last, compiled, text, feed_forward)
        for feed_forward in sizes for channels_last, compiled in variants
        if feed_forward or not channels_last]  # the same-size model: eager and compiled
    peak = train_step_lib.matmul_peak_flops(dtype=dtype)
    for record in interleaved_medians(contenders, _STEPS.value, _ROUNDS.value):
      if record['side'] == 'lgm' and record['what'] == 'train_step':
        record['fraction_of_matmul_peak'] = record['gflop'] * 1e9 / (record['ms'] / 1e3) / peak
      records.append(record)
      report({**record, 'device': device}, _OUT.value)
    del contenders
  for feed_forward in sizes:
    peers = [r for r in records if r['side'] == 'lgm' or r.get('feed_forward', True) == feed_forward]
    report({'what': 'lgm_time_over_pytorch_best', 'model': _MODEL.value, 'device': device, 'batch': batch,
            'lgm_steps_per_call': _STEPS_PER_CALL.value,
            **({} if _MODEL.value == 'ddpm' else {'pytorch_feed_forward': feed_forward}), **time_ratios(peers)},
           _OUT.value)


def time_ratios(records: list[dict]) -> dict[str, float]:
  """lgm's time over PyTorch's best, per measurement and dtype, and best of each across dtypes; and per
  measurement and dtype the paired form (`_paired`): for each PyTorch variant the median over rounds of lgm's
  round median over the variant's in the same round (a drift of the machine between rounds cancels), the
  highest of these over the variants (that of PyTorch's best variant)."""
  def select(side, what, dtype=None):
    return [r for r in records if r['side'] == side and r['what'] == what and dtype in (None, r['dtype'])]

  def best(side, what, dtype=None):
    return min(r['ms'] for r in select(side, what, dtype))

  ratios = {}
  for what in ('train_step', 'forward'):
    for dtype in ('float32', 'bfloat16'):
      ratios[f'{what}_{dtype}'] = best('lgm', what, dtype) / best('pytorch', what, dtype)
      (lgm,) = select('lgm', what, dtype)
      ratios[f'{what}_{dtype}_paired'] = max(
          statistics.median(a / b for a, b in zip(lgm['round_ms'], peer['round_ms'], strict=True))
          for peer in select('pytorch', what, dtype))
  ratios.update({f'{what}_best_of_each': best('lgm', what) / best('pytorch', what)
                 for what in ('train_step', 'forward')})
  return ratios


if __name__ == '__main__':
  app.run(main)

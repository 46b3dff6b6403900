"""The text-image space: contrastive losses against numpy, the same numbers on any mesh, a text tower
that ignores padding and batch-mates, evaluation metrics against brute force, and a tiny run end to end."""

import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import PIL.Image
import pytest

from configs import clip_shapes
from conftest import set_keys
from lgm import evaluation, losses, stages
from lgm import tokenizer as tokenizer_lib
from lgm.data import shapes
from lgm.train import mesh as mesh_lib
from lgm.train import metrics as metrics_lib
from lgm.train import trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_clip_config(**overrides):
  """clip_shapes shrunk to seconds: 8x8 digits, width 16, one layer per tower."""
  config = clip_shapes.get_config()
  config.data.dataset = 'digits'
  config.data.image_size = 8
  config.data.channels = 1
  config.tokenizer.num_merges = 64
  model = config.model
  model.embed_dim = model.text_width = model.image_width = 16
  model.text_layers = model.image_layers = 1
  model.text_heads = model.image_heads = 2
  model.patch_size = 2
  config.train.batch_size = 32
  config.train.num_steps = 150
  config.train.log_every = 10
  config.train.checkpoint_every = 75
  config.optim.learning_rate = 3e-3
  config.optim.warmup_steps = 5
  config.eval.every = 150
  config.eval.batch_size = 40
  config.eval.num_examples = 200
  return set_keys(config, overrides)


@pytest.fixture(scope='module')
def tiny_task():
  return stages.build_task(tiny_clip_config())


def _normalised(rng, shape):
  x = rng.standard_normal(shape)
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _log_softmax(x, axis):
  x = x - x.max(axis=axis, keepdims=True)
  return x - np.log(np.exp(x).sum(axis=axis, keepdims=True))


def test_contrastive_losses_match_numpy():
  rng = np.random.default_rng(0)
  image, text = _normalised(rng, (12, 5)), _normalised(rng, (12, 5))
  scale, bias = 7.5, -2.0
  logits = scale * image @ text.T + bias
  expected_clip = -0.5 * (np.diag(_log_softmax(logits, 1)).mean() + np.diag(_log_softmax(logits, 0)).mean())
  got = losses.clip_loss(jnp.asarray(image), jnp.asarray(text), scale, bias)
  np.testing.assert_allclose(got, expected_clip, rtol=1e-5)
  labels = 2 * np.eye(12) - 1
  expected_sig = np.log1p(np.exp(-labels * logits)).sum() / 12
  got = losses.siglip_loss(jnp.asarray(image), jnp.asarray(text), scale, bias)
  np.testing.assert_allclose(got, expected_sig, rtol=1e-5)


def _batch(task, num, seed=0):
  rng = np.random.default_rng(seed)
  captions = [f'digit {d}' if i % 2 else f'a handwritten {d}' for i, d in enumerate(rng.integers(0, 10, num))]
  return {'image': rng.uniform(-1, 1, (num, *task.image_shape)).astype(np.float32),
          'tokens': task.tokenize(captions)}


def test_loss_and_gradients_are_the_same_on_eight_devices_and_one(tiny_task):
  """The global batch is every example's negatives, whatever the mesh (batch split 8 ways vs 1 device)."""
  task = tiny_task
  params = task.init(jax.random.PRNGKey(1))
  batch = _batch(task, 32)

  def loss_and_grad(devices):
    mesh = mesh_lib.make_mesh({'data': -1}, devices)
    on_mesh = jax.device_put(batch, mesh_lib.batch_sharding(mesh))
    replicated = jax.device_put(params, mesh_lib.replicated(mesh))
    fn = jax.jit(jax.value_and_grad(lambda p, b: task.loss(p, b, jax.random.PRNGKey(0))[0]))
    return jax.device_get(fn(replicated, on_mesh))

  (loss8, grad8), (loss1, grad1) = loss_and_grad(jax.devices()), loss_and_grad(jax.devices()[:1])
  assert len(jax.devices()) == 8
  np.testing.assert_allclose(loss8, loss1, rtol=1e-5)
  flat8, flat1 = (np.concatenate([g.ravel() for g in jax.tree.leaves(g)]) for g in (grad8, grad1))
  assert np.linalg.norm(flat8 - flat1) <= 1e-5 * np.linalg.norm(flat1)
  for g8, g1 in zip(jax.tree.leaves(grad8), jax.tree.leaves(grad1)):  # leaf by leaf (some, e.g. key biases,
    floor = 1e-3 * np.linalg.norm(flat1)                              # have an exactly zero true gradient)
    assert np.linalg.norm(g8 - g1) <= 1e-5 * max(np.linalg.norm(g1), floor)
  # ...and the loss really is over all 32: the mean of four 8-example losses is smaller.
  chunks = [task.loss(params, {k: v[i:i + 8] for k, v in batch.items()}, None)[0] for i in range(0, 32, 8)]
  assert np.mean(chunks) < loss1


def test_text_tower_ignores_padding_and_batch_mates(tiny_task):
  task = tiny_task
  params = task.init(jax.random.PRNGKey(2))
  prompt = 'a handwritten digit seven'
  others = ['digit one', 'the number nine, written by hand', '', 'x' * 40]
  alone = task.tokenize(prompt)
  length = int(np.argmax(alone[0] == tokenizer_lib.END_ID)) + 1
  reference = np.asarray(task.encode_tokens(params, alone)['embedding'][0])
  short = alone[:, :length]  # no padding at all
  in_batch = task.tokenize(others[:2] + [prompt] + others[2:])  # (warns: the last one is truncated)
  garbage = alone.copy()
  garbage[0, length:] = np.random.default_rng(0).integers(3, task.tokenizer.vocab_size, alone.shape[1] - length)
  for tokens, row in ((short, 0), (in_batch, 2), (garbage, 0)):
    out = task.encode_tokens(params, tokens)
    np.testing.assert_allclose(out['embedding'][row], reference, atol=2e-6)
    np.testing.assert_array_equal(out['mask'][row, :length], True)
  assert not np.asarray(task.encode_tokens(params, alone)['mask'][0, length:]).any()


def test_shapes_prompt_table_names_each_class():
  table = evaluation.prompt_table('shapes')
  assert len(table.prompts) == 8 * 5 * 3 * 5 and all(len(p) == len(shapes.TEMPLATES) for p in table.prompts)
  for k in range(0, len(table.prompts), 37):
    for prompt in table.prompts[k]:
      assert shapes.parse_caption(prompt) == {name: int(values[k]) for name, values in table.values.items()}


def test_zero_shot_accuracy_and_recall_match_brute_force():
  rng = np.random.default_rng(3)
  table = evaluation.PromptTable(values={'a': np.array([0, 0, 1, 1, 2, 2]), 'b': np.array([0, 1, 0, 1, 0, 1])},
                                 fields={'a': 'a', 'b': 'b'}, prompts=[['p']] * 6)
  images, classes = _normalised(rng, (50, 4)), _normalised(rng, (6, 4))
  labels = {'a': rng.integers(0, 3, 50), 'b': rng.integers(0, 2, 50)}
  got = evaluation.zero_shot_accuracy(images, classes, 3.0, table, labels)
  right = {'a': [], 'b': []}
  for i in range(50):
    p = np.exp(3.0 * classes @ images[i])
    p /= p.sum()
    for name, num in (('a', 3), ('b', 2)):
      mass = [sum(p[k] for k in range(6) if table.values[name][k] == v) for v in range(num)]
      right[name].append(int(np.argmax(mass)) == labels[name][i])
  assert got['a'] == np.mean(right['a']) and got['b'] == np.mean(right['b'])
  assert got['all'] == np.mean(np.array(right['a']) & np.array(right['b']))

  texts = _normalised(rng, (50, 4))
  attributes = np.stack([labels['a'], labels['b']], axis=1)
  metrics = evaluation.retrieval_metrics(images, texts, attributes)
  for k in (1, 5):
    hits, exact = [], []
    for i in range(50):
      top = np.argsort([-(texts[i] @ images[j]) for j in range(50)], kind='stable')[:k]
      hits.append(any((attributes[j] == attributes[i]).all() for j in top))
      exact.append(i in top)
    assert metrics[f'retrieval_t2i_r{k}'] == np.mean(hits)
    assert metrics[f'retrieval_t2i_r{k}_exact'] == np.mean(exact)
  assert metrics['retrieval_t2i_r1'] >= metrics['retrieval_t2i_r1_exact']


@pytest.fixture(scope='module')
def clip_workdir(tmp_path_factory):
  """A tiny CLIP trained on digits for 150 steps, shared by the tests that read a finished run."""
  workdir = str(tmp_path_factory.mktemp('clip'))
  final = trainer.train_and_evaluate(tiny_clip_config(), workdir)
  return workdir, final


def test_tiny_run_learns_digits_and_keeps_its_tokenizer(clip_workdir):
  workdir, final = clip_workdir
  assert final['eval/zeroshot_digit'] > 0.4  # chance is 0.1
  assert final['eval/retrieval_t2i_r5'] > 0.8
  assert {'eval/retrieval_i2t_r1', 'eval/retrieval_t2i_r1_exact', 'eval/loss'} <= set(final)
  saved = tokenizer_lib.load(os.path.join(workdir, 'tokenizer.json'))
  assert isinstance(saved, tokenizer_lib.BPETokenizer)
  trained = stages.load_trained(workdir)
  prompt = 'the number 7, written by hand ✍'
  np.testing.assert_array_equal(trained.task.tokenize(prompt), saved(prompt))
  # The saved tokenizer wins over the config: a resumed run reads the same ids.
  other = tiny_clip_config(**{'tokenizer.num_merges': 3})
  assert stages.build_task(other, workdir).tokenizer.to_dict() == saved.to_dict()
  logged = [r for r in metrics_lib.read_metrics(workdir) if 'train/loss' in r]
  assert logged[-1]['train/loss'] < logged[0]['train/loss']


def test_evaluate_cli_reproduces_the_final_evaluation(clip_workdir, tmp_path):
  source, final = clip_workdir
  workdir = str(tmp_path / 'copy')
  shutil.copytree(source, workdir)
  result = subprocess.run([sys.executable, '-m', 'experiments.evaluate', f'--workdir={workdir}'], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-2000:]
  appended = metrics_lib.read_metrics(workdir)[-1]
  for key in ('eval/zeroshot_digit', 'eval/retrieval_t2i_r1', 'eval/retrieval_i2t_r5', 'eval/loss'):
    np.testing.assert_allclose(appended[key], final[key], rtol=1e-5, err_msg=key)


def test_explore_draws_images_and_captions_in_one_space(clip_workdir):
  from experiments import explore
  workdir, _ = clip_workdir
  paths = explore.explore(workdir, max_examples=100, queries=['digit 3', 'a handwritten eight ✍'])
  assert set(paths) == {'text_image_map', 'text_queries'}
  for path in paths.values():
    with PIL.Image.open(path) as image:
      assert min(image.size) > 100


def test_bad_clip_settings_are_clear_errors():
  with pytest.raises(ValueError, match="unknown tokenizer 'words'; valid"):
    stages.build_task(tiny_clip_config(**{'tokenizer.name': 'words'}))
  with pytest.raises(ValueError, match='siglip loss needs a learnable bias'):
    stages.build_task(tiny_clip_config(**{'loss.name': 'siglip'}))
  with pytest.raises(ValueError, match="unknown contrastive loss 'nce'"):
    stages.build_task(tiny_clip_config(**{'loss.name': 'nce'}))

"""pytest on CPU JAX with 8 simulated devices (set before JAX is imported anywhere)."""

import atexit
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time

# The tests compile hundreds of tiny programs and run each briefly: LLVM's optimisation passes are most of
# the time, and without them (backend optimisation level 0) the suite takes about half as long. XLA's older
# elemental emitters then compile a tiny train step in ~0.7 of the time of its fusion emitters (the suite:
# ~0.9 of its CPU time). Runs outside the tests (and every measured figure) compile at XLA's defaults.
COMPILE_FLAGS = '--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false'  # also for launch.sh
os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=8 '
                           + COMPILE_FLAGS).strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# Identical programs (the same tiny run in-process and in subprocesses) compile once per pytest run: one cache
# for pytest and its workers, removed when pytest ends.
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  os.environ['JAX_COMPILATION_CACHE_DIR'] = tempfile.mkdtemp(prefix='lgm_jax_cache_')
  atexit.register(shutil.rmtree, os.environ['JAX_COMPILATION_CACHE_DIR'], ignore_errors=True)
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.5')

import pytest  # noqa: E402


def make_tiny_config(**overrides):
  """vae_digits shrunk to seconds: 8x8 grey digits, an 8-channel network, 40 steps of batch 16."""
  from configs import vae_digits
  config = vae_digits.get_config()
  config.data.image_size = 8
  config.model.ch = 8
  config.model.latent_channels = 2
  config.loss.kl_weight = 1.0  # the exact ELBO, whatever the shipped default
  config.train.batch_size = 16
  config.train.num_steps = 40
  config.train.log_every = 1
  config.train.checkpoint_every = 10
  config.train.ema_decay = 0.9
  config.optim.learning_rate = 3e-3
  config.optim.warmup_steps = 5
  config.eval.every = 20
  config.eval.batch_size = 16
  config.eval.num_examples = 64
  return set_keys(config, overrides)


def set_keys(config, overrides: dict):
  """Sets dotted keys ('train.num_steps': 5) of `config` in place; returns it."""
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split('.')
    for parent in parents:
      node = node[parent]
    node[leaf] = value
  return config


def tiny_overrides(config) -> list[str]:
  """The --config.KEY=VALUE flags that turn configs/vae_digits.py into `config` (for subprocess runs)."""
  from configs import vae_digits
  from lgm.train import workdir
  flat_new = workdir.flatten(config.to_dict())
  flat_old = workdir.flatten(vae_digits.get_config().to_dict())
  return [f'--config.{k}={v}' for k, v in flat_new.items() if flat_old.get(k) != v]


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def train_cli(workdir, config, extra=()) -> subprocess.Popen:
  """`python -m experiments.train` of `config` (a tiny vae_digits) into `workdir`, in a subprocess."""
  cmd = [sys.executable, '-m', 'experiments.train', '--config=configs/vae_digits.py', f'--workdir={workdir}',
         *tiny_overrides(config), *extra]
  return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for(condition, proc: subprocess.Popen, poll: float = 0.002, timeout: float = 300) -> bool:
  """Polls `condition()` until it holds (True) or `proc` ends or time runs out (False)."""
  deadline = time.time() + timeout
  while time.time() < deadline and proc.poll() is None:
    if condition():
      return True
    time.sleep(poll)
  return False


def checkpoint_steps(workdir) -> list[int]:
  directory = os.path.join(workdir, 'checkpoints')
  return sorted(int(d) for d in os.listdir(directory) if d.isdigit()) if os.path.isdir(directory) else []


def start_and_wait_for_a_checkpoint(workdir, config) -> subprocess.Popen:
  """experiments.train in a subprocess, returned once its first checkpoint is finalised (or it ended)."""
  proc = train_cli(workdir, config)
  wait_for(lambda: checkpoint_steps(workdir), proc, poll=0.02)
  return proc


def tree_digest(workdir) -> dict[str, str]:
  """Relative path -> SHA-256 of every file under `workdir`."""
  out = {}
  for root, _, names in os.walk(workdir):
    for name in names:
      path = os.path.join(root, name)
      with open(path, 'rb') as f:
        out[os.path.relpath(path, workdir)] = hashlib.sha256(f.read()).hexdigest()
  return out


@pytest.fixture(scope='session')
def trained_workdir(tmp_path_factory):
  """One tiny VAE trained on all 8 devices, shared by the tests that only read a finished run."""
  from lgm.train import trainer
  workdir = str(tmp_path_factory.mktemp('trained'))
  trainer.train_and_evaluate(make_tiny_config(), workdir)
  return workdir


# The slowest files first: `--dist loadfile` hands files to the two workers in collection order, so the
# long ones start at once and the short ones fill in around them (durations: pytest's --durations list).
SLOWEST_FIRST = ('test_text_to_image.py', 'test_multiprocess.py', 'test_faults.py', 'test_trainer.py',
                 'test_object_store.py', 'test_score_task.py', 'test_tasks.py', 'test_experiments.py', 'test_clip.py')


def pytest_collection_modifyitems(items):
  rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: test order within a file is kept

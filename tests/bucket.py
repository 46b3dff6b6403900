"""A stand-in for Google Cloud Storage in tests: gs://NAME/KEY is stored as ROOT/NAME/KEY on the local disk.

`installed(root)` routes, in this process and for a block, every way lgm reaches a gs:// path to that root:
- etils.epath (all of lgm's own reads and writes) through fsspec's `gcs` protocol, normally gcsfs;
- the tensorstore kvstores orbax opens for gs:// paths (tensorstore's own GCS driver speaks HTTP to Google)
  to tensorstore's file driver under the root;
- orbax's bucket lookup (a google-cloud-storage call asking whether the bucket has a hierarchical namespace)
  to a flat bucket.
Everything above those three calls is the real gs:// code path: orbax commits a step with commit_success.txt
instead of renaming it, lgm's lock is a lease, its small files are uploaded whole.

`python tests/bucket.py --config=... --workdir=gs://...` is `experiments.train` with the stand-in installed,
its root read from LGM_TEST_BUCKET_ROOT (for runs in a subprocess that a test can kill).
"""

import contextlib
import os
import sys
import types
from typing import Iterator

from fsspec.implementations.local import LocalFileSystem

_PREFIXES = ('gs://', 'gcs://')


@contextlib.contextmanager
def installed(root: str) -> Iterator[None]:
  """The stand-in, in this process, for the block."""
  import fsspec
  from etils.epath import backend
  from orbax.checkpoint._src.path import gcs_utils
  from orbax.checkpoint._src.serialization import tensorstore_utils as ts_utils

  root = os.path.abspath(root)

  class LocalBucket(LocalFileSystem):
    protocol = ('gcs', 'gs')

    def __init__(self, *args, **storage_options):
      storage_options.pop('finalize_on_close', None)  # a gcsfs option
      super().__init__(auto_mkdir=True)  # a bucket has no directories to create first

    @classmethod
    def _strip_protocol(cls, path):
      path = str(path)
      for prefix in _PREFIXES:
        if path.startswith(prefix):
          return os.path.join(root, path[len(prefix):]).rstrip('/') or root
      return super()._strip_protocol(path)  # a path fsspec already mapped into the root

    def glob(self, path, **kwargs):  # as gcsfs: 'bucket/key', to which etils.epath prepends gs://
      return [os.path.relpath(p, root) for p in super().glob(path, **kwargs)]

  normalize, get_bucket = ts_utils._normalize_path, gcs_utils.get_bucket  # _normalize_path: the first step of
                                                                          # orbax's two kvstore spec builders
  def to_local(path: str) -> str:
    path = str(path)
    return normalize(os.path.join(root, path[len('gs://'):]) if path.startswith('gs://') else path)

  for protocol in LocalBucket.protocol:
    fsspec.register_implementation(protocol, LocalBucket, clobber=True)
  backend.fsspec_backend._get_filesystem.cache_clear()  # etils.epath keeps one file system per protocol
  ts_utils._normalize_path = to_local
  gcs_utils.get_bucket = lambda name: types.SimpleNamespace(name=name, hierarchical_namespace_enabled=False)
  try:
    yield
  finally:
    ts_utils._normalize_path, gcs_utils.get_bucket = normalize, get_bucket
    for protocol in LocalBucket.protocol:
      sys.modules['fsspec.registry']._registry.pop(protocol, None)  # (fsspec.registry is a read-only view)
    backend.fsspec_backend._get_filesystem.cache_clear()


if __name__ == '__main__':
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  from experiments import train
  sys.argv[0] = 'experiments/train.py'
  with installed(os.environ['LGM_TEST_BUCKET_ROOT']):
    train.cli()

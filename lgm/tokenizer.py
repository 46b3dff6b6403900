"""Tokenizers for the CLIP-style text tower that need no download.

A pretrained tokenizer (CLIP's BPE, SentencePiece) means fetching a vocabulary file, and its 49k tokens are
mostly wasted on captions that use ~100 distinct words. Instead:

- `ByteTokenizer`: the UTF-8 bytes are the tokens; nothing to learn or store.
- `BPETokenizer`: byte-level BPE whose merges are learned from the dataset's own captions (`train_bpe`) and
  saved as JSON in the work directory. The base alphabet is the 256 bytes, so any Unicode string tokenizes
  and merges only shorten sequences.

Both share the ids PAD = 0, START = 1, END = 2, byte b -> 3 + b, and BPE merge k -> 259 + k, and the same
`__call__`, which packs a batch of prompts into a `(batch, context_length)` int32 array
`START, tokens..., END, PAD...` whose END token is always present (for end-of-text pooling).
"""

from __future__ import annotations

import collections
import json
import re
import warnings
from typing import Any, Iterable, Sequence

import numpy as np

from lgm import files

PAD_ID, START_ID, END_ID = 0, 1, 2
NUM_BASE_TOKENS = 259  # the three special tokens and the 256 bytes
_BYTE_OFFSET = 3
_MAX_CACHED_WORDS = 1 << 16

# GPT-2-like words: a leading space attaches to the next run of letters / punctuation, digits stand alone,
# and trailing whitespace stays apart from the next word. Every character is whitespace (\s), underscore or
# a non-word character (punctuation), a decimal digit (\d) or else a letter, so the alternatives cover any
# string: the pieces always concatenate back to the text.
_WORD_RE = re.compile(r' ?[^\s\d\W_]+| ?\d| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+')


def pretokenize(text: str) -> list[str]:
  """Splits `text` into the words that BPE merges never cross; `''.join(pretokenize(t)) == t`."""
  return _WORD_RE.findall(text)


def _byte_ids(text: str) -> list[int]:
  return [_BYTE_OFFSET + b for b in text.encode('utf-8')]


class Tokenizer:
  """Shared ids, decoding, batching and serialisation; subclasses define `encode` and `kind`."""
  kind: str

  def __init__(self, context_length: int = 77):
    if context_length < 2:
      raise ValueError(f'context_length must be >= 2 to hold START and END, got {context_length}.')
    self.context_length = context_length
    # Bytes of every id; the special tokens decode to nothing.
    self._token_bytes: list[bytes] = [b''] * _BYTE_OFFSET + [bytes([b]) for b in range(256)]

  @property
  def vocab_size(self) -> int:
    return len(self._token_bytes)

  def encode(self, text: str) -> list[int]:
    """Token ids of `text`, without START/END/padding and without truncation."""
    raise NotImplementedError

  def decode(self, ids: Iterable[int]) -> str:
    """Text of `ids`, skipping PAD/START/END; invalid UTF-8 becomes U+FFFD."""
    pieces = []
    for i in ids:
      if not 0 <= i < self.vocab_size:
        raise ValueError(f'token id {i} is outside the vocabulary [0, {self.vocab_size}).')
      pieces.append(self._token_bytes[i])
    return b''.join(pieces).decode('utf-8', errors='replace')

  def __call__(self, texts: str | Sequence[str]) -> np.ndarray:
    """int32 `(batch, context_length)`: START, tokens, END, PAD...; over-long prompts keep their first
    `context_length - 2` tokens (one UserWarning per call)."""
    if isinstance(texts, str):
      texts = [texts]
    max_tokens = self.context_length - 2
    out = np.full((len(texts), self.context_length), PAD_ID, np.int32)
    num_truncated = 0
    for row, text in enumerate(texts):
      ids = self.encode(text)
      if len(ids) > max_tokens:
        num_truncated += 1
        ids = ids[:max_tokens]
      out[row, :len(ids) + 2] = [START_ID, *ids, END_ID]
    if num_truncated:
      warnings.warn(f'{num_truncated} of {len(texts)} prompts were truncated to {max_tokens} tokens '
                    f'(context_length={self.context_length}).', UserWarning, stacklevel=2)
    return out

  def to_dict(self) -> dict[str, Any]:
    """JSON-able description; `load`/`from_dict` rebuild the tokenizer from it."""
    return {'kind': self.kind, 'context_length': self.context_length}

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> Tokenizer:
    """Inverse of `to_dict`."""
    if d.get('kind') != cls.kind:
      raise ValueError(f"{cls.__name__}.from_dict expects kind '{cls.kind}', got {d.get('kind')!r}.")
    return cls(**{k: v for k, v in d.items() if k != 'kind'})

  def save(self, path: str) -> None:
    """Writes `to_dict()` as JSON to `path` (whole: other processes may be reading it)."""
    files.write_json(path, self.to_dict())

  @classmethod
  def load(cls, path: str) -> Tokenizer:
    """Reads a tokenizer written by `save`."""
    with open(path) as f:
      return cls.from_dict(json.load(f))


class ByteTokenizer(Tokenizer):
  """UTF-8 bytes as tokens: vocab of 259, one token per byte."""
  kind = 'byte'

  def encode(self, text: str) -> list[int]:
    return _byte_ids(text)


class BPETokenizer(Tokenizer):
  """Byte-level BPE: `merges[k] = (left_id, right_id)` creates id 259 + k; lower k is applied first."""
  kind = 'bpe'

  def __init__(self, merges: Sequence[tuple[int, int]], context_length: int = 77):
    super().__init__(context_length)
    self.merges = [(int(a), int(b)) for a, b in merges]
    self._ranks: dict[tuple[int, int], int] = {}
    for k, (a, b) in enumerate(self.merges):
      new_id = NUM_BASE_TOKENS + k
      if not (_BYTE_OFFSET <= a < new_id and _BYTE_OFFSET <= b < new_id):
        raise ValueError(f'merge {k} = {(a, b)} must join existing non-special tokens (ids 3..{new_id - 1}).')
      if (a, b) in self._ranks:
        raise ValueError(f'merge {k} = {(a, b)} repeats merge {self._ranks[a, b]}.')
      self._ranks[a, b] = k
      self._token_bytes.append(self._token_bytes[a] + self._token_bytes[b])
    self._cache: dict[str, list[int]] = {}

  def _encode_word(self, word: str) -> list[int]:
    ids = self._cache.get(word)
    if ids is not None:
      return ids
    ids = _byte_ids(word)
    while len(ids) > 1:
      rank = min(self._ranks.get(pair, len(self.merges)) for pair in zip(ids, ids[1:]))
      if rank == len(self.merges):
        break
      ids = _merge_pair(ids, self.merges[rank], NUM_BASE_TOKENS + rank)
    if len(self._cache) >= _MAX_CACHED_WORDS:
      self._cache.clear()
    self._cache[word] = ids
    return ids

  def encode(self, text: str) -> list[int]:
    return [i for word in pretokenize(text) for i in self._encode_word(word)]

  def to_dict(self) -> dict[str, Any]:
    return {**super().to_dict(), 'merges': [list(m) for m in self.merges]}


def _merge_pair(ids: Sequence[int], pair: tuple[int, int], new_id: int) -> list[int]:
  """Replaces the non-overlapping occurrences of `pair` in `ids`, left to right, by `new_id`."""
  out, i = [], 0
  while i < len(ids):
    if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
      out.append(new_id)
      i += 2
    else:
      out.append(ids[i])
      i += 1
  return out


def train_bpe(texts: Iterable[str], num_merges: int, context_length: int = 77,
              min_count: int = 2) -> BPETokenizer:
  """Learns up to `num_merges` merges from `texts`, greedily joining the most frequent adjacent pair (ties:
  the smallest pair) until its count falls below `min_count`. Deterministic given the texts' multiset."""
  if num_merges < 0:
    raise ValueError(f'num_merges must be >= 0, got {num_merges}.')
  word_counts = collections.Counter(word for text in texts for word in pretokenize(text))
  # The distinct words (few, for captions), as byte ids, with their counts.
  words = [(_byte_ids(w), c) for w, c in word_counts.items()]
  merges: list[tuple[int, int]] = []
  while len(merges) < num_merges:
    pair_counts: collections.Counter[tuple[int, int]] = collections.Counter()
    for ids, count in words:
      for pair in zip(ids, ids[1:]):
        pair_counts[pair] += count
    if not pair_counts:
      break
    pair, count = min(pair_counts.items(), key=lambda kv: (-kv[1], kv[0]))
    if count < min_count:
      break
    new_id = NUM_BASE_TOKENS + len(merges)
    merges.append(pair)
    words = [(_merge_pair(ids, pair, new_id), c) for ids, c in words]
  return BPETokenizer(merges, context_length=context_length)


_KINDS: dict[str, type[Tokenizer]] = {cls.kind: cls for cls in (ByteTokenizer, BPETokenizer)}


def load(path: str) -> ByteTokenizer | BPETokenizer:
  """Reads a tokenizer written by `save`, of the class named by its 'kind' field."""
  with open(path) as f:
    d = json.load(f)
  if d.get('kind') not in _KINDS:
    raise ValueError(f"unknown tokenizer kind {d.get('kind')!r} in {path}; expected one of {sorted(_KINDS)}.")
  return _KINDS[d['kind']].from_dict(d)

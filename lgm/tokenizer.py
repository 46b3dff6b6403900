"""Tokenizers for the CLIP-style text tower that need no download.

A pretrained tokenizer (CLIP's BPE, SentencePiece) means fetching a vocabulary file, and its 49k tokens are
mostly wasted on captions that use ~100 distinct words. Instead:

- `ByteTokenizer`: the UTF-8 bytes are the tokens; nothing to learn or store.
- `BPETokenizer`: byte-level BPE whose merges are learned from the dataset's own captions (`train_bpe`, with
  the Hugging Face `tokenizers` trainer) and saved in the work directory as a `tokenizers` file, which that
  library loads to give the same ids. The base alphabet is the 256 bytes, so any Unicode string tokenizes
  and merges only shorten sequences.

Both share the ids PAD = 0, START = 1, END = 2, byte b -> 3 + b, and BPE merge k -> 259 + k, and the same
`__call__`, which packs a batch of prompts into a `(batch, context_length)` int32 array
`START, tokens..., END, PAD...` whose END token is always present (for end-of-text pooling).
"""

from __future__ import annotations

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


def pack(id_lists: Sequence[list[int]], context_length: int, start: int, end: int,
         pad: int) -> tuple[np.ndarray, int]:
  """int32 `(len(id_lists), context_length)` rows `start, ids, end, pad...`, an over-long list cut to its
  first `context_length - 2` ids; and how many were cut."""
  out = np.full((len(id_lists), context_length), pad, np.int32)
  num_cut = 0
  for row, ids in enumerate(id_lists):
    if len(ids) > context_length - 2:
      num_cut += 1
      ids = ids[:context_length - 2]
    out[row, :len(ids) + 2] = [start, *ids, end]
  return out, num_cut


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
    out, num_truncated = pack([self.encode(text) for text in texts], self.context_length, START_ID, END_ID, PAD_ID)
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

  def save(self, path: str) -> None:
    """Writes the Hugging Face `tokenizers` file of this tokenizer (`tokenizers.Tokenizer.from_file(path)`
    gives the same ids, START/END, padding and truncation as `__call__`); `load` reads it back."""
    files.write_text(path, _hf_tokenizer(self).to_str(pretty=True))

  @classmethod
  def from_hf_json(cls, d: dict[str, Any]) -> BPETokenizer:
    """Inverse of `save`: the merges and context length of a Hugging Face tokenizer file written by lgm."""
    return cls(_merge_ids(d['model']['merges']), context_length=d['padding']['strategy']['Fixed'])


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
  """Learns up to `num_merges` merges from `texts` with the Hugging Face `tokenizers` BPE trainer (Rust: 100,000
  captions in about a second), greedily joining the most frequent adjacent pair inside a word until its count
  falls below `min_count`. Deterministic given the texts' multiset."""
  if num_merges < 0:
    raise ValueError(f'num_merges must be >= 0, got {num_merges}.')
  from tokenizers import Tokenizer as HFTokenizer, models, pre_tokenizers, trainers
  hf = HFTokenizer(models.BPE())
  hf.pre_tokenizer = _hf_pre_tokenizer()
  trainer = trainers.BpeTrainer(vocab_size=NUM_BASE_TOKENS + num_merges, min_frequency=min_count,
                                special_tokens=list(SPECIAL_TOKENS),
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                show_progress=False)
  hf.train_from_iterator(texts, trainer)
  return BPETokenizer(_merge_ids(json.loads(hf.to_str())['model']['merges']), context_length=context_length)


# --- the Hugging Face `tokenizers` file format -----------------------------------------------------------
# Byte-level BPE there writes each byte as a printable character (GPT-2's table): the printable Latin-1 bytes
# stand for themselves, the other 68 are shifted to 256, 257, ... in byte order.
_PRINTABLE = [*range(ord('!'), ord('~') + 1), *range(ord('¡'), ord('¬') + 1), *range(ord('®'), ord('ÿ') + 1)]
_BYTE_CHARS = {b: chr(b) for b in _PRINTABLE}
_BYTE_CHARS.update({b: chr(256 + n) for n, b in enumerate(b for b in range(256) if b not in _BYTE_CHARS)})
SPECIAL_TOKENS = ('<pad>', '<start>', '<end>')  # ids PAD_ID, START_ID, END_ID


def _hf_pre_tokenizer():
  """lgm's word split (`pretokenize`), then bytes as characters: the same words as `pretokenize`."""
  from tokenizers import Regex, pre_tokenizers
  return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(_WORD_RE.pattern), behavior='isolated'),
                                  pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])


def _merge_ids(merges: Sequence[Sequence[str] | str]) -> list[tuple[int, int]]:
  """Merges written as token strings (['a', 'b'] or 'a b') -> lgm id pairs (merge k creates id 259 + k)."""
  ids = {char: _BYTE_OFFSET + b for b, char in _BYTE_CHARS.items()}
  out = []
  for k, merge in enumerate(merges):
    a, b = merge.split(' ') if isinstance(merge, str) else merge
    out.append((ids[a], ids[b]))
    ids[a + b] = NUM_BASE_TOKENS + k
  return out


def _hf_tokenizer(tokenizer: BPETokenizer):
  """The same tokenizer as a Hugging Face `tokenizers.Tokenizer`: equal ids, START/END, padding, truncation."""
  from tokenizers import Tokenizer as HFTokenizer, decoders, models, processors
  strings = list(SPECIAL_TOKENS) + [_BYTE_CHARS[b] for b in range(256)]
  merges = []
  for a, b in tokenizer.merges:
    merges.append((strings[a], strings[b]))
    strings.append(strings[a] + strings[b])
  hf = HFTokenizer(models.BPE(vocab={s: i for i, s in enumerate(strings)}, merges=merges))
  hf.add_special_tokens(list(SPECIAL_TOKENS))
  hf.pre_tokenizer = _hf_pre_tokenizer()
  hf.decoder = decoders.ByteLevel()
  hf.post_processor = processors.TemplateProcessing(
      single=f'{SPECIAL_TOKENS[START_ID]} $A {SPECIAL_TOKENS[END_ID]}',
      special_tokens=[(SPECIAL_TOKENS[START_ID], START_ID), (SPECIAL_TOKENS[END_ID], END_ID)])
  hf.enable_truncation(max_length=tokenizer.context_length)
  hf.enable_padding(length=tokenizer.context_length, pad_id=PAD_ID, pad_token=SPECIAL_TOKENS[PAD_ID])
  return hf


_KINDS: dict[str, type[Tokenizer]] = {cls.kind: cls for cls in (ByteTokenizer, BPETokenizer)}


def load(path: str) -> ByteTokenizer | BPETokenizer:
  """Reads a tokenizer written by `save` (a BPE tokenizer's `tokenizers` file, or lgm's JSON with 'kind')."""
  d = files.read_json(path)
  if d.get('model', {}).get('type') == 'BPE':
    return BPETokenizer.from_hf_json(d)
  if d.get('kind') not in _KINDS:
    raise ValueError(f"unknown tokenizer kind {d.get('kind')!r} in {path}; expected one of {sorted(_KINDS)}.")
  return _KINDS[d['kind']].from_dict(d)

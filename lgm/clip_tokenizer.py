"""OpenAI CLIP's tokenizer, for text towers converted from CLIP checkpoints (`lgm.convert`).

CLIP cleans a prompt (ftfy, HTML entities unescaped twice, runs of whitespace -> one space, lower case),
splits it into words with one regular expression (`WORD_PATTERN`: contractions, runs of letters, single
digits, runs of other symbols), writes each word's UTF-8 bytes as printable characters (GPT-2's byte
table) with '</w>' on the last, and merges byte pairs by rank. Its 49,408 ids are the 256 byte characters,
the same with '</w>', the 48,894 merges in rank order, then <|startoftext|> (49406) and <|endoftext|>
(49407). The merges are OpenAI's `bpe_simple_vocab_16e6.txt.gz`, which ships inside the `clip`
(openai-clip) and `open_clip` packages: `vocabulary_path()` finds it there, or pass its path.

lgm's own tokenizers (`lgm.tokenizer`) learn a small vocabulary from a dataset's captions; this one exists
to feed CLIP's text towers the ids they were trained on. Words are split with the `regex` module, as by
OpenAI's tokenizer (its Unicode tables decide what a letter is; the `tokenizers` library's regular
expressions have others), and merged by the Hugging Face `tokenizers` library.
"""

from __future__ import annotations

import gzip
import html
import importlib.util
import os
import warnings
from typing import Sequence

import ftfy
import numpy as np
import regex
import tokenizers

from lgm import tokenizer as tokenizer_lib

START, END = '<|startoftext|>', '<|endoftext|>'
START_ID, END_ID = 49406, 49407
NUM_MERGES = 49152 - 256 - 2  # the merges CLIP uses of the file's 262,144
VOCABULARY_FILE = 'bpe_simple_vocab_16e6.txt.gz'
WORD_PATTERN = r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"


def byte_characters() -> list[str]:
  """The printable character standing for each byte, in the order of CLIP's vocabulary: the bytes that are
  printable Latin-1 characters stand for themselves and come first, the others get U+0100 onwards."""
  printable = [*range(ord('!'), ord('~') + 1), *range(ord('¡'), ord('¬') + 1), *range(ord('®'), ord('ÿ') + 1)]
  others = sorted(set(range(256)) - set(printable))
  return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(others))]


def vocabulary_path() -> str:
  """OpenAI's vocabulary file from an installed `clip` or `open_clip` package (found, not imported)."""
  for package in ('open_clip', 'clip'):
    spec = importlib.util.find_spec(package)
    for folder in (spec.submodule_search_locations or []) if spec else []:
      path = os.path.join(folder, VOCABULARY_FILE)
      if os.path.exists(path):
        return path
  raise FileNotFoundError(f'{VOCABULARY_FILE} not found: install a package that ships it (`pip install '
                          'openai-clip`, or open_clip_torch) or pass its path to ClipTokenizer.')


def clean(text: str) -> str:
  """CLIP's text cleaning: ftfy, HTML entities, whitespace, lower case."""
  text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
  return regex.sub(r'\s+', ' ', text).strip().lower()


class ClipTokenizer:
  """`encode(text)` -> CLIP ids; `tokenizer(texts)` -> int32 (batch, context_length) [START, ids, END, pad...],
  an over-long prompt cut to its first context_length - 2 ids (as `clip.tokenize(..., truncate=True)`).

  pad_id: 49407 (END) is how transformers' CLIP tokenizer, and so Stable Diffusion, pads; OpenAI's
  `clip.tokenize` pads with 0. A text tower's pooled and projected outputs do not depend on it; its
  per-token features after the end token do.
  """

  def __init__(self, path: str | None = None, context_length: int = 77, pad_id: int = END_ID):
    path = path or vocabulary_path()
    with gzip.open(path, 'rt', encoding='utf-8') as f:
      lines = f.read().split('\n')[1:NUM_MERGES + 1]  # the first line is a version header
    merges = [tuple(line.split()) for line in lines]
    if len(merges) != NUM_MERGES or any(len(m) != 2 for m in merges):
      raise ValueError(f'{path}: not a CLIP BPE vocabulary ({NUM_MERGES} merges of two symbols expected).')
    characters = byte_characters()
    vocab = characters + [c + '</w>' for c in characters] + [a + b for a, b in merges] + [START, END]
    self.context_length = context_length
    self.pad_id = pad_id
    self.vocab_size = len(vocab)
    model = tokenizers.models.BPE({token: i for i, token in enumerate(vocab)}, merges,
                                  end_of_word_suffix='</w>', fuse_unk=False)
    self._bpe = tokenizers.Tokenizer(model)
    self._bpe.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    self._bpe.add_special_tokens([START, END])
    self._words = regex.compile(WORD_PATTERN, regex.IGNORECASE)

  def _encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    words = [self._words.findall(clean(text)) or [''] for text in texts]
    return [e.ids for e in self._bpe.encode_batch(words, is_pretokenized=True, add_special_tokens=False)]

  def encode(self, text: str) -> list[int]:
    """CLIP ids of `text`, without START/END and without truncation."""
    return self._encode_batch([text])[0]

  def __call__(self, texts: str | Sequence[str]) -> np.ndarray:
    if isinstance(texts, str):
      texts = [texts]
    out, cut = tokenizer_lib.pack(self._encode_batch(texts), self.context_length, START_ID, END_ID, self.pad_id)
    if cut:
      warnings.warn(f'{cut} of {len(texts)} prompts were cut to {self.context_length - 2} tokens.',
                    UserWarning, stacklevel=2)
    return out

"""Byte and BPE tokenizers: lossless round trips on any Unicode, packing/truncation for the text tower, and
JSON save/load."""

import json
import warnings

import numpy as np
import pytest

from lgm import tokenizer as tok

COLORS = ['red', 'green', 'blue', 'yellow']
SHAPES = ['circle', 'square', 'triangle']
PLACES = ['in the top left', 'in the top right', 'in the bottom left', 'in the bottom right', 'in the center']
CAPTIONS = ([f'a small {c} {s} {p}' for c in COLORS for s in SHAPES for p in PLACES] +
            [f'there is a large {c} {s} {p}' for c in COLORS for s in SHAPES for p in PLACES])
ROUND_TRIP = [
    'a small red circle in the top left',
    'A  LARGE purple hexagon, 3 of them!',  # unseen words, digits, punctuation, double space
    'café straße 日本語 🙂👍🏽',
    '',
    ' ',
    '\t\n  \r\n',
    'trailing spaces   ',
    '  leading and\ttabs\nnew lines\n\n',
    'snake_case_name __dunder__ e\u0301',  # underscores and a combining accent
]


@pytest.fixture(scope='module')
def bpe():
  return tok.train_bpe(CAPTIONS, num_merges=200, context_length=32)


@pytest.fixture(params=['byte', 'bpe'])
def any_tokenizer(request, bpe):
  return tok.ByteTokenizer(context_length=32) if request.param == 'byte' else bpe


@pytest.mark.parametrize('text', ROUND_TRIP + CAPTIONS[:3])
def test_pretokenize_covers_text(text):
  assert ''.join(tok.pretokenize(text)) == text


def test_pretokenize_covers_every_code_point():
  text = ''.join(chr(i) for i in range(0x30000) if not 0xD800 <= i < 0xE000)
  assert ''.join(tok.pretokenize(text)) == text


def test_pretokenize_words():
  assert tok.pretokenize('a red  circle, 42!\n') == ['a', ' red', ' ', ' circle', ',', ' 4', '2', '!', '\n']


@pytest.mark.parametrize('text', ROUND_TRIP)
def test_round_trip(any_tokenizer, text):
  ids = any_tokenizer.encode(text)
  assert all(3 <= i < any_tokenizer.vocab_size for i in ids)  # no special ids
  assert any_tokenizer.decode(ids) == text


def test_byte_ids():
  t = tok.ByteTokenizer()
  assert t.vocab_size == tok.NUM_BASE_TOKENS == 259
  assert t.encode('a\x00é') == [3 + ord('a'), 3, 3 + 0xC3, 3 + 0xA9]
  assert t.decode([tok.START_ID, 3 + 0xC3, tok.END_ID, tok.PAD_ID]) == '\ufffd'  # half a character


def test_bpe_shortens_captions(bpe):
  assert 0 < len(bpe.merges) <= 200 and bpe.vocab_size == tok.NUM_BASE_TOKENS + len(bpe.merges)
  num_bytes = np.mean([len(c.encode('utf-8')) for c in CAPTIONS])
  num_tokens = np.mean([len(bpe.encode(c)) for c in CAPTIONS])
  assert num_tokens * 3 <= num_bytes
  assert max(bpe.encode(' circle')) >= tok.NUM_BASE_TOKENS  # a frequent word is merged


def test_bpe_merge_ids_and_min_count(bpe):
  for k, (a, b) in enumerate(bpe.merges):
    assert 3 <= a < tok.NUM_BASE_TOKENS + k and 3 <= b < tok.NUM_BASE_TOKENS + k
  # Only pairs seen at least min_count times are merged: the words are 'ab', ' ab' and ' cd', so only (a, b)
  # occurs twice; with min_count=1 merging goes on until every word is one token.
  assert tok.train_bpe(['ab ab cd'], num_merges=10).merges == [(3 + ord('a'), 3 + ord('b'))]
  assert tok.train_bpe(['ab ab cd'], num_merges=10, min_count=1).encode('ab ab cd') == [259, 261, 262]
  assert tok.train_bpe(CAPTIONS, num_merges=0).merges == []


def test_bpe_merges_stay_inside_words(bpe):
  for token in range(tok.NUM_BASE_TOKENS, bpe.vocab_size):
    text = bpe.decode([token])
    assert tok.pretokenize(text) == [text]


def test_bpe_deterministic(bpe):
  again = tok.train_bpe(list(reversed(CAPTIONS)), num_merges=200, context_length=32)
  assert again.merges == bpe.merges


def test_bpe_ties_pick_smallest_pair():
  # 'ba' and 'dc' each occur twice; the smaller pair (b, a) is merged first.
  assert tok.train_bpe(['dc,ba,dc,ba'], num_merges=1).merges == [(3 + ord('b'), 3 + ord('a'))]


def test_bpe_rejects_bad_merges():
  with pytest.raises(ValueError):
    tok.BPETokenizer([(3, tok.NUM_BASE_TOKENS)])  # refers to itself
  with pytest.raises(ValueError):
    tok.BPETokenizer([(tok.END_ID, 3)])


def test_call_packs_rows(any_tokenizer):
  texts = ['a red square', '', 'a blue circle, 日本 🙂']
  ids = any_tokenizer(texts)
  assert ids.shape == (3, 32) and ids.dtype == np.int32
  assert (ids[:, 0] == tok.START_ID).all()
  for row, text in zip(ids, texts):
    assert (row == tok.END_ID).sum() == 1
    end = int(np.argmax(row == tok.END_ID))
    assert (row[end + 1:] == tok.PAD_ID).all()
    assert (row[1:end] >= 3).all()
    assert any_tokenizer.decode(row) == text
  np.testing.assert_array_equal(ids[1], [tok.START_ID, tok.END_ID] + [tok.PAD_ID] * 30)


def test_call_single_string(any_tokenizer):
  ids = any_tokenizer('a red square')
  assert ids.shape == (1, 32)
  np.testing.assert_array_equal(ids, any_tokenizer(['a red square']))


def test_truncation_keeps_end_and_warns(any_tokenizer):
  long = 'a small red circle in the top left ' * 10
  with pytest.warns(UserWarning, match='1 of 2 prompts were truncated to 30 tokens') as record:
    ids = any_tokenizer([long, 'a'])
  assert len(record) == 1
  assert ids[0, -1] == tok.END_ID and (ids[0] == tok.END_ID).sum() == 1
  assert (ids[0] != tok.PAD_ID).all()
  np.testing.assert_array_equal(ids[0, 1:-1], any_tokenizer.encode(long)[:30])
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    any_tokenizer(['a'])
    any_tokenizer('x' * 30)  # exactly fills the context ('x' is in no caption, so never merged)


def test_minimal_context_length():
  t = tok.ByteTokenizer(context_length=2)
  np.testing.assert_array_equal(t(''), [[tok.START_ID, tok.END_ID]])
  with pytest.warns(UserWarning):
    np.testing.assert_array_equal(t('x'), [[tok.START_ID, tok.END_ID]])


@pytest.mark.parametrize('context_length', [1, 0, -3])
def test_context_length_too_small(context_length):
  with pytest.raises(ValueError, match='context_length'):
    tok.ByteTokenizer(context_length=context_length)
  with pytest.raises(ValueError, match='context_length'):
    tok.BPETokenizer([], context_length=context_length)


def test_save_load(any_tokenizer, tmp_path):
  path = str(tmp_path / 'tokenizer.json')
  any_tokenizer.save(path)
  loaded = tok.load(path)
  assert type(loaded) is type(any_tokenizer)
  assert loaded.to_dict() == any_tokenizer.to_dict()
  assert loaded.vocab_size == any_tokenizer.vocab_size and loaded.context_length == 32
  texts = CAPTIONS[::7] + ROUND_TRIP
  assert [loaded.encode(t) for t in texts] == [any_tokenizer.encode(t) for t in texts]
  np.testing.assert_array_equal(loaded(['a red square', '']), any_tokenizer(['a red square', '']))


def test_the_saved_bpe_file_is_a_hugging_face_tokenizer_with_the_same_ids(bpe, tmp_path):
  from tokenizers import Tokenizer as HFTokenizer
  path = str(tmp_path / 'tokenizer.json')
  bpe.save(path)
  hf = HFTokenizer.from_file(path)
  texts = CAPTIONS[::5] + ROUND_TRIP + ['word ' * 40]  # the last one is truncated
  with pytest.warns(UserWarning, match='truncated'):
    expected = bpe(texts)
  np.testing.assert_array_equal(np.array([e.ids for e in hf.encode_batch(texts)]), expected)
  assert hf.decode(hf.encode('a small red circle').ids) == 'a small red circle'


def test_a_tokenizer_saved_in_the_earlier_json_layout_still_loads(bpe, tmp_path):
  path = tmp_path / 'tokenizer.json'
  path.write_text(json.dumps(bpe.to_dict()))  # {'kind': 'bpe', 'context_length', 'merges'}
  assert tok.load(str(path)).to_dict() == bpe.to_dict()


def test_bpe_learns_merges_for_100000_captions_quickly():
  """Real captions: many distinct words (the Rust trainer; the former pure-Python one took minutes)."""
  rng = np.random.default_rng(0)
  letters = np.array(list('abcdefghijklmnopqrstuvwxyz'))
  words = np.array([''.join(rng.choice(letters, rng.integers(2, 9))) for _ in range(20000)])
  captions = [' '.join(row) for row in words[rng.integers(0, len(words), (100_000, 12))]]
  bpe = tok.train_bpe(captions, num_merges=2000)
  assert len(bpe.merges) == 2000
  assert np.mean([len(bpe.encode(c)) for c in captions[:100]]) < 0.5 * np.mean([len(c) for c in captions[:100]])


def test_from_dict_checks_kind(bpe):
  with pytest.raises(ValueError):
    tok.ByteTokenizer.from_dict(bpe.to_dict())

"""Dataset sources: shapes (rendering, captions, tfds round trip), digits, folders, tfds catalog,
and the per-example transforms. No TensorFlow, no network, small builds in tmp dirs."""

import functools
import io
import json
import logging
import os
import pickle
import re
import sys
import threading

import numpy as np
import PIL.Image
import pytest
import tensorflow_datasets as tfds

from lgm import images
from lgm.data import catalog, digits, folder, folder_index, shapes, shapes_dataset, sources, transforms

TINY = shapes_dataset.ShapesConfig(name='tiny_test', num_train=48, num_test=16, seed=3)

# Reference colours independent of the renderer's palette (CSS-like primaries).
REFERENCE_RGB = {
    'red': (255, 0, 0), 'green': (0, 200, 0), 'blue': (0, 0, 255), 'yellow': (255, 255, 0),
    'purple': (128, 0, 128), 'orange': (255, 165, 0), 'cyan': (0, 255, 255),
    'white': (255, 255, 255),
}


def _rng(seed=0):
  return np.random.default_rng(seed)


def _coverage_and_colour(image):
  """Estimates per-pixel shape coverage and the shape colour from a rendered image."""
  pixels = image.astype(np.float64)
  border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
  background = np.median(border, axis=0)
  distance = np.linalg.norm(pixels - background, axis=-1)
  core = distance >= 0.9 * distance.max()
  coverage = np.clip(distance / np.median(distance[core]), 0, 1)
  return coverage, pixels[core].mean(axis=0)


def _render_all(rng, **fixed):
  """Renders one image per combination of the attributes not in `fixed`."""
  names = list(shapes.ATTRIBUTES)
  grids = np.meshgrid(*[[fixed[n]] if n in fixed else range(len(shapes.ATTRIBUTES[n]))
                        for n in names], indexing='ij')
  attrs = {n: g.ravel() for n, g in zip(names, grids)}
  return attrs, shapes.render_batch(attrs['colour'], attrs['shape'], attrs['size'],
                                    attrs['position'], rng)


# --- shapes: rendering --------------------------------------------------------------------------


def test_render_is_deterministic_and_seed_dependent():
  a = shapes.render(2, 1, 0, 3, _rng(7))
  assert a.shape == (32, 32, 3) and a.dtype == np.uint8
  np.testing.assert_array_equal(a, shapes.render(2, 1, 0, 3, _rng(7)))
  assert not np.array_equal(a, shapes.render(2, 1, 0, 3, _rng(8)))
  first = shapes.make_examples(0, 'train', range(5))
  again = shapes.make_examples(0, 'train', [3, 4])  # example i depends on (seed, split, i) only
  np.testing.assert_array_equal(first[3]['image'], again[0]['image'])
  assert first[4]['caption'] == again[1]['caption']
  other = shapes.make_examples(1, 'train', range(5))
  assert all(not np.array_equal(x['image'], y['image']) for x, y in zip(first, other))


def test_every_attribute_value_is_sampled():
  examples = shapes.make_examples(0, 'train', range(400))
  for name, values in shapes.ATTRIBUTES.items():
    assert {e[name] for e in examples} == set(range(len(values))), name
  assert all(e['label'] == e['shape'] for e in examples)


def test_shape_colour_is_the_named_colour():
  names = list(REFERENCE_RGB)
  assert shapes.ATTRIBUTES['colour'] == names
  reference = np.array(list(REFERENCE_RGB.values()), np.float64)
  attrs, images = _render_all(_rng(1))
  for colour, image in zip(attrs['colour'], images):
    _, mean = _coverage_and_colour(image)
    assert np.argmin(np.linalg.norm(reference - mean, axis=1)) == colour
    # The background is a grey that no shape colour comes close to.
    background = image[np.unravel_index(np.argmin(_coverage_and_colour(image)[0]), (32, 32))]
    assert np.ptp(background.astype(int)) <= 12 and background.max() <= 110


def test_shape_centroid_lies_in_the_named_position():
  for seed in range(3):
    attrs, images = _render_all(_rng(seed), colour=0)
    for position, image in zip(attrs['position'], images):
      coverage, _ = _coverage_and_colour(image)
      ys, xs = np.mgrid[:32, :32] + 0.5
      x, y = (coverage * xs).sum() / coverage.sum(), (coverage * ys).sum() / coverage.sum()
      name = shapes.ATTRIBUTES['position'][position]
      if name == 'center':
        assert abs(x - 16) < 5 and abs(y - 16) < 5, (x, y)
      else:
        assert (y < 16) == name.startswith('top') and (x < 16) == name.endswith('left'), (x, y)
        assert max(abs(x - 16), abs(y - 16)) > 3, (name, x, y)  # never confusable with centre


def test_size_orders_the_shape_area_whatever_the_jitter():
  for shape in range(len(shapes.ATTRIBUTES['shape'])):
    areas = {size: [] for size in range(3)}
    for seed in range(8):
      attrs, images = _render_all(_rng(seed), colour=seed % 8, shape=shape)
      for size, image in zip(attrs['size'], images):
        areas[size].append(_coverage_and_colour(image)[0].sum())
    assert max(areas[0]) < min(areas[1]) and max(areas[1]) < min(areas[2]), shape
    assert min(areas[0]) > 40  # small shapes keep their form (>= ~8 px across)


def test_shapes_are_anti_aliased_and_inside_the_canvas():
  _, images = _render_all(_rng(0), colour=7, size=2)
  for image in images:
    coverage, _ = _coverage_and_colour(image)
    assert ((coverage > 0.1) & (coverage < 0.9)).any()  # soft edges
    border = np.concatenate([coverage[0], coverage[-1], coverage[:, 0], coverage[:, -1]])
    assert border.max() < 0.55  # the large shape keeps half a pixel from the edge


# --- shapes: captions ---------------------------------------------------------------------------


def test_every_template_and_synonym_parses_back():
  for t, template in enumerate(shapes.TEMPLATES):
    for name, values in shapes.SYNONYMS.items():
      for value, phrases in enumerate(values):
        for phrase in phrases:
          attrs = {n: (t + i) % len(shapes.SYNONYMS[n]) for i, n in enumerate(shapes.SYNONYMS)}
          attrs[name] = value
          words = {n: shapes.SYNONYMS[n][attrs[n]][0] for n in shapes.SYNONYMS}
          words[name] = phrase
          text = shapes.format_caption(template, words)
          assert shapes.parse_caption(text) == attrs, text


def test_captions_name_the_attributes():
  for example in shapes.make_examples(0, 'test', range(300)):
    expected = {name: example[name] for name in shapes.ATTRIBUTES}
    assert shapes.parse_caption(example['caption']) == expected, example['caption']
  attrs = {'colour': 5, 'shape': 0, 'size': 2, 'position': 4}
  assert shapes.caption(attrs) == 'a large orange circle in the center'
  texts = {shapes.caption(attrs, _rng(s)) for s in range(60)}
  assert len(texts) > 20 and all(shapes.parse_caption(t) == attrs for t in texts)
  assert not any(' a orange' in t or t.startswith('a orange') for t in texts)


def test_partial_captions_name_a_proper_subset_of_the_attributes_truly():
  attrs = {'colour': 4, 'shape': 3, 'size': 0, 'position': 1}
  texts = [shapes.partial_caption(attrs, _rng(s)) for s in range(400)]
  for text in texts:
    named = {n: v for n, v in shapes.parse_caption(text).items() if v is not None}
    assert 0 < len(named) < 4 and all(attrs[n] == v for n, v in named.items()), text
  assert {'violet', 'purple', 'small', 'upper right'} <= set(texts)  # bare words, what negative prompts are
  assert 'a little shape in the top-right' in texts and not any(re.search(r'\ba [aeiou]', t) for t in texts)
  named_once = {n: np.mean([shapes.parse_caption(t)[n] is not None for t in texts]) for n in attrs}
  assert all(0.35 < share < 0.65 for share in named_once.values()), named_once  # no attribute favoured


def test_parse_caption_reports_missing_and_contradictory_attributes():
  parsed = shapes.parse_caption('A red and blue circle, Upper-Left')
  assert parsed == {'colour': None, 'shape': 0, 'size': None, 'position': 0}
  assert shapes.parse_caption('') == dict.fromkeys(shapes.ATTRIBUTES)
  assert shapes.parse_caption('a mid-sized violet rhombus in the middle') == {
      'colour': 4, 'shape': 3, 'size': 1, 'position': 4}


# --- shapes: tfds builder -----------------------------------------------------------------------


@pytest.fixture(scope='module')
def shapes_dir(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  shapes_dataset.prepared_builder(data_dir, TINY)
  return data_dir


def test_tfds_round_trip_matches_direct_rendering(shapes_dir):
  for split, size in [('train', TINY.num_train), ('test', TINY.num_test)]:
    source = shapes_dataset.ShapesSource(split, shapes_dir, TINY)
    assert len(source) == source.info.num_examples == size
    expected = shapes.make_examples(TINY.seed, split, range(size))
    for i in range(size):
      record = source[i]
      assert set(record) == {'image', 'label', 'caption', *shapes.ATTRIBUTES}
      np.testing.assert_array_equal(record['image'], expected[i]['image'])
      assert record['caption'] == expected[i]['caption'] and isinstance(record['caption'], str)
      assert all(record[n] == expected[i][n] for n in shapes.ATTRIBUTES)
      assert record['label'] == record['shape']
  train = shapes_dataset.ShapesSource('train', shapes_dir, TINY)
  test = shapes_dataset.ShapesSource('test', shapes_dir, TINY)
  train_images = {train[i]['image'].tobytes() for i in range(len(train))}
  assert not any(test[i]['image'].tobytes() in train_images for i in range(len(test)))
  assert 'tensorflow' not in sys.modules


def test_shapes_source_info_pickle_and_bad_split(shapes_dir):
  source = shapes_dataset.ShapesSource('train', shapes_dir, TINY)
  assert source.info.label_names == tuple(shapes.ATTRIBUTES['shape'])
  assert source.info.attributes['position'][4] == 'center' and source.info.has_captions
  copy = pickle.loads(pickle.dumps(source))
  np.testing.assert_array_equal(copy[5]['image'], source[5]['image'])
  with pytest.raises(ValueError, match=r"valid splits: \['test', 'train'\]"):
    shapes_dataset.ShapesSource('validation', shapes_dir, TINY)


def test_get_source_builds_shapes_once_in_lgm_data_dir(tmp_path, monkeypatch):
  monkeypatch.setenv('LGM_DATA_DIR', str(tmp_path))
  monkeypatch.setattr(shapes_dataset, 'ShapesSource', functools.partial(shapes_dataset.ShapesSource, config=TINY))
  assert shapes_dataset.default_data_dir() == str(tmp_path)
  source = sources.get_source('shapes', 'test')
  assert len(source) == TINY.num_test
  info_file = tmp_path / 'shapes' / TINY.name / str(shapes_dataset.Shapes.VERSION) / 'dataset_info.json'
  built_at = info_file.stat().st_mtime_ns
  again = sources.get_source('shapes', 'test')  # reused, not rebuilt
  assert info_file.stat().st_mtime_ns == built_at
  np.testing.assert_array_equal(again[0]['image'], source[0]['image'])


def test_concurrent_first_use_builds_once(tmp_path):
  errors = []

  def build():
    try:
      shapes_dataset.prepared_builder(str(tmp_path), TINY)
    except Exception as e:  # pylint: disable=broad-except
      errors.append(e)

  threads = [threading.Thread(target=build) for _ in range(3)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert not errors
  assert len(shapes_dataset.ShapesSource('train', str(tmp_path), TINY)) == TINY.num_train


# --- digits -------------------------------------------------------------------------------------


def test_digits_splits_are_disjoint_complete_and_scaled():
  from sklearn.datasets import load_digits
  data = load_digits()
  train, test = sources.get_source('digits', 'train'), sources.get_source('digits', 'test')
  assert (len(train), len(test)) == (1497, 300)
  assert not set(train.indices) & set(test.indices)
  assert sorted([*train.indices, *test.indices]) == list(range(1797))
  record = test[7]
  assert record['image'].shape == (8, 8, 1) and record['image'].dtype == np.uint8
  original = test.indices[7]
  np.testing.assert_array_equal(record['image'][..., 0],
                                np.round(data.images[original] * 255 / 16).astype(np.uint8))
  assert record['label'] == data.target[original]
  assert max(train[i]['image'].max() for i in range(50)) == 255
  assert train.info.label_names == tuple('0123456789') and train.info.has_captions


def test_digits_captions_name_the_digit_deterministically():
  source, again = digits.DigitsSource('train'), digits.DigitsSource('train')
  captions = set()
  for i in range(200):
    record = source[i]
    word, numeral = digits.NUMBER_WORDS[record['label']], str(record['label'])
    tokens = re.findall(r'\w+', record['caption'])
    assert word in tokens or numeral in tokens
    assert again[i]['caption'] == record['caption']
    captions.add(record['caption'].replace(word, 'N').replace(numeral, 'N'))
  assert len(captions) == len(digits.TEMPLATES)
  with pytest.raises(ValueError, match='valid splits'):
    digits.DigitsSource('validation')


# --- folder -------------------------------------------------------------------------------------


def _save(path, array, **kwargs):
  path.parent.mkdir(parents=True, exist_ok=True)
  PIL.Image.fromarray(array).save(path, **kwargs)


def _image(value, shape=(6, 5, 3)):
  return np.full(shape, value, np.uint8)


@pytest.fixture
def image_folder(tmp_path):
  root = tmp_path / 'photos'
  _save(root / 'cats' / 'a.png', _image(10))
  _save(root / 'cats' / 'b.jpg', _image(200), quality=95)
  _save(root / 'dogs' / 'c.png', _image(30))
  _save(root / 'dogs' / 'deep' / 'd.webp', _image(40), lossless=True)
  _save(root / 'e.bmp', _image(50))
  (root / 'dogs' / 'c.txt').write_text('a sidecar dog\n')
  (root / 'cats' / 'b.txt').write_text('ignored: metadata wins')
  (root / 'metadata.jsonl').write_text(
      json.dumps({'file_name': 'cats/a.png', 'text': 'a cat from metadata'}) + '\n'
      + json.dumps({'file_name': 'cats/b.jpg', 'text': 'another cat'}) + '\n')
  (root / 'dogs' / 'deep' / 'metadata.jsonl').write_text(
      json.dumps({'file_name': 'd.webp', 'text': 'a deep dog'}) + '\n')
  (root / 'cats' / 'broken.png').write_bytes(b'not an image at all')
  jpeg = io.BytesIO()
  PIL.Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(
      jpeg, format='JPEG')
  (root / 'dogs' / 'truncated.jpg').write_bytes(jpeg.getvalue()[:400])
  (root / 'notes.md').write_text('not an image')
  _save(root / '.thumbnails' / 'x.png', _image(0))
  return root


def test_bad_metadata_lines_are_skipped_with_a_warning_naming_file_and_line(image_folder, caplog):
  lines = [json.dumps({'file_name': 'cats/a.png', 'text': 'a cat from metadata'}).encode(),
           b'{"file_name": "cats/b.jpg", "text": "caf\xe9"}',  # Latin-1, not UTF-8
           json.dumps({'file_name': 'cats/gone.png', 'text': 'deleted since'}).encode(),
           json.dumps({'file_name': '../outside.png', 'text': 'not in the folder'}).encode()]
  (image_folder / 'metadata.jsonl').write_bytes(b'\n'.join(lines) + b'\n')
  _save(image_folder.parent / 'outside.png', _image(60))
  with caplog.at_level(logging.WARNING):
    _, records = _all_records(image_folder)
  metadata = str(image_folder / 'metadata.jsonl')
  assert f'{metadata}: skipped 1 line(s) that are not UTF-8 JSON with "file_name" and "text": line 2' in caplog.text
  assert 'skipped 2 line(s) naming files that are not in' in caplog.text
  assert 'cats/gone.png (line 3), ../outside.png (line 4)' in caplog.text
  assert records['cats/a.png']['caption'] == 'a cat from metadata'
  assert records['cats/b.jpg']['caption'] == 'ignored: metadata wins'  # its metadata line was bad: the sidecar
  assert 'outside.png' not in ' '.join(records)


def test_the_folder_index_is_reused_while_the_folder_is_unchanged(image_folder, monkeypatch):
  first = sources.get_source(f'folder:{image_folder}', 'train')
  assert os.path.exists(folder_index.index_path(str(image_folder)))
  probed = []
  real_probe = folder._probe
  monkeypatch.setattr(folder, '_probe', lambda path: probed.append(os.path.basename(path)) or real_probe(path))
  again = sources.get_source(f'folder:{image_folder}', 'train')
  assert probed == [] and again.paths == first.paths  # nothing decoded: the index was read back
  assert again.captions() == first.captions()
  _save(image_folder / 'cats' / 'new.png', _image(70))
  (image_folder / 'dogs' / 'c.txt').write_text('a renamed dog\n')
  changed = sources.get_source(f'folder:{image_folder}', 'train')
  test = sources.get_source(f'folder:{image_folder}', 'test')
  assert probed == ['new.png']  # only the new image is decoded; captions are read again
  captions = dict(zip(changed.paths + test.paths, changed.captions() + test.captions()))
  assert captions[str(image_folder / 'dogs' / 'c.png')] == 'a renamed dog'
  assert str(image_folder / 'cats' / 'new.png') in captions


def test_captions_are_read_without_decoding_images(image_folder, monkeypatch):
  source = sources.get_source(f'folder:{image_folder}', 'train')
  monkeypatch.setattr(folder, 'load_rgb', lambda path: pytest.fail(f'decoded {path}'))
  assert source.captions() == [source._captions[i] for i in range(len(source))]
  assert source.captions(1) == source.captions()[:1]


def _all_records(root):
  train = sources.get_source(f'folder:{root}', 'train')
  test = sources.get_source(f'folder:{root}', 'test')
  assert not set(train.paths) & set(test.paths) and len(test) >= 1
  records = {}
  for source in (train, test):
    for i, path in enumerate(source.paths):
      records[str(path)[len(str(root)) + 1:]] = source[i]
  return train.info, records


def test_folder_captions_labels_and_skipped_files(image_folder, caplog):
  with caplog.at_level(logging.WARNING):
    info, records = _all_records(image_folder)
  assert sorted(records) == ['cats/a.png', 'cats/b.jpg', 'dogs/c.png', 'dogs/deep/d.webp', 'e.bmp']
  assert 'skipped 2 unreadable' in caplog.text
  assert info.label_names == ('', 'cats', 'deep', 'dogs') and info.has_captions
  captions = {k: r['caption'] for k, r in records.items()}
  assert captions == {'cats/a.png': 'a cat from metadata', 'cats/b.jpg': 'another cat',
                      'dogs/c.png': 'a sidecar dog', 'dogs/deep/d.webp': 'a deep dog',
                      'e.bmp': ''}
  labels = {k: info.label_names[r['label']] for k, r in records.items()}
  assert labels == {'cats/a.png': 'cats', 'cats/b.jpg': 'cats', 'dogs/c.png': 'dogs',
                    'dogs/deep/d.webp': 'deep', 'e.bmp': ''}
  for key, value in [('cats/a.png', 10), ('dogs/deep/d.webp', 40), ('e.bmp', 50)]:
    np.testing.assert_array_equal(records[key]['image'], _image(value))


def test_folder_converts_modes_to_rgb(tmp_path):
  rgba = np.zeros((4, 4, 4), np.uint8)
  rgba[..., 0], rgba[0, 0, 3], rgba[1, 1, 3] = 200, 255, 128
  _save(tmp_path / 'rgba.png', rgba)
  _save(tmp_path / 'grey.png', np.arange(16, dtype=np.uint8).reshape(4, 4) * 16)
  palette = PIL.Image.new('P', (4, 4), 1)
  palette.putpalette([0, 0, 0, 90, 91, 92] + [0] * 762)
  palette.save(tmp_path / 'pal.gif')
  PIL.Image.fromarray(np.full((4, 4), 2570, np.uint16)).save(tmp_path / 'deep.png')
  np.testing.assert_array_equal(folder.load_rgb(str(tmp_path / 'deep.png')), _image(10, (4, 4, 3)))
  image = folder.load_rgb(str(tmp_path / 'rgba.png'))
  assert image.shape == (4, 4, 3) and image.dtype == np.uint8
  np.testing.assert_array_equal(image[0, 0], [200, 0, 0])
  np.testing.assert_array_equal(image[3, 3], [255, 255, 255])  # transparent -> white
  np.testing.assert_array_equal(image, transforms.composite_on_white(rgba))
  grey = folder.load_rgb(str(tmp_path / 'grey.png'))
  np.testing.assert_array_equal(grey, np.repeat(np.arange(16).reshape(4, 4, 1) * 16, 3, -1))
  np.testing.assert_array_equal(folder.load_rgb(str(tmp_path / 'pal.gif')),
                                np.broadcast_to([90, 91, 92], (4, 4, 3)))


def test_folder_split_is_stable_when_files_are_added(tmp_path):
  for i in range(60):
    _save(tmp_path / f'img{i:03d}.png', _image(i))
  before = set(sources.get_source(f'folder:{tmp_path}', 'test').paths)
  assert 1 <= len(before) <= 10
  for i in range(60, 90):
    _save(tmp_path / f'img{i:03d}.png', _image(i))
  after = set(sources.get_source(f'folder:{tmp_path}', 'test').paths)
  assert {p for p in after if int(p[-7:-4]) < 60} == before
  train = sources.get_source(f'folder:{tmp_path}', 'train')
  assert len(train) + len(after) == 90 and train.info.label_names == ('',)
  assert pickle.loads(pickle.dumps(train))[0]['caption'] == ''


@pytest.mark.parametrize('layout', ['missing', 'empty', 'only_corrupt'])
def test_folder_without_images_is_a_one_line_error(tmp_path, layout):
  root = tmp_path / 'data'
  if layout != 'missing':
    root.mkdir()
    (root / 'readme.txt').write_text('hello')
  if layout == 'only_corrupt':
    (root / 'x.png').write_bytes(b'garbage')
  with pytest.raises(ValueError) as error:
    sources.get_source(f'folder:{root}', 'train')
  message = str(error.value)
  assert '\n' not in message and str(root) in message and 'folder:PATH' in message
  with pytest.raises(ValueError, match='valid splits'):
    sources.get_source(f'folder:{root}', 'val')


# --- tfds catalog -------------------------------------------------------------------------------


class LgmTestCatalog(tfds.core.GeneratorBasedBuilder):
  """A two-class grey-image dataset standing in for a prepared catalog dataset (mnist-like)."""
  VERSION = tfds.core.Version('1.0.0')
  url_infos = None  # see lgm.data.shapes_dataset.Shapes

  def _info(self):
    # DatasetInfo directly: dataset_info_from_configs looks for metadata in a package.
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        'image': tfds.features.Image(shape=(8, 8, 1)),
        'label': tfds.features.ClassLabel(names=['dark', 'light']),
    }))

  def _split_generators(self, dl_manager):
    return {'train': self._generate_examples(6), 'test': self._generate_examples(2)}

  def _generate_examples(self, n):
    for i in range(n):
      buffer = io.BytesIO()
      PIL.Image.fromarray(_image(i * 30, (8, 8))).save(buffer, format='PNG')
      yield i, {'image': buffer.getvalue(), 'label': i % 2}


def test_catalog_reads_a_prepared_array_record_dataset(tmp_path):
  LgmTestCatalog(data_dir=str(tmp_path), file_format='array_record').download_and_prepare()
  source = sources.get_source('lgm_test_catalog', 'train', data_dir=str(tmp_path))
  assert len(source) == 6 and source.info.label_names == ('dark', 'light')
  labels = sorted((int(source[i]['image'][0, 0, 0]), source[i]['label']) for i in range(6))
  assert labels == [(i * 30, i % 2) for i in range(6)]
  assert source[0]['image'].shape == (8, 8, 1) and source[0]['caption'] == ''
  assert len(sources.get_source('lgm_test_catalog', 'train[:50%]+test', str(tmp_path))) == 5
  assert len(pickle.loads(pickle.dumps(source))) == 6
  with pytest.raises(ValueError, match=r"valid splits: \['test', 'train'\]"):
    sources.get_source('lgm_test_catalog', 'validation', data_dir=str(tmp_path))


def test_catalog_errors_say_what_to_do(tmp_path):
  with pytest.raises(ValueError) as error:
    sources.get_source('lgm_test_catalog', 'train', data_dir=str(tmp_path / 'empty'))
  message = str(error.value)
  assert '\n' not in message
  assert (f'tfds build lgm_test_catalog --file_format=array_record --data_dir={tmp_path}/empty'
          in message)
  assert message == message.strip() and catalog.prepare_command('x', None).startswith('pip')
  with pytest.raises(ValueError, match="unknown dataset 'no_such_dataset'"):
    sources.get_source('no_such_dataset', 'train')


# --- transforms ---------------------------------------------------------------------------------


def test_to_model_image_scales_to_unit_range_and_converts_channels():
  rgb = _rng().integers(0, 256, (5, 5, 3), dtype=np.uint8)
  x = transforms.to_model_image(rgb, 5, 3)
  assert x.dtype == np.float32 and x.shape == (5, 5, 3) and -1 <= x.min() and x.max() <= 1
  np.testing.assert_allclose(x, rgb / 127.5 - 1, atol=1e-6)
  np.testing.assert_array_equal(images.to_uint8(x), rgb)
  luma = rgb @ np.array([0.299, 0.587, 0.114])
  np.testing.assert_allclose(transforms.to_model_image(rgb, 5, 1)[..., 0], luma / 127.5 - 1,
                             atol=1e-5)
  grey = rgb[..., 0]
  for image in (grey, grey[..., None]):
    np.testing.assert_allclose(transforms.to_model_image(image, 5, 3),
                               np.repeat(grey[..., None], 3, -1) / 127.5 - 1, atol=1e-6)
  rgba = np.concatenate([rgb, _rng(1).integers(0, 256, (5, 5, 1), dtype=np.uint8)], -1)
  alpha = rgba[..., 3:] / 255
  over_white = np.round(rgb * alpha + 255 * (1 - alpha))
  np.testing.assert_allclose(transforms.to_model_image(rgba, 5, 3), over_white / 127.5 - 1,
                             atol=1e-6)


def test_to_model_image_centre_crops_and_resizes():
  wide = np.zeros((4, 8, 1), np.uint8)
  wide[:, :2], wide[:, 6:] = 255, 255  # bars outside the centre square are cropped away
  np.testing.assert_array_equal(transforms.to_model_image(wide, 4, 1), -np.ones((4, 4, 1)))
  big = _rng().integers(0, 256, (8, 8, 3), dtype=np.uint8)
  block_means = big.reshape(4, 2, 4, 2, 3).mean(axis=(1, 3))
  np.testing.assert_allclose(transforms.to_model_image(big, 4, 3), block_means / 127.5 - 1,
                             atol=1.01 / 127.5)  # PIL rounds in fixed point
  small = transforms.to_model_image(np.full((8, 8), 77, np.uint8), 32, 1)
  assert small.shape == (32, 32, 1)
  np.testing.assert_allclose(small, 77 / 127.5 - 1, atol=1e-6)
  digit = transforms.to_model_image(digits.DigitsSource('test')[0]['image'], 32, 3)
  assert digit.shape == (32, 32, 3) and -1 <= digit.min() and digit.max() <= 1


def test_to_uint8_and_hflip():
  np.testing.assert_array_equal(images.to_uint8(np.array([-1.5, -1, 0, 1, 2.0])),
                                [0, 0, 128, 255, 255])
  image = _rng().random((3, 4, 2))
  np.testing.assert_array_equal(transforms.hflip(image), image[:, ::-1])
  np.testing.assert_array_equal(transforms.hflip(image[None])[0], image[:, ::-1])

"""`shapes`: the embedded default dataset, one coloured geometric shape per 32x32 image.

Why it exists: its four attributes (colour, shape, size, position) are known for every image,
so a classifier trained on real renders can read them back from *generated* images, which makes
text-to-image fidelity measurable without any download.

Rendering is plain numpy (4x supersampling, then a box downsample for anti-aliasing), exposed as
functions so that evaluation code can render reference images for any attributes. This module is the
world (attributes, renderer, captions) and needs no tfds; the stored dataset, a tfds builder written as
array_record and built on first use, is `lgm.data.shapes_dataset`.

Example `i` of a split depends only on `(seed, split, i)`, so a smaller config is a prefix of a
larger one and any example can be re-rendered directly (`make_examples`).

The record's `label` is the *shape* index (`ATTRIBUTES['shape']`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence

import numpy as np

IMAGE_SIZE = 32
_SUPERSAMPLE = 4

# Per attribute, per value: the phrases a caption may use; the first is the canonical word.
SYNONYMS: dict[str, tuple[tuple[str, ...], ...]] = {
    'colour': (
        ('red',), ('green',), ('blue',), ('yellow',),
        ('purple', 'violet'), ('orange',), ('cyan', 'turquoise'), ('white',),
    ),
    'shape': (
        ('circle', 'disc', 'disk'), ('square',), ('triangle',),
        ('diamond', 'rhombus'), ('cross', 'plus sign'),
    ),
    'size': (
        ('small', 'little', 'tiny'), ('medium', 'medium-sized', 'mid-sized'), ('large', 'big'),
    ),
    'position': (
        ('top left', 'upper left', 'top-left'), ('top right', 'upper right', 'top-right'),
        ('bottom left', 'lower left', 'bottom-left'),
        ('bottom right', 'lower right', 'bottom-right'),
        ('center', 'centre', 'middle'),
    ),
}
ATTRIBUTES: dict[str, list[str]] = {
    name: [phrases[0] for phrases in values] for name, values in SYNONYMS.items()
}
LABEL_ATTRIBUTE = 'shape'

# Every template names all four attributes once; the first is the canonical prompt.
TEMPLATES: tuple[str, ...] = (
    'a {size} {colour} {shape} in the {position}',
    'there is a {size} {colour} {shape} in the {position}',
    '{position}: a {colour} {shape}, {size}',
    'a {colour} {shape} in the {position}, {size}',
    'in the {position} there is a {size} {shape} coloured {colour}',
    'an image of a {size} {colour} {shape} in the {position}',
    '{size} {colour} {shape}, {position}',
    'the {shape} in the {position} is {colour} and {size}',
)

# Colours far from each other and from the grey background (RGB, 0..255).
_COLOURS_RGB = np.array([
    (220, 30, 30), (40, 190, 50), (40, 80, 235), (245, 235, 30),
    (160, 40, 190), (250, 140, 20), (40, 215, 225), (240, 240, 240),
], np.float32)
_COLOUR_JITTER = 12.0
_BACKGROUND_GREY = (30.0, 100.0)  # dark to mid grey: never near white, yellow or cyan
_BACKGROUND_TINT = 6.0
# Extent (bounding-box side, px) per size; small squares stay >= 8.5 px so they stay square.
_EXTENTS = np.array([10.5, 14.5, 18.5], np.float32)
_EXTENT_JITTER = 0.5
# Shape centres (x, y) per position; a large shape keeps >= 0.5 px from the image edge.
_CENTRES = np.array(
    [(10.75, 10.75), (21.25, 10.75), (10.75, 21.25), (21.25, 21.25), (16.0, 16.0)], np.float32)
_CENTRE_JITTER = 0.75


def _inside_circle(dx, dy, r):
  return dx * dx + dy * dy <= r * r


def _inside_square(dx, dy, r):
  # 0.86 of the box: about the circle's area, so size reads the same across shapes.
  return np.maximum(np.abs(dx), np.abs(dy)) <= 0.86 * r


def _inside_triangle(dx, dy, r):
  # Pointing up, base = extent, height = 0.9 extent, apex at the top of the box: the centroid
  # sits only 0.2 r below the anchor, so position reads the same as for the other shapes.
  return (dy <= 0.8 * r) & (np.abs(dx) <= (dy + r) / 1.8)


def _inside_diamond(dx, dy, r):
  return np.abs(dx) + np.abs(dy) <= r


def _inside_cross(dx, dy, r):
  half_arm = r / 3
  ax, ay = np.abs(dx), np.abs(dy)
  return ((ax <= half_arm) & (ay <= r)) | ((ay <= half_arm) & (ax <= r))


_INSIDE = (_inside_circle, _inside_square, _inside_triangle, _inside_diamond, _inside_cross)
assert len(_INSIDE) == len(ATTRIBUTES['shape'])


@dataclasses.dataclass(frozen=True)
class _Layout:
  """The random, attribute-preserving details of one image."""
  centre: np.ndarray      # (2,) x, y in pixels
  extent: float
  foreground: np.ndarray  # (3,) RGB
  background: np.ndarray  # (3,) RGB


def _sample_layout(colour: int, size: int, position: int, rng: np.random.Generator) -> _Layout:
  return _Layout(
      centre=_CENTRES[position] + rng.uniform(-_CENTRE_JITTER, _CENTRE_JITTER, 2),
      extent=_EXTENTS[size] + rng.uniform(-_EXTENT_JITTER, _EXTENT_JITTER),
      foreground=np.clip(
          _COLOURS_RGB[colour] + rng.uniform(-_COLOUR_JITTER, _COLOUR_JITTER, 3), 0, 255),
      background=rng.uniform(*_BACKGROUND_GREY)
      + rng.uniform(-_BACKGROUND_TINT, _BACKGROUND_TINT, 3),
  )


def _box_downsample(inside: np.ndarray) -> np.ndarray:
  """(N, 32s, 32s) bool -> (N, 32, 32) float32 fraction covered; slices beat a strided mean."""
  n, s = len(inside), _SUPERSAMPLE
  rows = inside.view(np.uint8).reshape(n, IMAGE_SIZE, s, IMAGE_SIZE * s)
  rows = sum(rows[:, :, k] for k in range(s)).reshape(n, IMAGE_SIZE, IMAGE_SIZE, s)
  return sum(rows[..., k] for k in range(s)).astype(np.float32) / s**2


def _draw(shape_ids: np.ndarray, layouts: Sequence[_Layout]) -> np.ndarray:
  """Renders all images at once: coverage on a supersampled grid, box-downsampled."""
  n, s = len(layouts), _SUPERSAMPLE
  grid = (np.arange(IMAGE_SIZE * s, dtype=np.float32) + 0.5) / s
  centres = np.stack([layout.centre for layout in layouts]).astype(np.float32)
  radii = np.array([layout.extent / 2 for layout in layouts], np.float32)[:, None, None]
  dx = grid[None, None, :] - centres[:, 0, None, None]
  dy = grid[None, :, None] - centres[:, 1, None, None]
  inside = np.zeros((n, IMAGE_SIZE * s, IMAGE_SIZE * s), bool)
  for kind, inside_fn in enumerate(_INSIDE):
    idx = np.flatnonzero(shape_ids == kind)
    if idx.size:
      inside[idx] = inside_fn(dx[idx], dy[idx], radii[idx])
  coverage = _box_downsample(inside)[..., None]
  fg = np.stack([layout.foreground for layout in layouts])[:, None, None, :]
  bg = np.stack([layout.background for layout in layouts])[:, None, None, :]
  image = coverage * fg + (1 - coverage) * bg
  return np.clip(np.round(image), 0, 255).astype(np.uint8)


def render_batch(colour: Sequence[int], shape: Sequence[int], size: Sequence[int],
                 position: Sequence[int], rng: np.random.Generator) -> np.ndarray:
  """Renders images with the given attribute indices; returns uint8 (N, 32, 32, 3).

  Each image draws its jitter from its own child of `rng`, so a batch is reproducible from
  the state of `rng`.
  """
  colour, shape, size, position = (np.asarray(a, np.int64) for a in (colour, shape, size, position))
  layouts = [_sample_layout(c, z, p, child)
             for c, z, p, child in zip(colour, size, position, rng.spawn(len(shape)))]
  return _draw(shape, layouts)


def render(colour: int, shape: int, size: int, position: int,
           rng: np.random.Generator) -> np.ndarray:
  """Renders one image with the given attribute indices; returns uint8 (32, 32, 3)."""
  return render_batch([colour], [shape], [size], [position], rng)[0]


def caption(attributes: Mapping[str, int], rng: np.random.Generator | None = None) -> str:
  """A caption naming all four attributes; canonical (first template and words) without `rng`."""
  if rng is None:
    template, choice = TEMPLATES[0], {}
  else:
    template = TEMPLATES[rng.integers(len(TEMPLATES))]
    choice = {name: rng.integers(len(SYNONYMS[name][attributes[name]])) for name in SYNONYMS}
  words = {name: SYNONYMS[name][attributes[name]][choice.get(name, 0)] for name in SYNONYMS}
  return format_caption(template, words)


def partial_caption(attributes: Mapping[str, int], rng: np.random.Generator) -> str:
  """A caption naming a random non-empty proper subset of the attributes, with random synonyms: half the
  time a sentence ("a small red shape in the top left", "a circle"), half the time the bare phrases
  ("red", "top left", "small circle"), the form a negative prompt takes. Trained on, these teach a text-
  conditioned model what one word alone asks for (`config.data.partial_captions`)."""
  names = list(SYNONYMS)
  while True:
    kept = [name for name in names if rng.random() < 0.5]
    if 0 < len(kept) < len(names):
      break
  words = {name: SYNONYMS[name][attributes[name]][rng.integers(len(SYNONYMS[name][attributes[name]]))]
           for name in kept}
  if rng.random() < 0.5:
    return ' '.join(words[name] for name in ('size', 'colour', 'shape', 'position') if name in words)
  where = [f"in the {words['position']}"] if 'position' in words else []
  return _fix_articles(' '.join(['a', *(words[n] for n in ('size', 'colour') if n in words),
                                 words.get('shape', 'shape'), *where]))


def format_caption(template: str, words: Mapping[str, str]) -> str:
  """Fills a template with attribute phrases, fixing 'a' before a vowel."""
  return _fix_articles(template.format(**words))


def _fix_articles(text: str) -> str:
  return re.sub(r'\ba (?=[aeiou])', 'an ', text)


def _tokens(text: str) -> tuple[str, ...]:
  return tuple(re.findall(r'[a-z]+', text.lower()))


# (tokens, attribute, value), longest phrases first so 'medium sized' wins over 'medium'.
_PHRASES = sorted(
    ((_tokens(phrase), name, value)
     for name, values in SYNONYMS.items()
     for value, phrases in enumerate(values) for phrase in phrases),
    key=lambda entry: -len(entry[0]))


def parse_caption(text: str) -> dict[str, int | None]:
  """Reads the attributes a caption names; None where one is missing or contradictory."""
  tokens, found = _tokens(text), {name: set() for name in SYNONYMS}
  i = 0
  while i < len(tokens):
    for phrase, name, value in _PHRASES:
      if tokens[i:i + len(phrase)] == phrase:
        found[name].add(value)
        i += len(phrase)
        break
    else:
      i += 1
  return {name: values.pop() if len(values) == 1 else None for name, values in found.items()}


_SPLIT_IDS = {'train': 0, 'test': 1}


def make_examples(seed: int, split: str, indices: Sequence[int]) -> list[dict]:
  """Examples `indices` of a split, exactly as the dataset stores them (image as uint8 array)."""
  rngs = [np.random.default_rng([seed, _SPLIT_IDS[split], i]) for i in indices]
  attributes = [{name: int(rng.integers(len(values))) for name, values in ATTRIBUTES.items()}
                for rng in rngs]
  layouts = [_sample_layout(a['colour'], a['size'], a['position'], rng)
             for a, rng in zip(attributes, rngs)]
  images = _draw(np.array([a['shape'] for a in attributes]), layouts)
  return [dict(a, image=image, caption=caption(a, rng), label=a[LABEL_ATTRIBUTE])
          for a, image, rng in zip(attributes, images, rngs)]

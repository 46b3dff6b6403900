"""A generation's recipe in its PNG: written, read back, and a model id that names exactly its parameters."""

import numpy as np
import PIL.Image

from lgm import images, provenance


def test_a_recipe_survives_the_png_and_an_image_without_one_reads_empty(tmp_path):
  recipe = provenance.recipe('ab' * 32, prompt='un cercle rouge — 赤い円 🔴', negative_prompt='', seeds=[0, 1],
                             sampler='dpm_solver', steps=20, guidance=3.0)
  path = images.save_grid(str(tmp_path / 'grid.png'), np.zeros((2, 8, 8, 3), np.float32),
                          text=provenance.png_text(recipe))
  assert provenance.read_metadata(path) == recipe
  assert recipe['generator'].startswith('lgm ')
  with PIL.Image.open(path) as image:  # what any PNG tool sees
    assert image.text[provenance.RECIPE_KEY].startswith('{"generator": "lgm ')
  plain = tmp_path / 'plain.png'
  PIL.Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(plain)
  assert provenance.read_metadata(str(plain)) == {}


def test_the_model_id_names_every_parameter_and_nothing_else():
  params = {'dense': {'kernel': np.arange(6, dtype=np.float32).reshape(2, 3), 'bias': np.zeros(3, np.float32)}}
  same = {'dense': {'bias': np.zeros(3, np.float32), 'kernel': np.arange(6, dtype=np.float32).reshape(2, 3)}}
  assert provenance.model_id(params) == provenance.model_id(same)  # key order does not matter
  nudged = {'dense': {**params['dense'], 'bias': np.array([0, 0, 1e-7], np.float32)}}
  renamed = {'dense2': params['dense']}
  reshaped = {'dense': {**params['dense'], 'kernel': params['dense']['kernel'].reshape(3, 2)}}
  ids = {provenance.model_id(tree) for tree in (params, nudged, renamed, reshaped)}
  assert len(ids) == 4 and all(len(i) == 64 for i in ids)

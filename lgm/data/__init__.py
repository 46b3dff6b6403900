"""Datasets (sources.py), preprocessing (transforms.py) and the grain loader (loader.py).

Import the module you need (`from lgm.data import loader`): the package itself imports nothing, so that
loading a trained model for sampling needs neither grain nor tfds.
"""

"""Datasets (sources.py), preprocessing (transforms.py) and the grain loader (loader.py)."""

from lgm.data.loader import Loader, load_arrays, make_loader
from lgm.data.sources import SourceInfo, get_source

__all__ = ['Loader', 'SourceInfo', 'get_source', 'load_arrays', 'make_loader']

"""Datasets -> splits -> loaders -> `Batch`es. Small built-in sets live in memory as uint8 tensors and are
batched on tensors; image folders and CSV lists go through a DataLoader with workers. Every loader
yields `Batch`es of normalized inputs, so the training loop cannot tell the sources apart."""

from .arrays import bundle_from_arrays, to_uint8_images
from .builtin import BUILTIN
from .bundle import DataBundle, FeatureSplit, FileSplit, Split, TensorSplit, channel_stats, stratified_split, subset
from .load import load_data
from .loaders import Batch, FileLoader, TensorLoader, epoch_seed, make_loader
from .preprocess import Preprocess

__all__ = ["BUILTIN", "Batch", "DataBundle", "FeatureSplit", "FileLoader", "FileSplit", "Preprocess", "Split",
           "TensorLoader", "TensorSplit", "bundle_from_arrays", "channel_stats", "epoch_seed", "load_data",
           "make_loader", "stratified_split", "subset", "to_uint8_images"]

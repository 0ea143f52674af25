"""Data sets for training and evaluation, online (torchvision) and offline (mnist-5k, digits)."""

from vaelens.data._datasets import (
    DATASETS,
    OFFLINE,
    ONLINE,
    ImageFileDataset,
    TensorImageDataset,
    default_root,
    load_dataset,
    sample_shape,
    take,
)

__all__ = [
    "DATASETS",
    "OFFLINE",
    "ONLINE",
    "ImageFileDataset",
    "TensorImageDataset",
    "default_root",
    "load_dataset",
    "sample_shape",
    "take",
]

"""Data sets for training and evaluation, online (torchvision) and offline (mnist-5k, digits); folders of
images, video, audio or NIfTI volumes."""

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
from vaelens.data._media import MediaFileDataset, MediaOptions

__all__ = [
    "DATASETS",
    "OFFLINE",
    "ONLINE",
    "ImageFileDataset",
    "MediaFileDataset",
    "MediaOptions",
    "TensorImageDataset",
    "default_root",
    "load_dataset",
    "sample_shape",
    "take",
]

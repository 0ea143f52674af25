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
from vaelens.data._media import decoder as media_decoder  # the library that reads a kind of media
from vaelens.data._media import modality as media_kind  # what kind of media file a path is

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
    "media_decoder",
    "media_kind",
    "sample_shape",
    "take",
]

